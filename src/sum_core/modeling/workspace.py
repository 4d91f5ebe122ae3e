"""Scratch tensors reused across the blocks of one encoder forward on the CPU.

Every ViT block needs the same large transients (qkv projections, per-head layout,
the relative-position bias, the MLP hidden layer: 40-200 MB each at ViT-B). glibc
serves allocations above 32 MB with a fresh ``mmap`` and returns them on free, so
each block paid about 60-80 thousand page faults (≈ 0.1-0.25 s of system time per
block on a 2-core machine). A :class:`Workspace` allocates each named buffer once
per forward and hands out views of it.
"""

from __future__ import annotations

import math

import torch


class Workspace:
    """Named, grow-only scratch buffers.

    A buffer handed out by :meth:`take` stays valid until the next :meth:`take` of
    the same name; callers must be done with it by then.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised contiguous tensor of ``shape``, with ``like``'s dtype and device.

        Parameters
        ----------
        name : str
            Which buffer; one name per use site.
        shape : tuple of int
            Shape of the returned view.
        like : torch.Tensor
            Gives the dtype and device.
        """
        numel = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < numel or buffer.dtype != like.dtype or buffer.device != like.device:
            buffer = like.new_empty(numel)
            self._buffers[name] = buffer
        return buffer[:numel].view(shape)


def workspace_for(x: torch.Tensor) -> Workspace | None:
    """A :class:`Workspace` for a forward on ``x``, or None where buffers must not be reused.

    Reuse needs plain float eager inference on the CPU: no autograd (``out=`` ops are
    not differentiable), no autocast (``out=`` ops are not autocast), not inside
    ``torch.compile`` or ONNX tracing (they plan memory themselves), and CUDA's caching
    allocator already reuses memory.
    """
    if x.device.type != "cpu" or torch.is_grad_enabled():
        return None
    if torch.is_autocast_enabled("cpu") or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return None  # tracing (ONNX export) records ops, not buffers
    return Workspace()
