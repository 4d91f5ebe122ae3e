"""Export models for use outside Python: ONNX graphs and BioImage.IO model packages.

Optional extra (``pip install napari-sum-hq[export]``): ``onnx``, ``onnxruntime``, ``bioimageio.spec``;
each is imported when an export needs it (:func:`sum_core.export.deps.require`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes
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


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
