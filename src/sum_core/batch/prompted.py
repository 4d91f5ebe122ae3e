"""Prompts mode of a batch job: one task per slice, one prediction per object.

Each object's prompt is routed to the tile of the plane's :class:`~sum_core.tiling.TileGrid`
whose inner region holds the prompt's centre (mean of the positive points, or the box centre);
that tile's outer window is encoded once and every object routed to it is predicted there
(points outside the window are dropped, boxes clipped to it). The mask is written into the
``labels`` array with the object's id (objects later in id order win where masks overlap) and
the prediction's uncertainty into ``uncertainty`` (maximum where masks overlap). Only windows are
read and written, never whole planes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..api import _resolve_model
from ..image import Normalization
from ..predictor import Predictor
from ..sources import to_uint8_rgb
from ..tiling import Region, TileGrid
from .auto import _MODEL_LOCK
from .prompts_table import ObjectPrompt
from .volume import Volume
from .writer import Target


def predict_window(
    window: np.ndarray, prompts: list[ObjectPrompt], offset: tuple[int, int], model: Any, device: Any
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(mask bool, uncertainty float32)`` per prompt, on one prepared (h, w, 3) uint8 window.

    ``offset`` is the window's ``(row0, col0)`` in the plane; prompts are in plane pixels.
    """
    with _MODEL_LOCK:
        sam_model = _resolve_model(model, device)
    predictor = Predictor(sam_model, device=device)
    predictor.set_image(window)
    height, width = window.shape[:2]
    results = []
    for prompt in prompts:
        points = labels = box = None
        if prompt.points is not None:
            local = prompt.points - np.asarray(offset, dtype=np.float64)
            inside = (local[:, 0] >= 0) & (local[:, 0] < height) & (local[:, 1] >= 0) & (local[:, 1] < width)
            if inside.any():
                points, labels = local[inside], prompt.labels[inside]
        if prompt.box is not None:
            box = prompt.box - np.array([*offset, *offset], dtype=np.float64)
            box = np.clip(box, 0, [height - 1, width - 1, height - 1, width - 1])
        prediction = predictor.predict(points=points, labels=labels, box=box)
        results.append((prediction.mask, prediction.uncertainty))
    return results


def prompt_centre(prompt: ObjectPrompt) -> tuple[float, float]:
    """Where a prompt is routed: mean of its positive points, else its box centre."""
    if prompt.points is not None and (prompt.labels == 1).any():
        return tuple(prompt.points[prompt.labels == 1].mean(axis=0))  # type: ignore[return-value]
    return ((prompt.box[0] + prompt.box[2]) / 2, (prompt.box[1] + prompt.box[3]) / 2)


def run_slice(
    target: Target,
    volume: Volume,
    grid: TileGrid,
    slice_index: int,
    prompts: list[ObjectPrompt],
    normalization: Normalization | None,
    model: Any,
    device: Any,
) -> None:
    """Predict and write every object of one slice, then mark the slice done."""
    by_tile: dict[int, list[ObjectPrompt]] = {}
    for prompt in sorted(prompts, key=lambda p: p.object_id):
        by_tile.setdefault(grid.tile_containing(*prompt_centre(prompt)).index, []).append(prompt)
    results: list[tuple[int, Region, np.ndarray, np.ndarray]] = []
    for tile_index, routed in sorted(by_tile.items()):
        outer = grid[tile_index].outer
        window = to_uint8_rgb(volume.read(slice_index, outer), normalization)
        for prompt, (mask, unc) in zip(routed, predict_window(window, routed, (outer.row0, outer.col0), model, device)):
            results.append((prompt.object_id, outer, mask, unc))
    for object_id, outer, mask, unc in sorted(results, key=lambda r: r[0]):
        _paint(target, volume, slice_index, outer, object_id, mask, unc)
    target.mark_done("slice", (slice_index,))


def _paint(target: Target, volume: Volume, slice_index: int, outer: Region, object_id: int,
           mask: np.ndarray, unc: np.ndarray) -> None:
    """Write one object's mask (its bounding box only) and uncertainty into the target."""
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        return
    box = Region(int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)
    where = Region(outer.row0 + box.row0, outer.col0 + box.col0, outer.row0 + box.row1, outer.col0 + box.col1)
    index = volume.out_index(slice_index, where)
    labels = target.labels[index]
    labels[mask[box.slices]] = object_id
    target.labels[index] = labels
    current = target.uncertainty[index]
    target.uncertainty[index] = np.maximum(current, unc[box.slices].astype(np.float16))
