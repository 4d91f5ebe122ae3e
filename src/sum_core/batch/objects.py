"""The per-object table of a batch target (AIS jobs): one row per object, written with the labels.

Layout (plain zarr v3, readable without sum-hq): the group ``objects/`` of the target holds five
1D arrays of one length N, one row per object of the whole volume, sorted by label:

- ``label`` uint32: the object's id in ``labels``;
- ``slice`` int64: the slice holding it (0 for a 2D image);
- ``area`` int64: its pixels;
- ``mean_uncertainty`` float64: the mean per-pixel AIS uncertainty over the object;
- ``boundary_uncertainty`` float64: the mean over its boundary band (±2 px of its outline; the
  image border is no outline).

The uncertainties are :func:`sum_core.ais_uncertainty.ais_object_scores` of the float32
per-pixel uncertainty (:func:`sum_core.ais_uncertainty.ais_pixel_uncertainty` of the decoder
maps), i.e. before the ``uncertainty`` array's float16 rounding. The group's ``sum_hq_objects``
attribute records, per slice, its rows ``[start, stop)`` and the checksum of those rows, which
:func:`sum_core.batch.verify_target` checks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from ..checksums import checksum
from ..errors import InvalidInputError
from .writer import ATTR, Target

__all__ = ["COLUMNS", "object_table"]

#: The columns of the table and their dtypes, in order.
COLUMNS = (
    ("label", "uint32"),
    ("slice", "int64"),
    ("area", "int64"),
    ("mean_uncertainty", "float64"),
    ("boundary_uncertainty", "float64"),
)
TABLE_ATTR = "sum_hq_objects"


def object_table(target: Any) -> dict[str, np.ndarray]:
    """The per-object table of a completed batch target (AIS mode), one row per object.

    Parameters
    ----------
    target : str, path, zarr store or zarr.Group
        A target written by :func:`sum_core.batch.segment_zarr` with ``mode="ais"`` (or
        ``"auto"`` resolved to AIS).

    Returns
    -------
    dict of str to numpy.ndarray
        The columns ``label`` (uint32), ``slice`` (int64, 0 for 2D), ``area`` (int64),
        ``mean_uncertainty`` and ``boundary_uncertainty`` (float64), of one length, sorted by
        label (see the module docstring).

    Raises
    ------
    InvalidInputError
        Not a batch target, a job that is not complete, or a target without a table (an AMG or
        prompts job: their objects have no AIS uncertainty).
    """
    group = target if isinstance(target, zarr.Group) else _open(target)
    info = group.attrs.get(ATTR)
    if info is None:
        raise InvalidInputError(f"target: {target} is not a sum-hq batch target (no {ATTR} attributes)")
    if not info.get("complete"):
        raise InvalidInputError(f"target: {target} is not complete; rerun its job to finish it first")
    if "objects" not in group:
        mode = info.get("signature", {}).get("mode")
        raise InvalidInputError(
            f"target: {target} has no object table (job mode {mode!r}); only AIS jobs (mode='ais', "
            "`sum-hq batch --mode ais`) write one"
        )
    return {name: np.asarray(group[f"objects/{name}"][...], dtype=dtype) for name, dtype in COLUMNS}


def _open(target: Any) -> zarr.Group:
    try:
        return zarr.open_group(target, mode="r", zarr_format=3)
    except Exception as err:  # noqa: BLE001 - any unreadable group
        raise InvalidInputError(f"target: {target} is not a sum-hq batch target ({type(err).__name__}: {err})") from None


def rows_checksum(columns: dict[str, np.ndarray]) -> str:
    """Hex digest of one slice's rows (all columns, in :data:`COLUMNS` order)."""
    return checksum(*(np.ascontiguousarray(columns[name], dtype=dtype) for name, dtype in COLUMNS), size=8).hex()


def table_damage(target: Target) -> list[tuple[int, str]]:
    """``(slice, problem)`` for each slice whose rows of ``objects/`` are unreadable or altered."""
    if "objects" not in target.group:
        return []
    try:
        planes = target.group["objects"].attrs[TABLE_ATTR]["slices"]
        columns = {name: np.asarray(target.group[f"objects/{name}"][...]) for name, _ in COLUMNS}
    except Exception as err:  # noqa: BLE001 - any unreadable table is damage of every slice it covers
        n = _n_slices(target)
        return [(s, f"objects table cannot be read ({type(err).__name__})") for s in range(n)]
    damage = []
    for s, (start, stop, digest) in enumerate(planes):
        rows = {name: values[start:stop] for name, values in columns.items()}
        if any(len(v) != stop - start for v in rows.values()) or rows_checksum(rows) != digest:
            damage.append((s, f"objects table rows of slice {s} do not match their checksum"))
    return damage


def _n_slices(target: Target) -> int:
    return 1 if target.slice_axis is None else target.labels.shape[target.slice_axis]


def write_table(target: Target, parts: list[dict[str, np.ndarray]]) -> None:
    """Write the table from one dict of columns per slice (rows sorted by label), checksums last."""
    if "objects" in target.group:
        del target.group["objects"]
    group = target.group.create_group("objects")
    for name, dtype in COLUMNS:
        values = np.concatenate([np.asarray(p[name], dtype=dtype) for p in parts] or [np.zeros(0, dtype)])
        group.create_array(name, shape=values.shape, dtype=dtype, chunks=(max(1, min(len(values), 1 << 20)),),
                           fill_value=0)[...] = values
    stops = np.cumsum([len(p["label"]) for p in parts]).tolist()
    starts = [0] + stops[:-1]
    group.attrs[TABLE_ATTR] = {
        "slices": [[int(a), int(b), rows_checksum(p)] for a, b, p in zip(starts, stops, parts)]
    }


def slice_rows(target: Target, slice_index: int) -> dict[str, np.ndarray]:
    """The rows of one slice from the existing table (verified by :func:`table_damage` first)."""
    start, stop, _ = target.group["objects"].attrs[TABLE_ATTR]["slices"][slice_index]
    return {name: np.asarray(target.group[f"objects/{name}"][start:stop], dtype=dtype) for name, dtype in COLUMNS}
