"""Prompt tables (CSV) for the prompts mode of a batch job.

One row per point or box; header (column order free, extra columns ignored)::

    object_id,slice,kind,row,col,row1,col1,label
    1,0,point,120.5,64,,,1
    1,0,point,130,70,,,0
    2,3,box,10,10,40,52,

- ``object_id``: integer >= 1, the object's value in the ``labels`` array (the same id on
  several slices is the same object).
- ``slice``: index along the slice axis (optional for a 2D source: 0).
- ``kind``: ``point`` (``row``, ``col``, ``label`` 1 positive / 0 negative, default 1) or
  ``box`` (``row``, ``col`` = first corner, ``row1``, ``col1`` = opposite corner, inclusive).

Rows of one ``(slice, object_id)`` form one prompt: all its points and at most one box.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError

MAX_ID = 2**32 - 1


@dataclass(frozen=True)
class ObjectPrompt:
    """The prompt of one object on one slice, in (row, col) image pixels."""

    object_id: int
    slice_index: int
    points: np.ndarray | None  # (N, 2) float
    labels: np.ndarray | None  # (N,) int
    box: np.ndarray | None  # (4,) row0, col0, row1, col1


def read_prompts_table(path: str | os.PathLike) -> tuple[list[ObjectPrompt], str]:
    """Read a prompt table.

    Returns
    -------
    prompts : list of ObjectPrompt
        Sorted by slice, then object id.
    digest : str
        SHA-1 of the file, for the job signature.

    Raises
    ------
    InvalidInputError
        Missing, unreadable or non-UTF-8 file, missing column, unknown kind, non-numeric values
        (the line is named).
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"prompts: {path} is not a file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise InvalidInputError(
            f"prompts: {path} is not UTF-8 text (byte {err.start}: {err.reason}); save the table as UTF-8 CSV"
        ) from None
    except OSError as err:
        raise InvalidInputError(f"prompts: cannot read {path} ({err.strerror})") from None
    rows = list(csv.DictReader(text.splitlines()))
    if not rows:
        raise InvalidInputError(f"prompts: {path} has no rows")
    missing = {"object_id", "kind", "row", "col"} - set(rows[0])
    if missing:
        raise InvalidInputError(f"prompts: {path} lacks the column(s) {sorted(missing)}")
    points: dict[tuple[int, int], list[tuple[float, float, int]]] = {}
    boxes: dict[tuple[int, int], np.ndarray] = {}
    for line, row in enumerate(rows, start=2):
        where = f"prompts: {path} line {line}"
        object_id = _integer(row, "object_id", where)
        if not 1 <= object_id <= MAX_ID:
            raise InvalidInputError(f"{where}: object_id must be in [1, {MAX_ID}], got {object_id}")
        slice_index = _integer(row, "slice", where) if (row.get("slice") or "").strip() else 0
        if slice_index < 0:
            raise InvalidInputError(f"{where}: slice must be >= 0, got {slice_index}")
        key = (slice_index, object_id)
        kind = (row.get("kind") or "").strip().lower()
        if kind == "point":
            label = _integer(row, "label", where) if (row.get("label") or "").strip() else 1
            if label not in (0, 1):
                raise InvalidInputError(f"{where}: label must be 1 (positive) or 0 (negative), got {label}")
            points.setdefault(key, []).append((_number(row, "row", where), _number(row, "col", where), label))
        elif kind == "box":
            if key in boxes:
                raise InvalidInputError(f"{where}: object {object_id} already has a box on slice {slice_index}")
            corners = [_number(row, c, where) for c in ("row", "col", "row1", "col1")]
            boxes[key] = np.array(
                [min(corners[0], corners[2]), min(corners[1], corners[3]),
                 max(corners[0], corners[2]), max(corners[1], corners[3])]
            )
        else:
            raise InvalidInputError(f"{where}: kind must be 'point' or 'box', got {row.get('kind')!r}")
    prompts = []
    for key in sorted(set(points) | set(boxes)):
        clicks = points.get(key)
        if clicks is not None and not any(c[2] == 1 for c in clicks) and key not in boxes:
            raise InvalidInputError(
                f"prompts: object {key[1]} on slice {key[0]} has only negative points; add a positive point or a box"
            )
        prompts.append(
            ObjectPrompt(
                object_id=key[1],
                slice_index=key[0],
                points=None if clicks is None else np.array([c[:2] for c in clicks], dtype=np.float64),
                labels=None if clicks is None else np.array([c[2] for c in clicks], dtype=np.int64),
                box=boxes.get(key),
            )
        )
    return prompts, hashlib.sha1(text.encode()).hexdigest()


def check_prompts(prompts: list[ObjectPrompt], n_slices: int, plane_shape: tuple[int, int]) -> None:
    """Raise :class:`InvalidInputError` for a prompt outside the volume."""
    height, width = plane_shape
    for p in prompts:
        where = f"prompts: object {p.object_id}"
        if p.slice_index >= n_slices:
            raise InvalidInputError(f"{where}: slice {p.slice_index} is outside the volume's {n_slices} slice(s)")
        coords = [] if p.points is None else list(p.points)
        if p.box is not None:
            coords += [p.box[:2], p.box[2:]]
        for r, c in coords:
            if not (0 <= r < height and 0 <= c < width):
                raise InvalidInputError(
                    f"{where} on slice {p.slice_index}: ({r}, {c}) lies outside the plane of shape {plane_shape}"
                )


def _number(row: dict[str, str], column: str, where: str) -> float:
    text = (row.get(column) or "").strip()
    try:
        value = float(text)
    except ValueError:
        raise InvalidInputError(f"{where}: {column} must be a number, got {text!r}") from None
    if not np.isfinite(value):
        raise InvalidInputError(f"{where}: {column} must be finite, got {text!r}")
    return value


def _integer(row: dict[str, str], column: str, where: str) -> int:
    value = _number(row, column, where)
    if value != int(value):
        raise InvalidInputError(f"{where}: {column} must be an integer, got {value}")
    return int(value)
