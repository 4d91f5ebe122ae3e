"""Prompts mode of a batch job: one task per slice, one prediction per object.

Each slice gets one :class:`~sum_core.tiled_predictor.TiledPredictor` on the plane's
:class:`~sum_core.tiling.TileGrid` (embeddings kept in memory for the task), so a tile is
encoded at most once per slice however many objects visit it. Each object's prompt is routed
to the tile holding its centre and the object is followed into the neighbouring tiles its mask
reaches (up to every tile of the plane), so objects are never cut at tile borders. Each
object's window is written into ``labels`` with the object's id (objects later in id order win
where masks overlap) and its uncertainty into ``uncertainty`` (maximum where masks overlap),
within the object's bounding box only: only windows are read and written, never whole planes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..api import _resolve_model
from ..image import Normalization
from ..tiled_predictor import TiledPrediction, TiledPredictor
from ..tiling import Region, TileGrid
from .auto import _MODEL_LOCK
from .model_spec import ModelSpec
from .prompts_table import ObjectPrompt
from .volume import Volume
from .writer import Target


class _SlicePlane:
    """One slice of a :class:`Volume` as a lazy 2D array (``shape``, ``dtype``, slicing).

    Only the windows that are indexed are read from the source.
    """

    def __init__(self, volume: Volume, slice_index: int) -> None:
        self._array = volume.array
        self._axis = volume.slice_axis
        self._index = slice_index
        shape = tuple(int(n) for n in self._array.shape)
        self.shape = shape if self._axis is None else shape[: self._axis] + shape[self._axis + 1 :]
        self.dtype = np.dtype(self._array.dtype)

    def __getitem__(self, index: Any) -> np.ndarray:
        index = list(index) if isinstance(index, tuple) else [index]
        if self._axis is not None:
            index.insert(self._axis, self._index)
        return np.asarray(self._array[tuple(index)])


def run_slice(
    target: Target,
    volume: Volume,
    grid: TileGrid,
    slice_index: int,
    prompts: list[ObjectPrompt],
    normalization: Normalization | None,
    model: ModelSpec,
    device: Any,
) -> None:
    """Predict and write every object of one slice (in object id order), then mark the slice done."""
    with _MODEL_LOCK:  # one load (and compilation) of a named model, even from several threads
        sam_model = _resolve_model(model.model, device)
        predictor = TiledPredictor(
            sam_model, tile_shape=grid.tile_shape, halo=grid.halo, device=device,
            precision=model.precision, compile=model.compile,
        )  # fmt: skip
    predictor.set_image(_SlicePlane(volume, slice_index), normalization=normalization)
    for prompt in sorted(prompts, key=lambda p: p.object_id):
        prediction = predictor.predict(
            points=prompt.points, labels=prompt.labels, box=prompt.box, max_tiles=len(grid)
        )
        _paint(target, volume, slice_index, prediction, prompt.object_id)
    target.mark_done("slice", (slice_index,))


def _paint(target: Target, volume: Volume, slice_index: int, prediction: TiledPrediction, object_id: int) -> None:
    """Write one object's mask (its bounding box only) and uncertainty into the target."""
    mask = prediction.mask
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        return
    box = Region(int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)
    r, c = prediction.offset
    index = volume.out_index(slice_index, Region(r + box.row0, c + box.col0, r + box.row1, c + box.col1))
    labels = target.labels[index]
    labels[mask[box.slices]] = object_id
    target.labels[index] = labels
    current = target.uncertainty[index]
    target.uncertainty[index] = np.maximum(current, prediction.uncertainty[box.slices].astype(np.float16))
