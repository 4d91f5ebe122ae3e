"""Read and write the pseudo-label folder (layout in ``docs/training-data.md``).

::

    PSEUDO/
      manifest.json               model, weight hash, filters, package version, image folder
      <stem>/
        masks.csv                 index, score, stability, area, point_row, point_col,
                                  box_row0, box_col0, box_row1, box_col1
        prob_<index>.png          uint8 round(255 * SAM probability), image resolution
        uncertainty_<index>.png   uint8 round(255 * u) (written by ``training.refine``)

An image folder is written under a temporary name (``.<stem>.partial-<hex>``)
and renamed to ``<stem>`` once every file is in it, so a folder named
``<stem>`` is always complete and a run that stops half-way leaves only
temporary folders, which the next run removes.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sum_core.errors import InvalidInputError
from sum_core.imageio import read_image, write_image

MANIFEST_NAME = "manifest.json"
MASKS_CSV = "masks.csv"
CSV_COLUMNS = (
    "index",
    "score",
    "stability",
    "area",
    "point_row",
    "point_col",
    "box_row0",
    "box_col0",
    "box_row1",
    "box_col1",
)
PARTIAL_MARKER = ".partial-"


@dataclass(frozen=True)
class PseudoMask:
    """One row of ``masks.csv``.

    Attributes
    ----------
    index : int
        Number of the mask in its image folder (names ``prob_<index>.png``).
    score, stability : float
        SAM's predicted IoU and stability score.
    area : int
        Pixels of the mask.
    point : tuple of float
        (row, col) of the click that produced the mask.
    box : tuple of float
        (row0, col0, row1, col1), inclusive pixel indices.
    """

    index: int
    score: float
    stability: float
    area: int
    point: tuple[float, float]
    box: tuple[float, float, float, float]


def probability_to_uint8(prob: np.ndarray) -> np.ndarray:
    """``round(255 * prob)`` as uint8 (``prob`` is clipped to [0, 1] first)."""
    return np.rint(np.clip(np.asarray(prob, dtype=np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def logits_to_uint8(logits: np.ndarray) -> np.ndarray:
    """``round(255 * sigmoid(logits))`` as uint8."""
    logits = np.asarray(logits, dtype=np.float64)
    return probability_to_uint8(0.5 * (1.0 + np.tanh(0.5 * logits)))


def prob_path(folder: Path, index: int) -> Path:
    """Path of mask ``index``'s SAM probability PNG in an image folder."""
    return Path(folder) / f"prob_{index}.png"


def uncertainty_path(folder: Path, index: int) -> Path:
    """Path of mask ``index``'s uncertainty PNG in an image folder."""
    return Path(folder) / f"uncertainty_{index}.png"


def write_manifest(root: Path, manifest: dict) -> None:
    """Write ``manifest.json`` atomically."""
    root = Path(root)
    tmp = root / f".{MANIFEST_NAME}.{secrets.token_hex(8)}.tmp"
    try:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, root / MANIFEST_NAME)
    finally:
        tmp.unlink(missing_ok=True)


def read_manifest(root: Path) -> dict:
    """Read ``PSEUDO/manifest.json``.

    Raises
    ------
    InvalidInputError
        If the folder or its manifest is missing or not valid JSON.
    """
    path = Path(root) / MANIFEST_NAME
    if not Path(root).is_dir():
        raise InvalidInputError(f"pseudo: folder {root} does not exist")
    if not path.is_file():
        raise InvalidInputError(
            f"pseudo: {root} has no {MANIFEST_NAME}; it is not a folder written by training.pseudolabel"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"pseudo: {path} is not valid JSON ({exc})") from exc


def is_complete(root: Path, stem: str) -> bool:
    """Whether the folder of image ``stem`` was fully written."""
    return (Path(root) / stem / MASKS_CSV).is_file()


def remove_partial_folders(root: Path) -> int:
    """Delete the temporary folders of interrupted runs; return how many there were."""
    count = 0
    for path in Path(root).iterdir():
        if path.is_dir() and path.name.startswith(".") and PARTIAL_MARKER in path.name:
            shutil.rmtree(path)
            count += 1
    return count


def write_image_folder(
    root: Path, stem: str, masks: Sequence[PseudoMask], probabilities: Sequence[np.ndarray]
) -> Path:
    """Write one image's masks as ``<stem>/`` (all at once, via a temporary folder).

    Parameters
    ----------
    root : Path
        The pseudo-label folder.
    stem : str
        Image stem (folder name).
    masks : sequence of PseudoMask
        Rows of ``masks.csv``; their ``index`` values name the PNGs.
    probabilities : sequence of numpy.ndarray
        uint8 (H, W) ``round(255 * p)`` maps, one per mask, in the same order.

    Returns
    -------
    Path
        The final image folder.
    """
    if len(masks) != len(probabilities):
        raise InvalidInputError(
            f"probabilities: got {len(probabilities)} maps for {len(masks)} masks"
        )
    root = Path(root)
    final = root / stem
    tmp = root / f".{stem}{PARTIAL_MARKER}{secrets.token_hex(6)}"
    tmp.mkdir()
    try:
        for mask, prob in zip(masks, probabilities):
            if prob.dtype != np.uint8 or prob.ndim != 2:
                raise InvalidInputError(
                    f"probabilities: map of mask {mask.index} must be uint8 (H, W), "
                    f"got {prob.dtype} {prob.shape}"
                )
            write_image(prob_path(tmp, mask.index), prob)
        _write_csv(tmp / MASKS_CSV, masks)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _write_csv(path: Path, masks: Sequence[PseudoMask]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for m in masks:
            writer.writerow(
                [m.index, repr(float(m.score)), repr(float(m.stability)), int(m.area)]
                + [repr(float(v)) for v in (*m.point, *m.box)]
            )


def read_masks_csv(folder: Path) -> list[PseudoMask]:
    """Read ``<folder>/masks.csv``.

    Raises
    ------
    InvalidInputError
        If the file is missing, has other columns, or a row is not numeric.
    """
    path = Path(folder) / MASKS_CSV
    if not path.is_file():
        raise InvalidInputError(f"pseudo: {path} does not exist")
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(header) != CSV_COLUMNS:
            raise InvalidInputError(f"pseudo: {path} has columns {header}, expected {list(CSV_COLUMNS)}")
        masks = []
        for line, row in enumerate(reader, start=2):
            try:
                values = [float(v) for v in row]
                if len(values) != len(CSV_COLUMNS):
                    raise ValueError(f"{len(values)} values")
            except ValueError as exc:
                raise InvalidInputError(f"pseudo: {path} line {line} is malformed ({exc})") from None
            masks.append(
                PseudoMask(
                    index=int(values[0]),
                    score=values[1],
                    stability=values[2],
                    area=int(values[3]),
                    point=(values[4], values[5]),
                    box=(values[6], values[7], values[8], values[9]),
                )
            )
    return masks


def read_probability(folder: Path, index: int) -> np.ndarray:
    """Read mask ``index``'s uint8 SAM probability map."""
    prob = read_image(prob_path(folder, index))
    if prob.dtype != np.uint8 or prob.ndim != 2:
        raise InvalidInputError(
            f"pseudo: {prob_path(folder, index)} must be a uint8 gray PNG, got {prob.dtype} {prob.shape}"
        )
    return prob


def image_folders(root: Path) -> list[Path]:
    """Complete image folders of a pseudo-label folder, sorted by name."""
    return sorted(p for p in Path(root).iterdir() if p.is_dir() and (p / MASKS_CSV).is_file())
