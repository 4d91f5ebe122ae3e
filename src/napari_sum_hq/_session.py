"""Qt-free model, predictor and result state of the interactive widget.

**One contract at every size.** Each plane the widget segments (a 2D image, or one slice of a
3D / time stack) gets its own :class:`sum_core.Predictor`, whose ``predict`` returns full-size
results with an object axis (one object per box). Whether the plane is encoded once in
``set_image`` (at most the model's input size, 1024 px, per side) or tile by tile in
``predict`` (larger planes, or any plane with a cache folder) is the core's one size rule
(:func:`sum_core.tiling.tile_grid`), not the widget's.

**The one exception, by result size.** A plane of more than :data:`WINDOWED_PIXELS` pixels
(a whole slide; in practice a dask / zarr-backed layer) would need gigabytes for full-size
float results, so it is segmented by a :class:`sum_core.TiledPredictor`, one object per box,
whose :class:`~sum_core.prediction.TiledPrediction` covers only the object's window.

**Results as windows.** Both kinds of result reach the GUI thread cut to windows in the
worker (:class:`ObjectPiece`, :class:`UncertaintyPiece`: the bounding box of each object and
of the non-zero uncertainty), so writing, clearing and committing touch only the pixels of
the windows that changed, never a whole plane or stack.

**Embedding cache folder.** With a folder set, tile embeddings are kept in
``<folder>/<layer>-<weights hash>/<plane>.zarr`` (layer name sanitised to ``[A-Za-z0-9_.-]``,
weights hash :func:`sum_core.encoding.weights_hash` cut to 12 hex digits, memoised on the
model; ``<plane>`` is ``plane`` for a 2D image, ``slice-<i>`` for a stack). The store's own
signature hashes the data once and decides: the same plane with the same model reuses its
tiles, another plane under the same layer name replaces the store.

Nothing here imports torch or ``sum_core``'s model code at import time: the heavy imports
happen inside the functions that run in worker threads.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Generator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from sum_core.errors import InvalidInputError
from sum_core.tiling import Region

#: Device choices offered by the widgets; "auto" lets ``sum_core`` pick CUDA, MPS or CPU.
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")

#: Steps yielded by :func:`prepare_steps` (the progress-bar total).
PREPARE_STEPS: tuple[str, ...] = ("Loading model", "Preparing the image", "Done")

#: Planes with more pixels than this (e.g. 8192 x 8192) are segmented window by window
#: (:class:`sum_core.TiledPredictor`): full-size float results of one object would take
#: 9 bytes per pixel (logits, uncertainty, mask), 600 MB here.
WINDOWED_PIXELS = 2**26

#: Tile embeddings each predictor of a stack slice keeps in memory (a 2D image keeps
#: ``sum_core``'s default, 32): with :attr:`PlanePredictors.max_slices` slices this is the
#: same budget as one 2D image.
STACK_MEMORY_TILES = 4

SliceKey = tuple[int, ...]


@dataclass(frozen=True)
class ModelChoice:
    """Which model to run, and where.

    Attributes
    ----------
    source : str
        Registry name (``sum_core.zoo.list_models()``) or checkpoint path.
    device : str
        One of :data:`DEVICES`.
    """

    source: str
    device: str = "auto"

    @property
    def torch_device(self) -> str | None:
        """Device string for ``sum_core`` (``None`` = automatic choice)."""
        return None if self.device == "auto" else self.device


def load_model(choice: ModelChoice) -> Any:
    """The model of ``choice``, through :func:`sum_core.loading.resolve_model` (loaded once)."""
    from sum_core.loading import resolve_model

    return resolve_model(choice.source, device=choice.torch_device)


# ----------------------------------------------------------------------------- predictors


@dataclass
class Prepared:
    """What a finished :func:`prepare_steps` hands back to the GUI thread."""

    choice: ModelChoice
    model: Any
    slice_key: SliceKey
    predictor: Any


def cache_store(folder: str | Path, layer_name: str, slice_key: SliceKey, model: Any) -> Path:
    """The embedding-cache store of one plane of a layer (see the module docstring)."""
    from sum_core.encoding import weights_hash

    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", layer_name).strip("._") or "image"
    weights = weights_hash(model).split(":")[-1][:12]
    plane = "slice-" + "-".join(str(i) for i in slice_key) if slice_key else "plane"
    return Path(folder) / f"{name}-{weights}" / f"{plane}.zarr"


def is_windowed(plane_shape: tuple[int, ...]) -> bool:
    """Whether a plane is segmented window by window (see :data:`WINDOWED_PIXELS`)."""
    return plane_shape[0] * plane_shape[1] > WINDOWED_PIXELS


def new_predictor(model: Any, plane: Any, cache: Path | None, memory_tiles: int | None) -> Any:
    """A predictor bound to one plane: encodes it now when it is one encoder window.

    Parameters
    ----------
    model : SamModel
        The model (on its device).
    plane : array-like
        ``(H, W)`` or ``(H, W, C)``, numpy or lazy (dask, zarr).
    cache : Path or None
        Embedding-cache store of this plane (:func:`cache_store`), reused when it was made
        for this plane and model, else replaced.
    memory_tiles : int or None
        Tile embeddings kept in memory; None for ``sum_core``'s default.

    Returns
    -------
    sum_core.Predictor or sum_core.TiledPredictor
        The latter for planes of more than :data:`WINDOWED_PIXELS` pixels.
    """
    from sum_core.predictor import Predictor
    from sum_core.tiled_embedding import DEFAULT_MEMORY_TILES
    from sum_core.tiled_predictor import TiledPredictor

    device = next(model.parameters()).device
    memory_tiles = DEFAULT_MEMORY_TILES if memory_tiles is None else memory_tiles
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
    windowed = is_windowed(tuple(plane.shape))
    if windowed:
        predictor = TiledPredictor(model, cache=cache, device=device, memory_tiles=memory_tiles)
        bind = partial(predictor.set_image, plane)
    else:
        predictor = Predictor(model, device=device, memory_tiles=memory_tiles)
        bind = partial(predictor.set_image, plane, cache=cache)
    try:
        bind()
    except InvalidInputError:
        if cache is None or not cache.exists():
            raise
        # The store was made for another plane under this layer name (or another tiling):
        # replace it. A plane the core refuses for any other reason is refused again here.
        bind(overwrite=True)
    return predictor


def prepare_steps(
    choice: ModelChoice,
    model: Any,
    plane: Any,
    slice_key: SliceKey,
    cache_folder: str | None,
    layer_name: str,
    memory_tiles: int | None,
) -> Generator[str, None, Prepared]:
    """Load the model if needed and bind a predictor to one plane, step by step.

    Meant to run in a :func:`napari.qt.threading.thread_worker`: each ``yield`` (a step
    of :data:`PREPARE_STEPS`) is a point where a cancelled worker stops; the GUI thread gets
    the :class:`Prepared` only when the generator returns. A plane of one encoder window is
    encoded here; a larger one is only bound (its tiles are encoded by each segmentation).

    Parameters
    ----------
    choice : ModelChoice
        Model source and device.
    model : SamModel or None
        Already loaded model for ``choice``; None resolves it here.
    plane : array-like
        The plane to bind (see :func:`new_predictor`).
    slice_key : tuple of int
        Index of the plane in the stack (empty for a 2D image).
    cache_folder : str or None
        Embedding-cache folder; None keeps tile embeddings in memory only.
    layer_name : str
        Name of the image layer (part of the cache path).
    memory_tiles : int or None
        See :func:`new_predictor`.
    """
    yield PREPARE_STEPS[0]
    if model is None:
        model = load_model(choice)
    yield PREPARE_STEPS[1]
    cache = None if not cache_folder else cache_store(cache_folder, layer_name, slice_key, model)
    predictor = new_predictor(model, plane, cache, memory_tiles)
    yield PREPARE_STEPS[2]
    return Prepared(choice, model, slice_key, predictor)


def tiles_encoded(predictor: Any) -> int:
    """Tiles a predictor has encoded so far (0 for a plane encoded as one window)."""
    tiled = getattr(predictor, "tiled", predictor)
    return 0 if tiled is None else tiled.tiles_encoded


def describe(predictor: Any) -> str:
    """What the predictor of a plane did when it was prepared, for the status line."""
    tiled = getattr(predictor, "tiled", predictor)
    if tiled is None:
        return "Embedding ready"
    n = len(tiled.embeddings.grid)
    return (f"Image ready: {n} tile(s); each segmentation encodes only the tiles its object "
            "reaches (the first S on a new tile takes longer)")  # fmt: skip


class PlanePredictors:
    """The loaded model and the predictors of the current image's planes (LRU).

    Parameters
    ----------
    max_slices : int
        How many planes of a stack keep their predictor (each holds its embedding, or
        up to :data:`STACK_MEMORY_TILES` tile embeddings).
    """

    def __init__(self, max_slices: int = 8) -> None:
        self.max_slices = max_slices
        self.choice: ModelChoice | None = None
        self.model: Any = None
        self._predictors: OrderedDict[SliceKey, Any] = OrderedDict()

    def model_for(self, choice: ModelChoice) -> Any:
        """The loaded model if it matches ``choice``, else None."""
        return self.model if choice == self.choice else None

    def predictor(self, slice_key: SliceKey) -> Any:
        """The predictor of a prepared plane, or None."""
        predictor = self._predictors.get(slice_key)
        if predictor is not None:
            self._predictors.move_to_end(slice_key)
        return predictor

    def store(self, prepared: Prepared) -> None:
        """Keep a prepared plane (another model drops every older plane)."""
        if prepared.choice != self.choice:
            self.clear()
            self.choice, self.model = prepared.choice, prepared.model
        self._predictors[prepared.slice_key] = prepared.predictor
        self._predictors.move_to_end(prepared.slice_key)
        while len(self._predictors) > self.max_slices:
            self._predictors.popitem(last=False)

    def clear_slices(self) -> None:
        """Forget the planes (new image), keep the model."""
        self._predictors.clear()

    def clear(self) -> None:
        """Forget the model and the planes (new model or device)."""
        self._predictors.clear()
        self.choice = None
        self.model = None


# ------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ObjectPiece:
    """One object of a result, cut to its bounding box on one slice.

    Attributes
    ----------
    slice_key : tuple of int
        The slice (empty for a 2D image).
    region : Region
        Bounding box of the mask in the plane.
    mask : np.ndarray
        bool ``region.shape``.
    index : int
        Object number in the result, from 1 (its id in the *current object* layer).
    """

    slice_key: SliceKey
    region: Region
    mask: np.ndarray
    index: int


@dataclass(frozen=True)
class UncertaintyPiece:
    """The uncertainty of a result (max over its objects) in the window where it is non-zero."""

    slice_key: SliceKey
    region: Region
    values: np.ndarray


def bounding_box(mask: np.ndarray) -> Region | None:
    """The smallest region holding every True pixel of a 2D mask, or None if it has none."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return Region(int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)


def object_piece(
    slice_key: SliceKey, mask: np.ndarray, index: int, offset: tuple[int, int] = (0, 0)
) -> ObjectPiece | None:
    """``mask`` cut to its bounding box (None when empty); ``offset`` is the ``(row, col)`` of
    the mask's top-left pixel in the plane."""
    box = bounding_box(mask)
    if box is None:
        return None
    region = Region(box.row0 + offset[0], box.col0 + offset[1], box.row1 + offset[0], box.col1 + offset[1])
    return ObjectPiece(slice_key, region, np.ascontiguousarray(mask[box.slices]), index)


def uncertainty_piece(slice_key: SliceKey, values: np.ndarray, offset: tuple[int, int]) -> UncertaintyPiece | None:
    """``values`` cut to the bounding box of their non-zero pixels (None when all are zero); ``offset`` is the
    ``(row, col)`` of their top-left pixel in the plane."""
    box = bounding_box(values > 0)
    if box is None:
        return None
    region = Region(box.row0 + offset[0], box.col0 + offset[1], box.row1 + offset[0], box.col1 + offset[1])
    return UncertaintyPiece(slice_key, region, np.ascontiguousarray(values[box.slices], dtype=np.float32))
