"""The per-object table of a batch target (AIS jobs): one row per object, written with the labels.

Layout (plain zarr v3, readable without sum-hq): the group ``objects/`` of the target holds five
1D arrays of one length N, one row per object of the whole volume, sorted by label:

- ``label`` uint32: the object's id in ``labels``;
- ``slice`` int64: the slice holding it (0 for a 2D image);
- ``area`` int64: its pixels;
- ``mean_uncertainty`` float64: the mean per-pixel AIS uncertainty over the object;
- ``boundary_uncertainty`` float64: the mean over its boundary band (±2 px of its outline; the
  image border is no outline).

The uncertainties are :func:`sum_core.object_scores.object_scores` of the float32
per-pixel uncertainty (:func:`sum_core.ais_uncertainty.ais_pixel_uncertainty` of the decoder
maps), i.e. before the ``uncertainty`` array's float16 rounding. The group's ``sum_hq_objects``
attribute records, per slice, its rows ``[start, stop)`` and the checksum of those rows, which
:func:`sum_core.batch.verify_target` checks.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..checksums import checksum
from ..errors import InvalidInputError
from .writer import ATTR, Target, local_folder

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
PARTIAL = "objects.partial"  # the new table while it is written (see write_table)


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
        if mode == "ais":
            raise InvalidInputError(f"target: {target} lost its object table; rerun its job with repair=True (--repair)")
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
        return _missing_table(target)
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


def _missing_table(target: Target) -> list[tuple[int, str]]:
    """Without ``objects/``, the slices of an AIS target whose rows only the table held: those whose plan
    is done and no longer stored (dropped when the job completed; the table was lost after that)."""
    if target.info.get("signature", {}).get("mode") != "ais" or "done/plan" not in target.group:
        return []  # not an AIS job, or one whose planning has not started
    try:
        planned = target.flags("plan")
    except Exception:  # noqa: BLE001 - no readable plan flags: no slice's rows can be trusted
        planned = np.ones(_n_slices(target), dtype=bool)
    return [(int(s), f"objects table of slice {int(s)} is missing") for s in np.nonzero(planned)[0]
            if f"work/s{int(s)}/plan" not in target.group]


def _n_slices(target: Target) -> int:
    return 1 if target.slice_axis is None else target.labels.shape[target.slice_axis]


def write_table(target: Target, parts: list[dict[str, np.ndarray]]) -> None:
    """Write the table from one dict of columns per slice (rows sorted by label), checksums last.

    On a local store the new table is written as ``objects.partial`` and then swapped in by two
    renames (the old folder to ``objects.old``, the new one to ``objects``), so an interruption
    leaves the old table, the new one, or none; other stores delete the old table first. A missing
    table is damage (:func:`table_damage`) that a repair redoes.
    """
    folder = local_folder(target.group.store)
    name = "objects" if folder is None else PARTIAL
    for old in ("objects", PARTIAL) if folder is None else (PARTIAL,):
        if old in target.group:
            del target.group[old]
    group = target.group.create_group(name)
    for column, dtype in COLUMNS:
        values = np.concatenate([np.asarray(p[column], dtype=dtype) for p in parts] or [np.zeros(0, dtype)])
        group.create_array(column, shape=values.shape, dtype=dtype, chunks=(max(1, min(len(values), 1 << 20)),),
                           fill_value=0)[...] = values
    stops = np.cumsum([len(p["label"]) for p in parts]).tolist()
    starts = [0] + stops[:-1]
    group.attrs[TABLE_ATTR] = {
        "slices": [[int(a), int(b), rows_checksum(p)] for a, b, p in zip(starts, stops, parts)]
    }
    if folder is not None:
        _swap_in(folder / target.group.path)


def _swap_in(folder: Path) -> None:
    """Replace ``folder/objects`` by the complete ``folder/objects.partial``."""
    old = folder / "objects.old"
    if old.exists():
        shutil.rmtree(old)
    if (folder / "objects").exists():
        (folder / "objects").rename(old)
    (folder / PARTIAL).rename(folder / "objects")
    if old.exists():
        shutil.rmtree(old)


def slice_rows(target: Target, slice_index: int) -> dict[str, np.ndarray]:
    """The rows of one slice from the existing table (verified by :func:`table_damage` first)."""
    start, stop, _ = target.group["objects"].attrs[TABLE_ATTR]["slices"][slice_index]
    return {name: np.asarray(target.group[f"objects/{name}"][start:stop], dtype=dtype) for name, dtype in COLUMNS}
