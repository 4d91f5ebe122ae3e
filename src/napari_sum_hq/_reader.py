"""The npe2 reader of segmentation results: File → Open (``viewer.open(path, plugin="napari-sum-hq")``).

A result is a folder that :func:`sum_core.results.open_result` opens as one: a ``sum-hq batch`` target
(a zarr group with ``labels``, ``uncertainty`` and its ``objects/`` table), an OME-Zarr label image
(with its ``uncertainty`` multiscale image when it has one, as ``sum-hq export --to ome-zarr`` writes it),
or an OME-Zarr image holding one label image under ``labels/``. It opens as a Labels layer (the ids) and,
when the result has one, an Image layer of its uncertainty (:data:`UNCERTAINTY_STYLE`), both lazy (dask
over the zarr chunks; a plane larger than :data:`PYRAMID_FROM` pixels on a side as a strided pyramid, so
napari reads a coarse level when zoomed out and never holds the whole plane), with the result's pixel size
and units. The per-object table becomes the Labels layer's ``features`` (napari's ``index`` column is the
id): the objects found by :func:`sum_core.results.scan_objects` when the result is small (at most
:data:`SCAN_PIXELS` pixels), with the values the writer recorded; otherwise the recorded table alone.

Any other path (a file, a zarr array, an OME-Zarr image without labels, a folder that is no zarr group)
gets no reader (None), so napari's own readers and napari-ome-zarr keep it.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ._uncertainty_style import UNCERTAINTY_STYLE

__all__ = ["PYRAMID_FROM", "SCAN_PIXELS", "get_reader", "result_layer_data"]

#: A plane with a side longer than this is shown as a pyramid of strided levels (each half the last).
PYRAMID_FROM = 4096
#: A result of at most this many pixels without a recorded table (or with one) gets its objects scanned.
SCAN_PIXELS = 4096 * 4096


def get_reader(path: str | list[str]) -> Any:
    """napari's ``get_reader``: a reader function when ``path`` is one result folder, else None.

    Opens metadata only (and a batch target's object table). A sum-hq batch target that cannot be read
    (an unfinished job) still gets a reader, which raises the error naming what to do.
    """
    import zarr
    from sum_core.batch.writer import ATTR
    from sum_core.errors import SumError
    from sum_core.results import open_result

    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, (str, os.PathLike)) or not os.path.isdir(path):
        return None
    try:
        group = zarr.open_group(os.fspath(path), mode="r")
    except Exception:  # noqa: BLE001 - not a zarr group: not ours
        return None
    if not _result_group(group):
        return None
    try:
        result = open_result(path)
    except SumError as err:
        if ATTR not in group.attrs:
            return None
        return partial(_raise, err)
    return partial(_read, result)


def _result_group(group: Any) -> bool:
    """Whether a zarr group is a batch target, an OME-Zarr label image or holds ``labels/`` (an OME-Zarr
    image without labels is napari-ome-zarr's)."""
    from sum_core.batch.writer import ATTR

    attrs = group.attrs.asdict()
    return ATTR in attrs or "image-label" in attrs.get("ome", attrs) or "labels" in group


def _raise(err: Exception, path: Any) -> list:
    raise err


def _read(result: Any, path: Any) -> list[tuple[Any, dict[str, Any], str]]:
    from sum_core.results import result_stem

    return result_layer_data(result, result_stem(Path(os.fspath(path)).name) or "result")


def result_layer_data(result: Any, stem: str) -> list[tuple[Any, dict[str, Any], str]]:
    """The layer data tuples of a :class:`sum_core.results.Result`: ``"<stem> labels"`` (Labels, with
    ``features``) and, when it has one, ``"<stem> uncertainty"`` (Image, float32, hidden)."""
    common: dict[str, Any] = {}
    if result.scale is not None:
        common["scale"] = tuple(result.scale)
    if result.units is not None and any(u is not None for u in result.units):
        common["units"] = tuple("pixel" if u is None else u for u in result.units)
    labels, multiscale = _levels(result.labels, result.slice_axis)
    layers = [(labels, {"name": f"{stem} labels", "multiscale": multiscale, "features": _features(result),
                        **common}, "labels")]
    if result.uncertainty is not None:
        values, _ = _levels(result.uncertainty, result.slice_axis, np.float32)
        layers.append((values, {"name": f"{stem} uncertainty", "multiscale": multiscale, "visible": False,
                                **UNCERTAINTY_STYLE, **common}, "image"))
    return layers


def _levels(array: Any, slice_axis: int | None, dtype: Any = None) -> tuple[Any, bool]:
    """``array`` as dask (cast to ``dtype``), or a list of strided levels when a plane side exceeds
    :data:`PYRAMID_FROM`; and whether it is a list."""
    import dask.array as da
    import zarr

    data = da.from_zarr(array) if isinstance(array, zarr.Array) else da.asarray(array)
    if dtype is not None and data.dtype != dtype:
        data = data.astype(dtype)
    plane = [a for a in range(data.ndim) if a != slice_axis]
    levels, step = [data], 2
    while max(data.shape[a] for a in plane) > PYRAMID_FROM * step // 2:
        levels.append(data[tuple(slice(None, None, step) if a in plane else slice(None) for a in range(data.ndim))])
        step *= 2
    return (levels, True) if len(levels) > 1 else (data, False)


def _features(result: Any) -> Any:
    """One row per object (and slice): ``index`` (the id), ``slice``, and the known per-object values."""
    import pandas as pd
    from sum_core.results import object_windows, scan_objects

    if int(np.prod(result.labels.shape)) <= SCAN_PIXELS:
        table = scan_objects(result)
        if result.uncertainty is not None and bool(np.isnan(table.mean_uncertainty).any()):
            for _ in object_windows(result, table):  # fills in the uncertainties nobody recorded
                pass
        columns = {"index": table.label, "slice": table.slice, "area": table.area,
                   "bbox_row0": table.bbox[:, 0], "bbox_col0": table.bbox[:, 1],
                   "bbox_row1": table.bbox[:, 2], "bbox_col1": table.bbox[:, 3],
                   "centroid_row": table.centroid[:, 0], "centroid_col": table.centroid[:, 1],
                   "score": table.score, "mean_uncertainty": table.mean_uncertainty,
                   "boundary_uncertainty": table.boundary_uncertainty}
    elif result.table is not None:
        columns = {"index" if name == "label" else name: values for name, values in result.table.items()}
    else:
        return None
    return pd.DataFrame({name: values for name, values in columns.items()
                         if not (values.dtype.kind == "f" and np.isnan(values).all())})
