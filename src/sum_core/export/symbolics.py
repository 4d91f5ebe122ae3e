"""ONNX translations the exporter gets wrong for us, registered only while a graph is traced.

``aten::instance_norm`` (the AIS decoder's ``nn.InstanceNorm2d``): onnxruntime's
``InstanceNormalization`` kernel loses precision when a channel's mean is large against its
spread (measured: 8.2e-4 absolute error on a channel of mean 30, std 0.1, where torch's float32
is at 8.8e-6; through the AIS decoder 1.1e-2 on the maps). It is exported here as the two-pass
formula ``(x - mean) / sqrt(mean((x - mean)^2) + eps)`` in plain ONNX ops, on ``x`` shifted by
each channel's first value (so the sums stay small), then the affine weight and bias when the
layer has them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.onnx import symbolic_helper

__all__ = ["two_pass_instance_norm"]

_OPSET = 17


@symbolic_helper.parse_args("v", "v", "v", "v", "v", "b", "f", "f", "b")
def _instance_norm(g, x, weight, bias, running_mean, running_var, use_input_stats, momentum, eps, cudnn_enabled):
    if not use_input_stats:
        raise torch.onnx.errors.SymbolicValueError("instance_norm with running statistics is not supported", x)
    # Shifted by the channel's first value before the sums (its mean is then near 0), two passes.
    first = symbolic_helper._slice_helper(g, x, axes=[2, 3], starts=[0, 0], ends=[1, 1])
    shifted = g.op("Sub", x, first)
    mean = g.op("ReduceMean", shifted, axes_i=[2, 3], keepdims_i=1)  # opset 17: axes as an attribute
    centred = g.op("Sub", shifted, mean)
    variance = g.op("ReduceMean", g.op("Mul", centred, centred), axes_i=[2, 3], keepdims_i=1)
    denominator = g.op("Sqrt", g.op("Add", variance, g.op("Constant", value_t=torch.tensor(eps))))
    out = g.op("Div", centred, denominator)
    shape = g.op("Constant", value_t=torch.tensor([1, -1, 1, 1], dtype=torch.int64))
    if not symbolic_helper._is_none(weight):
        out = g.op("Mul", out, g.op("Reshape", weight, shape))
    if not symbolic_helper._is_none(bias):
        out = g.op("Add", out, g.op("Reshape", bias, shape))
    return out


@contextmanager
def two_pass_instance_norm() -> Iterator[None]:
    """Export ``aten::instance_norm`` with the two-pass formula inside the block."""
    torch.onnx.register_custom_op_symbolic("aten::instance_norm", _instance_norm, _OPSET)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::instance_norm", _OPSET)
