"""sum_core.embed: tiled embeddings in the zarr cache, reuse, mismatch errors, resume, stacks,
precision, and the prefetch pipeline (same results as a plain loop, errors)."""

from __future__ import annotations

import hashlib
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from small_models import small_vit_config
from tiled_fakes import EncoderCounter
from sum_core import embedding_cache, encoding, tiled_embedding
from sum_core.prefetch import THREAD_NAME
from sum_core.encoding import weights_hash
from sum_core.tiled_embedding import TiledEmbeddings, embed
from sum_core.errors import InvalidInputError
from sum_core.image import Normalization, resize_longest_side
from sum_core.modeling import build_from_config
from sum_core.predictor import Predictor
from sum_core.image import to_uint8_rgb
from sum_core.sources import Planes, fixed_normalization

# A 256-pixel encoder input keeps each tile's encoder pass cheap; the tiling logic is the same.
TILING = {"tile_shape": 128, "halo": 16}


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return build_from_config(small_vit_config().replace(image_size=256))


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    img = rng.normal(200, 30, (300, 500)).astype(np.float32)  # 3 x 4 = 12 tiles of 128
    img[100:180, 150:330] += 300
    return img


def test_embed_fills_cache_and_reopening_costs_no_encoder_work(model, image, tmp_path, monkeypatch):
    counter = EncoderCounter(model, monkeypatch)
    first = embed(image, model, cache=tmp_path / "c.zarr", progress=False, **TILING)
    assert len(first.grid) == 12 and first.grid.halo == (16, 16)
    assert (counter.calls, first.tiles_encoded, first.missing()) == (12, 12, [])
    again = embed(image, model, cache=tmp_path / "c.zarr", progress=False, **TILING)
    assert counter.calls == 12 and again.tiles_encoded == 0
    a, b = first.embedding(0, 5), again.embedding(0, 5)
    np.testing.assert_array_equal(a.embedding, b.embedding)
    assert a.original_size == first.grid[5].outer.shape == (160, 160)
    assert a.input_size == (256, 256)


def test_tile_embedding_equals_predictor_on_the_same_window(model, image):
    tiled = TiledEmbeddings(model, image, **TILING)
    norm = fixed_normalization(Planes(image))
    outer = tiled.grid[6].outer
    reference = Predictor(model)
    reference.set_image(to_uint8_rgb(image[outer.slices], norm))
    got, want = tiled.embedding(0, 6), reference.get_embedding()
    # one encode path: the same tensors, HQ features included (the early features are then dropped)
    np.testing.assert_array_equal(got.embedding, want.embedding)
    np.testing.assert_array_equal(got.hq_features, want.hq_features)
    assert got.early is None and got.hq_features.shape == (1, 32, 64, 64)
    assert (got.original_size, got.input_size) == (want.original_size, want.input_size)


def test_tiles_travel_to_the_device_as_uint8(model, image):
    tiled = TiledEmbeddings(model, image, **TILING)
    prepared = tiled._prepare([(0, 6), (0, 7)])
    assert [(t.dtype, t.shape[:2], t.is_contiguous()) for t in prepared.pixels] == [(torch.uint8, (1, 3), True)] * 2
    norm = fixed_normalization(Planes(image))
    pixels = to_uint8_rgb(image[tiled.grid[6].outer.slices], norm)
    assert prepared.pixels[0].shape[2:] == resize_longest_side(pixels, model.config.image_size).shape[:2]


def test_batches_give_the_same_embeddings(model, image, monkeypatch):
    counter = EncoderCounter(model, monkeypatch)
    batched = embed(image, model, batch_size=5, progress=False, **TILING)
    assert (counter.calls, counter.images) == (3, 12)
    single = TiledEmbeddings(model, image, **TILING)
    np.testing.assert_allclose(
        batched.embedding(0, 11).embedding, single.embedding(0, 11).embedding, rtol=1e-4, atol=1e-5
    )


def test_interrupted_run_resumes_with_the_missing_tiles_only(model, image, tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        EncoderCounter(model, patch, fail_after=5)
        with pytest.raises(RuntimeError, match="interrupted"):
            embed(image, model, cache=tmp_path / "c.zarr", progress=False, **TILING)
    counter = EncoderCounter(model, monkeypatch)
    resumed = embed(image, model, cache=tmp_path / "c.zarr", progress=False, **TILING)
    assert (counter.calls, resumed.tiles_encoded, resumed.missing()) == (7, 7, [])


def test_mismatches_are_clear_errors(model, image, tmp_path):
    path = tmp_path / "c.zarr"
    embed(image[:128, :128], model, cache=path, progress=False, **TILING)
    with pytest.raises(InvalidInputError, match="data differs"):
        TiledEmbeddings(model, image[:128, :128] + 1, cache=path, **TILING)
    with pytest.raises(InvalidInputError, match="model differs"):
        TiledEmbeddings(tiny_model(seed=1), image[:128, :128], cache=path, **TILING)
    with pytest.raises(InvalidInputError, match="tiling differs"):
        TiledEmbeddings(model, image[:128, :128], cache=path, tile_shape=64, halo=16)
    with pytest.raises(InvalidInputError, match="other preprocessing"):
        TiledEmbeddings(
            model, image[:128, :128], cache=path, normalization=Normalization(limits=(0, 1)), **TILING
        )
    replaced = TiledEmbeddings(model, image[:128, :128] + 1, cache=path, overwrite=True, **TILING)
    assert replaced.missing() == [(0, 0)]


def test_stacks_are_cached_slice_by_slice(model, tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    stack = rng.normal(0, 1, (100, 3, 140)).astype(np.float32)  # slices along axis 1
    counter = EncoderCounter(model, monkeypatch)
    tiled = TiledEmbeddings(model, stack, stack_axis=1, cache=tmp_path / "s.zarr", **TILING)
    assert (tiled.n_slices, len(tiled.grid), tiled.grid.shape) == (3, 2, (100, 140))
    tiled.ensure([(1, 0), (1, 1)])
    assert counter.calls == 2
    assert tiled.missing() == [(0, 0), (0, 1), (2, 0), (2, 1)]
    slice0, slice1 = tiled.embedding(0, 0).embedding, tiled.embedding(1, 0).embedding
    assert counter.calls == 3 and not np.allclose(slice0, slice1)


def test_bad_arguments(model, image):
    with pytest.raises(InvalidInputError, match="pass stack_axis="):
        TiledEmbeddings(model, np.zeros((4, 5, 64, 64), np.float32))
    with pytest.raises(InvalidInputError, match="batch_size must be an integer >= 1"):
        embed(image, model, batch_size=0, progress=False)
    with pytest.raises(InvalidInputError, match="model must be a sum_core SamModel"):
        TiledEmbeddings(object(), image)


def count_hashes(monkeypatch) -> list[int]:
    """Count the weights hashes computed (one BLAKE2b object per computation)."""
    made: list[int] = []

    def blake2b(*args, **kwargs):
        made.append(1)
        return hashlib.blake2b(*args, **kwargs)

    monkeypatch.setattr(encoding, "hashlib", SimpleNamespace(blake2b=blake2b))
    return made


def test_weights_hash_is_computed_once_per_model_state(image, tmp_path, monkeypatch):
    model = tiny_model()
    made = count_hashes(monkeypatch)
    first = weights_hash(model)
    assert weights_hash(model) == first and len(made) == 1
    embed(image[:128, :256], model, cache=tmp_path / "a.zarr", progress=False, **TILING)
    TiledEmbeddings(model, image[:128, :256], cache=tmp_path / "a.zarr", **TILING)
    assert len(made) == 1  # the caches' signatures reuse it
    with torch.no_grad():
        model.mask_decoder.iou_token.weight[0, 0] += 1  # trained in place
    changed = weights_hash(model)
    assert changed != first and len(made) == 2
    assert weights_hash(model) == changed and len(made) == 2
    model.load_state_dict(tiny_model().state_dict())  # the original values again
    assert weights_hash(model) == first and len(made) == 3
    with pytest.raises(InvalidInputError, match="model differs"):
        with torch.no_grad():
            model.mask_decoder.iou_token.weight[0, 0] += 1
        TiledEmbeddings(model, image[:128, :256], cache=tmp_path / "a.zarr", **TILING)


def test_weights_hash_follows_the_weights(model):
    other = tiny_model()
    assert weights_hash(other) == weights_hash(model)
    with torch.no_grad():
        other.mask_decoder.iou_token.weight[0, 0] += 1
    assert weights_hash(other) != weights_hash(model)


def test_without_a_cache_path_there_is_no_store_and_no_signature(model, image, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("hashed without a persistent cache")

    for name in ("make_signature", "weights_hash"):
        monkeypatch.setattr(tiled_embedding, name, refuse)
    monkeypatch.setattr(embedding_cache, "data_hash", refuse)
    monkeypatch.chdir(tmp_path)
    tiled = TiledEmbeddings(model, image, **TILING)
    assert tiled.cache is None
    tiled.ensure([(0, 0), (0, 5)])
    assert tiled.missing() == [(0, t) for t in range(12) if t not in (0, 5)]
    predictor = Predictor(model)
    predictor.set_image(image)  # larger than the encoder: tiled, in memory only
    assert predictor.is_tiled and predictor.tiled.embeddings.cache is None
    assert list(tmp_path.iterdir()) == []


def test_tile_memory_is_a_bounded_lru(model, image, monkeypatch):
    counter = EncoderCounter(model, monkeypatch)
    tiled = TiledEmbeddings(model, image, memory_tiles=2, **TILING)
    first = tiled.embedding(0, 0)
    one = tiled.embedding(0, 1)
    assert tiled.embedding(0, 0) is first and counter.images == 2  # served from memory
    tiled.embedding(0, 2)  # evicts tile 1, the least recently used
    assert counter.images == 3
    assert tiled.embedding(0, 0) is first and counter.images == 3
    again = tiled.embedding(0, 1)  # evicted without a cache: encoded again, same values
    assert counter.images == 4 and tiled.tiles_encoded == 4 and again is not one
    np.testing.assert_array_equal(again.embedding, one.embedding)
    tiled.memory_tiles = 3  # settable: the next tiles fill up to it
    for t in (3, 4, 5):
        tiled.embedding(0, t)
    assert counter.images == 7
    tiled.embedding(0, 3), tiled.embedding(0, 4), tiled.embedding(0, 5)
    assert counter.images == 7
    with pytest.raises(InvalidInputError, match="memory_tiles must be an integer >= 1"):
        TiledEmbeddings(model, image, memory_tiles=0, **TILING)


def test_evicted_tiles_are_read_back_from_the_persistent_cache(model, image, tmp_path, monkeypatch):
    counter = EncoderCounter(model, monkeypatch)
    reads: list[tuple[int, int]] = []
    read = tiled_embedding.EmbeddingCache.read
    monkeypatch.setattr(
        tiled_embedding.EmbeddingCache, "read", lambda self, s, t: reads.append((s, t)) or read(self, s, t)
    )
    tiled = TiledEmbeddings(model, image, cache=tmp_path / "c.zarr", memory_tiles=1, **TILING)
    fresh = tiled.embedding(0, 4)
    tiled.embedding(0, 5)  # evicts tile 4
    back = tiled.embedding(0, 4)
    assert counter.images == 2 and reads == [(0, 4)]
    assert back is not fresh and back.early is None and back.hq_features is not None
    np.testing.assert_array_equal(back.embedding, fresh.embedding)  # stored as float32
    np.testing.assert_allclose(back.hq_features, fresh.hq_features, rtol=1e-5, atol=1e-6)
    predictor = Predictor(model, memory_tiles=3)
    predictor.set_image(image, cache=tmp_path / "c.zarr", **TILING)
    assert predictor.tiled.embeddings.memory_tiles == 3 and predictor.tiled.embeddings.missing() == [
        (0, t) for t in range(12) if t not in (4, 5)
    ]


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def test_bf16_embeddings_are_close_to_fp32_and_stored_as_float32(model, image, tmp_path):
    crop = image[:128, :256]  # 2 tiles
    fp32 = embed(crop, model, progress=False, **TILING)
    bf16 = embed(crop, model, cache=tmp_path / "bf16.zarr", progress=False, precision="bf16", **TILING)
    assert bf16.precision == "bf16" and bf16.cache.signature["preprocessing"]["precision"] == "bf16"
    for t in range(2):
        got, want, stored = bf16.embedding(0, t), fp32.embedding(0, t), bf16.cache.read(0, t)
        assert got.embedding.dtype == stored.embedding.dtype == torch.float32
        assert 0 < relative_error(got.embedding.numpy(), want.embedding.numpy()) < 1e-2
        assert relative_error(got.hq_features.numpy(), want.hq_features.numpy()) < 1e-2


def test_precision_is_validated_before_any_work(model, image, monkeypatch):
    counter = EncoderCounter(model, monkeypatch)
    with pytest.raises(InvalidInputError, match="precision='fp16' needs a CUDA device"):
        embed(image, model, progress=False, precision="fp16", **TILING)
    with pytest.raises(InvalidInputError, match="precision='fp8' is not one of"):
        TiledEmbeddings(model, image, precision="fp8", **TILING)
    assert counter.calls == 0


def test_a_cache_is_filled_at_one_precision_and_old_fp32_caches_reopen(model, image, tmp_path):
    import zarr

    path = tmp_path / "c.zarr"
    first = embed(image[:128, :128], model, cache=path, progress=False, **TILING)
    with pytest.raises(InvalidInputError, match="other preprocessing.*'precision': 'fp32'"):
        TiledEmbeddings(model, image[:128, :128], cache=path, precision="bf16", **TILING)
    # A cache written before the precision was recorded (always fp32) reopens at fp32 only.
    group = zarr.open_group(str(path), mode="r+")
    signature = group.attrs["signature"]
    del signature["preprocessing"]["precision"]
    group.attrs["signature"] = signature
    old = TiledEmbeddings(model, image[:128, :128], cache=path, **TILING)
    assert old.missing() == []
    np.testing.assert_array_equal(old.embedding(0, 0).embedding, first.embedding(0, 0).embedding)
    with pytest.raises(InvalidInputError, match="other preprocessing"):
        TiledEmbeddings(model, image[:128, :128], cache=path, precision="bf16", **TILING)


def record_reading_threads(monkeypatch, fail_on_call: int | None = None) -> list[str]:
    """Patch the per-tile normalisation to note its thread (and fail on one call)."""
    names: list[str] = []
    convert = tiled_embedding.to_uint8_rgb

    def recorded(pixels, normalization):
        if fail_on_call is not None and len(names) == fail_on_call:
            raise OSError("disk gone")
        names.append(threading.current_thread().name)
        return convert(pixels, normalization)

    monkeypatch.setattr(tiled_embedding, "to_uint8_rgb", recorded)
    return names


def test_pipeline_gives_the_same_embeddings_as_a_plain_loop(model, image, monkeypatch, tmp_path):
    def no_pin(self, *args, **kwargs):
        raise AssertionError("pin_memory called on a CPU run")

    monkeypatch.setattr(torch.Tensor, "pin_memory", no_pin)
    with monkeypatch.context() as patch:
        threads = record_reading_threads(patch)
        pipelined = embed(image, model, cache=tmp_path / "a.zarr", batch_size=4, progress=False, **TILING)
    # Batch 0 is read on the caller's thread, batches 1 and 2 in the background.
    assert threads[:4] == ["MainThread"] * 4
    assert all(name.startswith(THREAD_NAME) for name in threads[4:]) and len(threads) == 12

    def plain(prepare, items):
        yield from map(prepare, items)

    monkeypatch.setattr(tiled_embedding, "prefetch", plain)
    looped = embed(image, model, cache=tmp_path / "b.zarr", batch_size=4, progress=False, **TILING)
    for t in range(12):
        a, b = pipelined.cache.read(0, t), looped.cache.read(0, t)
        assert torch.equal(a.embedding, b.embedding) and torch.equal(a.early, b.early)
        assert (a.input_size, a.original_size) == (b.input_size, b.original_size)


def test_a_read_error_names_the_batch_and_keeps_the_batches_before_it(model, image, monkeypatch):
    before = set(threading.enumerate())
    record_reading_threads(monkeypatch, fail_on_call=7)  # tile 7, in batch 3 of 2 tiles
    tiled = TiledEmbeddings(model, image, **TILING)
    with pytest.raises(OSError, match="disk gone") as info:
        tiled.ensure(tiled.missing(), batch_size=2)
    assert info.value.__notes__ == [
        "while preparing item 3 ([(0, 6), (0, 7)]) in sum_core.prefetch"
    ]
    assert tiled.missing() == [(0, t) for t in range(6, 12)] and tiled.tiles_encoded == 6
    assert set(threading.enumerate()) == before
