"""sum_core.embedding_cache: create, reopen, mismatch errors, resume, dtype, 3D stacks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr

import sum_core
from sum_core.embedding_cache import CacheLayout, EmbeddingCache, data_hash, make_signature
from sum_core.errors import InvalidInputError
from sum_core.modeling import ImageEmbedding
from sum_core.tiling import TileGrid

# Small embeddings keep the tests fast; the format does not depend on the sizes.
LAYOUT = CacheLayout(n_slices=1, n_tiles=4, early_channels=3, embed_dim=8, embed_size=4)


def image() -> np.ndarray:
    return np.arange(40 * 30, dtype=np.uint16).reshape(40, 30)


def signature(data=None, model="vit_b_hq", weights="sha256:abc", grid=None) -> dict:
    data = image() if data is None else data
    return make_signature(data, model, weights, grid or TileGrid(data.shape[-2:], 20, 4))


def tile_values(seed: int, layout: CacheLayout = LAYOUT) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal(layout.embedding_shape).astype(np.float32)
    early = rng.standard_normal(layout.early_shape).astype(np.float32)
    return emb, early


def test_write_read_roundtrip_and_reopen(tmp_path) -> None:
    path = tmp_path / "cache.zarr"
    cache = EmbeddingCache.open(path, signature(), LAYOUT)
    assert cache.missing() == [(0, 0), (0, 1), (0, 2), (0, 3)]
    emb, early = tile_values(0)
    # Encoder outputs come as tensors with a batch of 1.
    emb_t, early_t = torch.from_numpy(emb)[None], torch.from_numpy(early)[None]
    cache.write(0, 2, emb_t, early_t, (1024, 768), (24, 18))
    got = cache.read(0, 2)  # an ImageEmbedding of float32 CPU tensors with a batch of 1
    assert isinstance(got, ImageEmbedding) and got.hq_features is None
    assert got.embedding.dtype == got.early.dtype == torch.float32 and got.embedding.device.type == "cpu"
    np.testing.assert_array_equal(got.embedding.numpy(), emb[None])
    np.testing.assert_array_equal(got.early.numpy(), early[None])
    assert (got.input_size, got.original_size) == ((1024, 768), (24, 18))
    assert cache.is_complete(0, 2) and not cache.is_complete(0, 1)

    again = EmbeddingCache.open(path, signature(), LAYOUT)
    assert again.missing() == [(0, 0), (0, 1), (0, 3)]
    np.testing.assert_array_equal(again.read(0, 2).embedding[0].numpy(), emb)
    stored = zarr.open_group(str(path), mode="r")
    assert stored["embedding"].shape == (1, 4, 8, 4, 4)
    assert stored["early"].shape == (1, 4, 4, 4, 3)
    tiling = {"shape": [40, 30], "tile_shape": [20, 20], "halo": [4, 4]}
    assert stored.attrs["signature"]["tiling"] == tiling
    assert stored.attrs["signature"]["version"] == sum_core.__version__


@pytest.mark.parametrize(
    ("changes", "parts"),
    [
        ({"data": image() + 1}, ["data"]),
        ({"weights": "sha256:def"}, ["model"]),
        ({"model": "vit_l_hq"}, ["model"]),
        ({"grid": TileGrid((40, 30), 20, 8)}, ["tiling"]),
        ({"data": image() + 1, "grid": TileGrid((40, 30), 10, 4)}, ["data", "tiling"]),
    ],
)
def test_mismatch_names_the_parts(tmp_path, changes, parts) -> None:
    path = tmp_path / "cache.zarr"
    EmbeddingCache.open(path, signature(), LAYOUT)
    with pytest.raises(InvalidInputError) as info:
        EmbeddingCache.open(path, signature(**changes), LAYOUT)
    message = str(info.value)
    for part in ("data", "model", "tiling"):
        assert (f"{part} differs" in message) == (part in parts)
    assert "new path" in message and "overwrite=True" in message


def test_layout_mismatch(tmp_path) -> None:
    path = tmp_path / "cache.zarr"
    EmbeddingCache.open(path, signature(), LAYOUT)
    other = CacheLayout(1, 4, early_channels=3, embed_dim=8, embed_size=4, dtype="float16")
    with pytest.raises(InvalidInputError, match="layout differs"):
        EmbeddingCache.open(path, signature(), other)


def test_overwrite_discards_old_tiles(tmp_path) -> None:
    path = tmp_path / "cache.zarr"
    cache = EmbeddingCache.open(path, signature(), LAYOUT)
    cache.write(0, 0, *tile_values(0), (1024, 1024), (24, 24))
    fresh = EmbeddingCache.open(path, signature(weights="sha256:new"), LAYOUT, overwrite=True)
    assert len(fresh.missing()) == 4
    assert fresh.signature["weights"] == "sha256:new"
    assert len(EmbeddingCache.open(path, signature(weights="sha256:new"), LAYOUT).missing()) == 4


def test_resume_after_crash_before_the_flag(tmp_path, monkeypatch) -> None:
    path = tmp_path / "cache.zarr"
    cache = EmbeddingCache.open(path, signature(), LAYOUT)
    cache.write(0, 0, *tile_values(0), (1024, 1024), (24, 24))

    def crash(self, s, t):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(EmbeddingCache, "_mark_complete", crash)
    emb1, early1 = tile_values(1)
    with pytest.raises(KeyboardInterrupt):
        cache.write(0, 1, emb1, early1, (1024, 1024), (24, 20))
    monkeypatch.undo()

    resumed = EmbeddingCache.open(path, signature(), LAYOUT)
    # The data reached the store before the crash, but without the flag it does not count.
    stored = zarr.open_group(str(path), mode="r")
    np.testing.assert_array_equal(stored["embedding"][0, 1], emb1)
    assert resumed.missing() == [(0, 1), (0, 2), (0, 3)]
    with pytest.raises(InvalidInputError, match="tile 1 of slice 0 is not in the embedding cache"):
        resumed.read(0, 1)
    resumed.write(0, 1, emb1, early1, (1024, 1024), (24, 20))
    assert resumed.missing() == [(0, 2), (0, 3)]
    assert resumed.read(0, 1).original_size == (24, 20)


def test_float16_storage(tmp_path) -> None:
    layout = CacheLayout(1, 1, early_channels=3, embed_dim=8, embed_size=4, dtype="float16")
    cache = EmbeddingCache.open(tmp_path / "half.zarr", signature(), layout)
    emb, early = tile_values(2, layout)
    cache.write(0, 0, emb, early, (1024, 1024), (40, 30))
    stored = zarr.open_group(str(tmp_path / "half.zarr"), mode="r")
    assert stored["embedding"].dtype == np.float16 and stored["early"].dtype == np.float16
    got = cache.read(0, 0)  # served as float32, with the float16 rounding
    assert got.embedding.dtype == got.early.dtype == torch.float32
    np.testing.assert_array_equal(got.embedding[0].numpy(), emb.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(got.early[0].numpy(), early.astype(np.float16).astype(np.float32))
    assert not np.array_equal(got.embedding[0].numpy(), emb)  # really rounded


def test_a_model_without_early_features_reads_none(tmp_path) -> None:
    layout = CacheLayout(1, 1, early_channels=1, embed_dim=8, embed_size=4)
    cache = EmbeddingCache.open(None, signature(), layout)
    emb, early = tile_values(3, layout)
    cache.write(0, 0, emb, early, (1024, 1024), (40, 30))
    assert cache.read(0, 0).early is None


def test_3d_slices_and_default_sizes(tmp_path) -> None:
    stack = np.random.default_rng(0).integers(0, 255, size=(3, 40, 30), dtype=np.uint8)
    layout = CacheLayout(n_slices=3, n_tiles=2, early_channels=4)
    assert layout.embedding_shape == (256, 64, 64) and layout.early_shape == (64, 64, 4)
    sig = make_signature(stack, "vit_b_hq", "sha256:abc", TileGrid((40, 30), (20, 30), 4))
    cache = EmbeddingCache.open(tmp_path / "stack.zarr", sig, layout)
    values = {}
    for s, t in [(0, 0), (2, 1), (1, 0)]:
        values[s, t] = tile_values(10 * s + t, layout)
        cache.write(s, t, *values[s, t], (1024, 768), (28, 30))
    reopened = EmbeddingCache.open(tmp_path / "stack.zarr", sig, layout)
    assert reopened.missing() == [(0, 1), (1, 1), (2, 0)]
    for (s, t), (emb, early) in values.items():
        got = reopened.read(s, t)
        np.testing.assert_array_equal(got.embedding[0].numpy(), emb)
        np.testing.assert_array_equal(got.early[0].numpy(), early)


def test_version_change_only_warns(tmp_path) -> None:
    path = tmp_path / "cache.zarr"
    EmbeddingCache.open(path, signature(), LAYOUT)
    newer = {**signature(), "version": "99.0"}
    with pytest.warns(UserWarning, match="written by version"):
        cache = EmbeddingCache.open(path, newer, LAYOUT)
    assert cache.signature["version"] == sum_core.__version__


def test_a_file_is_refused(tmp_path) -> None:
    a_file = tmp_path / "file.zarr"
    a_file.write_text("x")
    with pytest.raises(InvalidInputError, match="is a file, not a folder"):
        EmbeddingCache.open(a_file, signature(), LAYOUT, overwrite=True)
    assert a_file.read_text() == "x"


def test_interrupted_creation_needs_overwrite(tmp_path, monkeypatch) -> None:
    path = tmp_path / "cache.zarr"
    create_array = zarr.Group.create_array

    def killed_at_checksum(self, name, **kwargs):
        if name == "checksum":
            raise KeyboardInterrupt("killed")
        return create_array(self, name, **kwargs)

    monkeypatch.setattr(zarr.Group, "create_array", killed_at_checksum)
    with pytest.raises(KeyboardInterrupt):
        EmbeddingCache.open(path, signature(), LAYOUT)
    monkeypatch.undo()
    with pytest.raises(InvalidInputError, match=r"incomplete \(it lacks signature, layout, checksum, complete:"):
        EmbeddingCache.open(path, signature(), LAYOUT)
    assert len(EmbeddingCache.open(path, signature(), LAYOUT, overwrite=True).missing()) == 4
    assert len(EmbeddingCache.open(path, signature(), LAYOUT).missing()) == 4


def test_write_and_index_validation() -> None:
    cache = EmbeddingCache.open(None, signature(), LAYOUT)
    emb, early = tile_values(0)
    with pytest.raises(InvalidInputError, match=r"tile_index must be an integer in \[0, 4\), got 4"):
        cache.write(0, 4, emb, early, (1, 1), (1, 1))
    with pytest.raises(InvalidInputError, match=r"slice_index must be an integer in \[0, 1\)"):
        cache.is_complete(-1, 0)
    with pytest.raises(InvalidInputError, match=r"embedding must have shape \(8, 4, 4\)"):
        cache.write(0, 0, emb[:4], early, (1, 1), (1, 1))
    with pytest.raises(InvalidInputError, match="input_size must be a"):
        cache.write(0, 0, emb, early, (0, 5), (1, 1))
    assert cache.missing() == [(0, 0), (0, 1), (0, 2), (0, 3)]  # nothing half-written


def test_signature_and_layout_validation() -> None:
    with pytest.raises(InvalidInputError, match=r"signature lacks \['tiling'\]"):
        EmbeddingCache.open(None, {k: v for k, v in signature().items() if k != "tiling"}, LAYOUT)
    with pytest.raises(InvalidInputError, match="dtype must be one of"):
        CacheLayout(n_slices=1, n_tiles=1, early_channels=3, dtype="int8")
    with pytest.raises(InvalidInputError, match="n_tiles must be an integer >= 1"):
        CacheLayout(n_slices=1, n_tiles=0, early_channels=3)
    with pytest.raises(InvalidInputError, match="weights_hash must be a non-empty string"):
        make_signature(image(), "vit_b", "", TileGrid((40, 30), 20))


def test_data_hash() -> None:
    img = image()
    h = data_hash(img)
    assert h.startswith("v2:")
    assert data_hash(img.copy()) == h
    edited = img.copy()
    edited[39, 29] += 1
    assert data_hash(edited) != h
    assert data_hash(img.astype(np.int32)) != h  # dtype counts
    assert data_hash(img.reshape(30, 40)) != h  # shape counts
    assert data_hash(np.asfortranarray(img)) == h  # memory order does not

    store = zarr.storage.MemoryStore()
    lazy = zarr.create_array(store, shape=img.shape, dtype=img.dtype, chunks=(16, 16))
    lazy[:] = img
    assert data_hash(lazy) == h  # every element is hashed: a lazy copy has the numpy hash
    lazy[20, 10] += 1
    assert data_hash(lazy) != h
    assert json.dumps(make_signature(lazy, "m", "w", TileGrid((40, 30), 20)))  # JSON-safe
    with pytest.raises(InvalidInputError, match="data must be an array"):
        data_hash([1, 2, 3])
