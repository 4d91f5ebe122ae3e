"""Qt-free conversion of napari prompt-layer data to ``sum_core`` prompts.

All coordinates here are image *data* coordinates (the prompt layers are
created with the image's scale and translate, and the widget maps foreign
layers through world coordinates before calling these helpers). The last two
axes are (row, col); leading axes index the slice of a 3D / time stack.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Inside / outside probability used when a binary mask becomes a logit map
#: (logit of 0.999 is about +6.9; SAM's own confident logits are of that order).
MASK_PROBABILITY_CLIP = 1e-3


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


def boxes_on_slice(
    rectangles: Sequence[np.ndarray], slice_index: tuple[int, ...]
) -> np.ndarray:
    """Turn rectangles drawn on one slice into (row0, col0, row1, col1) boxes.

    The axis-aligned bounds of each rectangle are used, so rotated
    rectangles give their bounding box.

    Parameters
    ----------
    rectangles : sequence of np.ndarray
        Vertices ``(4, D)`` of each rectangle in image data coordinates.
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


def mask_to_low_res_logits(
    mask: np.ndarray, frame: tuple[int, int], size: int = 256
) -> np.ndarray:
    """Convert a binary mask to a SAM mask prompt (low-resolution logits).

    SAM's mask prompt lives in the ``size x size`` frame of the padded model
    input: the image is resized so its longest side fills the frame and padded
    bottom/right. The mask is area-resized to ``frame`` (its extent in that
    frame), its covered fractions clipped to
    ``[MASK_PROBABILITY_CLIP, 1 - MASK_PROBABILITY_CLIP]`` and mapped through the
    logit function; the padding is "outside".

    Parameters
    ----------
    mask : np.ndarray
        ``(H, W)`` mask (nonzero = object) of the image slice.
    frame : tuple of int
        ``(h, w)`` extent of the resized image in the low-resolution frame
        (``sum_core.image.preprocess_shape(H, W, size)``).
    size : int
        Side of the low-resolution frame (256 for every SAM model).

    Returns
    -------
    np.ndarray
        ``(1, size, size)`` float32 logits, usable as ``mask_input``.
    """
    from skimage.transform import resize

    h, w = frame
    fraction = resize(
        (np.asarray(mask) != 0).astype(np.float32), (h, w), order=1, anti_aliasing=True
    )
    prob = np.full((size, size), MASK_PROBABILITY_CLIP, dtype=np.float64)
    prob[:h, :w] = np.clip(fraction, MASK_PROBABILITY_CLIP, 1 - MASK_PROBABILITY_CLIP)
    return np.log(prob / (1 - prob)).astype(np.float32)[None]
