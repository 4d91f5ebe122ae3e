"""Export models for use outside Python: ONNX graphs and BioImage.IO model packages.

Optional extra (``pip install napari-sum-hq[export]``): ``onnx``, ``onnxruntime``, ``bioimageio.spec``;
each is imported when an export needs it (:func:`sum_core.export.deps.require`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Names load on first use, so that the torch-free helpers (``export.target``, used by the result exports)
# import without the model code.
_LAZY = {
    "DEFAULT_OPSET": ".onnx",
    "OnnxExport": ".onnx",
    "export_bioimageio": ".bioimageio",
    "export_onnx": ".onnx",
}

if TYPE_CHECKING:  # pragma: no cover
    from .bioimageio import export_bioimageio
    from .onnx import DEFAULT_OPSET, OnnxExport, export_onnx

__all__ = ["DEFAULT_OPSET", "OnnxExport", "export_bioimageio", "export_onnx"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name], __name__), name)


def __dir__() -> list[str]:
    return sorted(__all__)
