"""Prompts mode of a batch job: one task per slice, one prediction per object.

Each slice gets one :class:`~sum_core.tiled_predictor.TiledPredictor` on the plane's
:class:`~sum_core.tiling.TileGrid` (tile embeddings kept in its in-memory LRU for the task), so a
tile is encoded once per slice however many objects visit it (while the slice's tiles fit the LRU). Each object's prompt is routed
to the tile holding its centre and the object is followed into the neighbouring tiles its mask
reaches (up to every tile of the plane), so objects are never cut at tile borders. Each
object's window is written into ``labels`` with the object's id (objects later in id order win
where masks overlap) and its uncertainty into ``uncertainty`` (maximum where masks overlap),
within the object's bounding box only: only windows are read and written, never whole planes.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from ..image import Normalization
from ..prediction import PredictOptions, TiledPrediction
from ..tiled_predictor import TiledPredictor
from ..tiling import Region, TileGrid
from .model_spec import ModelSpec
from .prompts_table import ObjectPrompt
from .volume import Volume
from .writer import Target


def run_slice(
    target: Target,
    volume: Volume,
    grid: TileGrid,
    slice_index: int,
    prompts: list[ObjectPrompt],
    normalization: Normalization | None,
    model: ModelSpec,
    device: Any,
    options: PredictOptions,
    cancel: threading.Event | None = None,
) -> None:
    """Predict and write every object of one slice (in object id order) into its cleared chunks,
    record the checksums of the slice's chunks, then mark the slice done."""
    predictor = TiledPredictor(
        model.load(device), tile_shape=grid.tile_shape, halo=grid.halo, device=device,
        precision=model.precision,
    )  # fmt: skip
    predictor.set_image(volume.array, stack_axis=volume.planes.stack_axis, normalization=normalization)
    target.clear_slice(slice_index)  # an interrupted earlier attempt left part of the slice painted
    for prompt in sorted(prompts, key=lambda p: p.object_id):
        prediction = predictor.predict(
            points=prompt.points, labels=prompt.labels, box=prompt.box, options=options,
            slice_index=slice_index, max_tiles=len(grid), cancel=cancel,
        )  # fmt: skip
        _paint(target, volume, slice_index, prediction, prompt.object_id)
    target.seal_slice(slice_index)
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
