"""sum_core.propagate: follow an object through slices, stop where it ends, lazy volumes."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from scipy import ndimage

from small_models import small_vit_config
from sum_core import predictor as predictor_module
from sum_core.errors import Cancelled, InvalidInputError
from sum_core.image import to_uint8_rgb
from sum_core.modeling import build_from_config
from sum_core.prediction import Prediction
from sum_core.predictor import Predictor
from sum_core.prompts import prompts_from_mask
from sum_core.propagation import DirectionStop, PropagationInfo, _SliceSegmenter, propagate
from sum_core.sources import Planes, fixed_normalization
from sum_core.tiled_predictor import TiledPredictor
from tiled_fakes import fake_decoder, fake_window_decoder

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
            seen.append((s, None if mask_input is None else np.shape(mask_input)))
        parts, _ = ndimage.label(truth[s])
        points, labels = np.asarray(points), np.asarray(labels)
        r, c = (int(v) for v in points[labels == 1][0])
        mask = parts == parts[r, c] if parts[r, c] else np.zeros_like(truth[s])
        return Prediction(
            masks=mask[None],
            scores=np.array([(scores or {}).get(s, 0.9)], np.float32),
            logits=np.where(mask, 5.0, -5.0).astype(np.float32)[None],
            uncertainties=np.zeros((1, *mask.shape), np.float32),
            low_res_logits=np.zeros((1, 1, 64, 64), np.float32),
        )

    return segment


def slice_decoders(monkeypatch, truth: np.ndarray) -> list[int]:
    """The exact fake decoders (tiled and one-window) on ``truth`` of the slice being segmented;
    returns the slices segmented, in order."""
    visited: list[int] = []
    segment = _SliceSegmenter.segment

    def tracking(self, s, *args):
        visited.append(s)
        return segment(self, s, *args)

    monkeypatch.setattr(_SliceSegmenter, "segment", tracking)
    monkeypatch.setattr(TiledPredictor, "_decode", lambda self, *a: fake_decoder(truth[visited[-1]])(self, *a))
    monkeypatch.setattr(
        predictor_module, "decode_window", lambda *a: fake_window_decoder(truth[visited[-1]])(*a)
    )
    return visited


def test_follows_the_tube_both_ways_and_stops_where_it_ends(model, monkeypatch):
    tube = make_tube()
    seen: list = []
    monkeypatch.setattr(_SliceSegmenter, "segment", fake_segmenter(tube, seen=seen))
    out = propagate(volume_of(tube), 0, 9, {"points": [[30, 29]], "labels": [1]}, model, progress=False)
    assert out.dtype == bool and out.shape == (N, H, W)
    np.testing.assert_array_equal(out, tube)
    visited = sorted(s for s, _ in seen)
    assert visited == list(range(4, 16))  # the two empty slices just outside end each direction
    assert all(shape == (1, 64, 64) for s, shape in seen if s != 9)  # previous low-res logits passed on


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


def test_planes_larger_than_the_encoder_give_full_size_masks_with_one_predictor(monkeypatch):
    """The issue's (4, 1100, 1100) stack (a 1024 model: each slice is tiled): full-size masks, the
    object on exactly its pixels in the far corner, one Predictor for all slices, the previous
    slice's full-size logits as the mask prompt."""
    torch.manual_seed(0)
    model = build_from_config(small_vit_config())
    truth = np.zeros((4, 1100, 1100), bool)
    truth[1:4, 1000:1060, 1020:1090] = True  # slices 1..3
    truth[3, 1000:1060, 1020:1040] = False  # smaller in slice 3 (IoU 5/7)
    volume = (np.random.default_rng(0).normal(100, 10, truth.shape) + 500 * truth).astype(np.uint16)
    visited = slice_decoders(monkeypatch, truth)
    predictors, prompts = set(), []
    set_image, predict = Predictor.set_image, Predictor.predict

    def recording_set_image(self, *args, **kwargs):
        predictors.add(id(self))
        return set_image(self, *args, **kwargs)

    def recording_predict(self, *args, mask_input=None, **kwargs):
        prompts.append(None if mask_input is None else np.shape(mask_input))
        return predict(self, *args, mask_input=mask_input, **kwargs)

    monkeypatch.setattr(Predictor, "set_image", recording_set_image)
    monkeypatch.setattr(Predictor, "predict", recording_predict)
    out = propagate(volume, 0, 2, {"points": [[1030, 1050]]}, model, progress=False)
    assert out.shape == truth.shape and out.dtype == bool
    np.testing.assert_array_equal(out, truth)
    assert visited == [2, 3, 1, 0] and len(predictors) == 1
    assert prompts == [None, (1100, 1100), (1100, 1100), (1100, 1100)]


def test_cancel_stops_the_walk(model, monkeypatch):
    tube = make_tube()
    cancel = threading.Event()
    segment = fake_segmenter(tube)
    visited = []

    def cancelling(self, s, *args):
        visited.append(s)
        if len(visited) == 3:
            cancel.set()
        return segment(self, s, *args)

    monkeypatch.setattr(_SliceSegmenter, "segment", cancelling)
    with pytest.raises(Cancelled):
        propagate(volume_of(tube), 0, 9, tube[9], model, progress=False, cancel=cancel)
    assert visited == [10, 11, 12]


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
    plain = build_from_config(small_vit_config(hq=False).replace(image_size=256))  # "auto": entropy
    assert propagate(volume, 0, 9, tube[9], plain, progress=False).shape == (N, H, W)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((None, 3, np.ones((H, W), bool)), "axis must be the slice axis"),
        ((3, 3, np.ones((H, W), bool)), "out of range"),
        ((0, N, np.ones((H, W), bool)), r"index \(slices along axis 0\) must be an integer in \[0, 20\)"),
        ((0, 3, np.ones((H, 5), bool)), "mask has shape"),
        ((0, 3, np.zeros((H, W), bool)), "the mask is empty"),
        ((0, 3, {"point": [[1, 1]]}), "unknown keys"),
        ((0, 3, {"box": [[0, 0, 5, 5], [1, 1, 9, 9]]}), "propagate follows one object, got 2 boxes"),
        ((0, 3, {"points": [[1, 1]], "labels": [2]}), "labels: must be 1"),
    ],
)
def test_bad_arguments(model, args, message):
    with pytest.raises(InvalidInputError, match=message):
        propagate(np.zeros((N, H, W), np.float32), *args, model=model, progress=False)


def test_prompts_outside_the_slice_and_bad_thresholds(model):
    volume = volume_of(make_tube())
    with pytest.raises(InvalidInputError, match="outside|out of"):
        propagate(volume, 0, 3, {"points": [[500, 5]], "labels": [1]}, model, progress=False)
    with pytest.raises(InvalidInputError, match=r"iou_threshold must lie in \[0.0, 1.0\], got 2"):
        propagate(volume, 0, 3, make_tube()[9], model, iou_threshold=2, progress=False)
    with pytest.raises(InvalidInputError, match="task"):
        propagate(volume, 0, 3, make_tube()[9], "no_such_model", task=5, progress=False)  # before loading
    with pytest.raises(InvalidInputError, match="outside"):
        propagate(volume, 0, 3, {"points": [[500, 5]]}, "no_such_model", progress=False)
    with pytest.raises(InvalidInputError, match="leaves planes of shape"):
        propagate(np.zeros((2, N, H, W), np.float32), 0, 0, np.ones((H, W), bool), model, progress=False)


def test_info_names_the_rule_and_value_that_ended_each_direction(model, monkeypatch):
    tube = make_tube(0, N - 1)
    tube[13, 10:60, 10:70] = True  # up: slice 13 grows around slice 12's disc, IoU = its area / 3000
    monkeypatch.setattr(_SliceSegmenter, "segment", fake_segmenter(tube, scores={6: 0.2}))
    volume = volume_of(tube)
    out, info = propagate(volume, 0, 10, tube[10], model, progress=False, return_info=True)
    np.testing.assert_array_equal(out, propagate(volume, 0, 10, tube[10], model, progress=False))
    assert [s for s in range(N) if out[s].any()] == list(range(7, 13))
    assert info.down == DirectionStop(6, "score", pytest.approx(0.2))
    assert info.up == DirectionStop(13, "iou", pytest.approx(tube[12].sum() / 3000))
    monkeypatch.setattr(_SliceSegmenter, "segment", fake_segmenter(make_tube()))
    _, info = propagate(volume_of(make_tube()), 0, 9, make_tube()[9], model, progress=False, return_info=True)
    assert info == PropagationInfo(DirectionStop(4, "empty_mask"), DirectionStop(15, "empty_mask"))
    whole = make_tube(0, N - 1)
    segment = fake_segmenter(whole)
    monkeypatch.setattr(_SliceSegmenter, "segment", lambda self, s, *a: None if s == 3 else segment(self, s, *a))
    _, info = propagate(volume_of(whole), 0, 2, whole[2], model, progress=False, return_info=True)
    assert info == PropagationInfo(DirectionStop(None, "end"), DirectionStop(3, "constant_slice"))
    _, info = propagate(volume_of(whole), 0, 9, whole[9], model, progress=False, return_info=True)
    assert info.down == DirectionStop(3, "constant_slice")
    assert info.up == DirectionStop(None, "end")


def prompt_recorder(monkeypatch, truth: np.ndarray) -> list[tuple]:
    """Record (slice, point given, box, mask_input given) of every segmented slice after the start."""
    calls: list[tuple] = []
    segment = fake_segmenter(truth)

    def recording(self, s, points, labels, box, mask_input, options):
        calls.append((s, points is not None, None if box is None else tuple(box), mask_input is not None))
        # the fake decoder needs a click: the deepest point of the previous slice's mask
        return segment(self, s, prompts_from_mask(truth[s - 1 if s > 9 else s + 1]).points, [1], box, mask_input, options)

    monkeypatch.setattr(_SliceSegmenter, "segment", recording)
    return calls


@pytest.mark.parametrize(
    ("projection", "point", "box", "mask"),
    [
        ("points_and_mask_and_box", True, True, True),
        ("mask", False, True, True),
        ("points_and_mask", True, False, True),
        ("box", False, True, False),
        ("points", True, False, False),
    ],
)
def test_projection_chooses_the_prompts_passed_on(model, monkeypatch, projection, point, box, mask):
    tube = make_tube()
    calls = prompt_recorder(monkeypatch, tube)
    out = propagate(
        volume_of(tube), 0, 9, {"points": [[30, 29]]}, model, progress=False, projection=projection
    )
    np.testing.assert_array_equal(out, tube)  # the fake decoder follows the click: same result
    assert calls[0] == (9, True, None, False)  # the start slice: the user's prompts
    assert {c[1:2] + (c[2] is not None, c[3]) for c in calls[1:]} == {(point, box, mask)}


def test_box_extension_enlarges_the_projected_box_within_the_plane(model, monkeypatch):
    tube = make_tube()
    calls = prompt_recorder(monkeypatch, tube)
    propagate(volume_of(tube), 0, 9, tube[9], model, progress=False, box_extension=0.25)
    # slice 10 is prompted from slice 9's disc: rows 22..38, cols 21..37 (17 px): 4.25 px more per side
    assert calls[0] == (10, True, (17.75, 16.75, 43.25, 42.25), False)
    edge = np.zeros((N, H, W), bool)
    edge[:, 0:10, 70:80] = True  # at the plane's corner: clipped to it
    calls = prompt_recorder(monkeypatch, edge)
    propagate(volume_of(edge), 0, 9, edge[9], model, progress=False, box_extension=1.0)
    assert calls[0] == (10, True, (0.0, 60.0, 20.0, 80.0), False)


def test_bad_projection_and_box_extension_before_the_model_loads():
    volume = volume_of(make_tube())
    with pytest.raises(InvalidInputError, match=r"projection must be one of .*'mask'.*got 'masks'"):
        propagate(volume, 0, 9, make_tube()[9], "no_such_model", projection="masks", progress=False)
    with pytest.raises(InvalidInputError, match=r"box_extension must lie in \[0.0, 1.0\], got 2"):
        propagate(volume, 0, 9, make_tube()[9], "no_such_model", box_extension=2, progress=False)
    with pytest.raises(InvalidInputError, match="return_info must be True or False"):
        propagate(volume, 0, 9, make_tube()[9], "no_such_model", return_info=1, progress=False)
