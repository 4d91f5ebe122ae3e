"""Outlines of a mask as pixel-boundary polygons with holes, exact and valid.

**Convention.** Pixel ``(row, col)`` is the unit square ``[col, col + 1] x [row, row + 1]`` in ``(x, y)``
coordinates with the origin at the top-left corner of the image (QuPath's and ImageJ's pixel coordinates):
every vertex is a pixel corner (integers), every edge runs along pixel sides, so the polygons enclose
exactly the object's pixels. To rasterise one back with a pixel-centre rule (``skimage.draw.polygon``, whose
pixel ``(r, c)`` is the point ``(c, r)``), shift the vertices by ``-0.5``; no pixel centre then lies on an edge,
so the mask comes back exactly.

**Parts and holes.** An object's 4-connected components are its parts (one ``Polygon`` each; pixels that
touch only at a corner are different parts, which touch at that point). A part's holes are the 4-connected
components of the background inside it. Every ring is simple (no vertex visited twice: proved by the Jordan
curve theorem for 4-connected sets whose complement around the ring is 4-connected), rings of a polygon
touch at most at single corners, and a part's interior is connected, so the geometry is valid in the OGC
sense (``shapely``'s ``is_valid``). Exterior rings have a positive signed (shoelace) area in ``(x, y)`` and
holes a negative one (RFC 7946's counterclockwise exterior for a y-up frame); rings are closed (the first
vertex repeated last) and only corners are kept (no collinear vertices).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["Ring", "mask_polygons"]

#: One closed ring, ``(n + 1, 2)`` int64 ``(x, y)`` vertices, the first repeated last.
Ring = np.ndarray

_FOUR = ndimage.generate_binary_structure(2, 1)


def mask_polygons(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[list[Ring]]:
    """The polygons of a 2D mask: one per 4-connected part, each ``[exterior, *holes]``.

    Parameters
    ----------
    mask : numpy.ndarray
        ``(H, W)`` bool.
    offset : (int, int)
        ``(row, col)`` of ``mask[0, 0]`` in the image (added to the coordinates).

    Returns
    -------
    list of list of numpy.ndarray
        Parts in raster order of their first pixel; each part's rings as ``(x, y)`` int64 vertex arrays
        (see the module docstring for the conventions). Empty for an empty mask.

    Examples
    --------
    A 2x2 square with its top-left pixel at row 5, column 10:

    >>> import numpy as np
    >>> mask_polygons(np.ones((2, 2), bool), (5, 10))[0][0].tolist()
    [[10, 5], [12, 5], [12, 7], [10, 7], [10, 5]]
    """
    parts, n = ndimage.label(mask, _FOUR)
    polygons = []
    for index, box in enumerate(ndimage.find_objects(parts), start=1):
        if box is None:
            continue
        part = np.pad(parts[box] == index, 1)  # a background frame: the outside is one component
        background, _ = ndimage.label(~part, _FOUR)
        outside = background[0, 0]
        corner = (offset[0] + box[0].start - 1, offset[1] + box[1].start - 1)
        rings = [_ring(background != outside, corner)]
        holes = np.unique(background[(background != outside) & (background != 0)])
        rings.extend(_ring(background == hole, corner)[::-1] for hole in holes)
        polygons.append(rings)
    return polygons


def _ring(region: np.ndarray, corner: tuple[int, int]) -> Ring:
    """The boundary of ``region`` (one simple ring, see the module docstring), counterclockwise in ``(x, y)``
    (the region on the left), corners only; ``corner`` is ``(row, col)`` of ``region[0, 0]``."""
    h, w = region.shape
    inside = np.pad(region, 1)
    r, c = np.nonzero(region)
    # For each side of a region pixel that faces a pixel outside it, the directed edge with the region on
    # its left (x = col, y = row): start and end corners as (row, col).
    starts, ends = [], []
    for (dr, dc), start, end in (
        ((-1, 0), (0, 0), (0, 1)),   # side y = r: +x
        ((0, 1), (0, 1), (1, 1)),    # side x = c + 1: +y
        ((1, 0), (1, 1), (1, 0)),    # side y = r + 1: -x
        ((0, -1), (1, 0), (0, 0)),   # side x = c: -y
    ):
        open_side = ~inside[r + 1 + dr, c + 1 + dc]
        rr, cc = r[open_side], c[open_side]
        starts.append((rr + start[0]) * (w + 1) + cc + start[1])
        ends.append((rr + end[0]) * (w + 1) + cc + end[1])
    start, end = np.concatenate(starts), np.concatenate(ends)
    following = np.full((h + 1) * (w + 1), -1, dtype=np.int64)
    following[start] = end  # one outgoing edge per vertex (simple ring)
    order = np.empty(len(start), dtype=np.int64)
    vertex = first = int(start.min())
    for i in range(len(start)):
        order[i] = vertex
        vertex = int(following[vertex])
    if vertex != first:  # pragma: no cover - impossible for the regions mask_polygons passes
        raise AssertionError("polygon ring did not close")
    rows, cols = np.divmod(order, w + 1)
    points = np.stack([cols + corner[1], rows + corner[0]], axis=1)
    incoming = points - np.roll(points, 1, axis=0)
    outgoing = np.roll(points, -1, axis=0) - points
    corners = points[np.any(incoming != outgoing, axis=1)]
    return np.concatenate([corners, corners[:1]])
