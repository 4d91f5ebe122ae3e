"""sum_core.tiled_predictor: lazy tiles, routing, cross-tile following, stitching, paste_into."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
import torch
import zarr

from small_models import small_vit_config
from tiled_fakes import EncoderCounter, fake_decoder
from sum_core.tiled_embedding import embed
from sum_core.errors import Cancelled, InvalidInputError
from sum_core.prediction import PredictOptions
from sum_core.modeling import build_from_config
from sum_core.tiled_predictor import TiledPrediction, TiledPredictor

SHAPE = (700, 900)  # tiles of 256 with a 32 halo: a 3 x 4 grid
TILING = {"tile_shape": 256, "halo": 32}


def tiny_model():
    torch.manual_seed(0)
    return build_from_config(small_vit_config().replace(image_size=256))


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def make_blob() -> np.ndarray:
    """A bar three tiles wide (tiles 4..7 of the middle row) with an arm up into tile 2."""
    blob = np.zeros(SHAPE, dtype=bool)
    blob[330:420, 100:800] = True
    blob[200:340, 600:650] = True
    return blob


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(0)
    blob = make_blob()
    image = rng.normal(0.2, 0.05, SHAPE).astype(np.float32) + blob
    image[30:60, 30:60] += 1  # a small separate object in tile 0
    return image, blob


def test_object_three_tiles_wide_is_followed_until_whole(model, scene, monkeypatch):
    image, blob = scene
    monkeypatch.setattr(TiledPredictor, "_decode", fake_decoder(blob))
    counter = EncoderCounter(model, monkeypatch)
    tp = TiledPredictor(model, **TILING)
    tp.set_image(image)
    assert counter.images == 0  # set_image encodes nothing
    pred = tp.predict(points=[[370, 120]], labels=[1])
    assert isinstance(pred, TiledPrediction) and pred.complete
    assert pred.tiles[0] == 4 and sorted(pred.tiles) == [2, 4, 5, 6, 7]
    assert counter.images == tp.tiles_encoded == 5  # 7 of the 12 tiles never encoded
    assert pred.offset == (0, 0) and pred.mask.shape == (544, 900)  # rows of tiles 0..1 + halo
    full = pred.paste_into(np.zeros(SHAPE, dtype=bool))
    np.testing.assert_array_equal(full, blob)
    assert pred.score == 0.9
    np.testing.assert_array_equal(pred.uncertainty, pred.mask * np.float32(0.25))


def test_without_following_the_object_is_cut_at_the_tile_window(model, scene, monkeypatch):
    image, blob = scene
    monkeypatch.setattr(TiledPredictor, "_decode", fake_decoder(blob))
    tp = TiledPredictor(model, **TILING)
    tp.set_image(image)
    pred = tp.predict(points=[[370, 120]], labels=[1], follow=False)
    assert pred.tiles == (4,) and tp.tiles_encoded == 1
    assert pred.window == (224, 0, 544, 288)  # tile 4's inner [256, 512) x [0, 256) + halo
    full = pred.paste_into(np.zeros(SHAPE, dtype=bool))
    np.testing.assert_array_equal(full, blob & (np.arange(900) < 288)[None, :])


def test_max_tiles_bounds_the_walk_and_warns(model, scene, monkeypatch):
    image, blob = scene
    monkeypatch.setattr(TiledPredictor, "_decode", fake_decoder(blob))
    tp = TiledPredictor(model, **TILING)
    tp.set_image(image)
    with pytest.warns(UserWarning, match="after 2 tiles"):
        pred = tp.predict(points=[[370, 120]], labels=[1], max_tiles=2)
    assert pred.tiles == (4, 5) and not pred.complete and tp.tiles_encoded == 2


def test_neighbours_get_clicks_inside_the_known_mask_and_the_clipped_box(model, scene, monkeypatch):
    image, blob = scene
    calls: list = []
    monkeypatch.setattr(TiledPredictor, "_decode", fake_decoder(blob, calls))
    tp = TiledPredictor(model, **TILING)
    tp.set_image(image)
    pred = tp.predict(box=[320, 90, 430, 810])
    np.testing.assert_array_equal(pred.paste_into(np.zeros(SHAPE, dtype=bool)), blob)
    assert pred.tiles[0] == 5  # the box centre (375, 450) is in tile 5
    for window, points in calls[1:]:
        assert points is not None
        for r, c in points:  # derived clicks lie on the object, inside the decoded window
            assert blob[int(r), int(c)]
            assert window.row0 <= r < window.row1 and window.col0 <= c < window.col1


def test_separate_small_object_stays_in_one_tile_and_reuses_cached_tiles(model, scene, monkeypatch, tmp_path):
    image, blob = scene
    truth = image > 0.7
    embed(image, model, cache=tmp_path / "c.zarr", progress=False, **TILING)
    monkeypatch.setattr(TiledPredictor, "_decode", fake_decoder(truth))
    counter = EncoderCounter(model, monkeypatch)
    tp = TiledPredictor(model, cache=tmp_path / "c.zarr", **TILING)
    tp.set_image(image)
    pred = tp.predict(points=[[45, 45]], labels=[1])
    pred = tp.predict(points=[[370, 700]], labels=[1])
    assert counter.images == 0 and tp.tiles_encoded == 0
    assert pred.complete and sorted(pred.tiles) == [2, 4, 5, 6, 7]


def test_paste_into_zarr_stack_and_shape_errors(model, scene, monkeypatch, tmp_path):
    image, blob = scene
    monkeypatch.setattr(TiledPredictor, "_decode", fake_decoder(blob))
    tp = TiledPredictor(model, **TILING)
    tp.set_image(image)
    pred = tp.predict(points=[[370, 120]], labels=[1])
    target = zarr.create_array(
        str(tmp_path / "l.zarr"), shape=(2, *SHAPE), dtype="uint16", chunks=(1, 128, 128)
    )
    target[1, :5, :5] = 3
    pred.paste_into(target, value=7, slice_index=1)
    np.testing.assert_array_equal(target[1] == 7, blob)
    assert target[1, 0, 0] == 3 and not target[0].any()
    with pytest.raises(InvalidInputError, match="does not fit an image of shape"):
        pred.paste_into(np.zeros((10, 10)))


def test_stacks_predict_per_slice(model, monkeypatch):
    stack = np.random.default_rng(1).random((2, 300, 300)).astype(np.float32)
    monkeypatch.setattr(TiledPredictor, "_decode", fake_decoder(np.ones((300, 300), bool)))
    tp = TiledPredictor(model, tile_shape=128, halo=16)
    tp.set_image(stack, stack_axis=0)
    with pytest.warns(UserWarning, match="after 3 tiles"):  # the object fills the whole plane
        pred = tp.predict(points=[[10, 10]], labels=[1], slice_index=1, max_tiles=3)
    assert len(pred.tiles) == 3 and tp.tiles_encoded == 3
    missing = tp.embeddings.missing()
    assert (0, 0) in missing and not any((1, t) in missing for t in pred.tiles)


def test_bad_prompts_and_state(model, scene):
    image, _ = scene
    tp = TiledPredictor(model, **TILING)
    with pytest.raises(InvalidInputError, match="no image is set"):
        tp.predict(points=[[1, 1]], labels=[1])
    tp.set_image(image)
    with pytest.raises(InvalidInputError, match="outside|out of"):
        tp.predict(points=[[800, 10]], labels=[1])
    with pytest.raises(InvalidInputError, match="one object per call"):
        tp.predict(box=[[0, 0, 10, 10], [20, 20, 30, 30]])
    with pytest.raises(InvalidInputError, match="at least one positive click or a box"):
        tp.predict(points=[[5, 5]], labels=[0])
    with pytest.raises(InvalidInputError, match="slice_index must be an integer in"):
        tp.predict(points=[[5, 5]], labels=[1], slice_index=1)
    with pytest.raises(InvalidInputError, match="max_tiles must be an integer >= 1"):
        tp.predict(points=[[5, 5]], labels=[1], max_tiles=0)
    with pytest.raises(InvalidInputError, match="pass stack_axis="):
        tp.set_image(np.zeros((2, 3, 64, 64), np.float32))
    assert tp.tiles_encoded == 0


def test_smoke_with_the_real_small_model(scene, monkeypatch):
    """The 1024-input small model, random weights: runs end to end, bounded and lazily."""
    image, _ = scene
    torch.manual_seed(0)
    real = build_from_config(small_vit_config())
    counter = EncoderCounter(real, monkeypatch)
    tp = TiledPredictor(real, **TILING)
    tp.set_image(image)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights: the walk may hit max_tiles
        pred = tp.predict(points=[[370, 120]], labels=[1], max_tiles=2)
    assert counter.images == tp.tiles_encoded == len(pred.tiles) <= 2 and pred.tiles[0] == 4
    r0, c0 = pred.offset
    assert pred.mask.dtype == bool and pred.mask.shape == pred.logits.shape == pred.uncertainty.shape
    assert r0 + pred.mask.shape[0] <= SHAPE[0] and c0 + pred.mask.shape[1] <= SHAPE[1]
    assert not hasattr(pred, "low_res_logits") and np.isfinite(pred.score)
    assert ((pred.uncertainty >= 0) & (pred.uncertainty <= 1)).all()
    np.testing.assert_array_equal(pred.mask, pred.logits > 0)


def test_cancel_stops_between_tiles_and_the_next_predict_works(model, scene, monkeypatch):
    image, blob = scene
    decode = fake_decoder(blob)
    cancel = threading.Event()
    decoded: list[int] = []

    def decode_then_cancel(self, window, *args):
        decoded.append(window)
        cancel.set()  # the user presses Cancel while the first tile is decoded
        return decode(self, window, *args)

    monkeypatch.setattr(TiledPredictor, "_decode", decode_then_cancel)
    tp = TiledPredictor(model, **TILING)
    tp.set_image(image)
    with pytest.raises(Cancelled):
        tp.predict(points=[[370, 120]], labels=[1], cancel=cancel)
    assert len(decoded) == 1 and tp.tiles_encoded == 1  # the walk stopped before tile 2
    monkeypatch.setattr(TiledPredictor, "_decode", decode)
    pred = tp.predict(points=[[370, 120]], labels=[1])
    np.testing.assert_array_equal(pred.paste_into(np.zeros(SHAPE, bool)), blob)
    assert tp.tiles_encoded == 5  # the tile of the cancelled call was kept
    with pytest.raises(Cancelled):  # a set event stops before any work
        tp.predict(points=[[45, 45]], labels=[1], cancel=cancel)
    assert tp.tiles_encoded == 5


def test_two_threads_on_one_tiled_predictor_give_the_sequential_masks(scene):
    """Real decoder, a 2-tile LRU (tiles are evicted and re-encoded while the other thread
    walks): concurrent calls give exactly the sequential results, and never raise."""
    image, _ = scene
    tp = TiledPredictor(tiny_model(), memory_tiles=2, **TILING)
    tp.set_image(image)
    prompts = [[[370, 120]], [[45, 45]], [[370, 700]], [[600, 850]], [[250, 640]], [[100, 400]]] * 3
    options = PredictOptions(uncertainty="entropy")

    def run(points):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # random weights: the walk may hit max_tiles
            return tp.predict(points=points, options=options, max_tiles=3)

    expected = [run(p) for p in prompts]
    results: dict[int, TiledPrediction] = {}
    errors: list[BaseException] = []

    def work(indices):
        for i in indices:
            try:
                results[i] = run(prompts[i])
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(range(k, len(prompts), 2),)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for i, want in enumerate(expected):
        got = results[i]
        assert (got.offset, got.tiles) == (want.offset, want.tiles)
        np.testing.assert_array_equal(got.mask, want.mask)
        np.testing.assert_array_equal(got.logits, want.logits)
