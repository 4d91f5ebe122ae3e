"""Issue 11: exact data hashes of lazy sources, and damaged embedding-cache tiles.

The data hash decides whether a batch target or an embedding cache was made for the data at
hand; it used to read ~14 % of a lazy source, so an edit elsewhere reused old results. A tile of
the cache that was truncated, zeroed, NaN-filled or copied from another tile used to be served
(or raise a raw zarr error); it is now detected by its checksum and encoded again, with a warning.
"""

from __future__ import annotations

import shutil

import dask.array as da
import numpy as np
import pytest
import torch
import zarr
import zarr.storage

from sum_core import embedding_cache
from sum_core.batch import segment_zarr
from sum_core.embedding_cache import CacheLayout, EmbeddingCache, data_hash, make_signature
from sum_core.errors import DamagedTileError
from sum_core.errors import InvalidInputError, SumError
from sum_core.tiled_embedding import TiledEmbeddings
from sum_core.tiling import TileGrid
from test_batch import fake, tiny  # noqa: F401  (fixtures: fake generator, tiny model)
from test_tiled_embedding import tiny_model
from tiled_fakes import EncoderCounter

# A 40 x 40 region of a 512 x 512 plane that none of the old hash's sample windows reached.
EDIT = (slice(100, 140), slice(200, 240))


def plane(seed: int = 0) -> np.ndarray:
    """uint16 noise with one bright square (away from EDIT)."""
    image = np.random.default_rng(seed).integers(0, 50, size=(512, 512)).astype(np.uint16)
    image[380:420, 380:420] = 3000
    return image


def as_zarr(array: np.ndarray, path=None, chunks=None) -> zarr.Array:
    store = zarr.storage.MemoryStore() if path is None else str(path)
    z = zarr.create_array(store, shape=array.shape, dtype=array.dtype, chunks=chunks or array.shape)
    z[...] = array
    return z


def test_the_hash_is_the_same_for_every_source_chunking_and_thread_count(monkeypatch) -> None:
    # 6.6 MB: several 4 MiB leaves, so the leaves cross read blocks and chunk boundaries.
    stack = np.random.default_rng(1).integers(0, 65535, size=(3, 1000, 1100), dtype=np.uint16)
    expected = data_hash(stack)
    sources = {
        "fortran": np.asfortranarray(stack),
        "zarr": as_zarr(stack, chunks=(1, 100, 128)),
        "zarr sharded": zarr.create_array(
            zarr.storage.MemoryStore(), shape=stack.shape, dtype=stack.dtype, chunks=(1, 50, 50), shards=(1, 500, 550)
        ),
        "dask": da.from_array(stack, chunks=((1, 2), (300, 700), (400, 700))),
    }
    sources["zarr sharded"][...] = stack
    for name, source in sources.items():
        for workers in (1, 3):
            assert data_hash(source, workers=workers) == expected, (name, workers)
    monkeypatch.setattr(embedding_cache, "_READ_BYTES", 100_000)  # blocks smaller than a plane, even a chunk
    for name, source in sources.items():
        assert data_hash(source) == expected, name
    edited = stack.copy()
    edited[2, 999, 1099] ^= 1  # the last bit of the last element
    assert data_hash(as_zarr(edited, chunks=(1, 100, 128))) != expected
    assert data_hash(stack.astype(np.int32)) != data_hash(stack.astype(np.uint32))  # dtype counts
    assert data_hash(stack.reshape(3, 1100, 1000)) != expected  # shape counts
    with pytest.raises(InvalidInputError, match="not Python objects"):
        data_hash(np.array([None, 1]))
    with pytest.raises(InvalidInputError, match="workers must be an integer >= 1"):
        data_hash(stack, workers=0)


@pytest.mark.parametrize("lazy", ["zarr", "dask"])
def test_any_edit_of_a_lazy_source_changes_the_hash(lazy) -> None:
    image = plane()
    wrap = (lambda a: as_zarr(a, chunks=(128, 128))) if lazy == "zarr" else (lambda a: da.from_array(a, (128, 128)))
    before = data_hash(wrap(image))
    for r in range(0, 512, 100):
        for c in range(0, 512, 100):
            edited = image.copy()
            edited[r : r + 40, c : c + 40] += 1
            assert data_hash(wrap(edited)) != before, (r, c)


def test_a_batch_job_on_an_edited_zarr_source_is_not_served_from_the_old_target(tmp_path, fake) -> None:  # noqa: F811
    source = as_zarr(plane(), tmp_path / "src.zarr", chunks=(128, 128))
    first = segment_zarr(tmp_path / "src.zarr", tmp_path / "out.zarr", progress=False)
    assert set(np.unique(first["labels"][...])) == {0, 1}  # the one square
    source[EDIT] = 3000  # a second square where the old sampled hash never looked
    with pytest.raises(InvalidInputError, match=r"different job \(differs in source\).*--overwrite"):
        segment_zarr(tmp_path / "src.zarr", tmp_path / "out.zarr", progress=False)
    redone = segment_zarr(tmp_path / "src.zarr", tmp_path / "out.zarr", progress=False, overwrite=True)
    labels = redone["labels"][...]
    assert len(np.unique(labels)) == 3 and labels[EDIT].min() > 0 and len(np.unique(labels[EDIT])) == 1


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def test_an_embedding_cache_is_refused_for_an_edited_dask_source(model, tmp_path) -> None:
    image = plane()
    TiledEmbeddings(model, da.from_array(image, (128, 128)), cache=tmp_path / "c.zarr", tile_shape=256)
    edited = image.copy()
    edited[EDIT] += 7
    with pytest.raises(InvalidInputError, match="made for something else: data differs"):
        TiledEmbeddings(model, da.from_array(edited, (128, 128)), cache=tmp_path / "c.zarr", tile_shape=256)
    # The same data as numpy or zarr (other chunks) is the same data: the cache is reused.
    TiledEmbeddings(model, image, cache=tmp_path / "c.zarr", tile_shape=256)
    TiledEmbeddings(model, as_zarr(image, chunks=(100, 100)), cache=tmp_path / "c.zarr", tile_shape=256)


# Small embeddings keep the cache tests fast; the format does not depend on the sizes.
LAYOUT = CacheLayout(n_slices=2, n_tiles=3, early_channels=3, embed_dim=8, embed_size=4)


def small_cache(path) -> tuple[EmbeddingCache, dict]:
    """A cache with tiles (0, 0), (0, 1) and (1, 2) written; returns it and their values."""
    signature = make_signature(np.zeros((2, 40, 60), np.uint8), "vit_b_hq", "sha256:abc", TileGrid((40, 60), 20))
    cache = EmbeddingCache.open(path, signature, LAYOUT)
    values = {}
    for k, pair in enumerate([(0, 0), (0, 1), (1, 2)]):
        rng = np.random.default_rng(k)
        values[pair] = (
            rng.standard_normal(LAYOUT.embedding_shape).astype(np.float32),
            rng.standard_normal(LAYOUT.early_shape).astype(np.float32),
        )
        cache.write(*pair, *values[pair], (1024, 1024), (20, 20 + k))
    return cache, values


def chunk(path, name: str, s: int, t: int):
    """The chunk file of tile ``(s, t)`` of array ``name`` (zarr v3 default key encoding)."""
    tail = {"embedding": 3, "early": 3, "input_size": 1, "original_size": 1, "checksum": 1, "complete": 0}[name]
    return path.joinpath(name, "c", str(s), str(t), *["0"] * tail)


def overwrite_with(kind: str, path) -> None:
    """Damage tile (0, 1) of a :func:`small_cache` in place."""
    target = chunk(path, "embedding", 0, 1)
    size = target.stat().st_size
    if kind == "truncated":
        target.write_bytes(target.read_bytes()[: size // 2])
    elif kind == "zeros":
        target.write_bytes(bytes(size))
    elif kind == "nan":
        target.write_bytes(np.full(size // 4, np.nan, np.float32).tobytes())
    elif kind == "one nan":
        values = np.frombuffer(target.read_bytes(), np.float32).copy()
        values[5] = np.nan
        target.write_bytes(values.tobytes())
    elif kind == "early of another tile":
        shutil.copyfile(chunk(path, "early", 1, 2), chunk(path, "early", 0, 1))
    elif kind == "every array of another tile":
        for name in ("embedding", "early", "input_size", "original_size", "checksum", "complete"):
            shutil.copyfile(chunk(path, name, 0, 0), chunk(path, name, 0, 1))
    else:
        raise AssertionError(kind)


KINDS = ["truncated", "zeros", "nan", "one nan", "early of another tile", "every array of another tile"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_tile_is_a_clear_error_naming_the_cache_and_tile(tmp_path, kind) -> None:
    path = tmp_path / "cache.zarr"
    cache, values = small_cache(path)
    overwrite_with(kind, path)
    reopened = EmbeddingCache.open(path, cache.signature, LAYOUT)
    with pytest.raises(DamagedTileError, match=rf"cache '{path}': tile 1 of slice 0 is damaged") as info:
        reopened.read(0, 1)
    assert isinstance(info.value, SumError) and "overwrite=True" in str(info.value)
    for pair in [(0, 0), (1, 2)]:  # the other tiles are intact and served as written
        np.testing.assert_array_equal(reopened.read(*pair).embedding[0].numpy(), values[pair][0])
    reopened.discard(0, 1)
    assert reopened.missing() == [(0, 1), (0, 2), (1, 0), (1, 1)]
    reopened.write(0, 1, *values[0, 1], (1024, 1024), (20, 21))  # rewriting repairs it
    np.testing.assert_array_equal(reopened.read(0, 1).early[0].numpy(), values[0, 1][1])


def test_a_truncated_complete_flag_counts_as_missing(tmp_path) -> None:
    path = tmp_path / "cache.zarr"
    cache, _ = small_cache(path)
    chunk(path, "complete", 0, 1).write_bytes(b"")
    reopened = EmbeddingCache.open(path, cache.signature, LAYOUT)
    with pytest.warns(UserWarning, match="tile 1 of slice 0 is damaged .*complete flag cannot be read"):
        assert reopened.missing() == [(0, 1), (0, 2), (1, 0), (1, 1)]
    with pytest.warns(UserWarning, match="tile 1 of slice 0 is damaged"):
        assert not reopened.is_complete(0, 1)
    reopened.discard(0, 1)  # rewrites the flag
    assert reopened.missing() == [(0, 1), (0, 2), (1, 0), (1, 1)]


@pytest.mark.parametrize("kind", ["truncated", "nan"])
def test_tiled_embeddings_encode_a_damaged_tile_again_with_a_warning(model, tmp_path, monkeypatch, kind) -> None:
    image = plane()[:200, :250]  # 2 x 2 tiles of 128
    tiling = {"tile_shape": 128, "halo": 16}
    path = tmp_path / "c.zarr"
    counter = EncoderCounter(model, monkeypatch)
    first = TiledEmbeddings(model, image, cache=path, **tiling)
    first.ensure([(0, 0), (0, 1)])
    want = first.embedding(0, 1).embedding.clone()
    assert counter.images == 2
    target = chunk(path, "embedding", 0, 1)
    if kind == "truncated":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    else:
        target.write_bytes(np.full(target.stat().st_size // 4, np.nan, np.float32).tobytes())
    again = TiledEmbeddings(model, image, cache=path, **tiling)
    assert again.missing() == [(0, 2), (0, 3)]  # damage is found when a tile is read
    with pytest.warns(UserWarning, match=rf"'{path}': tile 1 of slice 0 is damaged.*encoding it again"):
        got = again.embedding(0, 1)
    assert counter.images == 3 and again.tiles_encoded == 1
    torch.testing.assert_close(got.embedding, want, rtol=0, atol=0)
    assert torch.isfinite(got.embedding).all()
    third = TiledEmbeddings(model, image, cache=path, **tiling)  # repaired on disk
    torch.testing.assert_close(third.embedding(0, 1).embedding, want, rtol=0, atol=0)
    assert counter.images == 3


def test_non_finite_values_are_never_stored(tmp_path) -> None:
    path = tmp_path / "cache.zarr"
    cache, values = small_cache(path)
    emb, early = values[0, 0]
    with_nan = emb.copy()
    with_nan[0, 1, 2] = np.nan
    with pytest.raises(InvalidInputError, match=r"embedding of tile 2 of slice 0 has values that are not finite"):
        cache.write(0, 2, with_nan, early, (1024, 1024), (20, 20))
    half = EmbeddingCache.open(None, cache.signature, CacheLayout(2, 3, 3, 8, 4, dtype="float16"))
    too_large = early.copy()
    too_large[0, 0, 0] = 1e5  # beyond float16's range: inf once stored
    with pytest.raises(InvalidInputError, match=r"early of tile 0 of slice 1 .* not finite as float16"):
        half.write(1, 0, emb, too_large, (1024, 1024), (20, 20))
    assert cache.missing() == [(0, 2), (1, 0), (1, 1)] and len(half.missing()) == 6  # nothing stored


def test_a_cache_of_the_old_format_is_refused_with_a_rebuild_hint(tmp_path) -> None:
    path = tmp_path / "cache.zarr"
    cache, _ = small_cache(path)
    group = zarr.open_group(str(path), mode="r+")
    del group["checksum"]  # as written by format 1, with a sampled data hash
    old_signature = {**cache.signature, "data": "sample:0123456789abcdef0123456789abcdef01234567"}
    group.attrs.update({"sum_hq_embedding_cache": 1, "signature": old_signature})
    with pytest.raises(InvalidInputError, match=r"older version of sum-hq .*rebuild it: pass overwrite=True"):
        EmbeddingCache.open(path, cache.signature, LAYOUT)
    rebuilt = EmbeddingCache.open(path, cache.signature, LAYOUT, overwrite=True)
    assert len(rebuilt.missing()) == 6 and rebuilt.signature["data"].startswith("v2:")


# A cache folder's contents are deleted (overwrite=True) only when its zarr.json carries our marker.
NOTES = "notes.txt"


def _user_folder(path, kind: str) -> None:
    """A folder holding a user's notes.txt and, per ``kind``, something that is not provably a cache."""
    if kind == "empty-attribute zarr group":
        zarr.create_group(str(path), zarr_format=3)
    elif kind == "zarr group with a cache's array names":  # what an interrupted creation used to leave
        zarr.create_group(str(path), zarr_format=3).create_array("embedding", shape=(1, 1), dtype="float32")
    elif kind == "marker that is not a format number":
        zarr.create_group(str(path), zarr_format=3, attributes={"sum_hq_embedding_cache": None})
    elif kind == "zarr array":
        zarr.create_array(str(path), shape=(4, 4), dtype="uint8", attributes={"sum_hq_embedding_cache": 2})
    else:
        path.mkdir()
        if kind != "plain folder":
            content = {"corrupt zarr.json": b'{"zarr_format": 3, "node_', "binary zarr.json": b"\xff\xfe\x00",
                       "zarr.json holding a list": b"[3]"}[kind]  # fmt: skip
            (path / "zarr.json").write_bytes(content)
    (path / NOTES).write_text("precious")


def _contents(path) -> dict[str, bytes]:
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


FOREIGN = ["plain folder", "empty-attribute zarr group", "zarr group with a cache's array names",
           "marker that is not a format number", "zarr array", "corrupt zarr.json", "binary zarr.json",
           "zarr.json holding a list"]  # fmt: skip


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("kind", FOREIGN)
def test_a_folder_that_is_not_provably_a_cache_is_refused_and_kept(tmp_path, kind, overwrite) -> None:
    path = tmp_path / "folder"
    _user_folder(path, kind)
    before = _contents(path)
    signature = make_signature(np.zeros((2, 40, 60), np.uint8), "vit_b_hq", "sha256:abc", TileGrid((40, 60), 20))
    with pytest.raises(InvalidInputError, match=rf"'{path}' is a non-empty folder that is not a sum-hq embedding "
                       r"cache \(.*\); choose another folder .*not even with overwrite=True") as info:  # fmt: skip
        EmbeddingCache.open(path, signature, LAYOUT, overwrite=overwrite)
    assert isinstance(info.value, SumError)
    assert _contents(path) == before and (path / NOTES).read_text() == "precious"


def test_tiled_embeddings_with_overwrite_keep_a_users_zarr_group(model, tmp_path) -> None:
    """The reported loss: an empty zarr group holding a user's file, opened as a cache with overwrite."""
    path = tmp_path / "analysis.zarr"
    _user_folder(path, "empty-attribute zarr group")
    with pytest.raises(InvalidInputError, match="no sum_hq_embedding_cache attribute"):
        TiledEmbeddings(model, plane()[:128, :128], cache=path, tile_shape=128, overwrite=True)
    assert (path / NOTES).read_text() == "precious"


def test_overwriting_a_cache_deletes_only_the_cache(tmp_path) -> None:
    path = tmp_path / "cache.zarr"
    cache, values = small_cache(path)
    (path / NOTES).write_text("precious")  # a user's file that ended up in the cache folder
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "data.bin").write_bytes(b"keep")
    shutil.rmtree(path / "early")
    (path / "early").symlink_to(outside, target_is_directory=True)  # a link is removed, not followed
    rebuilt = EmbeddingCache.open(path, cache.signature, LAYOUT, overwrite=True)
    assert len(rebuilt.missing()) == 6 and (path / NOTES).read_text() == "precious"
    assert _contents(outside) == {"data.bin": b"keep"} and not (path / "early").is_symlink()
    rebuilt.write(0, 1, *values[0, 1], (1024, 1024), (20, 21))
    np.testing.assert_array_equal(EmbeddingCache.open(path, cache.signature, LAYOUT).read(0, 1).early[0].numpy(),
                                  values[0, 1][1])  # fmt: skip


def test_an_interrupted_overwrite_leaves_a_cache_that_can_be_overwritten(tmp_path, monkeypatch) -> None:
    path = tmp_path / "cache.zarr"
    cache, _ = small_cache(path)
    rmtree = shutil.rmtree

    def killed_after_embedding(target, *args, **kwargs):
        rmtree(target, *args, **kwargs)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(shutil, "rmtree", killed_after_embedding)
    with pytest.raises(KeyboardInterrupt):
        EmbeddingCache.open(path, cache.signature, LAYOUT, overwrite=True)
    monkeypatch.undo()
    with pytest.raises(InvalidInputError, match=r"incomplete \(it lacks signature, layout, embedding:.*overwrite=True"):
        EmbeddingCache.open(path, cache.signature, LAYOUT)
    assert len(EmbeddingCache.open(path, cache.signature, LAYOUT, overwrite=True).missing()) == 6
