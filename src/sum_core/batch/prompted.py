"""Prompts mode of a batch job: one task per slice, one prediction per object.

Each slice gets one :class:`~sum_core.tiled_predictor.TiledPredictor` on the plane's
:class:`~sum_core.tiling.TileGrid` (tile embeddings kept in its in-memory LRU for the task), so a
tile is encoded once per slice however many objects visit it (while the slice's tiles fit the LRU). Each object's prompt is routed
to the tile holding its centre and the object is followed into the neighbouring tiles its mask
reaches (up to every tile of the plane), so objects are never cut at tile borders. Each
object's window is written into ``labels`` with the object's id (objects later in id order win
where masks overlap) and its uncertainty into ``uncertainty`` (maximum where masks overlap),
within the object's bounding box only: only windows are read and written, never whole planes.
The plane is read through the volume's :class:`~sum_core.sources.Planes` (its channel choice included).

Once the slice's objects are painted, each object's row of the per-object table
(:mod:`sum_core.batch.objects`) is computed on the final labels (later objects win overlaps), one
window each (:func:`~sum_core.batch.objects.window_rows`): ``predicted_iou`` is the prediction's
score, ``stability`` SAM's stability score of its logits; the rows are kept in ``work/s<slice>/rows``
until the job writes the table (:func:`write_objects_table`).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch

from ..image import Normalization
from ..mask_ops import stability_score
from ..object_scores import STABILITY_OFFSET
from ..prediction import PredictOptions, TiledPrediction
from ..tiled_predictor import TiledPredictor
from ..tiling import Region, TileGrid
from .model_spec import ModelSpec
from .objects import empty_rows, window_rows, write_slices_table
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
    """Predict and write every object of one slice (in object id order) into its cleared chunks, store
    the slice's rows of the object table, record the checksums of its chunks, then mark it done."""
    predictor = TiledPredictor(
        model.load(device), tile_shape=grid.tile_shape, halo=grid.halo, device=device,
        precision=model.precision,
    )  # fmt: skip
    predictor.set_image(volume.planes, normalization=normalization)
    target.clear_slice(slice_index)  # an interrupted earlier attempt left part of the slice painted
    painted = []
    for prompt in sorted(prompts, key=lambda p: p.object_id):
        prediction = predictor.predict(
            points=prompt.points, labels=prompt.labels, box=prompt.box, options=options,
            slice_index=slice_index, max_tiles=len(grid), cancel=cancel,
        )  # fmt: skip
        box = _paint(target, volume, slice_index, prediction, prompt.object_id)
        if box is not None:
            stability = float(stability_score(torch.from_numpy(prediction.logits), 0.0, STABILITY_OFFSET))
            painted.append((prompt.object_id, box, float(prediction.score), stability))
    target.put(f"s{slice_index}/rows", window_rows(target, volume, slice_index, painted, cancel))
    target.seal_slice(slice_index)
    target.mark_done("slice", (slice_index,))


def _paint(
    target: Target, volume: Volume, slice_index: int, prediction: TiledPrediction, object_id: int
) -> Region | None:
    """Write one object's mask (its bounding box only) and uncertainty into the target; return the box
    (plane pixels), None for an empty mask."""
    mask = prediction.mask
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        return None
    box = Region(int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)
    r, c = prediction.offset
    placed = Region(r + box.row0, c + box.col0, r + box.row1, c + box.col1)
    index = volume.out_index(slice_index, placed)
    labels = target.labels[index]
    labels[mask[box.slices]] = object_id
    target.labels[index] = labels
    current = target.uncertainty[index]
    target.uncertainty[index] = np.maximum(current, prediction.uncertainty[box.slices].astype(np.float16))
    return placed


def write_objects_table(target: Target, n_slices: int) -> None:
    """Write the per-object table from the slices' rows records (a slice without prompts has no rows; one
    done before a repair keeps its verified rows of the existing table)."""
    done = target.flags("slice")

    def fresh(s: int) -> dict[str, np.ndarray] | None:
        if f"work/s{s}/rows" in target.group:
            record = target.get(f"s{s}/rows")
            return {name: record[name] for name in record.files}
        return None if done[s] else empty_rows()

    write_slices_table(target, n_slices, fresh)
