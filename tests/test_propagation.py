"""sum_core.propagate: follow an object through slices, stop where it ends, lazy volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from small_models import small_vit_config
from sum_core.errors import InvalidInputError
from sum_core.modeling import build_from_config
from sum_core.predictor import Prediction, Predictor
from sum_core.propagation import _SliceSegmenter, propagate
from sum_core.sources import Planes, fixed_normalization, to_uint8_rgb

N, H, W = 20, 64, 80


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_from_config(small_vit_config().replace(image_size=256))


def make_tube(first: int = 5, last: int = 14) -> np.ndarray:
    """A disc drifting right by 1 px per slice, present in slices first..last."""
    z, r, c = np.ogrid[:N, :H, :W]
    tube = (r - 30) ** 2 + (c - 20 - z) ** 2 <= 8**2
    tube[:first] = tube[last + 1 :] = False
    return tube


def volume_of(tube: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.normal(0.2, 0.05, tube.shape) + tube).astype(np.float32)


def fake_segmenter(truth: np.ndarray, scores: dict | None = None, seen: list | None = None):
    """Returns the part of ``truth[s]`` under the positive click (exact), score 0.9 by default."""

    def segment(self, s, points, labels, box, mask_input, options):
        if seen is not None:
            seen.append((s, mask_input is not None))
        parts, _ = ndimage.label(truth[s])
        points, labels = np.asarray(points), np.asarray(labels)
        r, c = (int(v) for v in points[labels == 1][0])
        mask = parts == parts[r, c] if parts[r, c] else np.zeros_like(truth[s])
        low = np.zeros((1, 64, 64), np.float32)
        score = (scores or {}).get(s, 0.9)
        return Prediction(mask, score, np.where(mask, 5.0, -5.0), low, np.zeros(mask.shape, np.float32))

    return segment


def test_follows_the_tube_both_ways_and_stops_where_it_ends(model, monkeypatch):
    tube = make_tube()
    seen: list = []
    monkeypatch.setattr(_SliceSegmenter, "segment", fake_segmenter(tube, seen=seen))
    out = propagate(volume_of(tube), 0, 9, {"points": [[30, 29]], "labels": [1]}, model, progress=False)
    assert out.dtype == bool and out.shape == (N, H, W)
    np.testing.assert_array_equal(out, tube)
    visited = sorted(s for s, _ in seen)
    assert visited == list(range(4, 16))  # the two empty slices just outside end each direction
    assert all(has_mask for s, has_mask in seen if s != 9)  # previous logits passed on


def test_start_from_a_mask_along_another_axis(model, monkeypatch):
    tube = make_tube(2, 17)
    monkeypatch.setattr(_SliceSegmenter, "segment", fake_segmenter(tube))
    moved = np.moveaxis(volume_of(tube), 0, 2)  # (H, W, N): slices along axis 2
    out = propagate(moved, 2, 10, tube[10], model, progress=False)
    assert out.shape == (H, W, N)
    np.testing.assert_array_equal(np.moveaxis(out, 2, 0), tube)


def test_low_score_and_low_overlap_stop_the_walk(model, monkeypatch):
    tube = make_tube(0, N - 1)
    tube[13:] = np.roll(tube[13:], 20, axis=2)  # the object jumps: IoU with slice 12 is 0
    monkeypatch.setattr(_SliceSegmenter, "segment", fake_segmenter(tube, scores={6: 0.2}))
    out = propagate(volume_of(tube), 0, 10, tube[10], model, progress=False)
    assert [s for s in range(N) if out[s].any()] == list(range(7, 13))


def test_reads_one_slice_at_a_time_from_lazy_volumes(model, monkeypatch):
    tube = make_tube()

    class Counting:
        def __init__(self, array):
            self.array, self.shape, self.dtype, self.reads = array, array.shape, array.dtype, []

        def __getitem__(self, index):
            out = np.asarray(self.array[index])
            self.reads.append(out.size)
            return out

    volume = Counting(volume_of(tube))
    monkeypatch.setattr(_SliceSegmenter, "segment", fake_segmenter(tube))
    propagate(volume, 0, 9, tube[9], model, progress=False)
    assert max(volume.reads) == H * W


def test_real_model_smoke(model):
    tube = make_tube()
    volume = volume_of(tube)
    prompts = {"points": [[30, 29]], "labels": [1]}
    out = propagate(volume, 0, 9, prompts, model, score_threshold=0.0, iou_threshold=0.0, progress=False)
    assert out.shape == (N, H, W) and out.dtype == bool
    norm = fixed_normalization(Planes(volume, stack_axis=0))
    predictor = Predictor(model)
    predictor.set_image(to_uint8_rgb(volume[9], norm))
    np.testing.assert_array_equal(out[9], predictor.predict(points=[[30, 29]], labels=[1]).mask)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((None, 3, np.ones((H, W), bool)), "axis must be the slice axis"),
        ((3, 3, np.ones((H, W), bool)), "out of range"),
        ((0, N, np.ones((H, W), bool)), r"index must be an int in \[0, 20\)"),
        ((0, 3, np.ones((H, 5), bool)), "mask has shape"),
        ((0, 3, np.zeros((H, W), bool)), "the mask is empty"),
        ((0, 3, {"point": [[1, 1]]}), "unknown keys"),
    ],
)
def test_bad_arguments(model, args, message):
    with pytest.raises(InvalidInputError, match=message):
        propagate(np.zeros((N, H, W), np.float32), *args, model=model, progress=False)


def test_prompts_outside_the_slice_and_bad_thresholds(model):
    volume = volume_of(make_tube())
    with pytest.raises(InvalidInputError, match="outside|out of"):
        propagate(volume, 0, 3, {"points": [[500, 5]], "labels": [1]}, model, progress=False)
    with pytest.raises(InvalidInputError, match="iou_threshold must be a number in"):
        propagate(volume, 0, 3, make_tube()[9], model, iou_threshold=2, progress=False)
    with pytest.raises(InvalidInputError, match="leaves planes of shape"):
        propagate(np.zeros((2, N, H, W), np.float32), 0, 0, np.ones((H, W), bool), model, progress=False)
