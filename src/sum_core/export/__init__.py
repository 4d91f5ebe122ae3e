"""Export models for use outside Python: ONNX graphs and BioImage.IO model packages.

Optional extra (``pip install napari-sum-hq[export]``): ``onnx``, ``onnxruntime``, ``bioimageio.spec``;
each is imported when an export needs it (:func:`sum_core.export.deps.require`).
"""

from __future__ import annotations

from .bioimageio import export_bioimageio
from .onnx import DEFAULT_OPSET, OnnxExport, export_onnx

__all__ = ["DEFAULT_OPSET", "OnnxExport", "export_bioimageio", "export_onnx"]
