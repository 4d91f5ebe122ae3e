"""The per-object table of a batch target (every mode): one row per object, written with the labels.

Layout (plain zarr v3, readable without sum-hq): the group ``objects/`` of the target holds seven
1D arrays of one length N, one row per object of the whole volume, sorted by slice, then label:

- ``label`` uint32: the object's id in ``labels``;
- ``slice`` int64: the slice holding it (0 for a 2D image);
- ``area`` int64: its pixels (in the final labels);
- ``predicted_iou`` float64: the decoder's estimate of its mask's IoU (AMG: the mask's predicted
  IoU; prompts: the prediction's score; AIS: NaN);
- ``stability`` float64: SAM's stability score of its logits (AMG, prompts; AIS: NaN);
- ``mean_uncertainty`` float64: the mean per-pixel uncertainty over the object;
- ``boundary_uncertainty`` float64: the mean over its boundary band (±2 px of its outline; the
  image border is no outline).

The columns are :func:`sum_core.object_scores.object_scores`' definitions. AIS scores the float32
per-pixel uncertainty (:func:`sum_core.ais_uncertainty.ais_pixel_uncertainty` of the decoder maps),
i.e. before the ``uncertainty`` array's float16 rounding; AMG and prompts score the written
``labels`` and ``uncertainty`` (float16) arrays, window by window (:func:`window_rows`): an object's
rows equal ``object_scores`` of the whole written plane. The group's ``sum_hq_objects`` attribute
records the columns stored and, per slice, its rows ``[start, stop)`` and the checksum of those rows,
which :func:`sum_core.batch.verify_target` checks.

**Earlier versions**: AIS tables of versions before ``predicted_iou`` and ``stability`` hold the five
other columns (no ``columns`` entry: :data:`LEGACY_COLUMNS`); they verify against their own
checksums and read the two missing columns as NaN. AMG and prompts targets of those versions have
no table (:func:`table_expected` is False for them): they open, verify and resume as before.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..checksums import checksum
from ..errors import InvalidInputError, check_cancel
from ..object_scores import BAND_WIDTH, object_scores
from ..tiling import Region
from .volume import Volume
from .writer import ATTR, Target, local_folder

__all__ = ["COLUMNS", "object_table"]

#: The columns of the table and their dtypes, in order.
COLUMNS = (
    ("label", "uint32"),
    ("slice", "int64"),
    ("area", "int64"),
    ("predicted_iou", "float64"),
    ("stability", "float64"),
    ("mean_uncertainty", "float64"),
    ("boundary_uncertainty", "float64"),
)
#: The columns of tables written before ``predicted_iou`` and ``stability`` (AIS only).
LEGACY_COLUMNS = ("label", "slice", "area", "mean_uncertainty", "boundary_uncertainty")
#: The key of the ``sum_hq_batch`` attributes marking a target whose job writes a table in every mode.
TABLE_INFO = "objects_table"
TABLE_ATTR = "sum_hq_objects"
PARTIAL = "objects.partial"  # the new table while it is written (see write_table)
_DTYPES = dict(COLUMNS)
#: Planes up to this many pixels are read whole to score their objects (16 Mpx: 96 MB of labels + uncertainty).
PLANE_READ_PX = 1 << 24


def object_table(target: Any) -> dict[str, np.ndarray]:
    """The per-object table of a completed batch target, one row per object.

    Parameters
    ----------
    target : str, path, zarr store or zarr.Group
        A target written by :func:`sum_core.batch.segment_zarr` (any mode).

    Returns
    -------
    dict of str to numpy.ndarray
        The :data:`COLUMNS`: ``label`` (uint32), ``slice`` (int64, 0 for 2D), ``area`` (int64),
        ``predicted_iou``, ``stability``, ``mean_uncertainty`` and ``boundary_uncertainty``
        (float64; NaN where the segmenter has none, and for the columns a table of an earlier
        version lacks), of one length (see the module docstring).

    Raises
    ------
    InvalidInputError
        Not a batch target, a job that is not complete, a target whose table was lost, or an AMG
        or prompts target written by an earlier version (no table).
    """
    group = target if isinstance(target, zarr.Group) else _open(target)
    info = group.attrs.get(ATTR)
    if info is None:
        raise InvalidInputError(f"target: {target} is not a sum-hq batch target (no {ATTR} attributes)")
    if not info.get("complete"):
        raise InvalidInputError(f"target: {target} is not complete; rerun its job to finish it first")
    if "objects" not in group:
        if table_expected(info):
            raise InvalidInputError(
                f"target: {target} lost its object table; rerun its job with repair=True (--repair)"
            )
        mode = info.get("signature", {}).get("mode")
        raise InvalidInputError(
            f"target: {target} has no object table: its job (mode {mode!r}) was written by an earlier version of "
            "sum-hq, whose AMG and prompts jobs wrote none; run the job into a new target to get one"
        )
    return _read(group["objects"])


def table_expected(info: dict[str, Any]) -> bool:
    """Whether the job of a target with ``sum_hq_batch`` attributes ``info`` writes a table: every AIS job,
    and every job of this version (:data:`TABLE_INFO`)."""
    return bool(info.get(TABLE_INFO)) or info.get("signature", {}).get("mode") == "ais"


def stored_columns(table: zarr.Group) -> tuple[str, ...]:
    """The columns a table holds (:data:`LEGACY_COLUMNS` for a table of an earlier version)."""
    names = table.attrs[TABLE_ATTR].get("columns", LEGACY_COLUMNS)
    if not isinstance(names, list | tuple) or not set(names) <= set(_DTYPES) or "label" not in names:
        raise ValueError(f"unknown columns {names!r}")
    return tuple(names)


def _read(table: zarr.Group, start: int | None = None, stop: int | None = None) -> dict[str, np.ndarray]:
    """Rows ``[start, stop)`` of every :data:`COLUMNS` column, NaN for the columns the table does not hold."""
    stored = stored_columns(table)
    columns = {name: np.asarray(table[name][start:stop], dtype=_DTYPES[name]) for name in stored}
    n = len(columns["label"])
    return {name: columns[name] if name in columns else np.full(n, np.nan) for name, _ in COLUMNS}


def _open(target: Any) -> zarr.Group:
    try:
        return zarr.open_group(target, mode="r", zarr_format=3)
    except Exception as err:  # noqa: BLE001 - any unreadable group
        raise InvalidInputError(f"target: {target} is not a sum-hq batch target ({type(err).__name__}: {err})") from None


def rows_checksum(columns: dict[str, np.ndarray], names: tuple[str, ...] = tuple(_DTYPES)) -> str:
    """Hex digest of one slice's rows (the columns ``names``, in that order: a table's stored columns)."""
    return checksum(*(np.ascontiguousarray(columns[name], dtype=_DTYPES[name]) for name in names), size=8).hex()


def table_damage(target: Target) -> list[tuple[int, str]]:
    """``(slice, problem)`` for each slice whose rows of ``objects/`` are unreadable or altered."""
    if "objects" not in target.group:
        return _missing_table(target)
    try:
        table = target.group["objects"]
        planes = table.attrs[TABLE_ATTR]["slices"]
        names = stored_columns(table)
        columns = {name: np.asarray(table[name][...]) for name in names}
    except Exception as err:  # noqa: BLE001 - any unreadable table is damage of every slice it covers
        n = _n_slices(target)
        return [(s, f"objects table cannot be read ({type(err).__name__})") for s in range(n)]
    damage = []
    for s, (start, stop, digest) in enumerate(planes):
        rows = {name: values[start:stop] for name, values in columns.items()}
        if any(len(v) != stop - start for v in rows.values()) or rows_checksum(rows, names) != digest:
            damage.append((s, f"objects table rows of slice {s} do not match their checksum"))
    return damage


def rows_record(target: Target) -> tuple[str, str]:
    """The stage whose ``done`` flag says a slice's rows exist, and the work record holding them until the
    job completes: ``("slice", "rows")`` in prompts mode, else ``("plan", "plan")``."""
    return ("slice", "rows") if target.info.get("signature", {}).get("mode") == "prompts" else ("plan", "plan")


def _missing_table(target: Target) -> list[tuple[int, str]]:
    """Without ``objects/``, the slices of a target with a table (:func:`table_expected`) whose rows only the
    table held: those whose stage is done and whose record is no longer stored (dropped when the job
    completed; the table was lost after that)."""
    stage, record = rows_record(target)
    if not table_expected(target.info) or f"done/{stage}" not in target.group:
        return []  # a job without a table, or one whose slices have not started
    try:
        done = target.flags(stage)
    except Exception:  # noqa: BLE001 - no readable flags: no slice's rows can be trusted
        done = np.ones(_n_slices(target), dtype=bool)
    return [(int(s), f"objects table of slice {int(s)} is missing") for s in np.nonzero(done)[0]
            if f"work/s{int(s)}/{record}" not in target.group]


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
        "columns": [name for name, _ in COLUMNS],
        "slices": [[int(a), int(b), rows_checksum(p)] for a, b, p in zip(starts, stops, parts)],
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
    """The rows of one slice from the existing table (verified by :func:`table_damage` first; NaN for the
    columns a table of an earlier version lacks)."""
    table = target.group["objects"]
    start, stop, _ = table.attrs[TABLE_ATTR]["slices"][slice_index]
    return _read(table, start, stop)


def write_slices_table(target: Target, n_slices: int, fresh: Callable[[int], dict[str, np.ndarray] | None]) -> None:
    """Write the table of a job that just ran: ``fresh(s)``, the rows of slice ``s`` computed by this run,
    else (None: a slice done before a repair) its verified rows of the existing table.

    A target of an earlier version without a table (AMG, prompts), repaired, has no rows for the slices not
    redone: it is left without a table, as it was.
    """
    parts = []
    for s in range(n_slices):
        rows = fresh(s)
        if rows is None:
            if "objects" not in target.group:
                return
            rows = slice_rows(target, s)
        parts.append(rows)
    write_table(target, parts)


def empty_rows() -> dict[str, np.ndarray]:
    """The rows of a slice without objects."""
    return {name: np.zeros(0, dtype) for name, dtype in COLUMNS}


def window_rows(
    target: Target,
    volume: Volume,
    slice_index: int,
    objects: list[tuple[int, Region, float, float]],
    cancel: threading.Event | None = None,
) -> dict[str, np.ndarray]:
    """The rows of a slice's objects, scored on the written ``labels`` and ``uncertainty``, one window each.

    Each object is read in its box grown by the band width (clipped to the plane): the window holds the
    object's final pixels (later objects may have painted over part of its box) and its whole boundary
    band, so its row equals :func:`~sum_core.object_scores.object_scores` of the whole written plane.
    Objects with no pixel left get no row. A plane of at most :data:`PLANE_READ_PX` pixels is read once for
    all its objects (windows of one chunk would otherwise decompress it again for each object).

    Parameters
    ----------
    target, volume : Target, Volume
        The job's target (its chunks of the slice written) and volume.
    slice_index : int
    objects : list of (int, Region, float, float)
        ``(label id, box, predicted_iou, stability)``; ``box`` (plane pixels, end exclusive) holds every
        pixel the object may have.
    cancel : threading.Event, optional
        Checked before each object (:class:`~sum_core.errors.Cancelled` when set).

    Returns
    -------
    dict of str to numpy.ndarray
        The :data:`COLUMNS`, sorted by label.
    """
    h, w = volume.plane_shape
    if len(objects) > 1 and h * w <= PLANE_READ_PX:  # one read of the plane, not one per object (chunks re-read)
        plane = volume.out_index(slice_index, Region(0, 0, h, w))
        labels, uncertainty = np.asarray(target.labels[plane]), np.asarray(target.uncertainty[plane])
    else:
        labels = uncertainty = None
    rows: list[tuple[int, int, float, float, float, float]] = []
    for label, box, iou, stability in objects:
        check_cancel(cancel)
        window = Region(max(box.row0 - BAND_WIDTH, 0), max(box.col0 - BAND_WIDTH, 0),
                        min(box.row1 + BAND_WIDTH, h), min(box.col1 + BAND_WIDTH, w))
        if labels is None:
            index = volume.out_index(slice_index, window)
            inside, values = np.asarray(target.labels[index]) == label, target.uncertainty[index]
        else:
            inside, values = labels[window.slices] == label, uncertainty[window.slices]
        if not inside.any():
            continue
        scores = object_scores(inside.view(np.uint8), values, band_width=BAND_WIDTH)
        rows.append((int(label), int(scores.area[0]), float(iou), float(stability),
                     float(scores.mean_uncertainty[0]), float(scores.boundary_uncertainty[0])))
    rows.sort()
    names = ("label", "area", "predicted_iou", "stability", "mean_uncertainty", "boundary_uncertainty")
    values = dict(zip(names, zip(*rows))) if rows else {}
    columns = {name: np.asarray(values.get(name, ()), dtype=_DTYPES[name]) for name in names}
    return {**columns, "slice": np.full(len(rows), slice_index, dtype=np.int64)}
