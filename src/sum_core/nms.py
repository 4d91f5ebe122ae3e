"""Greedy box non-maximum suppression with torchvision's CPU semantics.

Boxes here are ``(x0, y0, x1, y1)``, the order torchvision and SAM use; the public
(row, col) boxes of :mod:`sum_core.mask_ops` are converted with
:func:`sum_core.mask_ops.boxes_to_xyxy` before calling :func:`nms`.

Semantics (those of ``torchvision.ops.nms`` on the CPU, which SAM's automatic mask
generator relies on):

- scores are sorted descending with a *stable* sort, so ties keep input order;
- box area is ``(x1 - x0) * (y1 - y0)`` with no ``+1``;
- a box is suppressed only if its IoU with a kept box is strictly greater than
  ``iou_threshold`` (an IoU exactly equal to the threshold is kept);
- an IoU of NaN (two degenerate zero-area boxes, or NaN coordinates) never suppresses;
- the kept indices are returned as int64 in descending score order; empty input gives
  an empty result.

When ``torchvision`` is importable and working, :func:`nms` calls it; otherwise it uses
:func:`nms_torch`, which reproduces the same kernel in vectorised torch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch

from .errors import InvalidInputError
from .validation import check_range

__all__ = ["nms", "nms_torch"]

# Rows of the IoU matrix computed at once: memory is _BLOCK x N, not N x N.
_BLOCK = 512


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes kept by greedy non-maximum suppression.

    Parameters
    ----------
    boxes : torch.Tensor
        ``(N, 4)`` boxes ``(x0, y0, x1, y1)``. Non-floating input is converted to float32.
    scores : torch.Tensor
        ``(N,)`` scores; higher is better. Converted to the dtype of ``boxes``.
    iou_threshold : float
        Boxes whose IoU with a kept, higher-scoring box is strictly greater than this
        are discarded. Must lie in [0, 1].

    Returns
    -------
    torch.Tensor
        int64 indices into ``boxes``, in descending score order, on the device of ``boxes``.

    Raises
    ------
    InvalidInputError
        If the shapes do not match or the threshold is outside [0, 1].
    """
    boxes, scores, iou_threshold = _validate(boxes, scores, iou_threshold)
    backend = _torchvision_nms()
    if backend is not None:
        return backend(boxes, scores, iou_threshold)
    return _nms_torch(boxes, scores, iou_threshold)


def nms_torch(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Pure-torch :func:`nms` (same arguments and result), never using torchvision.

    The IoU of each block of higher-scoring boxes against all later boxes is computed in
    one vectorised step (memory ``512 x N``); the greedy pass then runs over the kept
    boxes only, on a boolean matrix on the CPU.
    """
    boxes, scores, iou_threshold = _validate(boxes, scores, iou_threshold)
    return _nms_torch(boxes, scores, iou_threshold)


def _validate(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float
) -> tuple[torch.Tensor, torch.Tensor, float]:
    boxes = torch.as_tensor(boxes)
    scores = torch.as_tensor(scores)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InvalidInputError(f"boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    if scores.ndim != 1 or scores.shape[0] != boxes.shape[0]:
        raise InvalidInputError(
            f"scores must have shape ({boxes.shape[0]},) to match boxes, got {tuple(scores.shape)}"
        )
    threshold = check_range(iou_threshold, "iou_threshold", 0.0, 1.0)
    if not boxes.is_floating_point():
        boxes = boxes.float()
    return boxes, scores.to(device=boxes.device, dtype=boxes.dtype), threshold


@functools.cache
def _torchvision_nms() -> Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] | None:
    """``torchvision.ops.nms`` if it imports *and* runs (a CPU/CUDA build mismatch imports
    but fails on the first call), else None."""
    try:
        from torchvision.ops import nms as tv_nms

        two_equal_boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0]])
        probe = tv_nms(two_equal_boxes, torch.tensor([0.5, 1.0]), 0.5)
        if probe.tolist() != [1]:
            return None
    except Exception:  # noqa: BLE001 - any failure means "not usable"
        return None
    return tv_nms


def _max(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``std::max(a, b)``: ``b`` if ``a < b`` else ``a`` (C++ behaviour with NaN)."""
    return torch.where(a < b, b, a)


def _min(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``std::min(a, b)``: ``b`` if ``b < a`` else ``a`` (C++ behaviour with NaN)."""
    return torch.where(b < a, b, a)


def _overlaps(
    rows: torch.Tensor,
    cols: torch.Tensor,
    row_area: torch.Tensor,
    col_area: torch.Tensor,
    iou_threshold: float,
    has_nan: bool,
) -> torch.Tensor:
    """Boolean ``(len(rows), len(cols))`` matrix of ``IoU > iou_threshold``.

    Without NaN coordinates, ``torch.maximum``/``minimum``/``clamp`` give exactly the
    kernel's values; with NaN, the C++ ``std::max``/``std::min`` selection rules are
    reproduced with ``torch.where`` (slower, hence only then).
    """
    r0, r1, r2, r3 = (rows[:, None, k] for k in range(4))
    c0, c1, c2, c3 = (cols[None, :, k] for k in range(4))
    if has_nan:
        zero = torch.zeros((), dtype=rows.dtype, device=rows.device)
        w = _max(zero, _min(r2, c2) - _max(r0, c0))
        h = _max(zero, _min(r3, c3) - _max(r1, c1))
    else:
        w = (torch.minimum(r2, c2) - torch.maximum(r0, c0)).clamp_(min=0)
        h = (torch.minimum(r3, c3) - torch.maximum(r1, c1)).clamp_(min=0)
    inter = w.mul_(h)
    union = (row_area[:, None] + col_area[None, :]).sub_(inter)
    return inter.div_(union) > iou_threshold


def _nms_torch(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    n = boxes.shape[0]
    device = boxes.device
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    has_nan = bool(torch.isnan(b).any())

    suppressed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        # Rows already suppressed by earlier blocks can never keep or suppress anything.
        live = np.flatnonzero(~suppressed[start:stop]) + start
        if live.size == 0:
            continue
        live_t = torch.as_tensor(live, device=device)
        # IoU of each live box of the block (as the kept box "i") against boxes [start, n).
        over = _overlaps(b[live_t], b[start:], area[live_t], area[start:], iou_threshold, has_nan)
        over = over.cpu().numpy()
        for row, k in enumerate(live):
            if suppressed[k]:
                continue
            keep.append(int(k))
            suppressed[start:] |= over[row]
    kept = torch.as_tensor(keep, dtype=torch.int64, device=device)
    return order[kept]
