"""Tests of sum_core.automatic: real-model plumbing, and the filter/NMS/tiling logic with a fake decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from sum_core import automatic
from sum_core.automatic import MaskRecord, auto_segment, generate_masks
from sum_core.predictor import DecodedMasks
from sum_core.errors import InvalidInputError
from sum_core.image import prepare_image, preprocess_shape
from sum_core.modeling import build_from_config
from sum_core.predictor import Predictor
from sum_core.uncertainty import bernoulli_entropy

from small_models import small_vit_config


@pytest.fixture(scope="module")
def hq_model():
    torch.manual_seed(0)
    return build_from_config(small_vit_config(hq=True))


@pytest.fixture(scope="module")
def hq_predictor(hq_model):
    predictor = Predictor(hq_model, device="cpu")
    image = (np.random.default_rng(0).random((60, 80)) * 255).astype(np.uint8)
    predictor.set_image(image)
    return predictor


@pytest.fixture
def cached_decoder(monkeypatch):
    """The real decode_points, memoised per batch of points (for threshold sweeps)."""
    real = automatic.decode_points
    cache: dict[bytes, DecodedMasks] = {}

    def decode(predictor, points, multimask=True, hq_token_only=False, task=None):
        key = np.asarray(points).tobytes() + bytes([multimask, hq_token_only])
        if key not in cache:
            cache[key] = real(predictor, points, multimask, hq_token_only, task)
        return cache[key]

    monkeypatch.setattr(automatic, "decode_points", decode)
    return cache


# -- (a) real model calls -----------------------------------------------------------------------


def test_records_with_real_model_match_single_prompt_predictions(hq_predictor):
    records = generate_masks(hq_predictor, points_per_side=2, pred_iou_thresh=0, stability_thresh=0)
    assert 1 <= len(records) <= 4
    scores = [rec.score for rec in records]
    assert scores == sorted(scores, reverse=True)
    for rec in records:
        assert isinstance(rec, MaskRecord)
        assert rec.mask.shape == rec.logits.shape == rec.uncertainty.shape == (60, 80)
        assert rec.mask.dtype == bool
        assert rec.logits.dtype == rec.uncertainty.dtype == np.float32
        assert 0.0 <= rec.uncertainty.min() and rec.uncertainty.max() <= 1.0
        np.testing.assert_array_equal(rec.mask, rec.logits > 0)
        assert rec.area == int(rec.mask.sum()) > 0
        rows, cols = np.nonzero(rec.mask)
        assert rec.box == (rows.min(), cols.min(), rows.max(), cols.max())
        assert rec.point in {(15.0, 20.0), (15.0, 60.0), (45.0, 20.0), (45.0, 60.0)}
        # A batched single click gives what the predictor gives for that click alone.
        pred = hq_predictor.predict(points=[rec.point], labels=[1], multimask=True)
        assert rec.score == pytest.approx(pred.score, abs=1e-5)
        np.testing.assert_allclose(rec.logits, pred.logits, atol=1e-3)
        np.testing.assert_allclose(rec.uncertainty, pred.uncertainty, atol=1e-4)


def test_raising_pred_iou_thresh_never_adds_masks(hq_predictor, cached_decoder):
    base = generate_masks(
        hq_predictor, points_per_side=3, pred_iou_thresh=0, stability_thresh=0, box_nms_thresh=1.0
    )
    assert len(base) == 9  # no filter, no suppression: one mask per click
    scores = sorted({rec.score for rec in base})
    previous = {(rec.point, rec.score) for rec in base}
    for thresh in [max(s, 0.0) for s in scores]:
        kept = generate_masks(hq_predictor, points_per_side=3, pred_iou_thresh=thresh, stability_thresh=0)
        found = {(rec.point, rec.score) for rec in kept}
        assert found <= previous
        assert all(score > thresh for _, score in found)
        previous = found
    assert previous == set()  # nothing is strictly above the highest score
    assert len(cached_decoder) == 1  # the sweep reused the one real batch of 9 clicks


def test_plain_sam_keeps_three_masks_per_click_with_entropy():
    torch.manual_seed(1)
    predictor = Predictor(build_from_config(small_vit_config(hq=False)), device="cpu")
    predictor.set_image((np.random.default_rng(3).random((40, 50, 3)) * 255).astype(np.uint8))
    records = generate_masks(
        predictor, points_per_side=1, pred_iou_thresh=0, stability_thresh=0, box_nms_thresh=1.0
    )
    assert len(records) == 3
    assert all(rec.point == (20.0, 25.0) for rec in records)
    for rec in records:
        expected = bernoulli_entropy(torch.from_numpy(rec.logits)).numpy()
        np.testing.assert_allclose(rec.uncertainty, expected, atol=1e-6)


def test_auto_segment_with_real_model_returns_labels_and_uncertainty(hq_model):
    image = (np.random.default_rng(2).random((48, 64)) * 255).astype(np.uint8)
    labels, uncertainty = auto_segment(
        image,
        points_per_side=2,
        pred_iou_thresh=0,
        stability_thresh=0,
        model=hq_model,
        device="cpu",
        progress=False,
    )
    assert labels.shape == uncertainty.shape == (48, 64)
    assert labels.dtype == np.uint32 and uncertainty.dtype == np.float32
    ids = np.unique(labels[labels > 0])
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))
    assert len(ids) >= 1
    assert 0.0 <= uncertainty.min() and uncertainty.max() <= 1.0


# -- (b) logic with a fake decoder on synthetic blobs -----------------------------------------------


class _ImagePredictor(Predictor):
    """Keeps the window it is given instead of encoding it (the fake decoder reads it)."""

    def set_image(self, image, normalization=None):
        self.image = prepare_image(image, normalization)
        h, w = self.image.shape[:2]
        self._embedding = torch.zeros(1)
        self._original_size = (h, w)
        self._input_size = preprocess_shape(h, w, self.model.config.image_size)


def _fake_decode(predictor, points, multimask=True, hq_token_only=False, task=None):
    """Logits whose upscaled sign is the connected blob (or background) under each click.

    A signed distance to the component's border is sampled at the low-res pixel centres
    mapped to the image, so the real upscaling (postprocess_masks) reproduces the component.
    """
    foreground = predictor.image[..., 0] > 127
    blobs, _ = ndimage.label(foreground)
    background, _ = ndimage.label(~foreground)
    config = predictor.model.config
    size, low = config.image_size, config.low_res_size
    (h, w), (h_in, w_in) = predictor._original_size, predictor._input_size
    centres = (np.arange(low) + 0.5) * size / low
    grid = np.meshgrid(centres * h / h_in - 0.5, centres * w / w_in - 0.5, indexing="ij")
    by_component: dict[tuple[bool, int], np.ndarray] = {}
    logits = []
    for row, col in points:
        r, c = min(int(row), h - 1), min(int(col), w - 1)
        key = (bool(foreground[r, c]), int(blobs[r, c] if foreground[r, c] else background[r, c]))
        if key not in by_component:
            comp = (blobs if key[0] else background) == key[1]
            sdf = ndimage.distance_transform_edt(comp) - ndimage.distance_transform_edt(~comp)
            by_component[key] = 20.0 * ndimage.map_coordinates(sdf, grid, order=1, mode="nearest")
        logits.append(by_component[key])
    logits = torch.tensor(np.stack(logits)[:, None], dtype=torch.float32)
    iou = torch.full((len(points), 1), 0.95)
    return DecodedMasks(logits, iou, logits, 0.9 * logits)


@pytest.fixture
def fake(monkeypatch, hq_model):
    monkeypatch.setattr(automatic, "decode_points", _fake_decode)
    monkeypatch.setattr(automatic, "Predictor", _ImagePredictor)
    return _ImagePredictor(hq_model, device="cpu")


def _disks(shape, centres, radius):
    rows, cols = np.indices(shape)
    truth = np.zeros(shape, dtype=np.int32)
    for i, (r, c) in enumerate(centres, start=1):
        truth[(rows - r) ** 2 + (cols - c) ** 2 < radius**2] = i
    return truth


def _image(truth):
    return np.where(truth > 0, 200, 20).astype(np.uint8)


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def _assert_one_label_per_blob(labels, truth):
    assert len(np.unique(labels[labels > 0])) == truth.max()
    for i in range(1, truth.max() + 1):
        ids, counts = np.unique(labels[truth == i], return_counts=True)
        best = ids[np.argmax(counts)]
        assert best > 0
        assert _iou(labels == best, truth == i) > 0.95, f"blob {i}"


BLOBS = [(40, 40), (40, 200), (128, 110), (210, 60), (200, 200)]


def test_each_blob_found_exactly_once(fake):
    truth = _disks((256, 256), BLOBS, 16)
    fake.set_image(_image(truth))
    records = generate_masks(fake, points_per_side=12, max_area_fraction=0.5)
    assert len(records) == len(BLOBS)
    matched = set()
    for rec in records:
        blob = np.bincount(truth[rec.mask]).argmax()
        assert blob > 0 and _iou(rec.mask, truth == blob) > 0.95
        matched.add(blob)
    assert matched == set(range(1, len(BLOBS) + 1))


def test_max_area_fraction_drops_the_background_mask(fake):
    truth = _disks((256, 256), BLOBS, 16)
    fake.set_image(_image(truth))
    with_background = generate_masks(fake, points_per_side=12, max_area_fraction=1.0)
    assert len(with_background) == len(BLOBS) + 1
    assert any(_iou(rec.mask, truth == 0) > 0.95 for rec in with_background)


def test_nms_removes_duplicate_masks(fake):
    truth = _disks((256, 256), BLOBS, 16)
    fake.set_image(_image(truth))
    everything = generate_masks(fake, points_per_side=12, max_area_fraction=0.5, box_nms_thresh=1.0)
    on_blobs = sum(truth[int(r), int(c)] > 0 for r, c in automatic.point_grid(12) * 256)
    assert len(everything) == on_blobs > len(BLOBS)  # one (duplicate) mask per click on a blob
    assert len(generate_masks(fake, points_per_side=12, max_area_fraction=0.5)) == len(BLOBS)


def test_min_area_fills_small_holes(fake):
    truth = _disks((256, 256), [(128, 128)], 50)
    holed = truth.copy()
    holed[140:144, 126:130] = 0  # a 16-pixel hole, away from the clicks
    fake.set_image(_image(holed))
    plain = generate_masks(fake, points_per_side=4, max_area_fraction=0.5)
    cleaned = generate_masks(fake, points_per_side=4, max_area_fraction=0.5, min_area=50)
    assert len(plain) == len(cleaned) == 1
    assert not plain[0].mask[141, 127] and cleaned[0].mask[141, 127]
    assert cleaned[0].area == plain[0].area + 16 == int(cleaned[0].mask.sum())


def test_untiled_auto_segment_labels_each_blob_once(fake, hq_model):
    truth = _disks((256, 256), BLOBS, 16)
    labels, uncertainty = auto_segment(
        _image(truth), points_per_side=12, model=hq_model, progress=False, max_area_fraction=0.5
    )
    _assert_one_label_per_blob(labels, truth)
    assert uncertainty.max() > 0 and uncertainty[truth == 0].min() == 0
    # uncertainty is only painted near kept masks (box grown by 4 px)
    assert uncertainty[:20, 100:160].max() == 0


def test_tiled_auto_segment_keeps_blobs_across_seams_whole_and_once(fake, hq_model):
    # 2 x 2 tiles of 128 px with a 48 px halo; blobs on the seams, the corner and inside tiles.
    # The blob at (40, 165) is seen cut (cols 145..175) by the window of tile 0 (cols 0..175).
    centres = [(128, 128), (40, 165), (128, 215), (200, 45), (40, 40), (215, 215)]
    truth = _disks((256, 256), centres, 20)
    labels, uncertainty = auto_segment(
        _image(truth),
        points_per_side=8,
        tile_shape=128,
        halo=48,
        model=hq_model,
        progress=False,
        max_area_fraction=0.5,
    )
    assert labels.dtype == np.uint32 and uncertainty.dtype == np.float32
    _assert_one_label_per_blob(labels, truth)


def test_tiled_never_keeps_a_window_cut_piece(fake, hq_model):
    # A blob (60 px across) on the seam at col 128 with a 10 px halo is cut by both windows
    # (cols [0, 138) and [118, 256)): the pieces are dropped, so the blob is lost (documented:
    # the halo must exceed the objects), while a blob inside one tile is kept.
    truth = _disks((128, 256), [(64, 128), (64, 210)], 30)
    labels, _ = auto_segment(
        _image(truth), points_per_side=8, tile_shape=128, halo=10, model=hq_model, progress=False,
        max_area_fraction=0.5,
    )
    assert labels.max() == 1
    assert _iou(labels == 1, truth == 2) > 0.95
    # with a halo holding the seam blob 20 px (SAM's crop-edge distance) inside both windows,
    # both blobs are found
    labels, _ = auto_segment(
        _image(truth), points_per_side=8, tile_shape=128, halo=64, model=hq_model, progress=False,
        max_area_fraction=0.5,
    )
    _assert_one_label_per_blob(labels, truth)


# -- argument checks ---------------------------------------------------------------------------


def test_generate_masks_needs_an_image(hq_model):
    with pytest.raises(InvalidInputError, match="no image is set"):
        generate_masks(Predictor(hq_model, device="cpu"))


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("points_per_side", 0, "points_per_side must be >= 1"),
        ("points_per_batch", 0, "points_per_batch must be an integer >= 1"),
        ("pred_iou_thresh", 1.5, r"pred_iou_thresh must lie in \[0.0, 1.0\]"),
        ("stability_thresh", -0.1, "stability_thresh must lie"),
        ("box_nms_thresh", "high", "box_nms_thresh must be a number"),
        ("min_area", -1, "min_area must be an integer >= 0"),
        ("max_area_fraction", 0.0, "max_area_fraction must be > 0"),
        ("task", 5, "task=5 is not valid"),
    ],
)
def test_generate_masks_rejects_bad_options(fake, option, value, message):
    fake.set_image(np.arange(32 * 32, dtype=np.uint16).reshape(32, 32))
    with pytest.raises(InvalidInputError, match=message):
        generate_masks(fake, **{option: value})


def test_auto_segment_rejects_bad_arguments_before_loading(monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("model loaded before validation")

    monkeypatch.setattr(automatic, "_resolve_model", no_load)
    image = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32)
    with pytest.raises(InvalidInputError, match=r"unknown option\(s\) \['points'\]"):
        auto_segment(image, points=3)
    with pytest.raises(InvalidInputError, match="halo was given without tile_shape"):
        auto_segment(image, halo=16)
    with pytest.raises(InvalidInputError):
        auto_segment(np.zeros((4, 4, 7)))
