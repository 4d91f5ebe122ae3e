"""The objects of a result, found in one streaming pass, then visited window by window.

:func:`scan_objects` reads the labels block by block (:data:`BLOCK` px, rounded up to whole chunks), relabels
each block compactly and keeps one row per object and block, never the whole volume; it returns an
:class:`ObjectTable`: one row per object and slice (an id present in several planes of a stack has a row in
each) with its bounding box, centroid and area, sorted by slice then id. :func:`object_windows` then visits
the rows, giving each object's mask in its bounding box grown by a margin; objects are grouped by the block
holding the top-left corner of their window, and each block (with up to :data:`MARGIN` px more below and
right) is read once for all the objects that fit in it; a larger object is read on its own. Memory is
therefore bounded by a few block-sized arrays, the largest object's window and the table; a result is
read about twice in all, whatever the number of objects.

Per-object uncertainty is :func:`sum_core.object_scores.object_scores` (the one definition: mean over
the object, mean over its boundary band of ``band_width`` pixels, the image border being no outline),
computed on the object's window grown by ``band_width``, which gives the values of the whole plane exactly.
Values the result's writer recorded (its object table) are used as they are (the batch table's come from the
float32 map, before the ``uncertainty`` array's float16 rounding).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..object_scores import object_scores
from ..errors import InvalidInputError
from ..sources import read_block
from ..tiling import TileGrid
from .result import TABLE_COLUMNS, Result

__all__ = ["ObjectTable", "ObjectWindow", "object_windows", "scan_objects"]

BLOCK = 1024  # pixels per side of a read block (rounded up to whole chunks of the array)
MARGIN = 128  # how far an object's window may reach past its block and still be read with it


@dataclass(frozen=True)
class ObjectTable:
    """One row per object and slice, sorted by slice then label.

    Attributes
    ----------
    label, slice : numpy.ndarray
        uint64 ids and int64 planes (0 for a 2D result).
    bbox : numpy.ndarray
        ``(N, 4)`` int64 ``(row0, col0, row1, col1)``, half-open, in plane pixels.
    centroid : numpy.ndarray
        ``(N, 2)`` float64 mean ``(row, col)`` of the object's pixel indices (``skimage.measure.regionprops``'
        convention: pixel ``(r, c)`` counts as the point ``(r, c)``).
    area : numpy.ndarray
        int64 pixel counts.
    score, mean_uncertainty, boundary_uncertainty : numpy.ndarray
        float64, NaN where unknown (filled in by :func:`object_windows` where it can compute them).
    stability : numpy.ndarray
        float64 stability score as the writer recorded it, NaN where unknown.
    """

    label: np.ndarray
    slice: np.ndarray
    bbox: np.ndarray
    centroid: np.ndarray
    area: np.ndarray
    score: np.ndarray
    mean_uncertainty: np.ndarray
    boundary_uncertainty: np.ndarray
    stability: np.ndarray

    def __len__(self) -> int:
        return len(self.label)


@dataclass(frozen=True)
class ObjectWindow:
    """One object's mask in its window: ``mask[0, 0]`` is pixel ``offset`` (row, col) of plane ``slice``."""

    row: int
    label: int
    slice: int
    mask: np.ndarray
    offset: tuple[int, int]


def _blocks(result: Result, size: int) -> tuple[int, int]:
    """Read-block shape of a plane: ``size`` rounded up to whole chunks when the array has them."""
    chunks = getattr(result.labels, "chunks", None)
    plane = [a for a in range(result.labels.ndim) if a != result.slice_axis]
    sizes = []
    for a in plane:
        chunk = chunks[a] if chunks is not None and len(chunks) == result.labels.ndim else None
        chunk = chunk[0] if isinstance(chunk, tuple) else chunk  # dask: per-block sizes
        step = int(chunk) if isinstance(chunk, (int, np.integer)) and chunk > 0 else 1
        sizes.append(-(-size // step) * step)
    return sizes[0], sizes[1]


def _where(result: Result, s: int, rows: slice, cols: slice) -> str:
    plane = f" of slice {s}" if result.slice_axis is not None else ""
    return f"rows {rows.start}:{rows.stop}, cols {cols.start}:{cols.stop}{plane} of {result.name}"


def _read_labels(result: Result, s: int, rows: slice, cols: slice) -> np.ndarray:
    block = read_block(result.labels, result.index(s, rows, cols), _where(result, s, rows, cols))
    if block.size and np.issubdtype(block.dtype, np.signedinteger) and block.min() < 0:
        raise InvalidInputError(f"labels: negative ids in {_where(result, s, rows, cols)} (0 is background)")
    return block


def _block_objects(block: np.ndarray, row0: int, col0: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ids of a label block, and per id ``(area, row sum, col sum)`` and ``(row0, col0, row1, col1)``
    in plane pixels (one compact relabelling of the block: memory of a few block-sized arrays)."""
    inside = block != 0
    ids, compact_ids = np.unique(block[inside], return_inverse=True)
    compact = np.zeros(block.shape, np.int32)
    compact[inside] = compact_ids + 1
    del compact_ids, inside
    flat = compact.ravel()
    n = len(ids) + 1
    height, width = block.shape
    area = np.bincount(flat, minlength=n)[1:]
    rows = np.bincount(flat, weights=np.repeat(np.arange(height, dtype=np.float64), width), minlength=n)[1:]
    cols = np.bincount(flat, weights=np.tile(np.arange(width, dtype=np.float64), height), minlength=n)[1:]
    boxes = np.asarray([(b[0].start, b[1].start, b[0].stop, b[1].stop) for b in ndimage.find_objects(compact)],
                       dtype=np.int64).reshape(-1, 4)
    sums = np.stack([area, rows + area * row0, cols + area * col0], axis=1)
    return ids.astype(np.uint64), sums, boxes + [row0, col0, row0, col0]


def scan_objects(result: Result, on_block: Callable[[int, int], None] | None = None) -> ObjectTable:
    """Find every object of a result in one pass over its label blocks.

    Parameters
    ----------
    result : Result
    on_block : callable, optional
        ``on_block(done, total)`` after each block read.

    Returns
    -------
    ObjectTable
        The values the result's table records are filled in; the others are NaN.

    Raises
    ------
    InvalidInputError
        Negative ids, or a block that cannot be read (naming it).
    """
    grid = TileGrid(result.plane_shape, _blocks(result, BLOCK))
    total = len(grid) * result.n_slices
    keys, sums, boxes = [], [], []
    done = 0
    for s in range(result.n_slices):
        for tile in grid:
            block = _read_labels(result, s, *tile.inner.slices)
            ids, block_sums, block_boxes = _block_objects(block, tile.inner.row0, tile.inner.col0)
            keys.append(np.stack([np.full(len(ids), s, np.uint64), ids], axis=1))
            sums.append(block_sums)
            boxes.append(block_boxes)
            done += 1
            if on_block is not None:
                on_block(done, total)
    keys_all = np.concatenate(keys) if keys else np.zeros((0, 2), np.uint64)
    sums_all = np.concatenate(sums) if sums else np.zeros((0, 3))
    boxes_all = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.int64)
    # Objects cut by block borders: one row per (slice, id).
    order = np.lexsort((keys_all[:, 1], keys_all[:, 0]))
    keys_all, sums_all, boxes_all = keys_all[order], sums_all[order], boxes_all[order]
    starts = np.flatnonzero(np.r_[True, np.any(keys_all[1:] != keys_all[:-1], axis=1)]) if len(order) else order
    if len(order):
        sums_all = np.add.reduceat(sums_all, starts, axis=0)
        boxes_all = np.concatenate([np.minimum.reduceat(boxes_all[:, :2], starts, axis=0),
                                    np.maximum.reduceat(boxes_all[:, 2:], starts, axis=0)], axis=1)
    return _table(keys_all[starts], sums_all, boxes_all, result)


def _table(keys: np.ndarray, sums: np.ndarray, boxes: np.ndarray, result: Result) -> ObjectTable:
    area = sums[:, 0].astype(np.int64)
    table = ObjectTable(
        label=keys[:, 1].astype(np.uint64),
        slice=keys[:, 0].astype(np.int64),
        bbox=boxes.astype(np.int64),
        centroid=sums[:, 1:] / np.maximum(area, 1)[:, None],
        area=area,
        **{column: np.full(len(keys), np.nan) for column in TABLE_COLUMNS},
    )
    _recorded(table, result)
    return table


def _recorded(table: ObjectTable, result: Result) -> None:
    """Fill in the values of the result's own table (matched by slice and label, or by label alone)."""
    known = result.table
    if known is None or not len(table):
        return
    by_slice = "slice" in known
    own = {(int(s) if by_slice else 0, int(k)): i for i, (s, k) in enumerate(
        zip(known.get("slice", np.zeros(len(known["label"]), np.int64)), known["label"]))}
    rows = [own.get((int(s) if by_slice else 0, int(k)), -1) for s, k in zip(table.slice, table.label)]
    rows = np.asarray(rows, dtype=np.int64)
    hit = rows >= 0
    for column in TABLE_COLUMNS:
        if column in known:
            getattr(table, column)[hit] = known[column][rows[hit]]


def object_windows(
    result: Result,
    table: ObjectTable,
    *,
    band_width: int = 2,
    values: bool = True,
    on_object: Callable[[], None] | None = None,
) -> Iterator[ObjectWindow]:
    """Visit every row of ``table``: its mask in its bounding box grown by ``band_width`` (clipped to the plane).

    Objects come by slice, then by the read block holding their window's top-left corner (row-major), then by
    label. With ``values``, where the result has an uncertainty map and a row's uncertainty is unknown, it is
    computed with :func:`sum_core.object_scores.object_scores` and written into ``table`` before the row
    is yielded.

    Parameters
    ----------
    result : Result
    table : ObjectTable
        From :func:`scan_objects` of the same result.
    band_width : int
        The boundary band's half-width (and the windows' margin), ``>= 1``.
    values : bool
        Compute the unknown uncertainties (an export that writes none passes False: no uncertainty is read).
    on_object : callable, optional
        Called after each object.

    Yields
    ------
    ObjectWindow
    """
    height, width = result.plane_shape
    grown = np.concatenate([np.maximum(table.bbox[:, :2] - band_width, 0),
                            np.minimum(table.bbox[:, 2:] + band_width, [height, width])], axis=1)
    block = _blocks(result, BLOCK)
    home = (grown[:, 0] // block[0]) * (-(-width // block[1])) + grown[:, 1] // block[1]
    order = np.lexsort((table.label, home, table.slice))
    starts = np.flatnonzero(np.r_[True, (np.diff(table.slice[order]) != 0) | (np.diff(home[order]) != 0)])
    for group in np.split(order, starts[1:]):
        s = int(table.slice[group[0]])
        r0, c0 = (grown[group[0], :2] // block) * block
        fits = np.all(grown[group, 2:] <= [r0 + block[0] + MARGIN, c0 + block[1] + MARGIN], axis=1)
        compute = values and result.uncertainty is not None and bool(np.isnan(table.mean_uncertainty[group]).any())
        region = None
        if fits.any():
            r1, c1 = grown[group[fits], 2:].max(axis=0)
            region = _window(result, s, (int(r0), int(c0), int(r1), int(c1)), compute)
        for i, inside in zip(group, fits):
            box = grown[i]
            if inside:
                labels, window_values = (part[box[0] - r0:box[2] - r0, box[1] - c0:box[3] - c0]
                                         if part is not None else None for part in region)
            else:
                labels, window_values = _window(result, s, tuple(int(v) for v in box), compute)
            mask = labels == int(table.label[i])
            if window_values is not None and np.isnan(table.mean_uncertainty[i]):
                scores = object_scores(mask.astype(np.uint8), window_values, band_width=band_width)
                table.mean_uncertainty[i] = scores.mean_uncertainty[0]
                table.boundary_uncertainty[i] = scores.boundary_uncertainty[0]
            yield ObjectWindow(int(i), int(table.label[i]), s, mask, (int(box[0]), int(box[1])))
            if on_object is not None:
                on_object()


def _window(
    result: Result, s: int, box: tuple[int, int, int, int], with_values: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels (and, ``with_values``, uncertainty as float32) of ``box`` ``(row0, col0, row1, col1)`` of slice ``s``."""
    rows, cols = slice(box[0], box[2]), slice(box[1], box[3])
    labels = _read_labels(result, s, rows, cols)
    if not with_values:
        return labels, None
    values = read_block(result.uncertainty, result.index(s, rows, cols), "uncertainty " + _where(result, s, rows, cols))
    return labels, values.astype(np.float32)
