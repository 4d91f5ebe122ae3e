"""sum_core.nms against a brute-force transcription of torchvision's CPU kernel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sum_core.errors import InvalidInputError
from sum_core.nms import nms, nms_torch


def reference_nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    """torchvision's nms_kernel_impl transcribed: a loop over i in score order, each
    step comparing box i with every later box (float32, C++ std::max/std::min)."""
    boxes = boxes.astype(np.float32)
    thr = np.float32(thr)
    order = sorted(range(len(scores)), key=lambda k: -scores[k])  # Python sort is stable
    b = boxes[order]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])

    def cmax(a, c):  # std::max(a, c)
        return np.where(a < c, c, a)

    def cmin(a, c):  # std::min(a, c)
        return np.where(c < a, c, a)

    suppressed = np.zeros(len(b), dtype=bool)
    keep = []
    for i in range(len(b)):
        if suppressed[i]:
            continue
        keep.append(order[i])
        j = slice(i + 1, None)
        w = cmax(np.float32(0), cmin(b[i, 2], b[j, 2]) - cmax(b[i, 0], b[j, 0]))
        h = cmax(np.float32(0), cmin(b[i, 3], b[j, 3]) - cmax(b[i, 1], b[j, 1]))
        inter = w * h
        with np.errstate(invalid="ignore", divide="ignore"):
            ovr = inter / (area[i] + area[j] - inter)
        suppressed[j] |= ovr > thr
    return keep


def random_boxes(rng: np.random.Generator, n: int, extent: float = 100.0) -> np.ndarray:
    xy = rng.uniform(0, extent, size=(n, 2))
    wh = rng.uniform(0, extent / 3, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("thr", [0.0, 0.3, 0.7])
def test_matches_reference_on_random_boxes(seed: int, thr: float) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    boxes = random_boxes(rng, n)
    scores = rng.uniform(size=n).astype(np.float32)
    got = nms_torch(torch.from_numpy(boxes), torch.from_numpy(scores), thr)
    assert got.dtype == torch.int64
    assert got.tolist() == reference_nms(boxes, scores, thr)


@pytest.mark.parametrize("seed", range(3))
def test_matches_reference_with_nan_and_degenerate_boxes(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    boxes = random_boxes(rng, 200, extent=50.0)
    boxes[rng.choice(200, 10, replace=False), rng.integers(0, 4, size=10)] = np.nan
    flat = rng.choice(200, 20, replace=False)
    boxes[flat, 2] = boxes[flat, 0]  # zero width
    scores = rng.integers(0, 5, size=200).astype(np.float32)
    got = nms_torch(torch.from_numpy(boxes), torch.from_numpy(scores), 0.4)
    assert got.tolist() == reference_nms(boxes, scores, 0.4)


def test_many_boxes_cross_block_boundaries() -> None:
    # More than one 512-row block, heavily overlapping so suppression crosses blocks.
    rng = np.random.default_rng(7)
    boxes = random_boxes(rng, 1300, extent=60.0)
    scores = rng.integers(0, 20, size=1300).astype(np.float32)  # many ties
    got = nms_torch(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5)
    assert got.tolist() == reference_nms(boxes, scores, 0.5)


def test_ties_keep_input_order() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60], [50, 50, 60, 60.0]])
    scores = torch.tensor([1.0, 1.0, 1.0, 1.0])
    assert nms_torch(boxes, scores, 0.5).tolist() == [0, 2]
    # Output is in descending score order, not index order.
    assert nms_torch(boxes, torch.tensor([0.1, 0.2, 0.9, 0.3]), 0.5).tolist() == [2, 1]


def test_iou_equal_to_threshold_is_kept() -> None:
    # IoU of [0,0,2,1] and [1,0,3,1] is 1 / 3 exactly in the kernel's arithmetic.
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [1.0, 0.0, 3.0, 1.0]])
    scores = torch.tensor([0.9, 0.8])
    iou = torch.tensor(1.0) / torch.tensor(3.0)
    assert nms_torch(boxes, scores, float(iou)).tolist() == [0, 1]
    assert nms_torch(boxes, scores, float(iou) - 1e-6).tolist() == [0]


def test_degenerate_and_nan_boxes_never_suppressed() -> None:
    boxes = torch.tensor(
        [
            [5.0, 5.0, 5.0, 5.0],  # zero area (a one-pixel mask's inclusive box)
            [5.0, 5.0, 5.0, 5.0],  # identical: IoU 0/0 = NaN -> kept
            [0.0, 0.0, 10.0, 10.0],
            [float("nan"), 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 10.0],  # duplicate of 2 -> suppressed
        ]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    got = nms_torch(boxes, scores, 0.5).tolist()
    assert got == [0, 1, 2, 3]
    assert got == reference_nms(boxes.numpy(), scores.numpy(), 0.5)


def test_empty_input() -> None:
    got = nms_torch(torch.zeros((0, 4)), torch.zeros(0), 0.5)
    assert got.dtype == torch.int64 and got.shape == (0,)


def test_integer_boxes_and_dispatcher() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]])
    scores = torch.tensor([0.5, 0.9, 0.1])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms_torch(boxes, scores, 0.5).tolist() == [1, 2]


@pytest.mark.parametrize(
    ("boxes", "scores", "thr", "match"),
    [
        (torch.zeros((3, 5)), torch.zeros(3), 0.5, r"boxes must have shape \(N, 4\), got \(3, 5\)"),
        (torch.zeros((3, 4)), torch.zeros(2), 0.5, r"scores must have shape \(3,\)"),
        (torch.zeros((3, 4)), torch.zeros(3), 1.5, "iou_threshold must lie in"),
        (torch.zeros((3, 4)), torch.zeros(3), float("nan"), "iou_threshold must lie in"),
    ],
)
def test_validation(boxes, scores, thr, match) -> None:
    with pytest.raises(InvalidInputError, match=match):
        nms(boxes, scores, thr)
