"""The optional packages of export (``pip install napari-sum-hq[export]``), imported on use."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import SumError

__all__ = ["EXPORT_PACKAGES", "require"]

#: Module -> the pip requirement that provides it (the ``[export]`` extra).
EXPORT_PACKAGES = {
    "onnx": "onnx>=1.16",
    "onnxruntime": "onnxruntime>=1.18",
    "bioimageio.spec": "bioimageio.spec>=0.5.4",
}


def require(module: str) -> ModuleType:
    """Import an optional export dependency, or fail with the pip line that installs it.

    Raises
    ------
    SumError
        When the package is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise SumError(
            f"{module} is needed for this export but is not installed ({error}); install it with "
            f"`pip install '{EXPORT_PACKAGES[module]}'` or `pip install napari-sum-hq[export]`"
        ) from None
