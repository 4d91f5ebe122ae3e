"""The review queue's re-segment (R): a committed object's mask as the interactive widget's prompts.

The mask becomes a box and a positive point by :func:`sum_core.prompts.prompts_from_mask`, the rule propagation
uses from one slice to the next, computed in a worker (:func:`mask_prompt`): the box goes to ``<image> box prompts`` (selected, the active layer), the point to
``<image> point prompts``; S in the interactive widget segments the object again from them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from napari.layers import Image, Labels, Points, Shapes

from ._layers import POSITIVE, AnnotationLayers, add_point
from ._review_table import object_window


def mask_prompt(data: Any, row: pd.Series, token: Any = None, relay: Any = None) -> np.ndarray | None:
    """The mask prompt of the object of ``row`` (a review row of the labels ``data``, level 0), in the labels'
    pixel coordinates: the box's four corners then the deepest point, one per row (slice first in a stack), or
    None when the object has no pixel there any more. Only its bounding box is read; run it in a worker (the
    read may be a lazy file's and the distance transform takes ~150 ms for a 2000 px object): ``token`` and
    ``relay`` are the job's (unused: one step)."""
    from sum_core.prompts import prompts_from_mask  # imports torch: not when napari starts

    where = object_window(row, data.ndim)
    mask = np.asarray(data[where]) == int(row["index"])
    if not mask.any():
        return None
    prompts = prompts_from_mask(mask)
    offset = np.array([where[-2].start, where[-1].start], dtype=float)
    lead = [float(row["slice"])] if data.ndim == 3 else []
    r0, c0, r1, c1 = prompts.box + np.tile(offset, 2)
    corners = [[*lead, r, c] for r, c in ((r0, c0), (r0, c1), (r1, c1), (r1, c0))]
    return np.asarray([*corners, [*lead, *(prompts.points[0] + offset)]])


def add_mask_prompt(viewer: Any, image: Image, layer: Labels, prompt: np.ndarray) -> tuple[Points, Shapes]:
    """Put a :func:`mask_prompt` of ``layer`` into ``image``'s prompt layers: the box (selected, the active
    layer) and the point (positive). Returns the point and box layers."""
    vertices = np.asarray([image.world_to_data(layer.data_to_world(corner)) for corner in prompt])
    layers = AnnotationLayers(viewer, image)
    points, boxes = layers.points(), layers.boxes()
    add_point(points, vertices[-1, -points.ndim :], POSITIVE)
    boxes.add_rectangles(vertices[:-1, -boxes.ndim :])
    boxes.selected_data = {boxes.nshapes - 1}
    viewer.layers.selection.active = boxes
    return points, boxes
