"""NGFF (OME-Zarr 0.5) label images: the one set of metadata builders and sampling rules.

Used by the batch jobs' OME-Zarr targets (:mod:`sum_core.batch.ngff`, :mod:`sum_core.batch.ngff_image`) and
by the result export to OME-Zarr (:mod:`sum_core.results.ome_zarr`), so both write the same layout:

- levels ``0``, ``1``, ... of the plane (the slice axis, when there is one, first and kept); without a
  parent pyramid the plane halves until its longer side is at most :data:`SMALLEST_LEVEL` px
  (:func:`halving_planes`);
- level ``l`` is the nearest-neighbour sample of level ``l - 1``: pixel ``i`` takes pixel
  ``i * n_{l-1} // n_l`` along each plane axis (:func:`nearest_indices`), so ids are never mixed;
- one ``scale`` transformation per level, the pixel size times the level's sampling (:func:`level_scales`),
  or the parent image's transformations level by level when the labels belong to an image;
- ``image-label``: one colour per id, fixed by the id (:func:`label_color`), and one property dict per
  object (:func:`label_properties`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "PROPERTY_KEYS",
    "SMALLEST_LEVEL",
    "halving_planes",
    "label_color",
    "label_properties",
    "per_id_columns",
    "level_scales",
    "multiscale_metadata",
    "ngff_axes",
    "nearest_indices",
]

#: Without a parent pyramid, levels halve the plane until its longer side is at most this.
SMALLEST_LEVEL = 512
#: Per-object column (of a batch ``objects/`` table or a result's object table) -> NGFF property key.
#: The first column found of each key is used; integer properties are written as integers.
PROPERTY_KEYS = {
    "area": "area",
    "predicted_iou": "predicted-iou",
    "score": "predicted-iou",
    "stability": "stability",
    "mean_uncertainty": "mean-uncertainty",
    "boundary_uncertainty": "boundary-uncertainty",
}
_INTEGER_PROPERTIES = ("area",)
_SPACE = ("z", "y", "x")


def halving_planes(plane: tuple[int, int], smallest: int = SMALLEST_LEVEL) -> list[tuple[int, int]]:
    """The plane shape of each level: ``plane``, then halved (rounded up) until the longer side is at most
    ``smallest``.

    >>> halving_planes((2048, 1000), 512)
    [(2048, 1000), (1024, 500), (512, 250)]
    """
    planes = [(int(plane[0]), int(plane[1]))]
    while max(planes[-1]) > smallest:
        planes.append(tuple(max(1, (n + 1) // 2) for n in planes[-1]))  # type: ignore[arg-type]
    return planes


def nearest_indices(start: int, stop: int, n_below: int, n: int) -> np.ndarray:
    """The pixels of the level below (``n_below`` long) sampled by pixels ``start:stop`` of a level ``n`` long."""
    return np.arange(start, stop, dtype=np.int64) * n_below // n


def ngff_axes(names: Sequence[str], units: Sequence[str | None]) -> list[dict[str, Any]]:
    """NGFF axes (name, type, unit) of output axes named ``names`` (the slice axis first).

    Names that are not valid NGFF axes (distinct, ending in ``y, x``, the others ``t`` or ``z``) are
    replaced by ``z, y, x`` (the last ones); ``t`` is a time axis, the others space; a unit of None is left out.
    """
    lowered = [str(n).lower() for n in names]
    valid = (len(set(lowered)) == len(lowered) and lowered[-2:] == ["y", "x"]
             and all(n in ("t", *_SPACE) for n in lowered))
    if not valid:
        lowered = list(_SPACE[-len(lowered):])
    axes = []
    for name, unit in zip(lowered, units):
        axis: dict[str, Any] = {"name": name, "type": "time" if name == "t" else "space"}
        if unit is not None:
            axis["unit"] = unit
        axes.append(axis)
    return axes


def level_scales(scale: Sequence[float], shapes: Sequence[Sequence[int]]) -> list[list[float]]:
    """The physical pixel size of each level (``shapes``: each level's shape, level 0 first): ``scale``
    times the level's sampling along each axis."""
    shape0 = shapes[0]
    return [[float(s) * n0 / n for s, n0, n in zip(scale, shape0, shape)] for shape in shapes]


def multiscale_metadata(
    name: str,
    axes: list[dict[str, Any]],
    scales: list[list[float]] | None = None,
    *,
    transforms: list[list[dict[str, Any]]] | None = None,
    common: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The ``ome`` attributes of a multiscale group: ``version`` 0.5 and one ``multiscales`` entry.

    Parameters
    ----------
    name : str
        The multiscale's name.
    axes : list of dict
        Its axes (:func:`ngff_axes`).
    scales : list of list of float, optional
        One ``scale`` transformation per level (:func:`level_scales`).
    transforms : list of list of dict, optional
        The ``coordinateTransformations`` of each level as they are (e.g. a parent image's, with its
        translations); replaces ``scales``.
    common : list of dict, optional
        The transformations of the whole multiscale (applied after each level's).
    """
    if transforms is None:
        transforms = [[{"type": "scale", "scale": scale}] for scale in scales or []]
    datasets = [{"path": str(level), "coordinateTransformations": t} for level, t in enumerate(transforms)]
    multiscale: dict[str, Any] = {"name": name, "axes": axes, "datasets": datasets}
    if common:
        multiscale["coordinateTransformations"] = common
    return {"version": "0.5", "multiscales": [multiscale]}


def label_color(label: int) -> list[int]:
    """A fixed, well spread RGBA colour per id (Knuth's multiplicative hash of the id)."""
    h = (int(label) * 2654435761) & 0xFFFFFFFF
    return [64 + (h & 0xBF), 64 + ((h >> 8) & 0xBF), 64 + ((h >> 16) & 0xBF), 255]


def per_id_columns(labels: Any, columns: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Merge per-(slice, object) rows into one row per id (an NGFF label image has one property per id).

    ``area`` is summed over the rows of an id and ``mean_uncertainty`` weighted by their areas;
    ``boundary_uncertainty`` is kept only for an id with one row (bands of different planes do not add up);
    any other column (predicted IoU, stability: one value per object) is the id's first row's.

    Parameters
    ----------
    labels : array-like
        The id of each row (an id may have several rows, one per slice).
    columns : mapping of str to array
        Per-row values aligned with ``labels``; ``area`` is needed for ``mean_uncertainty``.

    Returns
    -------
    ids : numpy.ndarray
        The sorted unique ids.
    merged : dict of str to numpy.ndarray
        One value per id for each column.

    Examples
    --------
    >>> ids, merged = per_id_columns([7, 3, 7], {"area": [1, 2, 3], "mean_uncertainty": [0.5, 0.1, 0.1]})
    >>> ids.tolist(), merged["area"].tolist(), [round(v, 3) for v in merged["mean_uncertainty"].tolist()]
    ([3, 7], [2, 4], [0.1, 0.2])
    """
    ids, first, inverse, counts = np.unique(np.asarray(labels), return_index=True, return_inverse=True,
                                            return_counts=True)
    inverse = inverse.reshape(-1)
    merged: dict[str, np.ndarray] = {}
    area = np.asarray(columns["area"], dtype=np.int64) if "area" in columns else None
    for name, values in columns.items():
        values = np.asarray(values)
        if name == "area":
            total = np.zeros(len(ids), np.int64)
            np.add.at(total, inverse, values.astype(np.int64))
            merged[name] = total
        elif name == "mean_uncertainty" and area is not None:
            weighted = np.zeros(len(ids))
            np.add.at(weighted, inverse, values.astype(np.float64) * area)
            total = np.zeros(len(ids))
            np.add.at(total, inverse, area)
            merged[name] = weighted / np.maximum(total, 1)  # NaN when a row's is unknown
        elif name == "boundary_uncertainty":
            merged[name] = np.where(counts == 1, values[first].astype(np.float64), np.nan)
        else:
            merged[name] = values[first]
    return ids, merged


def label_properties(ids: Sequence[int] | np.ndarray, columns: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """One ``image-label`` property dict per id: ``label-value`` and the values of ``columns``.

    Parameters
    ----------
    ids : sequence of int
        The object ids.
    columns : mapping of str to array, optional
        Per-object values aligned with ``ids``; those named in :data:`PROPERTY_KEYS` become properties
        (``area`` as an integer, the others as floats); other columns are ignored. NaN (unknown) values are
        left out.

    Returns
    -------
    list of dict
    """
    chosen: dict[str, np.ndarray] = {}
    for column, key in PROPERTY_KEYS.items():
        if columns is not None and key not in chosen and column in columns:
            values = np.asarray(columns[column])
            if len(values) != len(ids):
                raise ValueError(f"column {column!r} has {len(values)} values for {len(ids)} ids")
            chosen[key] = values
    properties = []
    for row, label in enumerate(ids):
        entry: dict[str, Any] = {"label-value": int(label)}
        for key, values in chosen.items():
            value = float(values[row])
            if not math.isnan(value):
                entry[key] = int(value) if key in _INTEGER_PROPERTIES else value
        properties.append(entry)
    return properties
