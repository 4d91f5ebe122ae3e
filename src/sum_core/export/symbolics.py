"""ONNX translations the exporter gets wrong for us, registered only while a graph is traced.

``aten::instance_norm`` (the AIS decoder's ``nn.InstanceNorm2d``): torch's CPU kernel
accumulates a channel's statistics in float64; onnxruntime's ``InstanceNormalization`` and a
``ReduceMean`` over both spatial axes accumulate 2**20 float32 values (a 1024×1024 level) in one
float32 sum (measured: the mean of 2**20 values drawn from N(3, 1) 3.7e-6 off, torch 1.5e-8).
Through the AIS decoder's normalised levels that error grew to 1.05e-3 of the maps' scale.
Here each statistic is a mean over the rows of the means over each row (two float32 sums of
<= 1024 values: 5.7e-7 on the same values), of ``x`` shifted by each channel's first value (so
the sums stay small against the spread), in two passes:
``(x - mean) / sqrt(mean((x - mean)^2) + eps)``, then the affine weight and bias when the layer
has them. The AIS maps are then as close to float64 as torch's float32 (3e-6 of their scale).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.onnx import symbolic_helper

__all__ = ["two_pass_instance_norm"]

_OPSET = 17


def _spatial_mean(g, x):
    """The mean over axes 2 and 3 as the mean of the per-row means (two short float32 sums)."""
    rows = g.op("ReduceMean", x, axes_i=[3], keepdims_i=1)  # opset 17: axes as an attribute
    return g.op("ReduceMean", rows, axes_i=[2], keepdims_i=1)


@symbolic_helper.parse_args("v", "v", "v", "v", "v", "b", "f", "f", "b")
def _instance_norm(g, x, weight, bias, running_mean, running_var, use_input_stats, momentum, eps, cudnn_enabled):
    if not use_input_stats:
        raise torch.onnx.errors.SymbolicValueError("instance_norm with running statistics is not supported", x)
    # Shifted by the channel's first value before the sums (its mean is then near 0), two passes.
    first = symbolic_helper._slice_helper(g, x, axes=[2, 3], starts=[0, 0], ends=[1, 1])
    shifted = g.op("Sub", x, first)
    mean = _spatial_mean(g, shifted)
    centred = g.op("Sub", shifted, mean)
    variance = _spatial_mean(g, g.op("Mul", centred, centred))
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
