"""sum_core.predictor.Predictor on images larger than one encoder window, lazy inputs and caches:
full-size results whatever the size, tiles encoded only where the object is."""

from __future__ import annotations

import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import zarr

from small_models import small_vit_config
from tiled_fakes import FAKE_SCORE, FAKE_UNCERTAINTY, EncoderCounter, fake_decoder
from sum_core.encoding import encode_image
from sum_core.errors import Cancelled, InvalidInputError
from sum_core.modeling import build_from_config
from sum_core.prediction import BACKGROUND_LOGIT, PredictOptions
from sum_core.predictor import Prediction, Predictor
from sum_core.prompts import mask_logits
from sum_core.image import to_uint8_rgb
from sum_core.sources import Planes, fixed_normalization
from sum_core.tiled_predictor import TiledPredictor

SHAPE = (700, 900)  # tiles of 256 with a 32 halo: a 3 x 4 grid
TILING = {"tile_shape": 256, "halo": 32}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_from_config(small_vit_config().replace(image_size=256))


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(0)
    blob = np.zeros(SHAPE, dtype=bool)
    blob[330:420, 100:800] = True  # tiles 4..7 of the middle row
    blob[200:340, 600:650] = True  # an arm up into tile 2
    image = rng.normal(0.2, 0.05, SHAPE).astype(np.float32) + blob
    return image, blob


def test_zarr_image_with_cache_encodes_only_touched_tiles_and_reuses_them(model, scene, monkeypatch, tmp_path):
    image, blob = scene
    source = zarr.create_array(str(tmp_path / "img.zarr"), shape=SHAPE, dtype="float32", chunks=(128, 128))
    source[:] = image
    monkeypatch.setattr(TiledPredictor, "_decode", fake_decoder(blob))
    counter = EncoderCounter(model, monkeypatch)
    cache = tmp_path / "emb.zarr"

    predictor = Predictor(model)
    predictor.set_image(source, cache=cache, **TILING)
    assert counter.images == 0 and predictor.is_image_set and predictor.is_tiled
    assert predictor.original_size == SHAPE
    pred = predictor.predict(points=[[370, 120]])
    assert type(pred) is Prediction and len(pred) == 1 and pred.low_res_logits is None
    assert pred.masks.shape == pred.logits.shape == pred.uncertainties.shape == (1, *SHAPE)
    np.testing.assert_array_equal(pred.mask, blob)
    np.testing.assert_array_equal(pred.uncertainty, blob * FAKE_UNCERTAINTY)
    assert pred.score == pytest.approx(FAKE_SCORE)
    assert counter.images == predictor.tiled.tiles_encoded == 5  # 7 of the 12 tiles never encoded
    assert (pred.logits[0][~blob] <= -8).all()  # decoded (-8) or never reached (BACKGROUND_LOGIT)

    again = Predictor(model)
    again.set_image(source, cache=cache, **TILING)
    second = again.predict(points=[[370, 120]], labels=[1])
    assert counter.images == 5 and again.tiled.tiles_encoded == 0  # all read from the cache
    np.testing.assert_array_equal(second.masks, pred.masks)
    np.testing.assert_array_equal(second.logits, pred.logits)


def test_lazy_inputs_follow_the_size_rule(model, scene, monkeypatch, tmp_path):
    """Lazy or numpy, an image of one encoder window is encoded whole in set_image; tile_shape=
    or cache= tile it. Every result is a full-size Prediction."""
    image, _ = scene
    small = np.ascontiguousarray(image[:200, :200])
    arr = zarr.create_array(str(tmp_path / "s.zarr"), shape=small.shape, dtype="float32", chunks=(64, 64))
    arr[:] = small
    monkeypatch.setattr(TiledPredictor, "_decode", fake_decoder(np.ones(small.shape, bool)))
    counter = EncoderCounter(model, monkeypatch)
    predictor = Predictor(model)
    whole = []
    for source in (str(tmp_path / "s.zarr"), arr, small):
        predictor.set_image(source)  # a path, a zarr array, a numpy array: one window
        assert not predictor.is_tiled and counter.images == 1
        pred = predictor.predict(points=[[10, 10]])
        assert pred.masks.shape == (1, 200, 200) and pred.low_res_logits.shape == (1, 1, 64, 64)
        whole.append(pred.logits)
        counter.images = 0
    np.testing.assert_array_equal(whole[0], whole[1])
    np.testing.assert_array_equal(whole[0], whole[2])  # one normalisation: percentiles of all pixels
    for options in ({"tile_shape": 128}, {"cache": tmp_path / "c.zarr"}):
        predictor.set_image(arr, **options)
        assert predictor.is_tiled and counter.images == 0
        pred = predictor.predict(points=[[10, 10]])
        assert type(pred) is Prediction and pred.masks.shape == (1, 200, 200) and pred.mask.all()
        counter.images = 0


def test_large_numpy_plane_is_tiled_and_equals_the_tiled_predictor_pasted(model):
    """A numpy plane larger than the encoder input is tiled; the real decoder gives exactly
    TiledPredictor's windowed result, pasted into full-size arrays."""
    image = np.random.default_rng(2).random((300, 400)).astype(np.float32)
    image[100:180, 150:260] += 2
    predictor = Predictor(model)
    predictor.set_image(image)
    assert predictor.is_tiled and predictor.tiled.tiles_encoded == 0
    assert len(predictor.tiled.embeddings.grid) > 1
    reference = TiledPredictor(model)
    reference.set_image(image)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights: the walk may hit max_tiles
        pred = predictor.predict(points=[[140, 200]], uncertainty="entropy")
        window = reference.predict(points=[[140, 200]], options=PredictOptions(uncertainty="entropy"))
    assert predictor.tiled.tiles_encoded == len(window.tiles)
    assert pred.masks.shape == (1, 300, 400)
    rows, cols = window.window.slices
    np.testing.assert_array_equal(pred.logits[0][rows, cols], window.logits)
    np.testing.assert_array_equal(pred.uncertainties[0][rows, cols], window.uncertainty)
    outside = np.ones(image.shape, bool)
    outside[rows, cols] = False
    assert (pred.logits[0][outside] == BACKGROUND_LOGIT).all() and not pred.masks[0][outside].any()
    full = window.paste_into(np.zeros(image.shape, dtype=np.uint16), value=3)
    np.testing.assert_array_equal(full == 3, pred.mask)
    assert pred.score == pytest.approx(window.score)


def test_several_boxes_give_one_full_size_object_each(model, scene, monkeypatch):
    image, blob = scene
    truth = blob.copy()
    truth[30:60, 30:60] = True  # a second object in tile 0
    truth[640:690, 850:890] = True  # a third in the far corner (tile 11)
    monkeypatch.setattr(TiledPredictor, "_decode", fake_decoder(truth))
    counter = EncoderCounter(model, monkeypatch)
    predictor = Predictor(model)
    predictor.set_image(image)
    assert predictor.is_tiled
    pred = predictor.predict(box=[[320, 90, 430, 810], [25, 25, 65, 65], [635, 845, 695, 895]])
    assert len(pred) == 3 and pred.masks.shape == (3, *SHAPE) and pred.scores.shape == (3,)
    np.testing.assert_array_equal(pred.masks[0], blob)
    corner = np.zeros(SHAPE, bool)
    corner[640:690, 850:890] = True
    np.testing.assert_array_equal(pred.masks[2], corner)
    np.testing.assert_array_equal(pred.masks[1], truth & ~blob & ~corner)
    assert counter.images == predictor.tiled.tiles_encoded


def test_full_size_mask_prompt_reaches_every_visited_window(model, scene, monkeypatch):
    image, blob = scene
    seen: dict[tuple, np.ndarray | None] = {}
    decode = fake_decoder(blob)

    def recording(self, window, embedding, points, labels, box, mask, options):
        seen[tuple(window)] = mask
        return decode(self, window, embedding, points, labels, box, mask, options)

    monkeypatch.setattr(TiledPredictor, "_decode", recording)
    predictor = Predictor(model)
    predictor.set_image(image, **TILING)
    first = predictor.predict(points=[[370, 120]])
    again = predictor.predict(points=[[370, 120]], mask_input=first.logits[0])  # a previous logits[k]
    np.testing.assert_array_equal(again.mask, blob)
    assert len(seen) == 5
    for window, mask in seen.items():
        rows, cols = slice(window[0], window[2]), slice(window[1], window[3])
        np.testing.assert_array_equal(mask, first.logits[0][rows, cols])
    seen.clear()
    only_mask = predictor.predict(mask_input=blob)  # a bool mask alone: routed to its centre of mass
    assert only_mask.masks.shape == (1, *SHAPE)
    (r0, c0, r1, c1), mask = next(iter(seen.items()))
    assert r0 <= 364 < r1 and c0 <= 466 < c1  # the first window holds the mask's centre of mass
    np.testing.assert_array_equal(mask, mask_logits(blob)[r0:r1, c0:c1])
    with pytest.raises(InvalidInputError, match=r"give a full-size \(700, 900\) mask"):
        predictor.predict(points=[[370, 120]], mask_input=np.zeros((1, 64, 64), np.float32))


def test_tile_shape_of_the_whole_image_is_one_downscaled_window(model, monkeypatch):
    """tile_shape=image.shape[:2]: SAM's behaviour, the whole image resized into one encoder
    window in set_image; the same masks as encoding that image once and decoding it whole."""
    rng = np.random.default_rng(3)
    image = (rng.random((700, 900, 3)) * 60).astype(np.uint8)
    image[300:420, 500:700] += 150
    expected_embedding = encode_image(model, image)
    counter = EncoderCounter(model, monkeypatch)
    predictor = Predictor(model)
    predictor.set_image(image, tile_shape=image.shape[:2])
    assert not predictor.is_tiled and counter.images == 1
    assert predictor.get_embedding().input_size == (199, 256)  # downscaled 3.5x
    pred = predictor.predict(points=[[360, 600]], box=[290, 490, 430, 710])
    assert pred.masks.shape == (1, 700, 900) and pred.low_res_logits.shape == (1, 1, 64, 64)
    whole = Predictor(model)
    whole.set_embedding(expected_embedding)
    expected = whole.predict(points=[[360, 600]], box=[290, 490, 430, 710])
    np.testing.assert_array_equal(pred.logits, expected.logits)
    np.testing.assert_array_equal(pred.uncertainties, expected.uncertainties)


def test_small_numpy_image_keeps_the_plain_path(model, scene):
    image, _ = scene
    small = np.ascontiguousarray(image[:200, :240])
    predictor = Predictor(model)
    predictor.set_image(image, **TILING)
    assert predictor.is_tiled
    predictor.set_image(small)  # back to the ordinary, whole-image path
    assert not predictor.is_tiled and predictor.tiled is None
    embedding = predictor.get_embedding()
    assert embedding.original_size == small.shape and embedding.input_size == (213, 256)
    pred = predictor.predict(points=[[50, 60]], labels=[1])
    assert type(pred) is Prediction and pred.mask.shape == small.shape
    norm = fixed_normalization(Planes(small))
    np.testing.assert_array_equal(
        embedding.embedding, encode_image(model, to_uint8_rgb(small, norm)).embedding
    )


def test_tiled_mode_errors_and_cancel(model, scene, monkeypatch):
    image, blob = scene
    predictor = Predictor(model)
    predictor.set_image(np.ascontiguousarray(image[:200, :200]))
    embedding = predictor.get_embedding()
    predictor.set_image(image, **TILING)
    with pytest.raises(InvalidInputError, match="encoded tile by tile .* no single embedding"):
        predictor.get_embedding()
    with pytest.raises(InvalidInputError, match=r"mask_input: this image is encoded tile by tile; give a full-size"):
        predictor.predict(points=[[370, 120]], mask_input=np.zeros((1, 64, 64), np.float32))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        predictor.predict(points=[[370, 120]], cancel=cancel)
    assert predictor.tiled.tiles_encoded == 0
    monkeypatch.setattr(TiledPredictor, "_decode", fake_decoder(blob))
    np.testing.assert_array_equal(predictor.predict(points=[[370, 120]]).mask, blob)  # works after a cancel
    predictor.set_embedding(embedding)  # an embedding replaces the tiled image
    assert not predictor.is_tiled and predictor.original_size == (200, 200)
    predictor.reset_image()
    assert not predictor.is_image_set and predictor.tiled is None
    with pytest.raises(InvalidInputError, match="no image is set"):
        predictor.predict(points=[[1, 1]])
    with pytest.raises(InvalidInputError, match="memory_tiles must be an integer >= 1"):
        Predictor(model, memory_tiles=0).set_image(image)


def test_two_threads_on_one_tiled_predictor_image_give_the_sequential_results(model, scene, monkeypatch):
    """A tiled image with a 2-tile LRU (tiles evicted and encoded again while the other thread
    walks), several boxes per call: concurrent predicts equal the sequential ones, none raises.
    (TiledPredictor's own test runs the real decoder.)"""
    image, blob = scene
    truth = blob.copy()
    truth[30:60, 30:60] = truth[640:690, 850:890] = True
    monkeypatch.setattr(TiledPredictor, "_decode", fake_decoder(truth))
    predictor = Predictor(model, memory_tiles=2)
    predictor.set_image(image, **TILING)
    boxes = [[320, 90, 430, 810], [25, 25, 65, 65], [635, 845, 695, 895]]
    calls = [boxes, boxes[::-1], boxes[1:], boxes[:1]] * 2
    expected = [predictor.predict(box=b) for b in calls]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda b: predictor.predict(box=b), calls))  # a thread's exception is raised here
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got.masks, want.masks)
        np.testing.assert_array_equal(got.uncertainties, want.uncertainties)


def test_clicks_with_several_boxes_give_each_box_its_own_object_on_a_tiled_image(model, monkeypatch):
    """SAM's semantics (clicks apply to every box) at a tiled size: box k's walk starts at box k,
    not at the clicks' tile, so far-apart boxed objects both come back, each on its own pixels."""
    shape = (2048, 2048)
    truth = np.zeros(shape, bool)
    truth[100:150, 100:150] = True
    truth[1900:1950, 1900:1950] = True
    monkeypatch.setattr(TiledPredictor, "_decode", fake_decoder(truth))
    predictor = Predictor(model)
    predictor.set_image(np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8))
    pred = predictor.predict(points=[[120, 120]], box=[[90, 90, 160, 160], [1890, 1890, 1960, 1960]])
    first, second = np.zeros(shape, bool), np.zeros(shape, bool)
    first[100:150, 100:150] = True
    second[1900:1950, 1900:1950] = True
    np.testing.assert_array_equal(pred.masks[0], first)
    np.testing.assert_array_equal(pred.masks[1], second)


def test_negative_click_with_a_mask_prompt_reaches_the_decoder_on_a_tiled_image(model, monkeypatch):
    """Refinement "remove this part": a mask prompt plus a negative click, no positive click or box."""
    shape = (2048, 2048)
    truth = np.zeros(shape, bool)
    truth[100:150, 100:150] = True
    truth[100:150, 200:250] = True
    seen = []
    fake = fake_decoder(truth)

    def spy(self, window, embedding, points, labels, box, mask, options):
        seen.append((None if labels is None else labels.tolist(), mask is not None))
        return fake(self, window, embedding, points, labels, box, mask, options)

    monkeypatch.setattr(TiledPredictor, "_decode", spy)
    predictor = Predictor(model)
    predictor.set_image(np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8))
    pred = predictor.predict(points=[[120, 220]], labels=[0], mask_input=truth)
    assert seen and seen[0] == ([0], True)
    expected = np.zeros(shape, bool)
    expected[100:150, 100:150] = True  # the clicked part is removed, the other one kept
    np.testing.assert_array_equal(pred.mask, expected)
