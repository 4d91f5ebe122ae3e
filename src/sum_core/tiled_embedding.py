"""Tiled, cached, resumable image embeddings for images and stacks of any size.

:class:`TiledEmbeddings` binds a model, an image (or a stack, slice by slice) and a tiling
(:func:`sum_core.tiling.tile_grid`, the one size rule): a tile is encoded the first time it
is asked for and served from memory afterwards, as an
:class:`~sum_core.modeling.ImageEmbedding` of tensors with its HQ features computed once.
The tiles in memory form a bounded LRU (``memory_tiles``; the least recently used tile is
evicted). With ``cache=`` a folder, every encoded tile is also written to a persistent zarr
:class:`~sum_core.embedding_cache.EmbeddingCache` and an evicted tile is read back from it
instead of being encoded again; a tile that fails its checksum there is encoded again, with
a warning naming it. :func:`embed` fills the whole cache up front (with batching
and a progress bar), resuming where an interrupted run stopped; the next batch of tiles is
read and resized on a background thread while the current one is encoded
(:mod:`sum_core.prefetch`).

Preprocessing of a tile: its outer window (tile + halo, clipped to the image) is read
from the (lazy) source, converted to 8-bit RGB with ONE intensity window computed for the
whole image or stack (:func:`sum_core.sources.fixed_normalization`), and encoded through
:func:`sum_core.encoding.encode`, exactly as :class:`sum_core.Predictor` encodes a whole image.

Cache signature (persisted caches only): the data hash, the model (``model_type`` plus
``-hq`` / ``-sum``) and the hash of its weights (:func:`sum_core.encoding.weights_hash`,
computed once per model state), the tiling and the package version, plus a
``preprocessing`` entry (stack axis, intensity window and encoder precision): reopening a
cache made with different preprocessing is an error too. A cache written before the
precision was recorded (always at ``fp32``) reads as ``fp32``.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from .acceleration import check_precision
from .embedding_cache import CacheLayout, EmbeddingCache, make_signature
from .encoding import encode, model_name, to_pixels, weights_hash
from .errors import DamagedTileError, InvalidInputError, check_cancel
from .modeling import ImageEmbedding, SamModel
from .prefetch import pin_for_transfer, prefetch
from .image import Normalization, to_uint8_rgb
from .sources import Planes, fixed_normalization, open_image
from .tiling import TileGrid, tile_grid
from .validation import check_int

__all__ = ["DEFAULT_MEMORY_TILES", "TiledEmbeddings", "embed"]

#: Tiles kept in memory by default (about 12 MB each for an HQ ViT model, 4 MB for SAM).
DEFAULT_MEMORY_TILES = 32


class _Batch(NamedTuple):
    """Tiles read and resized, ready for the encoder."""

    pairs: list[tuple[int, int]]
    pixels: list[torch.Tensor]  # 1x3xhxw uint8, pinned when bound for CUDA
    original_sizes: list[tuple[int, int]]


class TiledEmbeddings:
    """Tile embeddings of one image or stack, encoded on demand, served from memory.

    Thread-safe: tiles asked for by several threads are encoded once.

    Parameters
    ----------
    model : SamModel
        The model whose image encoder is used (on the device it is on).
    image : array-like, path or Planes
        Anything :func:`sum_core.sources.open_image` accepts, read tile by tile; or the
        :class:`~sum_core.sources.Planes` of an opened source (e.g. a batch volume's, whose channel
        axis and channel choice it carries), read through it (``stack_axis`` must then be None).
    tile_shape, halo : int or (int, int), optional
        Tiling of each plane, see :func:`sum_core.tiling.tile_grid`.
    cache : str, path-like or None
        Folder of a persistent zarr cache (see :class:`~sum_core.embedding_cache.EmbeddingCache`);
        None keeps tiles in memory only (an evicted tile is encoded again when needed).
    stack_axis : int, optional
        Axis of the slices of a 3D / time stack; None for 2D.
    normalization : Normalization, optional
        Intensity window; computed once for the whole image (see
        :func:`sum_core.sources.fixed_normalization`).
    dtype : {"float32", "float16"}
        Storage dtype of the persistent cache.
    overwrite : bool
        Discard an existing cache at ``cache`` and start a new one, even one that matches (without
        it, a cache made for other data, another model, tiling or preprocessing is refused). Only
        a folder whose ``zarr.json`` marks it as an embedding cache is ever deleted, and only the
        cache's own files in it; any other non-empty folder is refused.
    precision : {"fp32", "bf16", "fp16"}
        Encoder precision (:func:`sum_core.acceleration.autocast`; ``fp16`` needs CUDA).
        Part of the cache's preprocessing: a cache is filled at one precision only.
    memory_tiles : int
        Tiles kept in memory (LRU), >= 1.

    Attributes
    ----------
    grid : TileGrid
    planes : Planes
    cache : EmbeddingCache or None
        The persistent cache, if any.
    precision : str
    tiles_encoded : int
        Tiles encoded by this object so far (memory and cache hits excluded).

    Raises
    ------
    InvalidInputError
        Bad image or stack axis, bad tiling, a precision the model's device cannot run, or a
        cache made for other data, another model, another tiling or other preprocessing.
    """

    def __init__(
        self,
        model: SamModel,
        image: Any,
        tile_shape: int | Sequence[int] | None = None,
        halo: int | Sequence[int] | None = None,
        cache: str | os.PathLike | None = None,
        stack_axis: int | None = None,
        normalization: Normalization | None = None,
        dtype: str = "float32",
        overwrite: bool = False,
        *,
        precision: str = "fp32",
        memory_tiles: int = DEFAULT_MEMORY_TILES,
    ) -> None:
        if not isinstance(model, SamModel):
            raise InvalidInputError(
                f"model must be a sum_core SamModel (from sum_core.load_model), got {type(model).__name__}"
            )
        self.precision = check_precision(precision, next(model.parameters()).device)
        if normalization is not None and not isinstance(normalization, Normalization):
            raise InvalidInputError(
                f"normalization must be a sum_core.Normalization, got {type(normalization).__name__}"
            )
        check_int(memory_tiles, "memory_tiles", 1)
        self.model = model
        self.memory_tiles = memory_tiles
        if isinstance(image, Planes):
            if stack_axis is not None:
                raise InvalidInputError("stack_axis: give it to the Planes, not with them (it is their stack_axis)")
            source, self.planes = image.image, image
        else:
            source = open_image(image)
            self.planes = Planes(source, stack_axis)
        config = model.config
        self.grid: TileGrid = tile_grid(self.planes.plane_shape, config.image_size, tile_shape, halo)
        self.normalization = fixed_normalization(self.planes, normalization)
        self.cache = None if cache is None else self._open_cache(source, cache, dtype, overwrite)
        self.tiles_encoded = 0
        self._memory: OrderedDict[tuple[int, int], ImageEmbedding] = OrderedDict()
        self._lock = threading.RLock()

    def _open_cache(self, source: Any, path: str | os.PathLike, dtype: str, overwrite: bool) -> EmbeddingCache:
        config = self.model.config
        signature = make_signature(source, model_name(self.model), weights_hash(self.model), self.grid)
        window = None if self.normalization is None else list(self.normalization.limits)
        signature["preprocessing"] = {
            "stack_axis": self.planes.stack_axis,
            "window": window,
            "precision": self.precision,
            **_channel_choice(self.planes),
        }
        layout = CacheLayout(
            n_slices=self.planes.n_slices,
            n_tiles=len(self.grid),
            early_channels=config.early_feature_dim if config.hq else 1,
            embed_dim=config.prompt_embed_dim,
            embed_size=config.embedding_size,
            dtype=dtype,
        )
        cache = EmbeddingCache.open(path, signature, layout, overwrite=overwrite)
        stored = json.loads(json.dumps(cache.signature.get("preprocessing")))
        if isinstance(stored, dict):
            # Caches written before the precision was recorded were all computed at fp32.
            stored.setdefault("precision", "fp32")
        wanted = json.loads(json.dumps(signature["preprocessing"]))
        if stored != wanted:
            raise InvalidInputError(
                f"embedding cache '{path}' was made with other preprocessing (cache: {stored}, now: "
                f"{wanted}); use a new path, the same normalization and precision, or overwrite=True"
            )
        return cache

    @property
    def device(self) -> torch.device:
        """Where the model (and so the encoder) is now."""
        return next(self.model.parameters()).device

    @property
    def n_slices(self) -> int:
        """Number of slices (1 for a 2D image)."""
        return self.planes.n_slices

    def _available(self, pair: tuple[int, int]) -> bool:
        return pair in self._memory or (self.cache is not None and self.cache.is_complete(*pair))

    def missing(self) -> list[tuple[int, int]]:
        """``(slice, tile)`` pairs neither in the persistent cache nor in memory."""
        with self._lock:
            pairs = self.cache.missing() if self.cache is not None else [
                (s, t) for s in range(self.n_slices) for t in range(len(self.grid))
            ]
            return [pair for pair in pairs if pair not in self._memory]

    def ensure(
        self,
        pairs: Iterable[tuple[int, int]],
        batch_size: int = 1,
        progress: bool | Callable[[int, int], None] = False,
        cancel: threading.Event | None = None,
    ) -> int:
        """Encode the ``(slice, tile)`` pairs that are not available yet; return how many.

        Reading and resizing the next batch (on a background thread, see
        :func:`sum_core.prefetch.prefetch`; pinned memory on CUDA) overlaps with encoding
        the current one. Batches are encoded and stored in order, each as soon as it is
        encoded, so an interruption loses at most the batch in flight.

        Parameters
        ----------
        pairs : iterable of (int, int)
        batch_size : int
            Tiles per encoder call.
        progress : bool or callable
            True: a tqdm bar; a callable gets ``(done, total)`` after each batch.
        cancel : threading.Event, optional
            Checked before each batch; raises :class:`sum_core.errors.Cancelled` when set.
        """
        check_int(batch_size, "batch_size", 1)
        with self._lock:
            todo = [(int(s), int(t)) for s, t in pairs]
            todo = [pair for pair in dict.fromkeys(todo) if not self._available(pair)]
            batches = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
            done = 0
            with (
                tqdm(total=len(todo), desc="embedding tiles", unit="tile", disable=progress is not True) as bar,
                contextlib.closing(prefetch(self._prepare, batches)) as prepared,
            ):
                for batch in prepared:
                    check_cancel(cancel)
                    self._encode(batch)
                    done += len(batch.pairs)
                    bar.update(len(batch.pairs))
                    if callable(progress):
                        progress(done, len(todo))
            return len(todo)

    def embedding(self, slice_index: int, tile_index: int) -> ImageEmbedding:
        """The embedding of one tile (tensors on the model's device, HQ features included),
        encoded now if it is neither in memory nor in the persistent cache."""
        pair = (int(slice_index), int(tile_index))
        with self._lock:
            found = self._memory.get(pair)
            if found is not None:
                self._memory.move_to_end(pair)
                return found
            stored = self._read_cached(pair)
            if stored is not None:
                self._remember(pair, stored.to(self.device))
            else:
                self.ensure([pair])
            return self._memory[pair]

    def _read_cached(self, pair: tuple[int, int]) -> ImageEmbedding | None:
        """A tile from the persistent cache; None when it is not there or damaged (a damaged
        tile is discarded with a warning naming it, so that it is encoded again)."""
        if self.cache is None or not self.cache.is_complete(*pair):
            return None
        try:
            return self.cache.read(*pair)
        except DamagedTileError as err:
            warnings.warn(f"{err}; encoding it again", UserWarning, stacklevel=3)
            self.cache.discard(*pair)
            return None

    def _remember(self, pair: tuple[int, int], image: ImageEmbedding) -> None:
        """Keep a tile in memory with its HQ features (the early feature is then not needed)."""
        with torch.inference_mode():
            image = self.model.with_hq_features(image, keep_early=False)
        self._memory[pair] = image
        self._memory.move_to_end(pair)
        while len(self._memory) > self.memory_tiles:
            self._memory.popitem(last=False)

    def _prepare(self, pairs: list[tuple[int, int]]) -> _Batch:
        """Read, normalise and resize a batch of tiles (runs on the prefetch thread)."""
        pixels, original_sizes = [], []
        for s, t in pairs:
            outer = self.grid[t].outer
            rgb = to_uint8_rgb(self.planes.read(s, outer), self.normalization)
            # uint8 until it is on the device: a quarter of the bytes to pin and transfer
            pixels.append(pin_for_transfer(to_pixels(rgb, self.model.config.image_size), self.device))
            original_sizes.append(outer.shape)
        return _Batch(pairs, pixels, original_sizes)

    def _encode(self, batch: _Batch) -> None:
        """Encode a prepared batch, store each tile (cache, memory); caller's thread."""
        with torch.inference_mode():
            encoded = encode(self.model, batch.pixels, batch.original_sizes, self.precision)
        for pair, image in zip(batch.pairs, encoded):
            if self.cache is not None:
                early = image.early if image.early is not None else np.zeros(self.cache.layout.early_shape, np.float32)
                self.cache.write(*pair, image.embedding, early, image.input_size, image.original_size)
            self._remember(pair, image)
            self.tiles_encoded += 1


def _channel_choice(planes: Planes) -> dict[str, Any]:
    """The channel axis and channels of ``planes`` when not those ``Planes(source, stack_axis)`` infers
    (part of a cache's preprocessing: a cache of one channel is never served for another); caches of
    images read with the inferred channels keep the preprocessing they had before."""
    if planes.channels is None:
        try:
            if Planes(planes.image, planes.stack_axis).channel_axis == planes.channel_axis:
                return {}
        except InvalidInputError:  # a source whose channel axis cannot be inferred
            pass
    channels = planes.channels if planes.channels is None or isinstance(planes.channels, int) else list(planes.channels)
    return {"channel_axis": planes.channel_axis, "channels": channels}


def embed(
    image: Any,
    model: SamModel | str | os.PathLike | None = None,
    tile_shape: int | Sequence[int] | None = None,
    halo: int | Sequence[int] | None = None,
    cache: str | os.PathLike | None = None,
    batch_size: int = 1,
    stack_axis: int | None = None,
    normalization: Normalization | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    *,
    precision: str = "fp32",
) -> TiledEmbeddings:
    """Compute and store the embeddings of every tile (of every slice) of an image.

    Reopening a cache with the same signature costs no encoder work; an interrupted run
    resumes at the tiles that are still missing (the cache marks each tile complete only
    after it is written).

    Parameters
    ----------
    image : array-like or path
        2D image, or a stack with ``stack_axis``; numpy, dask, zarr, a TIFF / zarr /
        OME-Zarr path (opened lazily with :func:`sum_core.sources.open_image`).
    model : SamModel, str or path-like, optional
        A loaded model, a registry name or a checkpoint path (default:
        :data:`sum_core.zoo.DEFAULT_MODEL`).
    tile_shape, halo, cache, stack_axis, normalization, dtype, overwrite
        See :class:`TiledEmbeddings`.
    batch_size : int
        Tiles per encoder call (use more than 1 on a GPU).
    device : str or torch.device, optional
        Where to load a model given by name or path (a loaded model stays where it is).
    progress : bool
        Show a tqdm progress bar.
    precision : {"fp32", "bf16", "fp16"}
        Encoder precision; see :class:`TiledEmbeddings` (``fp16`` needs CUDA). The cache
        stores float32 (or ``dtype``) either way.

    Returns
    -------
    TiledEmbeddings
        Complete; pass it to :class:`sum_core.tiled_predictor.TiledPredictor` or read
        tiles with :meth:`TiledEmbeddings.embedding`.
    """
    check_int(batch_size, "batch_size", 1)
    if not isinstance(model, SamModel):
        from .device import resolve_device
        from .loading import resolve_model
        from .zoo import DEFAULT_MODEL

        target = resolve_device(device)
        check_precision(precision, target)  # before loading the model
        model = resolve_model(DEFAULT_MODEL if model is None else model, device=target)
    tiled = TiledEmbeddings(
        model, image, tile_shape, halo, cache, stack_axis, normalization, dtype, overwrite,
        precision=precision,
    )  # fmt: skip
    tiled.ensure(tiled.missing(), batch_size=batch_size, progress=progress)
    return tiled
