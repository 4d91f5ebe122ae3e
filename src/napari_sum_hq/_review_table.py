"""The rows of the review queue (Qt-free): one per object (and slice) of a Labels layer, where it lies, its scores.

The rows are a :class:`pandas.DataFrame` in napari's Labels ``features`` layout (``index`` is the label id)
with ``slice`` (0 for a plane), the half-open bounding box ``bbox_row0 / bbox_col0 / bbox_row1 / bbox_col1``
in the plane's pixels, any numeric score columns and :data:`REVIEWED`. They become the layer's ``features``,
so the reviewed state is kept (and saved) with the layer.

- :func:`rows_from_features`: the layer's own features when they already hold one row per object with its
  bounding box (what the plugin's reader writes for results it scanned): nothing is read.
- :func:`scan_rows` (a worker): :func:`sum_core.results.scan_objects` over the labels, block by block (a lazy
  dask / zarr result is never read whole), the unknown uncertainties from the uncertainty map with
  :func:`sum_core.results.object_windows` (window by window), and the layer's feature columns merged in.

A stack is ``(slice, row, col)``: the slice axis is the first (napari's layout).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sum_core.errors import InvalidInputError

__all__ = [
    "BBOX",
    "REVIEWED",
    "object_index",
    "object_present",
    "object_window",
    "queue",
    "rows_from_features",
    "scan_rows",
    "score_columns",
]

#: The bounding-box columns (half-open, plane pixels).
BBOX = ("bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1")
#: The column of the reviewed (accepted) state.
REVIEWED = "reviewed"
#: Score columns offered first, in this order (the first present is the default sort column).
PREFERRED = ("mean_uncertainty", "boundary_uncertainty", "score", "predicted_iou", "stability", "area")
_NOT_SCORES = {"index", "slice", REVIEWED, *BBOX, "centroid_row", "centroid_col"}
#: Progress of the uncertainty pass is reported every this many objects.
_REPORT_EVERY = 64


def _check_ndim(ndim: int) -> None:
    if ndim not in (2, 3):
        raise InvalidInputError(f"labels: the review queue takes a 2D plane or a 3D stack, got {ndim} axes")


def _keys(features: pd.DataFrame, ndim: int) -> list[str]:
    return ["slice", "index"] if ndim == 3 and "slice" in features else ["index"]


def rows_from_features(features: pd.DataFrame | None, ndim: int) -> pd.DataFrame | None:
    """The layer's ``features`` as review rows, or None when they cannot be (then :func:`scan_rows`).

    They can when they have an ``index`` column, the :data:`BBOX` columns, ``slice`` for a stack, and one row
    per object (per ``(slice, index)`` in a stack, per ``index`` in a plane).

    Parameters
    ----------
    features : pandas.DataFrame or None
        A Labels layer's ``features``.
    ndim : int
        The layer's number of axes (2 or 3).

    Returns
    -------
    pandas.DataFrame or None
        A copy with a fresh row index, ``slice`` (0 when missing) and :data:`REVIEWED` (False when missing).
    """
    _check_ndim(ndim)
    if features is None or not len(features) or "index" not in features:
        return None
    if any(column not in features for column in BBOX) or (ndim == 3 and "slice" not in features):
        return None
    if features.duplicated(_keys(features, ndim)).any():
        return None
    rows = features.reset_index(drop=True).copy()
    if "slice" not in rows:
        rows["slice"] = 0
    rows[REVIEWED] = rows[REVIEWED].fillna(False).astype(bool) if REVIEWED in rows else False
    return rows


def _recorded_table(features: pd.DataFrame | None, ndim: int) -> dict[str, np.ndarray] | None:
    """The layer's features as :func:`sum_core.results.open_result`'s ``table`` (values it need not compute)."""
    if features is None or not len(features) or "index" not in features:
        return None
    keys = _keys(features, ndim)
    unique = features.drop_duplicates(keys)
    table = {"label": unique["index"].to_numpy()}
    if keys[0] == "slice":
        table["slice"] = unique["slice"].to_numpy()
    for name in ("score", "mean_uncertainty", "boundary_uncertainty"):
        if name in unique and pd.api.types.is_numeric_dtype(unique[name]):
            table[name] = unique[name].to_numpy(dtype=np.float64)
    return table


def scan_rows(labels: Any, uncertainty: Any, features: pd.DataFrame | None, token: Any, relay: Any) -> pd.DataFrame:
    """Find the objects of ``labels`` and their scores (run it in a worker thread).

    Parameters
    ----------
    labels : array-like
        The Labels layer's data (level 0 of a multiscale layer): numpy, dask or zarr, 2D or 3D.
    uncertainty : array-like or None
        The per-pixel uncertainty of the same shape (floats in [0, 1]), or None.
    features : pandas.DataFrame or None
        The layer's features: their values are used where they exist (``score``, ``mean_uncertainty``,
        ``boundary_uncertainty`` by id, and slice in a stack), their other columns are kept.
    token : napari_sum_hq._jobs.CancelToken
        Checked after every block and every few objects.
    relay : napari_sum_hq._jobs.ProgressRelay
        Gets ``(blocks read, blocks)``, then ``(objects scored, objects)`` when uncertainties are computed.

    Returns
    -------
    pandas.DataFrame
        One row per object and slice, sorted by slice then id.

    Raises
    ------
    InvalidInputError
        Labels that are not 2D / 3D integers, an uncertainty map of another shape, an unreadable block.
    """
    from sum_core.results import object_windows, open_result, scan_objects

    _check_ndim(len(labels.shape))
    result = open_result(labels, uncertainty, table=_recorded_table(features, len(labels.shape)))

    def on_block(done: int, total: int) -> None:
        token.check()
        relay.progressed.emit(done, total)

    table = scan_objects(result, on_block=on_block)
    if result.uncertainty is not None and bool(np.isnan(table.mean_uncertainty).any()):
        scored = [0]

        def on_object() -> None:
            scored[0] += 1
            if scored[0] % _REPORT_EVERY == 0 or scored[0] == len(table):
                token.check()
                relay.progressed.emit(scored[0], len(table))

        for _ in object_windows(result, table, on_object=on_object):
            pass
    columns = {
        "index": table.label.astype(np.int64), "slice": table.slice, "area": table.area,
        **{name: table.bbox[:, i] for i, name in enumerate(BBOX)},
        "centroid_row": table.centroid[:, 0], "centroid_col": table.centroid[:, 1],
        "score": table.score, "mean_uncertainty": table.mean_uncertainty,
        "boundary_uncertainty": table.boundary_uncertainty,
    }  # fmt: skip
    rows = pd.DataFrame({name: values for name, values in columns.items()
                         if not (values.dtype.kind == "f" and np.isnan(values).all())})
    return _merge_features(rows, features, len(labels.shape))


def _merge_features(rows: pd.DataFrame, features: pd.DataFrame | None, ndim: int) -> pd.DataFrame:
    """``rows`` with the features' other columns (and :data:`REVIEWED`) joined by id (and slice)."""
    if features is not None and len(features) and "index" in features:
        keys = _keys(features, ndim)
        extra = [c for c in features.columns if c not in rows.columns and c not in keys]
        if extra:
            joined = features[keys + extra].drop_duplicates(keys).copy()
            joined["index"] = joined["index"].astype(np.int64)
            if "slice" in keys:
                joined["slice"] = joined["slice"].astype(np.int64)
            rows = rows.merge(joined, on=keys, how="left")
    rows[REVIEWED] = rows[REVIEWED].fillna(False).astype(bool) if REVIEWED in rows else False
    return rows.reset_index(drop=True)


def score_columns(rows: pd.DataFrame) -> list[str]:
    """The numeric columns a queue can be sorted by: :data:`PREFERRED` first, then the others by name."""
    numeric = [c for c in rows.columns if c not in _NOT_SCORES and pd.api.types.is_numeric_dtype(rows[c])
               and not pd.api.types.is_bool_dtype(rows[c])]
    return [c for c in PREFERRED if c in numeric] + sorted(c for c in numeric if c not in PREFERRED)


def queue(rows: pd.DataFrame, column: str, *, threshold: float | None = None, descending: bool = True,
          hidden: set[int] | frozenset[int] = frozenset()) -> np.ndarray:
    """The row positions of the queue, in review order.

    Parameters
    ----------
    rows : pandas.DataFrame
        The review rows.
    column : str
        The sort column (numeric).
    threshold : float, optional
        Keep only the rows whose value is above it (unknown values are then left out).
    descending : bool
        Highest value first (the most uncertain object first); ties and unknown values keep id order, unknown
        values last.
    hidden : set of int
        Row positions left out (deleted objects).

    Returns
    -------
    numpy.ndarray
        int64 row positions.
    """
    values = rows[column].to_numpy(dtype=np.float64)
    keep = np.ones(len(rows), dtype=bool)
    if threshold is not None:
        keep &= values > threshold
    if hidden:
        keep[list(hidden)] = False
    positions = np.flatnonzero(keep)
    kept = values[positions]
    known = ~np.isnan(kept)
    order = np.argsort(-kept[known] if descending else kept[known], kind="stable")
    return np.concatenate([positions[known][order], positions[~known]]).astype(np.int64)


def object_window(row: pd.Series, ndim: int) -> tuple[Any, ...]:
    """The numpy index of the bounding box of the object of ``row`` (its slice first in a stack)."""
    key = (int(row["slice"]),) if ndim == 3 else ()
    r0, c0, r1, c1 = (int(row[name]) for name in BBOX)
    return (*key, slice(r0, r1), slice(c0, c1))


def object_present(data: Any, row: pd.Series) -> bool:
    """Whether the object of ``row`` has a pixel in its bounding box (reads that window only)."""
    window = np.asarray(data[object_window(row, len(data.shape))])
    return bool(np.any(window == int(row["index"])))


def object_index(data: np.ndarray, row: pd.Series) -> tuple[np.ndarray, ...]:
    """The numpy index (one array per axis) of the pixels of the object of ``row``, read from its window.

    The index of napari's ``Labels.data_setitem``.
    """
    where = object_window(row, data.ndim)
    found = np.nonzero(np.asarray(data[where]) == int(row["index"]))
    lead = tuple(np.full(found[0].size, where[0], dtype=np.intp) for _ in range(data.ndim - 2))
    return (*lead, found[0] + where[-2].start, found[1] + where[-1].start)
