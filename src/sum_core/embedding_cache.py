"""Resumable zarr v3 cache of image embeddings, per slice and per tile.

On-disk format (a zarr v3 group)
--------------------------------
- ``embedding``: ``(n_slices, n_tiles, 256, 64, 64)``, the encoder output of each tile.
- ``early``: ``(n_slices, n_tiles, 64, 64, C)``, the early ViT features HQ-SAM needs.
- ``input_size``: ``(n_slices, n_tiles, 2)`` int32, the tile's ``(h, w)`` after resizing to
  the model input (before padding).
- ``original_size``: ``(n_slices, n_tiles, 2)`` int32, the tile's ``(h, w)`` in the image.
- ``complete``: ``(n_slices, n_tiles)`` bool, set only after everything else of that tile was
  written, so an interrupted run resumes at the first tile that is not complete.

Every array is chunked by one (slice, tile), so tiles are written independently (separate
processes may fill different tiles). Embeddings are stored uncompressed (float data barely
compresses and reads stay fast), float32 by default or float16 to halve the size.

The group attributes hold the **signature** (:func:`make_signature`): data hash, model name
and weight hash, tiling and package version, plus the layout. Reopening with a different data
hash, model, tiling or layout is an error; a different package version only warns.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
import zarr.storage

from .errors import InvalidInputError
from .modeling import ImageEmbedding
from .tiling import TileGrid
from .validation import check_index, check_int

__all__ = [
    "CacheLayout",
    "EmbeddingCache",
    "data_hash",
    "make_signature",
]

_MARKER = "sum_hq_embedding_cache"
_FORMAT = 1
_DTYPES = ("float32", "float16")
# Arrays of the store, in the order a tile's parts are written ("complete" last).
_ARRAY_NAMES = ("embedding", "early", "input_size", "original_size", "complete")
# Sampled hashing of non-numpy arrays: windows of at most _WINDOW per axis.
_N_WINDOWS = 64
_WINDOW = 32


def data_hash(data: Any, full: bool | None = None) -> str:
    """A cheap, stable hash of an image or stack, for the cache signature.

    - numpy arrays (``full=None`` or ``True``): BLAKE2b of shape, dtype and all bytes (read
      slice by slice along the first axis, so no full copy is made). Exact, about 1 GB/s.
    - other array-likes (zarr, dask, tifffile stores...) by default (``full=None``): shape,
      dtype and ``64`` windows of at most 32 pixels per axis at fixed pseudo-random
      positions (plus the first and last corner). This reads a handful of chunks instead of
      the whole dataset, but an edit that misses every window goes unnoticed; pass
      ``full=True`` to hash every element (slice by slice) when that matters.

    The prefix (``"full:"`` / ``"sample:"``) differs between the two, so a cache built from a
    numpy array does not match the same data opened lazily with the default.

    Parameters
    ----------
    data : array-like
        Anything with ``shape``, ``dtype`` and numpy-style slicing.
    full : bool, optional
        Hash every element (default: only for numpy arrays).
    """
    if not (hasattr(data, "shape") and hasattr(data, "dtype")):
        raise InvalidInputError(
            f"data must be an array with shape and dtype, got {type(data).__name__}"
        )
    shape = tuple(int(n) for n in data.shape)
    if full is None:
        full = isinstance(data, np.ndarray)
    h = hashlib.blake2b(digest_size=20)
    h.update(json.dumps([shape, np.dtype(data.dtype).str]).encode())
    if len(shape) == 0 or min(shape) == 0:
        pieces: list[Any] = [data[()]] if len(shape) == 0 else []
    elif full:
        pieces = (data[i] for i in range(shape[0]))
    else:
        pieces = (data[w] for w in _sample_windows(shape))
    for piece in pieces:
        h.update(np.ascontiguousarray(np.asarray(piece)).tobytes())
    return f"{'full' if full else 'sample'}:{h.hexdigest()}"


def _sample_windows(shape: tuple[int, ...]) -> list[tuple[slice, ...]]:
    """Deterministic windows (same shape -> same windows) for :func:`data_hash`."""
    rng = np.random.default_rng(0)
    sizes = [min(n, _WINDOW) for n in shape]
    starts = [[0] * len(shape), [n - s for n, s in zip(shape, sizes)]]
    for _ in range(_N_WINDOWS):
        starts.append([int(rng.integers(0, n - s + 1)) for n, s in zip(shape, sizes)])
    return [tuple(slice(a, a + s) for a, s in zip(st, sizes)) for st in starts]


def make_signature(data: Any, model_name: str, weights_hash: str, grid: TileGrid) -> dict[str, Any]:
    """The signature dict stored in (and compared against) a cache.

    Parameters
    ----------
    data : array-like
        The source image or stack, hashed with :func:`data_hash` (default ``full``).
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
            Discard an existing cache at ``path`` (only a zarr store is ever deleted).

        Raises
        ------
        InvalidInputError
            If ``path`` holds a cache made for other data, another model, another tiling or
            another layout (the message names each difference), or something that is not
            an embedding cache.
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
        group = _open_own_group(path)
        if overwrite:
            return cls._create(str(path), signature, layout, path)
        return cls._reopen(path, group, signature, layout)

    @classmethod
    def _create(
        cls, store: Any, signature: dict[str, Any], layout: CacheLayout, path: Path | None
    ) -> EmbeddingCache:
        group = zarr.open_group(store, mode="w", zarr_format=3)
        lead = (layout.n_slices, layout.n_tiles)
        arrays = {
            "embedding": (layout.embedding_shape, layout.dtype, 0),
            "early": (layout.early_shape, layout.dtype, 0),
            "input_size": ((2,), "int32", 0),
            "original_size": ((2,), "int32", 0),
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
        group.attrs.update({_MARKER: _FORMAT, "signature": signature, "layout": asdict(layout)})
        return cls(group, signature, layout, path)

    @classmethod
    def _reopen(
        cls, path: Path, group: zarr.Group, signature: dict[str, Any], layout: CacheLayout
    ) -> EmbeddingCache:
        attrs = group.attrs.asdict()
        if attrs.get(_MARKER) != _FORMAT:
            raise InvalidInputError(
                f"embedding cache '{path}' is incomplete (its creation was interrupted) or of "
                f"another format version; use a new path or pass overwrite=True"
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
        """Store one tile, then mark it complete (the flag is written last).

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
        """
        s, t = self._check_index(slice_index, tile_index)
        emb = _as_array(embedding, self.layout.embedding_shape, "embedding", self.layout.dtype)
        ear = _as_array(early, self.layout.early_shape, "early", self.layout.dtype)
        in_size = _size_pair(input_size, "input_size")
        orig_size = _size_pair(original_size, "original_size")
        self._embedding[s, t] = emb
        self._early[s, t] = ear
        self._input_size[s, t] = in_size
        self._original_size[s, t] = orig_size
        self._mark_complete(s, t)

    def _mark_complete(self, s: int, t: int) -> None:
        self._complete[s, t] = True

    def read(self, slice_index: int, tile_index: int) -> ImageEmbedding:
        """One complete tile as float32 CPU tensors (``hq_features`` not computed; ``early``
        None for a model without early features); raises InvalidInputError if it was never
        (fully) written."""
        s, t = self._check_index(slice_index, tile_index)
        if not self.is_complete(s, t):
            raise InvalidInputError(f"tile {t} of slice {s} is not in the embedding cache yet")
        in_h, in_w = (int(v) for v in self._input_size[s, t])
        or_h, or_w = (int(v) for v in self._original_size[s, t])
        embedding = torch.from_numpy(np.asarray(self._embedding[s, t], dtype=np.float32))[None]
        early = None
        if self.layout.early_channels > 1:
            early = torch.from_numpy(np.asarray(self._early[s, t], dtype=np.float32))[None]
        return ImageEmbedding(embedding, early, None, (in_h, in_w), (or_h, or_w))

    def is_complete(self, slice_index: int, tile_index: int) -> bool:
        """Whether the tile was written completely."""
        s, t = self._check_index(slice_index, tile_index)
        return bool(self._complete[s, t])

    def missing(self) -> list[tuple[int, int]]:
        """``(slice, tile)`` pairs still to compute, slice-major."""
        done = np.asarray(self._complete[...])
        return [(int(s), int(t)) for s, t in zip(*np.nonzero(~done))]

    def _check_index(self, slice_index: int, tile_index: int) -> tuple[int, int]:
        return (
            check_index(slice_index, "slice_index", self.layout.n_slices),
            check_index(tile_index, "tile_index", self.layout.n_tiles),
        )


def _open_own_group(path: Path) -> zarr.Group:
    """The zarr group at ``path`` if it is an embedding cache (possibly half-created).

    Anything else raises, even with ``overwrite=True``: only our own stores are deleted.
    """
    try:
        group = zarr.open_group(str(path), mode="r+")
        members = set(group.keys())
        marked = _MARKER in group.attrs
    except Exception:  # noqa: BLE001 - whatever zarr raises, this is not our store
        group, members, marked = None, set(), False
    if group is None or not (marked or members <= set(_ARRAY_NAMES)):
        raise InvalidInputError(
            f"embedding cache path '{path}' is a non-empty folder that is not an embedding "
            "cache; choose a new path (it is never overwritten)"
        )
    return group


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
    return value.astype(dtype, copy=False)


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
