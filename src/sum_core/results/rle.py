"""COCO run-length encoding of one object's mask in its image, from the object's window alone.

COCO's RLE runs over the image in column-major (Fortran) order, starting with a run of zeros (0 when the
first pixel is set), alternating zeros and ones; the compressed form is pycocotools' string encoding
(``rleToString`` in its ``maskApi.c``): each count from the third on as the difference to the count two
before, in 5-bit groups with a continuation bit, offset by 48 into printable ASCII.
"""

from __future__ import annotations

import numpy as np

__all__ = ["coco_rle"]


def coco_rle(mask: np.ndarray, offset: tuple[int, int], shape: tuple[int, int]) -> dict[str, object]:
    """The compressed COCO RLE of a mask window placed at ``offset`` in an image of ``shape``.

    Parameters
    ----------
    mask : numpy.ndarray
        ``(h, w)`` bool window.
    offset : (int, int)
        ``(row, col)`` of ``mask[0, 0]`` in the image.
    shape : (int, int)
        ``(height, width)`` of the image.

    Returns
    -------
    dict
        ``{"size": [height, width], "counts": str}`` as ``pycocotools.mask.encode`` returns it (with
        ``counts`` decoded to ``str`` for JSON).

    Examples
    --------
    >>> import numpy as np
    >>> coco_rle(np.ones((1, 1), bool), (1, 0), (2, 2))
    {'size': [2, 2], 'counts': '112'}
    """
    height, width = shape
    window = np.pad(np.asarray(mask, dtype=bool), ((1, 1), (0, 0)))
    # Row changes down each column (column-major order): +1 where a run of ones starts, -1 after it ends.
    steps = np.diff(window.view(np.int8), axis=0).T
    cols, rows = np.nonzero(steps)  # column by column, rows in order: the column-major order of the image
    flat = (cols + offset[1]) * height + rows + offset[0]
    starts, stops = flat[steps[cols, rows] > 0], flat[steps[cols, rows] < 0]
    joined = np.intersect1d(starts, stops)  # a run going on from the foot of a column to the head of the next
    starts, stops = np.setdiff1d(starts, joined), np.setdiff1d(stops, joined)
    bounds = np.empty(2 * len(starts) + 2, dtype=np.int64)
    bounds[0], bounds[-1] = 0, height * width
    bounds[1:-1:2], bounds[2:-1:2] = starts, stops
    counts = np.diff(bounds)
    if counts[-1] == 0:
        counts = counts[:-1]
    return {"size": [int(height), int(width)], "counts": _compress(counts.tolist())}


def _compress(counts: list[int]) -> str:
    """pycocotools' ``rleToString``."""
    out = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)
