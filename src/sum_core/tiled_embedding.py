"""Tiled, cached, resumable image embeddings for images and stacks of any size.

:class:`TiledEmbeddings` binds a model, an image (or a stack, slice by slice) and a tiling
to an :class:`~sum_core.embedding_cache.EmbeddingCache`: a tile is encoded the first time
it is asked for and read back from the cache afterwards. :func:`embed` fills the whole
cache up front (with batching and a progress bar), resuming where an interrupted run
stopped; the next batch of tiles is read and resized on a background thread while the
current one is encoded (:mod:`sum_core.prefetch`).

Preprocessing of a tile: its outer window (tile + halo, clipped to the image) is read
from the (lazy) source, converted to 8-bit RGB with ONE intensity window computed for the
whole image or stack (:func:`sum_core.sources.fixed_normalization`), resized so its long
side is the encoder input size (SAM's ``ResizeLongestSide``) and padded, exactly as
:meth:`sum_core.predictor.Predictor.set_image` does for a whole image.

Cache signature: the data hash, the model (``model_type`` plus ``-hq`` / ``-sum``) and the
hash of its weights (BLAKE2b of the state dict, so the same weights loaded from a registry
name or from a file share caches), the tiling and the package version, plus a
``preprocessing`` entry (stack axis, intensity window and encoder precision): reopening a
cache made with different preprocessing is an error too.

Precision: the encoder may run under ``bf16`` / ``fp16`` autocast
(:mod:`sum_core.acceleration`); the cache still stores float32 (or its ``dtype``). Embeddings
computed at different precisions are never mixed in one cache: the precision is part of the
``preprocessing`` entry, and a cache written before that entry had the key (always at
``fp32``) reads as ``fp32``, so it reopens unchanged at the default precision.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from .acceleration import autocast, check_precision
from .embedding_cache import CacheLayout, EmbeddingCache, make_signature
from .errors import InvalidInputError
from .image import Normalization, resize_longest_side
from .modeling import SamModel
from .predictor import ImageEmbedding
from .prefetch import pin_for_transfer, prefetch, to_device
from .sources import Planes, fixed_normalization, open_image, to_uint8_rgb
from .tiling import TileGrid, default_tiling

__all__ = ["TiledEmbeddings", "embed", "model_name", "weights_hash"]


def weights_hash(model: SamModel) -> str:
    """BLAKE2b of the model's state dict (names, dtypes, shapes and values), ``"blake2b:<hex>"``."""
    h = hashlib.blake2b(digest_size=20)
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"blake2b:{h.hexdigest()}"


def model_name(model: SamModel) -> str:
    """Architecture name used in cache signatures, e.g. ``"vit_b-hq"``."""
    config = model.config
    return config.model_type + ("-hq" if config.hq else "") + ("-sum" if config.sum_tokens else "")


class _Batch(NamedTuple):
    """Tiles read and resized, ready for the encoder."""

    pairs: list[tuple[int, int]]
    tensors: list[torch.Tensor]  # 1x3xhxw uint8, pinned when bound for CUDA
    input_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]


def _grid(
    plane_shape: tuple[int, int],
    tile_shape: int | Sequence[int] | None,
    halo: int | Sequence[int] | None,
    encoder_size: int,
) -> TileGrid:
    if tile_shape is None and halo is None:
        return default_tiling(plane_shape, encoder_size)
    if tile_shape is None:
        tile_shape = default_tiling(plane_shape, encoder_size).tile_shape
    return TileGrid(plane_shape, tile_shape, encoder_size // 16 if halo is None else halo)


class TiledEmbeddings:
    """Tile embeddings of one image or stack, encoded on demand and kept in a cache.

    Parameters
    ----------
    model : SamModel
        The model whose image encoder is used (on the device it is on).
    image : array-like or path
        Anything :func:`sum_core.sources.open_image` accepts; read tile by tile.
    tile_shape, halo : int or (int, int), optional
        Tiling of each plane (:class:`sum_core.tiling.TileGrid`). Both None: the default
        tiling (:func:`sum_core.tiling.default_tiling`: one tile up to the encoder size,
        else windows of at most the encoder size). ``halo`` None with a ``tile_shape``
        means ``encoder_size // 16`` (64).
    cache : str, path-like or None
        Folder of the zarr cache; None keeps it in memory.
    stack_axis : int, optional
        Axis of the slices of a 3D / time stack (cached slice by slice); None for 2D.
    normalization : Normalization, optional
        Intensity window; computed once for the whole image (see
        :func:`sum_core.sources.fixed_normalization`).
    dtype : {"float32", "float16"}
        Storage dtype of the cache.
    overwrite : bool
        Discard an existing cache at ``cache`` made for something else.
    precision : {"fp32", "bf16", "fp16"}
        Encoder precision (:func:`sum_core.acceleration.autocast`; ``fp16`` needs CUDA).
        Part of the cache's preprocessing: a cache is filled at one precision only.

    Attributes
    ----------
    grid : TileGrid
    planes : Planes
    cache : EmbeddingCache
    precision : str
    tiles_encoded : int
        Tiles encoded by this object so far (cache hits excluded).

    Raises
    ------
    InvalidInputError
        Bad image or stack axis, bad tiling, a precision the model's device cannot run, or a
        cache made for other data, another model, another tiling or other preprocessing
        (including another precision).
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
        self.model = model
        source = open_image(image)
        self.planes = Planes(source, stack_axis)
        config = model.config
        self.grid = _grid(self.planes.plane_shape, tile_shape, halo, config.image_size)
        self.normalization = fixed_normalization(self.planes, normalization)
        signature = make_signature(source, model_name(model), weights_hash(model), self.grid)
        window = None if self.normalization is None else list(self.normalization.limits)
        signature["preprocessing"] = {
            "stack_axis": self.planes.stack_axis,
            "window": window,
            "precision": precision,
        }
        layout = CacheLayout(
            n_slices=self.planes.n_slices,
            n_tiles=len(self.grid),
            early_channels=config.early_feature_dim if config.hq else 1,
            embed_dim=config.prompt_embed_dim,
            embed_size=config.embedding_size,
            dtype=dtype,
        )
        self.cache = EmbeddingCache.open(cache, signature, layout, overwrite=overwrite)
        stored = json.loads(json.dumps(self.cache.signature.get("preprocessing")))
        if isinstance(stored, dict):
            # Caches written before the precision was recorded were all computed at fp32.
            stored.setdefault("precision", "fp32")
        wanted = json.loads(json.dumps(signature["preprocessing"]))
        if stored != wanted:
            raise InvalidInputError(
                f"embedding cache '{cache}' was made with other preprocessing (cache: {stored}, now: "
                f"{wanted}); use a new path, the same normalization and precision, or overwrite=True"
            )
        self.tiles_encoded = 0

    @property
    def device(self) -> torch.device:
        """Where the model (and so the encoder) is now."""
        return next(self.model.parameters()).device

    @property
    def n_slices(self) -> int:
        """Number of slices (1 for a 2D image)."""
        return self.planes.n_slices

    def missing(self) -> list[tuple[int, int]]:
        """``(slice, tile)`` pairs not in the cache yet."""
        return self.cache.missing()

    def ensure(
        self, pairs: Iterable[tuple[int, int]], batch_size: int = 1, progress: bool = False
    ) -> int:
        """Encode the ``(slice, tile)`` pairs that are not cached yet; return how many were encoded.

        Reading and resizing the next batch (on a background thread, see
        :func:`sum_core.prefetch.prefetch`; pinned memory on CUDA) overlaps with encoding
        the current one. Batches are encoded and written in order, each as soon as it is
        encoded, so an interruption loses at most the batch in flight.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be an int >= 1, got {batch_size!r}")
        todo = [(int(s), int(t)) for s, t in pairs if not self.cache.is_complete(s, t)]
        batches = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
        with (
            tqdm(total=len(todo), desc="embedding tiles", unit="tile", disable=not progress) as bar,
            contextlib.closing(prefetch(self._prepare, batches)) as prepared,
        ):
            for batch in prepared:
                self._encode(batch)
                bar.update(len(batch.pairs))
        return len(todo)

    def embedding(self, slice_index: int, tile_index: int) -> ImageEmbedding:
        """The embedding of one tile (encoded now if it is not cached), for ``Predictor.set_embedding``."""
        self.ensure([(slice_index, tile_index)])
        cached = self.cache.read(slice_index, tile_index)
        early = cached.early[None].astype(np.float32) if self.model.config.hq else None
        return ImageEmbedding(
            embedding=cached.embedding[None].astype(np.float32),
            early=early,
            original_size=cached.original_size,
            input_size=cached.input_size,
        )

    def _prepare(self, pairs: list[tuple[int, int]]) -> _Batch:
        """Read, normalise and resize a batch of tiles (runs on the prefetch thread)."""
        tensors, input_sizes, original_sizes = [], [], []
        for s, t in pairs:
            outer = self.grid[t].outer
            pixels = to_uint8_rgb(self.planes.read(s, outer), self.normalization)
            resized = resize_longest_side(pixels, self.model.config.image_size)
            # uint8 until it is on the device: a quarter of the bytes to pin and transfer
            channels_first = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1)))[None]
            tensors.append(pin_for_transfer(channels_first, self.device))
            input_sizes.append(resized.shape[:2])
            original_sizes.append(outer.shape)
        return _Batch(pairs, tensors, input_sizes, original_sizes)

    def _encode(self, batch: _Batch) -> None:
        """Encode a prepared batch and write each tile to the cache (caller's thread)."""
        model, device = self.model, self.device
        with torch.inference_mode():
            inputs = torch.cat([model.preprocess(to_device(x, device).float()) for x in batch.tensors])
            with autocast(device, self.precision):
                embeddings, early = model.image_encoder(inputs)
            embeddings, early = embeddings.float(), early.float()
        for i, (s, t) in enumerate(batch.pairs):
            early_i = early[i] if model.config.hq else np.zeros(self.cache.layout.early_shape, np.float32)
            self.cache.write(s, t, embeddings[i], early_i, batch.input_sizes[i], batch.original_sizes[i])
            self.tiles_encoded += 1


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
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not isinstance(model, SamModel):
        from .device import resolve_device
        from .loading import load_model
        from .zoo import DEFAULT_MODEL

        target = resolve_device(device)
        check_precision(precision, target)  # before loading the model
        model = load_model(DEFAULT_MODEL if model is None else model, device=target)
    tiled = TiledEmbeddings(
        model, image, tile_shape, halo, cache, stack_axis, normalization, dtype, overwrite,
        precision=precision,
    )  # fmt: skip
    tiled.ensure(tiled.missing(), batch_size=batch_size, progress=progress)
    return tiled
