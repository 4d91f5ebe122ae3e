"""sum_core.predictor.Predictor in tiled mode: lazy/large inputs and an embedding cache."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import zarr

from small_models import small_vit_config
from tiled_fakes import EncoderCounter, fake_decoder
from sum_core.errors import InvalidInputError
from sum_core.modeling import build_from_config
from sum_core.predictor import Prediction, Predictor
from sum_core.tiled_predictor import TiledPrediction, TiledPredictor

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
    assert counter.images == 0 and predictor.is_image_set and predictor.tiled is not None
    assert predictor.original_size == SHAPE
    pred = predictor.predict(points=[[370, 120]], labels=[1])
    assert isinstance(pred, TiledPrediction) and pred.complete
    assert sorted(pred.tiles) == [2, 4, 5, 6, 7]
    assert counter.images == predictor.tiled.tiles_encoded == 5  # 7 of the 12 tiles never encoded
    np.testing.assert_array_equal(pred.paste_into(np.zeros(SHAPE, dtype=bool)), blob)

    again = Predictor(model)
    again.set_image(source, cache=cache, **TILING)
    second = again.predict(points=[[370, 120]], labels=[1])
    assert counter.images == 5 and again.tiled.tiles_encoded == 0  # all read from the cache
    assert second.offset == pred.offset and second.tiles == pred.tiles
    np.testing.assert_array_equal(second.mask, pred.mask)


def test_lazy_inputs_switch_to_tiled_mode(model, scene, monkeypatch, tmp_path):
    image, blob = scene
    small = np.ascontiguousarray(image[:200, :200])
    arr = zarr.create_array(str(tmp_path / "s.zarr"), shape=small.shape, dtype="float32", chunks=(64, 64))
    arr[:] = small
    monkeypatch.setattr(TiledPredictor, "_decode", fake_decoder(np.ones(small.shape, bool)))
    counter = EncoderCounter(model, monkeypatch)
    predictor = Predictor(model)
    for source, options in ((str(tmp_path / "s.zarr"), {}), (arr, {}), (small, {"tile_shape": 128})):
        predictor.set_image(source, **options)  # a path, a zarr array, a small array with tiles
        assert predictor.tiled is not None and counter.images == 0
        pred = predictor.predict(points=[[10, 10]], labels=[1])
        assert isinstance(pred, TiledPrediction) and pred.image_shape == small.shape
        counter.images = 0


def test_large_numpy_plane_matches_the_tiled_predictor(model):
    """A numpy plane larger than the encoder input is tiled; the real decoder gives exactly
    TiledPredictor's own result."""
    image = np.random.default_rng(2).random((300, 400)).astype(np.float32)
    image[100:180, 150:260] += 2
    predictor = Predictor(model)
    predictor.set_image(image)
    assert predictor.tiled is not None and predictor.tiled.tiles_encoded == 0
    assert len(predictor.tiled.embeddings.grid) > 1
    reference = TiledPredictor(model)
    reference.set_image(image)
    prompt = {"points": [[140, 200]], "labels": [1], "uncertainty": "entropy"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights: the walk may hit max_tiles
        pred = predictor.predict(**prompt)
        expected = reference.predict(**prompt)
    assert isinstance(pred, TiledPrediction)
    assert pred.offset == expected.offset and pred.tiles == expected.tiles
    assert predictor.tiled.tiles_encoded == len(pred.tiles)
    full = pred.paste_into(np.zeros(image.shape, dtype=np.uint16), value=3)
    np.testing.assert_array_equal(full, expected.paste_into(np.zeros(image.shape, np.uint16), value=3))
    np.testing.assert_array_equal(pred.logits, expected.logits)
    np.testing.assert_array_equal(pred.uncertainty, expected.uncertainty)


def test_small_numpy_image_keeps_the_plain_path(model, scene):
    image, _ = scene
    small = np.ascontiguousarray(image[:200, :240])
    predictor = Predictor(model)
    predictor.set_image(image, **TILING)
    assert predictor.tiled is not None
    predictor.set_image(small)  # back to the ordinary, whole-image path
    assert predictor.tiled is None and predictor.input_size == (213, 256)
    pred = predictor.predict(points=[[50, 60]], labels=[1])
    assert type(pred) is Prediction and pred.mask.shape == small.shape
    embedding = predictor.get_embedding()
    assert embedding.original_size == small.shape


def test_tiled_mode_errors(model, scene):
    image, _ = scene
    predictor = Predictor(model)
    predictor.set_image(np.ascontiguousarray(image[:200, :200]))
    embedding = predictor.get_embedding()
    predictor.set_image(image, **TILING)
    with pytest.raises(InvalidInputError, match=r"get_embedding\(\) is not available in tiled mode.*sum_core.embed"):
        predictor.get_embedding()
    with pytest.raises(InvalidInputError, match=r"set_embedding\(\) is not available in tiled mode.*cache="):
        predictor.set_embedding(embedding)
    with pytest.raises(InvalidInputError, match="mask_input: not supported .* tiled mode"):
        predictor.predict(points=[[370, 120]], labels=[1], mask_input=np.zeros((1, 64, 64), np.float32))
    with pytest.raises(InvalidInputError, match="not available in tiled mode"):
        predictor.input_size
    predictor.reset_image()
    assert not predictor.is_image_set and predictor.tiled is None
    predictor.set_embedding(embedding)  # allowed again after reset
    assert predictor.original_size == (200, 200)
