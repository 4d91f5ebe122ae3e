"""Tests of sum_core.automatic: real-model plumbing, and the filter/NMS/tiling logic with an exact
fake encoder/decoder (objects drawn on an 8-px block grid are decoded and upscaled exactly)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from scipy import ndimage

from sum_core import automatic
from sum_core import uncertainty as unc
from sum_core.auto_options import AutoOptions
from sum_core.automatic import MaskRecord, auto_segment, generate_masks
from sum_core.encoding import encode_image
from sum_core.errors import Cancelled, InvalidInputError
from sum_core.image import prepare_image, preprocess_shape
from sum_core.mask_ops import point_grid
from sum_core.modeling import DecodedMasks, ImageEmbedding, build_from_config
from sum_core.predictor import Predictor
from sum_core.tiling import TileGrid, tile_grid
from sum_core.uncertainty import bernoulli_entropy

from small_models import small_vit_config
from tiled_fakes import EncoderCounter
from test_tiled_predictor import tiny_model

#: Side of the blocks the exact fake decodes at (its "low resolution"): objects drawn on this
#: grid, in windows whose origins lie on it, are decoded and upscaled without any error.
BLOCK = 8
#: Logits of the fake: SAM token +-8, HQ token +-4 (their disagreement is the uncertainty).
FAKE_LOGIT = 8.0
#: The fake's uncertainty on its mask pixels and off them (float32 rounds the two apart).
FAKE_UNCERTAINTY_IN, FAKE_UNCERTAINTY_OUT = (
    unc.disagreement(torch.tensor([FAKE_LOGIT, -FAKE_LOGIT]), torch.tensor([FAKE_LOGIT / 2, -FAKE_LOGIT / 2])).numpy()
)


@pytest.fixture(scope="module")
def hq_model():
    torch.manual_seed(0)
    return build_from_config(small_vit_config(hq=True))


# -- the exact fake --------------------------------------------------------------------------------


def exact_encode(model, image, precision="fp32") -> ImageEmbedding:
    """Stands in for ``encode_image``: the window's first channel is its 'embedding'."""
    h, w = image.shape[:2]
    pixels = torch.from_numpy(np.ascontiguousarray(image[..., 0]))[None, None]
    return ImageEmbedding(pixels, None, None, preprocess_shape(h, w, model.config.image_size), (h, w))


def exact_decode(model, embedding, points, options) -> DecodedMasks:
    """Stands in for ``decode_points``: per click, the connected part (object or background)
    of the window's 8-px blocks under it, at block resolution; logits +-8 (HQ token +-4)."""
    window = embedding.embedding[0, 0].numpy()
    blocks = window[BLOCK // 2 :: BLOCK, BLOCK // 2 :: BLOCK] > 127
    objects, _ = ndimage.label(blocks)
    background, _ = ndimage.label(~blocks)
    parts = np.where(blocks, objects, -background)
    rows = np.minimum(points[:, 0].astype(int) // BLOCK, blocks.shape[0] - 1)
    cols = np.minimum(points[:, 1].astype(int) // BLOCK, blocks.shape[1] - 1)
    masks = parts[None] == parts[rows, cols][:, None, None]
    logits = torch.from_numpy(np.where(masks, FAKE_LOGIT, -FAKE_LOGIT).astype(np.float32))[:, None]
    return DecodedMasks(logits, torch.full((len(points), 1), 0.95), logits, logits / 2)


def exact_upscale(model, embedding, low_res):
    """Stands in for ``decoding.upscale``: each block to its 8 x 8 pixels."""
    h, w = embedding.original_size
    return low_res.repeat_interleave(BLOCK, -2).repeat_interleave(BLOCK, -1)[..., :h, :w]


def install_exact_fake(monkeypatch) -> list[tuple[int, int]]:
    """Patch the fake into ``sum_core.automatic`` (every AMG window is encoded there, batch jobs'
    too: ``automatic.window_masks``); returns the list of encoded window shapes."""
    encoded: list[tuple[int, int]] = []

    def encode(model, image, precision="fp32"):
        encoded.append(image.shape[:2])
        return exact_encode(model, image, precision)

    monkeypatch.setattr(automatic, "encode_image", encode)
    monkeypatch.setattr(automatic, "decode_points", exact_decode)
    monkeypatch.setattr(automatic, "upscale", exact_upscale)
    return encoded


@pytest.fixture
def exact(monkeypatch):
    return install_exact_fake(monkeypatch)


def block_discs(shape, centres, radius: float = 3.5) -> np.ndarray:
    """int32 truth: disc ``i`` (1-based) of ``radius`` blocks around each (row, col) pixel centre,
    drawn on the 8-px block grid."""
    rows, cols = np.indices((shape[0] // BLOCK, shape[1] // BLOCK))
    truth = np.zeros(rows.shape, dtype=np.int32)
    for i, (r, c) in enumerate(centres, start=1):
        truth[(rows - r // BLOCK) ** 2 + (cols - c // BLOCK) ** 2 < radius**2] = i
    return np.kron(truth, np.ones((BLOCK, BLOCK), dtype=np.int32))


def to_image(truth, dtype=np.uint8) -> np.ndarray:
    high, low = (200, 20) if dtype == np.uint8 else (30000, 1000)
    return np.where(truth > 0, high, low).astype(dtype)


def assert_labels_are_truth(labels, truth):
    """Exactly one label per object, on exactly its pixels; ids 1..N."""
    assert labels.dtype == np.uint32
    ids = np.unique(labels[labels > 0])
    np.testing.assert_array_equal(ids, np.arange(1, truth.max() + 1))
    pairs = np.unique(np.stack([labels.ravel(), truth.ravel()]), axis=1)
    assert pairs.shape[1] == truth.max() + 1, "an object split, merged or misplaced"
    np.testing.assert_array_equal(labels > 0, truth > 0)


def fake_uncertainty(mask) -> np.ndarray:
    return np.where(mask, FAKE_UNCERTAINTY_IN, FAKE_UNCERTAINTY_OUT)


def expected_uncertainty(truth) -> np.ndarray:
    """The fake's uncertainty on every object's box grown by 4 px (clipped to the image)."""
    out = np.zeros(truth.shape, dtype=np.float32)
    for box in ndimage.find_objects(truth):
        grown = tuple(slice(max(s.start - 4, 0), s.stop + 4) for s in box)
        out[grown] = fake_uncertainty(truth[grown] > 0)
    return out


BLOBS = [(40, 40), (40, 200), (128, 110), (210, 60), (200, 200)]


# -- (a) real model calls -----------------------------------------------------------------------


def test_records_with_real_model_match_single_prompt_predictions(hq_model):
    image = (np.random.default_rng(0).random((60, 80)) * 255).astype(np.uint8)
    embedding = encode_image(hq_model, prepare_image(image))
    records = generate_masks(hq_model, embedding, AutoOptions(points_per_side=2, pred_iou_thresh=0, stability_thresh=0))
    assert 1 <= len(records) <= 4
    scores = [rec.score for rec in records]
    assert scores == sorted(scores, reverse=True)
    predictor = Predictor(hq_model, device="cpu")
    predictor.set_image(image)
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
        # A batched single click gives what the predictor gives for that click alone
        # (float32 decoders batched differently: 1e-5 on scores, 1e-3 on logits of magnitude ~10).
        pred = predictor.predict(points=[rec.point], multimask=True)
        assert rec.score == pytest.approx(pred.score, abs=1e-5)
        np.testing.assert_allclose(rec.logits, pred.logits[0], atol=1e-3)
        np.testing.assert_allclose(rec.uncertainty, pred.uncertainty, atol=1e-4)


def test_raising_pred_iou_thresh_never_adds_masks(hq_model, monkeypatch):
    real = automatic.decode_points
    cache: dict[bytes, DecodedMasks] = {}

    def decode(model, embedding, points, options):  # the real decoder, memoised per batch
        key = np.asarray(points).tobytes()
        if key not in cache:
            cache[key] = real(model, embedding, points, options)
        return cache[key]

    monkeypatch.setattr(automatic, "decode_points", decode)
    image = (np.random.default_rng(0).random((60, 80)) * 255).astype(np.uint8)
    embedding = encode_image(hq_model, prepare_image(image))
    base_options = AutoOptions(points_per_side=3, pred_iou_thresh=0, stability_thresh=0)
    base = generate_masks(hq_model, embedding, base_options.replace(box_nms_thresh=1.0))
    assert len(base) == 9  # no filter, no suppression: one mask per click
    previous = {(rec.point, rec.score) for rec in base}
    for thresh in sorted({max(rec.score, 0.0) for rec in base}):
        kept = generate_masks(hq_model, embedding, base_options.replace(pred_iou_thresh=thresh))
        found = {(rec.point, rec.score) for rec in kept}
        assert found <= previous
        assert all(score > thresh for _, score in found)
        previous = found
    assert previous == set()  # nothing is strictly above the highest score
    assert len(cache) == 1  # the sweep reused the one real batch of 9 clicks


def test_plain_sam_keeps_three_masks_per_click_with_entropy():
    torch.manual_seed(1)
    model = build_from_config(small_vit_config(hq=False))
    embedding = encode_image(model, (np.random.default_rng(3).random((40, 50, 3)) * 255).astype(np.uint8))
    options = AutoOptions(points_per_side=1, pred_iou_thresh=0, stability_thresh=0, box_nms_thresh=1.0)
    records = generate_masks(model, embedding, options)
    assert len(records) == 3
    assert all(rec.point == (20.0, 25.0) for rec in records)
    for rec in records:
        expected = bernoulli_entropy(torch.from_numpy(rec.logits)).numpy()
        np.testing.assert_allclose(rec.uncertainty, expected, atol=1e-6)


def test_auto_segment_with_real_model_returns_labels_and_uncertainty(hq_model):
    image = (np.random.default_rng(2).random((48, 64)) * 255).astype(np.uint8)
    options = AutoOptions(points_per_side=2, pred_iou_thresh=0, stability_thresh=0)
    labels, uncertainty = auto_segment(image, options, model=hq_model, device="cpu", progress=False)
    assert labels.shape == uncertainty.shape == (48, 64)
    assert labels.dtype == np.uint32 and uncertainty.dtype == np.float32
    ids = np.unique(labels[labels > 0])
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))
    assert len(ids) >= 1
    assert 0.0 <= uncertainty.min() and uncertainty.max() <= 1.0


def test_real_model_encodes_each_window_larger_than_the_encoder_as_one_image(monkeypatch):
    model = tiny_model()  # input size 256; tiles of 256 + a 16 px halo: windows up to 288 px
    counter = EncoderCounter(model, monkeypatch)
    encoded = []

    def spy(model, image, precision="fp32"):
        embedding = encode_image(model, image, precision)
        encoded.append((image.shape[:2], embedding.original_size, embedding.input_size))
        return embedding

    monkeypatch.setattr(automatic, "encode_image", spy)
    image = np.zeros((600, 700), dtype=np.uint16)
    image[520:560, 630:670] = 4000  # far corner
    options = AutoOptions(points_per_side=2, pred_iou_thresh=0, stability_thresh=0)
    labels, uncertainty = auto_segment(image, options, tile_shape=256, model=model, device="cpu", progress=False)
    grid = tile_grid(image.shape, 256, 256)
    assert labels.shape == uncertainty.shape == (600, 700)
    assert counter.images == counter.calls == len(grid) == 9  # one encoder image per window
    for (window, original, input_size), tile in zip(encoded, grid, strict=True):
        assert window == original == tile.outer.shape
        assert input_size == preprocess_shape(*window, 256) and max(input_size) == 256
    assert max(max(w) for w, _, _ in encoded) == 288


# -- (b) logic with the exact fake -------------------------------------------------------------------


def test_each_blob_found_exactly_once(hq_model, exact):
    truth = block_discs((256, 256), BLOBS)
    embedding = automatic.encode_image(hq_model, prepare_image(to_image(truth)))
    records = generate_masks(hq_model, embedding, AutoOptions(points_per_side=12, max_area_fraction=0.5))
    assert len(records) == len(BLOBS)
    assert sorted(int(np.bincount(truth[rec.mask]).argmax()) for rec in records) == [1, 2, 3, 4, 5]
    for rec in records:
        blob = np.bincount(truth[rec.mask]).argmax()
        np.testing.assert_array_equal(rec.mask, truth == blob)
        assert rec.area == int((truth == blob).sum())
        assert rec.score == pytest.approx(0.95) and rec.stability == 1.0
        np.testing.assert_array_equal(rec.uncertainty, fake_uncertainty(truth == blob))


def test_max_area_fraction_drops_the_background_mask(hq_model, exact):
    truth = block_discs((256, 256), BLOBS)
    embedding = automatic.encode_image(hq_model, prepare_image(to_image(truth)))
    with_background = generate_masks(hq_model, embedding, AutoOptions(points_per_side=12))
    assert len(with_background) == len(BLOBS) + 1
    assert sum(np.array_equal(rec.mask, truth == 0) for rec in with_background) == 1


def test_nms_removes_duplicate_masks(hq_model, exact):
    truth = block_discs((256, 256), BLOBS)
    embedding = automatic.encode_image(hq_model, prepare_image(to_image(truth)))
    options = AutoOptions(points_per_side=12, max_area_fraction=0.5)
    everything = generate_masks(hq_model, embedding, options.replace(box_nms_thresh=1.0))
    on_blobs = sum(truth[int(r), int(c)] > 0 for r, c in point_grid(12) * 256)
    assert len(everything) == on_blobs > len(BLOBS)  # one (duplicate) mask per click on a blob
    assert len(generate_masks(hq_model, embedding, options)) == len(BLOBS)


def test_min_area_fills_small_holes(hq_model, exact):
    truth = block_discs((256, 256), [(128, 128)], radius=12)
    holed = truth.copy()
    holed[136:144, 120:128] = 0  # a one-block (64 px) hole, away from the clicks
    embedding = automatic.encode_image(hq_model, prepare_image(to_image(holed)))
    options = AutoOptions(points_per_side=4, max_area_fraction=0.5)
    plain = generate_masks(hq_model, embedding, options)
    cleaned = generate_masks(hq_model, embedding, options.replace(min_area=100))
    assert len(plain) == len(cleaned) == 1
    np.testing.assert_array_equal(plain[0].mask, holed == 1)
    np.testing.assert_array_equal(cleaned[0].mask, truth == 1)
    assert cleaned[0].area == plain[0].area + 64 == int(cleaned[0].mask.sum())


def test_untiled_auto_segment_labels_each_blob_once(hq_model, exact):
    truth = block_discs((256, 256), BLOBS)
    options = AutoOptions(points_per_side=12, max_area_fraction=0.5)
    labels, uncertainty = auto_segment(to_image(truth), options, model=hq_model, progress=False)
    assert exact == [(256, 256)]
    assert_labels_are_truth(labels, truth)
    np.testing.assert_array_equal(uncertainty, expected_uncertainty(truth))


def test_tiled_auto_segment_keeps_blobs_across_seams_whole_and_once(hq_model, exact):
    # 2 x 2 tiles of 128 px with a 48 px halo; blobs on the seams, the corner and inside tiles.
    # The blob at (40, 168) is seen cut (cols 140..196) by the window of tile 0 (cols 0..176).
    centres = [(128, 128), (40, 168), (128, 216), (200, 48), (40, 40), (216, 216)]
    truth = block_discs((256, 256), centres)
    options = AutoOptions(points_per_side=8, max_area_fraction=0.5)
    labels, uncertainty = auto_segment(
        to_image(truth), options, tile_shape=128, halo=48, model=hq_model, progress=False
    )
    assert exact == [tile.outer.shape for tile in TileGrid((256, 256), 128, 48)]
    assert_labels_are_truth(labels, truth)
    np.testing.assert_array_equal(uncertainty, expected_uncertainty(truth))


def test_tiled_never_keeps_a_window_cut_piece(hq_model, exact):
    # A blob (64 px across) on the seam at col 128 with a 16 px halo is cut by both windows
    # (cols [0, 144) and [112, 256)): the pieces are dropped, so the blob is lost (documented:
    # the halo must exceed the objects), while a blob inside one tile is kept.
    truth = block_discs((128, 256), [(64, 128), (64, 208)], radius=4)
    image = to_image(truth)
    options = AutoOptions(points_per_side=8, max_area_fraction=0.5)
    labels, _ = auto_segment(image, options, tile_shape=128, halo=16, model=hq_model, progress=False)
    np.testing.assert_array_equal(labels, (truth == 2).astype(np.uint32))
    # with a halo holding the seam blob 20 px (SAM's crop-edge distance) inside both windows,
    # both blobs are found
    labels, _ = auto_segment(image, options, tile_shape=128, halo=64, model=hq_model, progress=False)
    assert_labels_are_truth(labels, truth)


def objects_for_grid(
    grid: TileGrid, points_per_side: int, gap: int, radius: float = 3.5
) -> list[tuple[int, int]]:
    """Object centres (pixels) that the fake finds exactly once.

    Each object lies under a grid click of the window of the tile that owns it (holds its
    centre), inside the image with a block of margin, more than SAM's crop-edge distance from
    the window's inner edges (so the seam rules keep it whole) and more than ``gap`` px from
    the others (Chebyshev). Chosen in order: the one nearest the far corner, every one that
    crosses an inner tile border (where the halo allows it), then the rest.
    """
    height, width = grid.shape
    reach = int(np.ceil(radius)) * BLOCK  # pixels from the centre block's centre to the disc's edge
    atol = min(20, max(1, min(grid.halo) // 2))
    # the click's block, or blocks 2 away (the disc still holds the click): the latter put
    # objects across tile borders, whole in the window of their owner
    shifts = [(dr, dc) for dr in (0, -16, 16) for dc in (0, -16, 16)]
    candidates = []
    for tile in reversed(list(grid)):
        o = tile.outer
        for click in (point_grid(points_per_side) * np.array(o.shape) + (o.row0, o.col0))[::-1]:
            block = (int(click[0]) // BLOCK * BLOCK + BLOCK // 2, int(click[1]) // BLOCK * BLOCK + BLOCK // 2)
            for r, c in [(block[0] + dr, block[1] + dc) for dr, dc in shifts]:
                box = (r - reach, c - reach, r + reach, c + reach)
                if box[0] < BLOCK or box[1] < BLOCK or box[2] >= height - BLOCK or box[3] >= width - BLOCK:
                    continue
                inside_window = (
                    box[0] - (atol + 4 if o.row0 > 0 else 0) >= o.row0
                    and box[1] - (atol + 4 if o.col0 > 0 else 0) >= o.col0
                    and box[2] + (atol + 4 if o.row1 < height else 0) < o.row1
                    and box[3] + (atol + 4 if o.col1 < width else 0) < o.col1
                )
                if inside_window and grid.tile_containing(r, c).index == tile.index:
                    candidates.append((r, c))
    crossing = [
        (r, c) for r, c in candidates
        if grid.tile_containing(r - reach, c - reach).index != grid.tile_containing(r + reach, c + reach).index
    ]  # fmt: skip
    centres: list[tuple[int, int]] = []
    for r, c in candidates[:1] + crossing + candidates:
        if all(max(abs(r - r2), abs(c - c2)) > max(gap, 2 * reach + 2 * BLOCK) for r2, c2 in centres):
            centres.append((r, c))
    return centres


CAMERA_CASES = {
    "2048x2048 tile 1024, default halo": ((2048, 2048), np.uint8, 1024, None),
    "1040x1392 uint16 tile 1000 halo 64": ((1040, 1392), np.uint16, 1000, 64),
    "2160x2560 uint16 tile 2048 halo 0": ((2160, 2560), np.uint16, 2048, 0),
    "1040x1392 uint16 default tiling": ((1040, 1392), np.uint16, None, None),
}
SLOW_CASES = {"2160x2560 uint16 tile 2048 halo 0"}  # a 2048 x 2048 window: 64 masks of 4 Mpixel


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=[pytest.mark.slow] if c in SLOW_CASES else []) for c in CAMERA_CASES]
)
def test_camera_sizes_with_explicit_tiles_segment_every_object_exactly(hq_model, exact, case):
    shape, dtype, tile_shape, halo = CAMERA_CASES[case]
    grid = tile_grid(shape, hq_model.config.image_size, tile_shape, halo)
    centres = objects_for_grid(grid, points_per_side=8, gap=300)
    truth = block_discs(shape, centres)
    far = max(centres, key=lambda rc: rc[0] + rc[1])
    assert far[0] > shape[0] - 100 and far[1] > shape[1] - 100  # an object in the far corner
    crossing = [(r, c) for r, c in centres if grid.tile_containing(r - 32, c - 32) != grid.tile_containing(r + 32, c + 32)]
    assert len(crossing) >= (3 if min(grid.halo) >= 64 else 0)  # objects across tile borders
    options = AutoOptions(points_per_side=8, max_area_fraction=0.5)
    labels, uncertainty = auto_segment(
        to_image(truth, dtype), options, tile_shape=tile_shape, halo=halo, model=hq_model, progress=False
    )
    assert exact == [tile.outer.shape for tile in grid]  # each window encoded once, whole
    assert labels.shape == uncertainty.shape == shape
    assert_labels_are_truth(labels, truth)
    np.testing.assert_array_equal(uncertainty, expected_uncertainty(truth))


# -- cancellation ----------------------------------------------------------------------------------


def test_generate_masks_stops_between_decoder_batches(hq_model, exact, monkeypatch):
    cancel = threading.Event()
    batches = []

    def decode(*args):
        batches.append(1)
        cancel.set()  # the user presses Cancel while the first batch is decoded
        return exact_decode(*args)

    monkeypatch.setattr(automatic, "decode_points", decode)
    embedding = automatic.encode_image(hq_model, prepare_image(to_image(block_discs((256, 256), BLOBS))))
    with pytest.raises(Cancelled):
        generate_masks(hq_model, embedding, AutoOptions(points_per_side=8, points_per_batch=16), cancel=cancel)
    assert len(batches) == 1  # of 4


def test_auto_segment_stops_between_tiles(hq_model, exact, monkeypatch):
    cancel = threading.Event()
    decoded = []

    def decode(*args):
        decoded.append(1)
        return exact_decode(*args)

    monkeypatch.setattr(automatic, "decode_points", decode)
    real = automatic.encode_image

    def encode(model, image, precision="fp32"):
        if len(exact) == 1:
            cancel.set()  # pressed while the second window is encoded
        return real(model, image, precision)

    monkeypatch.setattr(automatic, "encode_image", encode)
    image = to_image(block_discs((256, 256), BLOBS))
    with pytest.raises(Cancelled):
        auto_segment(image, AutoOptions(points_per_side=4), tile_shape=128, halo=16, model=hq_model,
                     progress=False, cancel=cancel)
    assert len(exact) == 2 and len(decoded) == 1  # the first tile's one batch; none of the second


# -- argument checks ---------------------------------------------------------------------------


def test_generate_masks_rejects_bad_arguments(hq_model, exact):
    embedding = automatic.encode_image(hq_model, prepare_image(np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)))
    with pytest.raises(InvalidInputError, match="model must be a sum_core SamModel, got Predictor"):
        generate_masks(Predictor(hq_model, device="cpu"), embedding)
    with pytest.raises(InvalidInputError, match="embedding must be a sum_core ImageEmbedding .* got ndarray"):
        generate_masks(hq_model, np.zeros((32, 32)))
    with pytest.raises(InvalidInputError, match="options must be a sum_core.auto_options.AutoOptions, got dict"):
        generate_masks(hq_model, embedding, {"points_per_side": 4})


def test_auto_segment_rejects_bad_arguments_before_loading(monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("model loaded before validation")

    monkeypatch.setattr(automatic, "resolve_model", no_load)
    image = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32)
    with pytest.raises(InvalidInputError, match="options must be a sum_core.auto_options.AutoOptions, got dict"):
        auto_segment(image, {"points": 3})
    with pytest.raises(InvalidInputError, match="tile_shape must be >= 1"):
        auto_segment(image, tile_shape=0)
    with pytest.raises(InvalidInputError, match="precision"):
        auto_segment(image, precision="fp64", device="cpu")
    with pytest.raises(InvalidInputError):
        auto_segment(np.zeros((4, 4, 7)))
