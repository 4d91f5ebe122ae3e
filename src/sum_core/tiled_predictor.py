"""Prompted segmentation of images of any size: lazy tile encoding and cross-tile following.

:class:`TiledPredictor` encodes nothing up front. A prompt is routed to the tile that
contains it (the mean of the positive clicks, else the box centre); only that tile is
encoded (or read from the cache). When the mask reaches a border of the tile's window
(tile + halo) that is not an image border, the object continues in a neighbour tile: the
neighbour is prompted with the user's prompts that fall in its window (the box clipped to
it) plus one positive click per connected part of the mask found so far inside its window
(the pixel deepest inside that part, i.e. the centre of its largest inscribed disc), and
the walk goes on until no mask touches an inner window border, or ``max_tiles`` windows
were decoded. Tiles that are not reached are never encoded.

Stitching: every pixel takes the result of the visited tile that owns it (whose inner
region contains it); pixels owned by no visited tile take the highest logit of the
visited windows covering them. The result (:class:`~sum_core.prediction.TiledPrediction`) is returned for the bounding
window of the visited windows, with its ``offset`` in the image (a full-size mask of a
50k × 50k slide would take 2.5 GB); :meth:`TiledPrediction.paste_into` writes it into a
full-size array (numpy or zarr). :class:`sum_core.Predictor` uses this class for images
larger than one window and pastes the windows into full-size results itself.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import deque
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy import ndimage

from .decoding import decode_window
from .encoding import prepare_model
from .errors import InvalidInputError, check_cancel
from .image import Normalization
from .modeling import ImageEmbedding, SamModel
from .prediction import BACKGROUND_LOGIT, PredictOptions, TiledPrediction
from .prompts import Prompts, mask_logits, validate_prompts, window_mask_prompt
from .tiled_embedding import DEFAULT_MEMORY_TILES, TiledEmbeddings
from .tiling import Region, Tile
from .validation import check_bool, check_index, check_int, check_options

__all__ = ["TiledPredictor"]

_MAX_SEEDS = 3  # derived clicks per neighbour window (one per largest part of the mask)


class TileMasks(NamedTuple):
    """One object decoded in one tile window (numpy, at the window's size)."""

    mask: np.ndarray
    logits: np.ndarray
    uncertainty: np.ndarray
    score: float


class TiledPredictor:
    """Prompted segmentation of large images and stacks, tile by tile, encoding lazily.

    Safe to share between threads: calls on one predictor run one at a time.

    Parameters
    ----------
    model : SamModel
        A model from :func:`sum_core.load_model` or :func:`sum_core.build_model`.
    cache : str, path-like or None
        Folder of the persistent zarr embedding cache (see :func:`sum_core.embed`, which
        can fill it beforehand); None keeps embeddings in memory only.
    tile_shape, halo : int or (int, int), optional
        Tiling; see :func:`sum_core.tiling.tile_grid`.
    device : str or torch.device, optional
        Where to run; default CUDA, then MPS, then CPU.
    dtype : {"float32", "float16"}
        Storage dtype of the persistent cache.
    precision : {"fp32", "bf16", "fp16"}
        Precision of the encoder (see :class:`~sum_core.predictor.Predictor`); part of the
        cache's signature.
    compile : bool
        Compile the model with ``torch.compile`` (see :class:`~sum_core.predictor.Predictor`).
    memory_tiles : int
        Tile embeddings kept in memory (LRU, see :class:`~sum_core.tiled_embedding.TiledEmbeddings`).

    Examples
    --------
    A slide would be ``open_image("slide.ome.zarr")`` with ``cache="slide-embeddings.zarr"``
    and a ``load_model(...)`` model; here a small random model and a lazy dask image:

    >>> import dask.array as da, numpy as np
    >>> from sum_core import TiledPredictor, build_model
    >>> slide = da.zeros((3000, 4000), dtype=np.uint8, chunks=512) + np.uint8(1)
    >>> tp = TiledPredictor(build_model("vit_tiny", image_size=256), device="cpu")
    >>> tp.set_image(slide)  # encodes nothing
    >>> pred = tp.predict(points=[[2950, 3900]], follow=False)  # encodes one tile
    >>> tp.tiles_encoded, pred.offset, pred.image_shape
    (1, (2779, 3775), (3000, 4000))
    >>> labels = np.zeros(slide.shape, np.uint32)
    >>> _ = pred.paste_into(labels, value=7)  # writes only its window
    """

    def __init__(
        self,
        model: SamModel,
        cache: str | os.PathLike | None = None,
        tile_shape: int | Sequence[int] | None = None,
        halo: int | Sequence[int] | None = None,
        device: str | torch.device | None = None,
        dtype: str = "float32",
        *,
        precision: str = "fp32",
        compile: bool = False,
        memory_tiles: int = DEFAULT_MEMORY_TILES,
    ) -> None:
        compile = check_bool(compile, "compile")
        self.model, self.device, self.precision = prepare_model(model, device, precision, compile)
        self.cache_path = cache
        self.tile_shape = tile_shape
        self.halo = halo
        self.dtype = dtype
        self.memory_tiles = memory_tiles
        self.embeddings: TiledEmbeddings | None = None
        self._lock = threading.RLock()

    def set_image(
        self,
        image: Any,
        stack_axis: int | None = None,
        normalization: Normalization | None = None,
        overwrite: bool = False,
    ) -> None:
        """Bind an image or stack (lazy array or path); no tile is encoded here.

        Parameters
        ----------
        image : array-like, path or Planes
            Anything :func:`sum_core.sources.open_image` accepts, or the
            :class:`~sum_core.sources.Planes` of an opened source (its channel axis and channel
            choice honoured: e.g. a batch volume's ``planes``).
        stack_axis : int, optional
            Slice axis of a 3D / time stack (None with ``Planes``: they carry their own).
        normalization : Normalization, optional
            Intensity window, computed once for the whole image.
        overwrite : bool
            Discard an existing cache at ``cache`` and start a new one (see
            :class:`~sum_core.tiled_embedding.TiledEmbeddings`).
        """
        overwrite = check_bool(overwrite, "overwrite")
        embeddings = TiledEmbeddings(
            self.model, image, self.tile_shape, self.halo, self.cache_path,
            stack_axis, normalization, self.dtype, overwrite, precision=self.precision,
            memory_tiles=self.memory_tiles,
        )  # fmt: skip
        with self._lock:
            self.embeddings = embeddings

    @property
    def tiles_encoded(self) -> int:
        """Tiles encoded so far for the current image (memory and cache hits excluded)."""
        return 0 if self.embeddings is None else self.embeddings.tiles_encoded

    def predict(
        self,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        options: PredictOptions | None = None,
        *,
        slice_index: int = 0,
        follow: bool = True,
        max_tiles: int = 16,
        cancel: threading.Event | None = None,
    ) -> TiledPrediction:
        """Segment one object from clicks, one box and/or a mask, following it across tiles.

        Parameters
        ----------
        points, labels, box
            As :meth:`sum_core.predictor.Predictor.predict`, in image (row, col) pixels;
            one box at most; labels default to positive. Each window uses the points that
            fall inside it.
        mask_input : array-like, optional
            Full-plane ``(H, W)`` mask prompt: logits (a previous ``logits``) or a bool mask;
            each visited window gets its part in the decoder's low-resolution frame.
        options : PredictOptions, optional
            Decoder and uncertainty options (default ``PredictOptions()``).
        slice_index : int
            Slice of a stack (0 for a 2D image).
        follow : bool
            Follow the object into neighbour tiles (False: decode the prompted tile only).
        max_tiles : int
            At most this many tiles are decoded (and, if not cached, encoded).
        cancel : threading.Event, optional
            Checked between tiles: raises :class:`sum_core.errors.Cancelled` when set.

        Returns
        -------
        TiledPrediction
        """
        options = check_options(options, PredictOptions)
        options.uncertainty_for(self.model.config.hq)  # refuse a bad method before any work
        follow = check_bool(follow, "follow")
        with self._lock:
            tiled = self._require_image()
            check_int(max_tiles, "max_tiles", 1)
            check_index(slice_index, "slice_index", tiled.n_slices)
            shape = tiled.grid.shape
            if mask_input is not None and points is None and labels is None and box is None:
                prompts = Prompts(None, None, None, None, tuple(shape))  # a mask prompt alone
            else:
                prompts = validate_prompts(points, labels, box, None, image_shape=shape, default_positive=True)
            if prompts.boxes is not None and len(prompts.boxes) > 1:
                raise InvalidInputError(
                    f"box: TiledPredictor segments one object per call, got {len(prompts.boxes)} boxes"
                )
            full_mask = None
            if mask_input is not None:
                full_mask = mask_logits(mask_input)
                if full_mask.shape != tuple(shape):
                    raise InvalidInputError(
                        f"mask_input: expected a full-size {tuple(shape)} mask or logits, got {full_mask.shape}"
                    )
            box_arr = None if prompts.boxes is None else prompts.boxes[0]
            positives = None if prompts.points is None else prompts.points[prompts.labels == 1]
            if box_arr is not None:  # the box names the object; clicks refine it where the walk goes
                anchor = (box_arr[:2] + box_arr[2:]) / 2
            elif positives is not None and len(positives):
                anchor = positives.mean(axis=0)
            elif full_mask is not None and (full_mask > 0).any():
                anchor = np.argwhere(full_mask > 0).mean(axis=0)
            else:
                raise InvalidInputError("points/box: give at least one positive click or a box")
            start = tiled.grid.tile_containing(min(anchor[0], shape[0] - 1), min(anchor[1], shape[1] - 1))
            results: dict[int, TileMasks] = {}
            pending, queued = deque([start.index]), {start.index}
            while pending and len(results) < max_tiles:
                check_cancel(cancel)
                tile = tiled.grid[pending.popleft()]
                has_mask = full_mask is not None and bool((full_mask[tile.outer.slices] > 0).any())
                local = self._window_prompts(tile, prompts.points, prompts.labels, box_arr, results, has_mask)
                if local is None:
                    continue
                window_mask = None if full_mask is None else full_mask[tile.outer.slices]
                embedding = tiled.embedding(slice_index, tile.index)
                results[tile.index] = self._decode(tile.outer, embedding, *local, window_mask, options)
                if not follow:
                    break
                for neighbour in self._neighbours(tile, results[tile.index].mask):
                    if neighbour.index not in queued:
                        queued.add(neighbour.index)
                        pending.append(neighbour.index)
            if not results:
                raise InvalidInputError(
                    "points/box: the prompted tile's window (tile + halo) holds no positive click and "
                    "no part of the box; keep the clicks of one object within one tile window"
                )
            complete = not (follow and pending)
            if not complete:
                warnings.warn(
                    f"the object still reaches an inner tile border after {max_tiles} tiles; it may be "
                    "cut there (raise max_tiles)",
                    UserWarning,
                    stacklevel=2,
                )
            return self._merge(results, start.index, complete)

    # -- internals ---------------------------------------------------------------------------

    def _require_image(self) -> TiledEmbeddings:
        if self.embeddings is None:
            raise InvalidInputError("no image is set: call set_image(image) before predict()")
        return self.embeddings

    def _decode(
        self,
        window: Region,
        embedding: ImageEmbedding,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        box: np.ndarray | None,
        mask: np.ndarray | None,
        options: PredictOptions,
    ) -> TileMasks:
        """Decode one object in one window from window-local prompts (the tests replace this)."""
        config = self.model.config
        low_res = None
        if mask is not None:
            low_res = window_mask_prompt(mask, embedding.input_size, config.image_size, config.low_res_size)
        prompts = validate_prompts(
            points, labels, box, low_res, image_shape=window.shape, low_res_size=config.low_res_size
        )
        out = decode_window(self.model, embedding, prompts, options)
        logits = out.logits[0].cpu().numpy()
        return TileMasks(logits > 0, logits, out.uncertainty[0].cpu().numpy(), float(out.scores[0]))

    def _window_prompts(
        self,
        tile: Tile,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        box: np.ndarray | None,
        results: dict[int, TileMasks],
        has_mask: bool = False,
    ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None] | None:
        """Window-local prompts of ``tile``: user prompts inside it plus clicks derived from
        the mask found so far; None when there is nothing positive to prompt with (a positive
        click, part of the box, or part of a mask prompt: ``has_mask``)."""
        win = tile.outer
        origin = np.array([win.row0, win.col0], dtype=np.float64)
        pts, lbs = [], []
        if points is not None:
            inside = (
                (points[:, 0] >= win.row0) & (points[:, 0] <= win.row1)
                & (points[:, 1] >= win.col0) & (points[:, 1] <= win.col1)
            )  # fmt: skip
            pts.extend(points[inside] - origin)
            lbs.extend(labels[inside])
        if results:
            for seed in self._seeds(win, results):
                pts.append(seed - origin)
                lbs.append(1)
        local_box = None
        if box is not None:
            r0, c0 = max(box[0], win.row0), max(box[1], win.col0)
            r1, c1 = min(box[2], win.row1), min(box[3], win.col1)
            if r1 > r0 and c1 > c0:
                local_box = np.array([r0, c0, r1, c1]) - np.concatenate([origin, origin])
        if local_box is None and not has_mask and not any(label == 1 for label in lbs):
            return None
        if not pts:
            return None, None, local_box
        return np.array(pts, dtype=np.float64), np.array(lbs, dtype=np.int64), local_box

    def _seeds(self, win: Region, results: dict[int, TileMasks]) -> list[np.ndarray]:
        """One click per largest connected part of the known mask inside ``win`` (grown by
        one pixel, so that windows without overlap still get a seed at their border)."""
        h, w = self.embeddings.grid.shape
        grown = Region(max(win.row0 - 1, 0), max(win.col0 - 1, 0), min(win.row1 + 1, h), min(win.col1 + 1, w))
        known = np.zeros(grown.shape, dtype=bool)
        for index, pred in results.items():
            outer = self.embeddings.grid[index].outer
            r0, c0 = max(outer.row0, grown.row0), max(outer.col0, grown.col0)
            r1, c1 = min(outer.row1, grown.row1), min(outer.col1, grown.col1)
            if r1 > r0 and c1 > c0:
                part = pred.mask[r0 - outer.row0 : r1 - outer.row0, c0 - outer.col0 : c1 - outer.col0]
                known[r0 - grown.row0 : r1 - grown.row0, c0 - grown.col0 : c1 - grown.col0] |= part
        components, n = ndimage.label(known)
        if n == 0:
            return []
        sizes = ndimage.sum_labels(known, components, index=np.arange(1, n + 1))
        depth = ndimage.distance_transform_edt(np.pad(known, 1))[1:-1, 1:-1]
        seeds = []
        for label in np.argsort(sizes)[::-1][:_MAX_SEEDS] + 1:
            flat = np.argmax(np.where(components == label, depth, -1.0))
            r, c = np.unravel_index(flat, known.shape)
            row = min(max(r + grown.row0, win.row0), win.row1 - 1) + 0.5
            col = min(max(c + grown.col0, win.col0), win.col1 - 1) + 0.5
            seeds.append(np.array([row, col], dtype=np.float64))
        return seeds

    def _neighbours(self, tile: Tile, mask: np.ndarray) -> list[Tile]:
        """Tiles just beyond the window borders the mask touches (image borders excluded)."""
        win, grid = tile.outer, self.embeddings.grid
        h, w = grid.shape
        found: dict[int, Tile] = {}
        r0, c0, r1, c1 = win
        # (mask pixels on the border, border inside the image, the pixel line just outside it)
        sides = (
            (mask[0, :], r0 > 0, lambda lo, hi: (r0 - 1, c0 + lo, r0, c0 + hi)),
            (mask[-1, :], r1 < h, lambda lo, hi: (r1, c0 + lo, r1 + 1, c0 + hi)),
            (mask[:, 0], c0 > 0, lambda lo, hi: (r0 + lo, c0 - 1, r0 + hi, c0)),
            (mask[:, -1], c1 < w, lambda lo, hi: (r0 + lo, c1, r0 + hi, c1 + 1)),
        )
        for edge, inner_border, outside in sides:
            hits = np.flatnonzero(edge)
            if inner_border and hits.size:
                # one pixel further along the border, so diagonal neighbours are reached too
                for t in grid.tiles_touching(outside(hits[0] - 1, hits[-1] + 2)):
                    found.setdefault(t.index, t)
        found.pop(tile.index, None)
        return list(found.values())

    def _merge(self, results: dict[int, TileMasks], start: int, complete: bool) -> TiledPrediction:
        grid = self.embeddings.grid
        outers = {i: grid[i].outer for i in results}
        window = Region(
            min(o.row0 for o in outers.values()), min(o.col0 for o in outers.values()),
            max(o.row1 for o in outers.values()), max(o.col1 for o in outers.values()),
        )  # fmt: skip
        logits = np.full(window.shape, BACKGROUND_LOGIT, dtype=np.float32)
        unc = np.zeros(window.shape, dtype=np.float32)
        for i, pred in results.items():
            o = outers[i]
            sl = (
                slice(o.row0 - window.row0, o.row1 - window.row0),
                slice(o.col0 - window.col0, o.col1 - window.col0),
            )
            logits[sl] = np.maximum(logits[sl], pred.logits)
            unc[sl] = np.maximum(unc[sl], pred.uncertainty)
        for i, pred in results.items():
            inner, own = grid[i].inner, grid[i].inner_in_outer
            sl = (
                slice(inner.row0 - window.row0, inner.row1 - window.row0),
                slice(inner.col0 - window.col0, inner.col1 - window.col0),
            )
            logits[sl] = pred.logits[own.slices]
            unc[sl] = pred.uncertainty[own.slices]
        return TiledPrediction(
            mask=logits > 0,
            score=results[start].score,
            logits=logits,
            uncertainty=unc,
            offset=(window.row0, window.col0),
            image_shape=grid.shape,
            tiles=tuple(results),
            complete=complete,
        )
