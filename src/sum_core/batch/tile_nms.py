"""Cross-tile box NMS of a plane that compares each tile's boxes with its neighbours' only.

A mask found in a tile's window lies inside that window, so two boxes can overlap only when
their tiles' windows overlap. :func:`neighbour_nms` therefore computes the overlaps of each
tile's boxes with the boxes of its own and its neighbouring tiles (memory: the boxes of a few
tiles, never all ``N x N`` pairs of a plane), then runs the greedy pass once over the plane in
score order. The result equals :func:`sum_core.nms.nms` on all boxes of the plane (same kept
indices in the same order): greedy NMS only ever compares boxes that overlap.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError
from ..tiling import Region, TileGrid
from ..validation import check_range


def neighbour_nms(
    boxes: np.ndarray, scores: np.ndarray, tiles: np.ndarray, grid: TileGrid, iou_threshold: float
) -> np.ndarray:
    """Indices of the boxes kept by greedy box NMS, comparing neighbouring tiles only.

    Same result as ``sum_core.nms.nms(boxes_to_xyxy(boxes), scores, iou_threshold)``
    (torchvision's CPU semantics: float32 IoU, stable descending score order, suppression
    only when IoU is strictly above the threshold).

    Parameters
    ----------
    boxes : np.ndarray
        ``(N, 4)`` integer ``(row0, col0, row1, col1)`` inclusive boxes in plane pixels.
    scores : np.ndarray
        ``(N,)`` scores, higher is better (compared as float32, as :func:`sum_core.nms.nms`).
    tiles : np.ndarray
        ``(N,)`` index of the tile of ``grid`` whose outer window holds each box.
    grid : TileGrid
        Tiling of the plane.
    iou_threshold : float
        In [0, 1].

    Returns
    -------
    np.ndarray
        int64 indices into ``boxes``, in descending score order.

    Raises
    ------
    InvalidInputError
        Mismatched shapes, a threshold outside [0, 1], a tile index outside the grid, or a
        box outside its tile's outer window.
    """
    boxes = np.asarray(boxes)
    scores = np.asarray(scores, dtype=np.float32)
    tiles = np.asarray(tiles, dtype=np.int64)
    n = len(scores)
    if boxes.shape != (n, 4) or tiles.shape != (n,):
        raise InvalidInputError(
            f"boxes, scores, tiles: expected shapes (N, 4), (N,), (N,), got "
            f"{boxes.shape}, {scores.shape}, {tiles.shape}"
        )
    check_range(iou_threshold, "iou_threshold", 0.0, 1.0)
    if n and (tiles.min() < 0 or tiles.max() >= len(grid)):
        raise InvalidInputError(f"tiles: indices must lie in [0, {len(grid)}), got {tiles.min()}..{tiles.max()}")
    windows = np.array([tuple(grid[int(t)].outer) for t in range(len(grid))], dtype=np.int64).reshape(-1, 4)[tiles]
    outside = (boxes[:, :2] < windows[:, :2]).any(axis=1) | (boxes[:, 2:] >= windows[:, 2:]).any(axis=1)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise InvalidInputError(
            f"boxes: box {i} {tuple(boxes[i].tolist())} lies outside the outer window "
            f"{tuple(windows[i].tolist())} of its tile {int(tiles[i])}"
        )
    order = np.argsort(-scores, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    # (x0, y0, x1, y1) float32 boxes and areas, as sum_core.mask_ops.boxes_to_xyxy and nms.
    xyxy = boxes[:, [1, 0, 3, 2]].astype(np.float32)
    area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    members = [np.flatnonzero(tiles == t) for t in range(len(grid))]
    earlier, later = [], []
    for t in range(len(grid)):
        if len(members[t]) == 0:
            continue
        for u in _neighbours(grid, t):
            if u < t or len(members[u]) == 0:
                continue  # each pair of tiles once
            a, b = members[t], members[u]
            over = _overlaps(xyxy[a], xyxy[b], area[a], area[b], float(iou_threshold))
            ia, ib = np.nonzero(over)
            ia, ib = a[ia], b[ib]
            first = rank[ia] < rank[ib]
            earlier.append(np.where(first, ia, ib))
            later.append(np.where(first, ib, ia))
    return _greedy(order, np.concatenate(earlier or [np.zeros(0, np.int64)]),
                   np.concatenate(later or [np.zeros(0, np.int64)]))


def _neighbours(grid: TileGrid, index: int) -> list[int]:
    """Tiles whose outer window shares a pixel with tile ``index``'s (itself included)."""
    outer, (hr, hc) = grid[index].outer, grid.halo
    grown = Region(outer.row0 - hr, outer.col0 - hc, outer.row1 + hr, outer.col1 + hc)
    return [t.index for t in grid.tiles_touching(grown)]


def _overlaps(a: np.ndarray, b: np.ndarray, area_a: np.ndarray, area_b: np.ndarray, threshold: float) -> np.ndarray:
    """``IoU > threshold`` for every pair of ``a`` x ``b`` xyxy boxes, with nms's float32 steps."""
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    union = (area_a[:, None] + area_b[None, :]) - inter
    with np.errstate(invalid="ignore", divide="ignore"):  # 0 / 0 (two empty boxes) is NaN: never suppresses
        return inter / union > np.float32(threshold)


def _greedy(order: np.ndarray, earlier: np.ndarray, later: np.ndarray) -> np.ndarray:
    """Greedy pass in score order: a box is kept unless an earlier kept box overlaps it."""
    n = len(order)
    by_earlier = np.argsort(earlier, kind="stable")
    starts = np.searchsorted(earlier[by_earlier], np.arange(n + 1))
    targets = later[by_earlier]
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed[targets[starts[i] : starts[i + 1]]] = True
    return np.array(keep, dtype=np.int64)
