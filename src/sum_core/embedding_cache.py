"""Resumable zarr v3 cache of image embeddings, per slice and per tile; the exact data hash.

On-disk format 2 (a zarr v3 group)
----------------------------------
- ``embedding``: ``(n_slices, n_tiles, 256, 64, 64)``, the encoder output of each tile.
- ``early``: ``(n_slices, n_tiles, 64, 64, C)``, the early ViT features HQ-SAM needs.
- ``input_size``: ``(n_slices, n_tiles, 2)`` int32, the tile's ``(h, w)`` after resizing to
  the model input (before padding).
- ``original_size``: ``(n_slices, n_tiles, 2)`` int32, the tile's ``(h, w)`` in the image.
- ``checksum``: ``(n_slices, n_tiles, 32)`` uint8, BLAKE2b (:func:`sum_core.checksums.checksum`)
  of the tile's position, sizes and the exact bytes of its embedding and early features as written.
- ``complete``: ``(n_slices, n_tiles)`` bool, set only after everything else of that tile was
  written, so an interrupted run resumes at the first tile that is not complete.

Every array is chunked by one (slice, tile), so tiles are written independently (separate
processes may fill different tiles). Embeddings are stored uncompressed (float data barely
compresses and reads stay fast), float32 by default or float16 to halve the size; values that
are not finite (NaN, or beyond float16's range) are refused when written.

The group attributes hold the marker ``sum_hq_embedding_cache`` (the format number, written
when the group is created, before anything else) and, written last, the **signature**
(:func:`make_signature`): data hash, model name and weight hash, tiling and package version,
plus the layout. Reopening with a different data hash, model, tiling or layout is an error; a
different package version only warns; a store without signature (creation interrupted) is
refused as incomplete. A cache of format 1 (written before the data hash was exact and tiles
had checksums) is refused with a message to rebuild it (``overwrite=True``): it may have been
made from other data, and damage in it would go unnoticed.

The cache folder
----------------
A path may be a new or empty folder, or a cache. A non-empty folder whose ``zarr.json`` does
not carry the marker (any other folder, zarr group or array, or an unreadable ``zarr.json``)
is refused, with or without ``overwrite``, and never written to or deleted. Nothing is deleted
without ``overwrite``; with it, only the cache's own ``zarr.json`` and array folders are, so
other files in a cache folder stay.

Damaged tiles
-------------
Every read of a tile checks its checksum: a chunk file that was truncated, unreadable,
zeroed, filled with NaN or copied from another tile raises :class:`~sum_core.errors.DamagedTileError` naming
the cache, slice and tile. :class:`sum_core.tiled_embedding.TiledEmbeddings` then marks the
tile as not complete (:meth:`EmbeddingCache.discard`) and encodes it again with a warning
naming the tile: the cache is derived data, so re-encoding the damaged tiles costs seconds
and keeps every other tile, where refusing the whole cache would throw hours of encoding
away. A ``complete`` flag that cannot be read counts as not complete (with a warning).
Tiles are verified when read, not when the cache is opened, so reopening stays cheap.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
import zarr.storage

from .checksums import checksum
from .errors import DamagedTileError, InvalidInputError
from .imageio import remove_entries
from .modeling import ImageEmbedding
from .sources import read_block
from .tiling import TileGrid
from .validation import check_index, check_int

__all__ = [
    "CacheLayout",
    "EmbeddingCache",
    "data_hash",
    "make_signature",
]

_MARKER = "sum_hq_embedding_cache"
_FORMAT = 2
_DTYPES = ("float32", "float16")
# Arrays of the store, in the order a tile's parts are written ("complete" last).
_ARRAY_NAMES = ("embedding", "early", "input_size", "original_size", "checksum", "complete")
_CHECKSUM_BYTES = 32

# data_hash: the scheme's prefix, its leaf size (part of the scheme: changing it changes every
# hash) and the most bytes read from the source at once (changes nothing but memory and speed).
_HASH_PREFIX = "v2:"
_LEAF_BYTES = 1 << 22
_READ_BYTES = 1 << 26
_MAX_HASH_WORKERS = 4


def data_hash(data: Any, workers: int | None = None) -> str:
    """Exact hash of every element of an image or stack, for cache and batch-job signatures.

    The hash is ``"v2:"`` and a 20-byte BLAKE2b (hex) of the shape, the dtype and the bytes of
    every element in C order: data up to 4 MiB is hashed in one pass; larger data is cut
    into 4 MiB leaves of that byte stream, each hashed on a thread pool, and the leaf digests
    are hashed in order. The result depends only on shape, dtype and values: not on memory
    order, on the source (numpy, zarr, dask, a TIFF store...), its chunking or ``workers``.

    Lazy sources are read in blocks of at most 64 MiB that follow their chunks (zarr shards or
    chunks, dask chunks) along the leading axes, so memory stays bounded and each chunk is
    decoded once (unless one row of chunks is larger than 64 MiB). About 1 GB/s per core for
    numpy data; see ``benchmarks/bench_data_hash.py`` for zarr and dask sources.

    Parameters
    ----------
    data : array-like
        Anything with ``shape``, ``dtype`` and numpy-style slicing.
    workers : int, optional
        Threads hashing leaves (default: up to 4, at most the CPU count).

    Returns
    -------
    str

    Raises
    ------
    InvalidInputError
        ``data`` is not an array, or holds Python objects.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    >>> data_hash(image) == data_hash(np.asfortranarray(image))
    True
    >>> data_hash(image).startswith("v2:")
    True
    """
    if not (hasattr(data, "shape") and hasattr(data, "dtype")):
        raise InvalidInputError(
            f"data must be an array with shape and dtype, got {type(data).__name__}"
        )
    shape = tuple(int(n) for n in data.shape)
    dtype = np.dtype(data.dtype)
    if dtype.hasobject:
        raise InvalidInputError("data must hold numbers, not Python objects (dtype object)")
    workers = min(_MAX_HASH_WORKERS, os.cpu_count() or 1) if workers is None else workers
    check_int(workers, "workers", 1)
    header = json.dumps([shape, dtype.str]).encode()
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes <= _LEAF_BYTES:
        index = () if len(shape) == 0 else (Ellipsis,)
        whole = [_as_bytes(read_block(data, index, "all pixels"), dtype)] if nbytes else []  # no read of empty data
        return f"{_HASH_PREFIX}{checksum(header, *whole, size=20).hex()}"
    blocks = (
        _as_bytes(read_block(data, r, "the block " + _described(r)), dtype)
        for r in _read_regions(shape, _chunk_edges(data, shape), dtype.itemsize)
    )
    return f"{_HASH_PREFIX}{checksum(header, *_leaf_digests(blocks, workers), size=20).hex()}"


def _described(index: tuple) -> str:
    """``"0:64, 3"`` for ``(slice(0, 64), 3)``: a block's index in the read-failure message."""
    return ", ".join(f"{i.start}:{i.stop}" if isinstance(i, slice) else str(i) for i in index)


def _as_bytes(block: Any, dtype: np.dtype) -> np.ndarray:
    """A block's elements in C order as a flat uint8 array (a view when already contiguous)."""
    return np.ascontiguousarray(np.asarray(block), dtype=dtype).reshape(-1).view(np.uint8)


def _chunk_edges(data: Any, shape: tuple[int, ...]) -> list[list[int]]:
    """Per axis, the chunk boundaries ``[0, ..., n]`` of a zarr (shards, else chunks) or dask
    array; one chunk per axis for anything else (numpy, h5py without chunks...)."""
    chunks = getattr(data, "shards", None) or getattr(data, "chunks", None)
    if not isinstance(chunks, (tuple, list)) or len(chunks) != len(shape):
        chunks = shape
    edges = []
    for n, c in zip(shape, chunks):
        if isinstance(c, (tuple, list)):  # dask: the size of every chunk
            axis = [int(e) for e in np.cumsum([0, *c])]
        else:
            axis = [*range(0, n, max(int(c), 1)), n]
        edges.append(axis if axis[-1] == n else [0, n])
    return edges


def _read_regions(shape: tuple[int, ...], edges: list[list[int]], itemsize: int) -> Iterator[tuple]:
    """Blocks that are consecutive runs of the C-order element stream, in order, each at most
    :data:`_READ_BYTES` (or one element row): a fixed index on the leading axes, a range
    of chunk-aligned positions on the next one and everything of the axes after it."""

    def walk(prefix: tuple[int, ...], axis: int) -> Iterator[tuple]:
        row = math.prod(shape[axis + 1 :]) * itemsize  # bytes per position along ``axis``
        if row > _READ_BYTES and axis + 1 < len(shape):
            for i in range(shape[axis]):
                yield from walk((*prefix, i), axis + 1)
            return
        most = max(1, _READ_BYTES // row)
        start, cuts = 0, edges[axis]
        while start < shape[axis]:
            aligned = cuts[bisect.bisect_right(cuts, start + most) - 1]
            stop = aligned if aligned > start else min(start + most, shape[axis])
            yield (*prefix, slice(start, stop))
            start = stop

    return walk((), 0)


def _leaf_digests(blocks: Iterable[np.ndarray], workers: int) -> list[bytes]:
    """32-byte :func:`~sum_core.checksums.checksum` of each :data:`_LEAF_BYTES` piece of the
    concatenated ``blocks``, in order, hashed on ``workers`` threads with a bounded number of
    pieces in flight."""
    digests: list[bytes] = []
    in_flight: deque[Future[bytes]] = deque()
    carry = bytearray()
    with ThreadPoolExecutor(workers, thread_name_prefix="sum-hq-data-hash") as pool:

        def submit(piece: Any) -> None:
            in_flight.append(pool.submit(checksum, piece))
            while len(in_flight) > 2 * workers:
                digests.append(in_flight.popleft().result())

        for block in blocks:
            start = 0
            if carry:
                start = min(_LEAF_BYTES - len(carry), len(block))
                carry += memoryview(block[:start])
                if len(carry) == _LEAF_BYTES:
                    submit(bytes(carry))
                    carry = bytearray()
            while len(block) - start >= _LEAF_BYTES:
                submit(block[start : start + _LEAF_BYTES])
                start += _LEAF_BYTES
            carry += memoryview(block[start:])
        if carry:
            submit(bytes(carry))
        digests.extend(future.result() for future in in_flight)
    return digests


def make_signature(data: Any, model_name: str, weights_hash: str, grid: TileGrid) -> dict[str, Any]:
    """The signature dict stored in (and compared against) a cache.

    Parameters
    ----------
    data : array-like
        The source image or stack, hashed with :func:`data_hash` (every element).
    model_name : str
        Registry name or checkpoint file name of the model.
    weights_hash : str
        Hash of the weights (the registry's known hash, or computed for a custom file).
    grid : TileGrid
        Tiling of each plane.
    """
    from . import __version__  # here, not at import time: sum_core/__init__ may import this module

    if not isinstance(grid, TileGrid):
        raise InvalidInputError(f"grid must be a TileGrid, got {type(grid).__name__}")
    for name, value in (("model_name", model_name), ("weights_hash", weights_hash)):
        if not isinstance(value, str) or not value:
            raise InvalidInputError(f"{name} must be a non-empty string, got {value!r}")
    return {
        "data": data_hash(data),
        "model": model_name,
        "weights": weights_hash,
        "tiling": {
            "shape": list(grid.shape),
            "tile_shape": list(grid.tile_shape),
            "halo": list(grid.halo),
        },
        "version": __version__,
    }


# Which signature keys make up each part named in a mismatch error.
_PARTS = {"data": ("data",), "model": ("model", "weights"), "tiling": ("tiling",)}


@dataclass(frozen=True)
class CacheLayout:
    """Array sizes of a cache.

    Parameters
    ----------
    n_slices : int
        Planes (1 for a 2D image, Z or T for a stack).
    n_tiles : int
        Tiles per plane (``len(grid)``).
    early_channels : int
        Channels ``C`` of the early features (768 for vit_b, 160 for vit_tiny...).
    embed_dim, embed_size : int
        Embedding ``(embed_dim, embed_size, embed_size)``; 256 and 64 for every SAM model.
    dtype : {"float32", "float16"}
        Storage dtype.
    """

    n_slices: int
    n_tiles: int
    early_channels: int
    embed_dim: int = 256
    embed_size: int = 64
    dtype: str = "float32"

    def __post_init__(self) -> None:
        for name in ("n_slices", "n_tiles", "early_channels", "embed_dim", "embed_size"):
            check_int(getattr(self, name), name, 1)
        if self.dtype not in _DTYPES:
            raise InvalidInputError(f"dtype must be one of {_DTYPES}, got {self.dtype!r}")

    @property
    def embedding_shape(self) -> tuple[int, int, int]:
        """Shape of one tile's embedding."""
        return (self.embed_dim, self.embed_size, self.embed_size)

    @property
    def early_shape(self) -> tuple[int, int, int]:
        """Shape of one tile's early features."""
        return (self.embed_size, self.embed_size, self.early_channels)


class EmbeddingCache:
    """Per-slice, per-tile embedding store; create or reopen it with :meth:`open`."""

    def __init__(
        self, group: zarr.Group, signature: dict[str, Any], layout: CacheLayout, path: Path | None
    ) -> None:
        self._group = group
        self.signature = signature
        self.layout = layout
        self.path = path
        self._embedding = group["embedding"]
        self._early = group["early"]
        self._input_size = group["input_size"]
        self._original_size = group["original_size"]
        self._checksum = group["checksum"]
        self._complete = group["complete"]

    @classmethod
    def open(
        cls,
        path: str | os.PathLike | None,
        signature: dict[str, Any],
        layout: CacheLayout,
        overwrite: bool = False,
    ) -> EmbeddingCache:
        """Create a cache, or reopen one whose signature and layout match.

        Parameters
        ----------
        path : str, path-like or None
            Folder of the zarr store; None keeps the cache in memory.
        signature : dict
            From :func:`make_signature`.
        layout : CacheLayout
            Array sizes and dtype.
        overwrite : bool
            Discard an existing cache at ``path``: its ``zarr.json`` and its arrays' folders are
            deleted, anything else in the folder is left as it is.

        Raises
        ------
        InvalidInputError
            If ``path`` holds a cache made for other data, another model, another tiling or
            another layout (the message names each difference), a cache of an older format,
            or, with or without ``overwrite``, if it is a non-empty folder that is not provably
            an embedding cache (no ``sum_hq_embedding_cache`` attribute in its group's
            ``zarr.json``).
        """
        signature = _normalise_signature(signature)
        if not isinstance(layout, CacheLayout):
            raise InvalidInputError(f"layout must be a CacheLayout, got {type(layout).__name__}")
        if path is None:
            return cls._create(zarr.storage.MemoryStore(), signature, layout, None)
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise InvalidInputError(f"embedding cache path '{path}' is a file, not a folder")
        if not path.exists() or not any(path.iterdir()):
            return cls._create(str(path), signature, layout, path)
        _check_own_store(path)
        if overwrite:
            _delete_own_store(path)
            return cls._create(str(path), signature, layout, path)
        return cls._reopen(path, zarr.open_group(str(path), mode="r+"), signature, layout)

    @classmethod
    def _create(
        cls, store: Any, signature: dict[str, Any], layout: CacheLayout, path: Path | None
    ) -> EmbeddingCache:
        # The marker comes first, so even a half-created store is provably ours; create_group
        # never clears the folder (open_group(mode="w") would delete everything in it).
        group = zarr.create_group(store, zarr_format=3, attributes={_MARKER: _FORMAT})
        lead = (layout.n_slices, layout.n_tiles)
        arrays = {
            "embedding": (layout.embedding_shape, layout.dtype, 0),
            "early": (layout.early_shape, layout.dtype, 0),
            "input_size": ((2,), "int32", 0),
            "original_size": ((2,), "int32", 0),
            "checksum": ((_CHECKSUM_BYTES,), "uint8", 0),
            "complete": ((), "bool", False),
        }
        for name in _ARRAY_NAMES:
            tail, dtype, fill = arrays[name]
            group.create_array(
                name,
                shape=lead + tail,
                chunks=(1, 1) + tail,
                dtype=dtype,
                fill_value=fill,
                compressors=None,
            )
        # The signature goes last: a store without it is an interrupted creation.
        group.attrs.update({"signature": signature, "layout": asdict(layout)})
        return cls(group, signature, layout, path)

    @classmethod
    def _reopen(
        cls, path: Path, group: zarr.Group, signature: dict[str, Any], layout: CacheLayout
    ) -> EmbeddingCache:
        attrs = group.attrs.asdict()
        found = attrs.get(_MARKER)
        if isinstance(found, int) and found < _FORMAT:
            raise InvalidInputError(
                f"embedding cache '{path}' was written by an older version of sum-hq (cache format "
                f"{found}: sampled data hash, no tile checksums), so it may hold embeddings of other "
                "data; rebuild it: pass overwrite=True (--overwrite) or use a new path"
            )
        if found != _FORMAT:
            raise InvalidInputError(
                f"embedding cache '{path}' was written by a newer version of sum-hq (cache format "
                f"{found}); update sum-hq, use a new path or pass overwrite=True"
            )
        absent = [k for k in ("signature", "layout") if k not in attrs] + [n for n in _ARRAY_NAMES if n not in group]
        if absent:
            raise InvalidInputError(
                f"embedding cache '{path}' is incomplete (it lacks {', '.join(absent)}: its creation or "
                "deletion was interrupted); pass overwrite=True (--overwrite) or use a new path"
            )
        stored = attrs["signature"]
        differences = [
            f"{part} differs (cache: {_describe(stored, keys)}, now: {_describe(signature, keys)})"
            for part, keys in _PARTS.items()
            if any(stored.get(k) != signature.get(k) for k in keys)
        ]
        if attrs["layout"] != asdict(layout):
            differences.append(f"layout differs (cache: {attrs['layout']}, now: {asdict(layout)})")
        if differences:
            raise InvalidInputError(
                f"embedding cache '{path}' was made for something else: {'; '.join(differences)}. "
                "Use a new path, or pass overwrite=True to discard it and recompute."
            )
        if stored.get("version") != signature.get("version"):
            warnings.warn(
                f"embedding cache '{path}' was written by version {stored.get('version')} "
                f"(now {signature.get('version')}); reusing it",
                UserWarning,
                stacklevel=3,
            )
        return cls(group, stored, layout, path)

    def write(
        self,
        slice_index: int,
        tile_index: int,
        embedding: np.ndarray | torch.Tensor,
        early: np.ndarray | torch.Tensor,
        input_size: Sequence[int],
        original_size: Sequence[int],
    ) -> None:
        """Store one tile and its checksum, then mark it complete (the flag is written last).

        Parameters
        ----------
        slice_index, tile_index : int
            Position in the cache.
        embedding : array or tensor
            ``(256, 64, 64)``, or with a leading batch of 1.
        early : array or tensor
            ``(64, 64, C)``, or with a leading batch of 1.
        input_size : (int, int)
            Tile ``(h, w)`` after resizing to the model input.
        original_size : (int, int)
            Tile ``(h, w)`` in the image.

        Raises
        ------
        InvalidInputError
            Bad index, shape or size, or values that are not finite in the storage dtype
            (NaN or inf from the encoder, or beyond float16's range): nothing is stored.
        """
        s, t = self._check_index(slice_index, tile_index)
        emb = _as_array(embedding, self.layout.embedding_shape, "embedding", self.layout.dtype)
        ear = _as_array(early, self.layout.early_shape, "early", self.layout.dtype)
        in_size = _size_pair(input_size, "input_size")
        orig_size = _size_pair(original_size, "original_size")
        for name, value in (("embedding", emb), ("early", ear)):
            if not np.isfinite(value).all():
                raise InvalidInputError(
                    f"{name} of tile {t} of slice {s} has values that are not finite as "
                    f"{self.layout.dtype} (NaN or inf); nothing was stored. Encode at "
                    "precision='fp32' and store float32 (dtype='float32')"
                )
        self._embedding[s, t] = emb
        self._early[s, t] = ear
        self._input_size[s, t] = in_size
        self._original_size[s, t] = orig_size
        self._checksum[s, t] = _tile_checksum(s, t, emb, ear, in_size, orig_size)
        self._mark_complete(s, t)

    def _mark_complete(self, s: int, t: int) -> None:
        self._complete[s, t] = True

    def read(self, slice_index: int, tile_index: int) -> ImageEmbedding:
        """One complete tile as float32 CPU tensors (``hq_features`` not computed; ``early``
        None for a model without early features), checked against its checksum.

        Raises
        ------
        InvalidInputError
            The tile was never (fully) written.
        DamagedTileError
            A chunk of the tile cannot be read (truncated file...) or the tile does not match
            its checksum (overwritten with zeros, NaN or another tile's data).
        """
        s, t = self._check_index(slice_index, tile_index)
        if not self.is_complete(s, t):
            raise InvalidInputError(f"tile {t} of slice {s} is not in the embedding cache yet")
        try:
            emb, ear = np.asarray(self._embedding[s, t]), np.asarray(self._early[s, t])
            in_size = tuple(int(v) for v in self._input_size[s, t])
            orig_size = tuple(int(v) for v in self._original_size[s, t])
            stored = np.asarray(self._checksum[s, t])
        except Exception as err:  # noqa: BLE001 - zarr and its codecs raise many types on bad chunks
            raise self._damaged(s, t, f"a chunk cannot be read: {type(err).__name__}: {err}") from None
        if not np.array_equal(stored, _tile_checksum(s, t, emb, ear, in_size, orig_size)):
            raise self._damaged(s, t, "its data do not match the checksum written with them")
        embedding = torch.from_numpy(emb.astype(np.float32, copy=False))[None]
        early = None
        if self.layout.early_channels > 1:
            early = torch.from_numpy(ear.astype(np.float32, copy=False))[None]
        return ImageEmbedding(embedding, early, None, in_size, orig_size)  # type: ignore[arg-type]

    def _damaged(self, s: int, t: int, reason: str) -> DamagedTileError:
        return DamagedTileError(
            f"embedding cache '{self.path or 'in memory'}': tile {t} of slice {s} is damaged ({reason}); "
            "encode it again (TiledEmbeddings does so itself) or rebuild the cache with overwrite=True"
        )

    def discard(self, slice_index: int, tile_index: int) -> None:
        """Mark a tile as not complete (to be encoded and written again), e.g. a damaged one."""
        s, t = self._check_index(slice_index, tile_index)
        self._complete[s, t] = False

    def is_complete(self, slice_index: int, tile_index: int) -> bool:
        """Whether the tile was written completely; a flag that cannot be read counts as not
        complete, with a warning (its tile is then encoded again)."""
        s, t = self._check_index(slice_index, tile_index)
        try:
            return bool(self._complete[s, t])
        except Exception as err:  # noqa: BLE001 - zarr and its codecs raise many types on bad chunks
            warnings.warn(f"{self._damaged(s, t, f'its complete flag cannot be read: {err}')}", stacklevel=2)
            return False

    def missing(self) -> list[tuple[int, int]]:
        """``(slice, tile)`` pairs still to compute, slice-major (see :meth:`is_complete`)."""
        try:
            done = np.asarray(self._complete[...])
        except Exception:  # noqa: BLE001 - a damaged flag: read them one by one
            done = np.array(
                [[self.is_complete(s, t) for t in range(self.layout.n_tiles)] for s in range(self.layout.n_slices)]
            )
        return [(int(s), int(t)) for s, t in zip(*np.nonzero(~done))]

    def _check_index(self, slice_index: int, tile_index: int) -> tuple[int, int]:
        return (
            check_index(slice_index, "slice_index", self.layout.n_slices),
            check_index(tile_index, "tile_index", self.layout.n_tiles),
        )


def _check_own_store(path: Path) -> None:
    """Refuse a non-empty folder unless its ``zarr.json`` proves it an embedding cache.

    The proof is our marker (an integer format number, written before anything else of a
    cache) among the attributes of a zarr v3 group. A folder without it is refused with or
    without ``overwrite``: it is never reopened, written to or deleted.
    """
    meta_file = path / "zarr.json"
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        reason = None
    except FileNotFoundError:
        meta, reason = None, "it has no zarr.json"
    except (OSError, ValueError) as err:  # unreadable, not UTF-8, not JSON
        meta, reason = None, f"its zarr.json cannot be read ({type(err).__name__})"
    if reason is None:
        attrs = meta.get("attributes") if isinstance(meta, dict) else None
        marker = attrs.get(_MARKER) if isinstance(attrs, dict) else None
        if not isinstance(meta, dict) or meta.get("zarr_format") != 3 or meta.get("node_type") != "group":
            reason = "its zarr.json does not describe a zarr v3 group"
        elif isinstance(marker, bool) or not isinstance(marker, int):
            reason = f"its zarr.json has no {_MARKER} attribute"
    if reason is not None:
        raise InvalidInputError(
            f"embedding cache path '{path}' is a non-empty folder that is not a sum-hq embedding "
            f"cache ({reason}); choose another folder (an empty or new one): this one is never "
            "written to or deleted, not even with overwrite=True"
        )


def _delete_own_store(path: Path) -> None:
    """Delete what an embedding cache consists of (checked by :func:`_check_own_store`): its
    arrays' folders, then its ``zarr.json``. Anything else in the folder stays;
    a link is removed, never what it points to. The signature goes first, so a deletion cut
    short leaves a store that reopens as incomplete."""
    group = zarr.open_group(str(path), mode="r+")
    group.attrs.put({_MARKER: group.attrs[_MARKER]})
    remove_entries(path, (*_ARRAY_NAMES, "zarr.json"))


def _normalise_signature(signature: dict[str, Any]) -> dict[str, Any]:
    """The signature as it reads back from JSON attributes (tuples become lists)."""
    if not isinstance(signature, dict):
        raise InvalidInputError(f"signature must be a dict, got {type(signature).__name__}")
    missing = [k for keys in _PARTS.values() for k in keys if k not in signature] + (
        [] if "version" in signature else ["version"]
    )
    if missing:
        raise InvalidInputError(f"signature lacks {missing}; build it with make_signature")
    try:
        return json.loads(json.dumps(signature))
    except (TypeError, ValueError) as err:
        raise InvalidInputError(f"signature must be JSON-serialisable: {err}") from None


def _describe(signature: dict[str, Any], keys: tuple[str, ...]) -> str:
    return ", ".join(f"{k}={signature.get(k)!r}" for k in keys)


def _as_array(
    value: np.ndarray | torch.Tensor, shape: tuple[int, ...], name: str, dtype: str
) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float32).numpy()
    value = np.asarray(value)
    if value.shape == (1, *shape):
        value = value[0]
    if value.shape != shape:
        raise InvalidInputError(
            f"{name} must have shape {shape} (or (1, *{shape})), got {value.shape}"
        )
    with np.errstate(over="ignore"):  # overflow to inf is refused by write(), with a clear message
        return value.astype(dtype, copy=False)


def _tile_checksum(
    s: int, t: int, embedding: np.ndarray, early: np.ndarray, input_size: Sequence[int], original_size: Sequence[int]
) -> np.ndarray:
    """Checksum of a tile's position, sizes and stored bytes, as ``_CHECKSUM_BYTES`` uint8."""
    parts = [np.array([s, t, *input_size, *original_size], dtype="<i8")]
    for part in (embedding, early):
        parts += [json.dumps([part.shape, part.dtype.str]).encode(), part]
    return np.frombuffer(checksum(*parts, size=_CHECKSUM_BYTES), dtype=np.uint8)


def _size_pair(value: Sequence[int], name: str) -> tuple[int, int]:
    try:
        pair = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"{name} must be a (height, width) pair of ints, got {value!r}"
        ) from None
    if len(pair) != 2 or min(pair) < 1:
        raise InvalidInputError(
            f"{name} must be a (height, width) pair of positive ints, got {value!r}"
        )
    return pair  # type: ignore[return-value]
