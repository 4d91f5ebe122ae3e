"""Qt-free conversion of napari prompt-layer data to ``sum_core`` prompts.

All coordinates here are image *data* coordinates (the prompt layers are
created with the image's scale and translate, and the widget maps foreign
layers through world coordinates before calling these helpers). The last two
axes are (row, col); leading axes index the slice of a 3D / time stack.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sum_core.errors import InvalidInputError

#: napari shape types that become box prompts (their axis-aligned bounding box).
BOX_SHAPES = ("rectangle", "ellipse", "polygon")


def on_slice(coords: np.ndarray, slice_index: tuple[int, ...]) -> np.ndarray:
    """Return a boolean selector of the coordinates lying on ``slice_index``.

    Parameters
    ----------
    coords : np.ndarray
        ``(N, D)`` data coordinates, ``D = len(slice_index) + 2``.
    slice_index : tuple of int
        Index of the current slice along the leading ``D - 2`` axes
        (empty for a 2D image).

    Returns
    -------
    np.ndarray
        ``(N,)`` bool, True where the rounded leading coordinates equal
        ``slice_index``.
    """
    coords = np.asarray(coords, dtype=float).reshape(-1, len(slice_index) + 2)
    if not slice_index:
        return np.ones(len(coords), dtype=bool)
    leading = np.rint(coords[:, : len(slice_index)]).astype(int)
    return np.all(leading == np.asarray(slice_index, dtype=int), axis=1)


def points_on_slice(
    coords: np.ndarray, labels: Sequence[int], slice_index: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Select the point prompts of one slice.

    Parameters
    ----------
    coords : np.ndarray
        ``(N, D)`` point positions in image data coordinates.
    labels : sequence of int
        ``N`` labels, 1 positive / 0 negative.
    slice_index : tuple of int
        Current slice along the leading axes.

    Returns
    -------
    points : np.ndarray
        ``(M, 2)`` float (row, col) of the points on that slice.
    labels : np.ndarray
        ``(M,)`` int labels of those points.
    """
    coords = np.asarray(coords, dtype=float).reshape(-1, len(slice_index) + 2)
    labels = np.asarray(labels, dtype=int).reshape(-1)
    keep = on_slice(coords, slice_index)
    return coords[keep, -2:], labels[keep]


def box_shapes(shapes: Sequence[np.ndarray], shape_types: Sequence[str]) -> list[np.ndarray]:
    """The shapes that are box prompts: rectangles, ellipses and polygons (see :data:`BOX_SHAPES`).

    Raises
    ------
    InvalidInputError
        For a line or a path (they enclose no region), naming it; never ignored silently.
    """
    refused = sorted({kind for kind in shape_types if kind not in BOX_SHAPES})
    if refused:
        raise InvalidInputError(
            f"box prompts: a {' / '.join(refused)} is not a prompt; draw rectangles, ellipses or polygons "
            "(each is used as its bounding box) and delete the other shapes."
        )
    return list(shapes)


def boxes_on_slice(
    rectangles: Sequence[np.ndarray], slice_index: tuple[int, ...]
) -> np.ndarray:
    """Turn shapes drawn on one slice into (row0, col0, row1, col1) boxes.

    The axis-aligned bounds of each shape's vertices are used, so rotated
    rectangles, ellipses and polygons give their bounding box.

    Parameters
    ----------
    rectangles : sequence of np.ndarray
        Vertices ``(V, D)`` of each shape in image data coordinates (an ellipse's
        four vertices are the corners of its bounding box).
    slice_index : tuple of int
        Current slice along the leading axes.

    Returns
    -------
    np.ndarray
        ``(K, 4)`` float boxes of the rectangles whose vertices all lie on
        the slice (``K`` may be 0).
    """
    boxes = []
    for vertices in rectangles:
        vertices = np.asarray(vertices, dtype=float).reshape(-1, len(slice_index) + 2)
        if not np.all(on_slice(vertices, slice_index)):
            continue
        rc = vertices[:, -2:]
        boxes.append([*rc.min(axis=0), *rc.max(axis=0)])
    return np.asarray(boxes, dtype=float).reshape(-1, 4)
