"""``export_result``: a segmentation result as GeoJSON, an ImageJ ROI zip, COCO JSON, a CSV object table or an
OME-Zarr (NGFF 0.5) label image."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import InvalidInputError
from ..export.target import check_target, staged
from ..imageio import is_zarr_path
from ..validation import check_bool, check_int
from .choices import FORMATS, OBJECT_TYPES
from .formats import write_coco, write_csv, write_geojson, write_imagej_rois
from .objects import object_windows, scan_objects
from .ome_zarr import check_ome_zarr_target, count_blocks, export_ome_zarr, id_properties
from .result import Result, open_result

__all__ = ["FORMATS", "default_output", "export_result"]

_DEFAULT_NAMES = {"geojson": "{}.geojson", "imagej-roi": "{}_rois.zip", "coco": "{}_coco.json", "csv": "{}_objects.csv",
                  "ome-zarr": "{}_labels.ome.zarr"}


def default_output(source: str | os.PathLike, to: str) -> Path:
    """The export's default path, named after ``source``: beside it (``cells.zarr`` -> ``cells_objects.csv``),
    or beside the outermost zarr store holding it (``img.ome.zarr/labels/cells`` -> ``img_cells_objects.csv``),
    never inside a zarr hierarchy."""
    _check_format(to)
    path = Path(source).absolute()
    outer = path
    while outer.parent != outer and is_zarr_path(outer.parent):
        outer = outer.parent
    stems = [result_stem(outer.name)] + ([result_stem(path.name)] if outer != path else [])
    return outer.parent / _DEFAULT_NAMES[to].format("_".join(s for s in stems if s) or "result")


def result_stem(name: str) -> str:
    """A result's file or folder name without its image suffix (``"cells.ome.zarr"`` -> ``"cells"``).

    >>> result_stem("cells.ome.zarr"), result_stem("seg.TIF"), result_stem(".zarr")
    ('cells', 'seg', '.zarr')
    """
    lower = name.lower()
    for suffix in (".ome.zarr", ".ome.tiff", ".ome.tif", ".zarr", ".tiff", ".tif"):
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[:-len(suffix)]
    return name


def _check_format(to: Any) -> str:
    if to not in FORMATS:
        raise InvalidInputError(f"to: expected one of {', '.join(FORMATS)}, got {to!r}")
    return to


def export_result(
    result: Any,
    out: str | os.PathLike,
    to: str = "geojson",
    *,
    overwrite: bool = False,
    object_type: str = "detection",
    classification: str | None = None,
    band_width: int = 2,
    progress: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Export the objects of a segmentation result, reading it window by window (bounded memory).

    ``to="ome-zarr"`` writes the result itself (labels, uncertainty, per-object properties) as an NGFF 0.5
    label image folder (:mod:`sum_core.results.ome_zarr`), streamed block by block.

    One pass over the label blocks finds every object (per slice: bounding box, centroid, area); then each
    object's window is read (grouped by block) to write its outline or mask and, where the result has an
    uncertainty map but no recorded values, compute its uncertainties
    (:func:`sum_core.object_scores.object_scores`). The file is written under a temporary name beside
    ``out`` and renamed when complete.

    Parameters
    ----------
    result : Result, path, zarr group or array
        A :class:`~sum_core.results.Result`, or anything :func:`~sum_core.results.open_result` opens.
    out : str or PathLike
        The file to write, ending in ``.geojson`` / ``.json`` (geojson), ``.zip`` (imagej-roi), ``.json``
        (coco) or ``.csv`` (csv); the folder to write, ending in ``.zarr`` (ome-zarr, e.g. ``cells.ome.zarr``).
    to : {"geojson", "imagej-roi", "coco", "csv", "ome-zarr"}
        The format (see :mod:`sum_core.results.formats`, :mod:`sum_core.results.ome_zarr`).
    overwrite : bool
        Replace an existing ``out`` (an OME-Zarr folder only when it is an earlier export of ours).
    object_type : {"detection", "annotation"}
        GeoJSON: QuPath's object type.
    classification : str, optional
        GeoJSON: QuPath's classification name of every object; COCO: the category name (default "object").
    band_width : int
        Half-width of the boundary band of the per-object uncertainty, ``>= 1``.
    progress : bool
        Show a tqdm progress bar.
    on_progress : callable, optional
        ``on_progress(done, total)`` after each label block of the scan and each object; ``total`` is the
        scan's blocks until the objects are counted, then blocks + objects.

    Returns
    -------
    Path
        The file (or OME-Zarr folder) written.

    Raises
    ------
    InvalidInputError
        A bad argument, an ``out`` with the wrong ending, in a missing or read-only folder, or existing
        without ``overwrite``; a result that cannot be read (see :func:`~sum_core.results.open_result`).
        All but unreadable label blocks are refused before any pixel is read.
    """
    to = _check_format(to)
    if object_type not in OBJECT_TYPES:
        raise InvalidInputError(f"object_type: expected one of {', '.join(OBJECT_TYPES)}, got {object_type!r}")
    if classification is not None and (not isinstance(classification, str) or not classification.strip()):
        raise InvalidInputError(f"classification: expected a non-empty name, got {classification!r}")
    band_width = check_int(band_width, "band_width", 1)
    check_bool(progress, "progress")
    if on_progress is not None and not callable(on_progress):
        raise InvalidInputError(f"on_progress must be a callable (done, total) or None, got {type(on_progress).__name__}")
    if not isinstance(out, (str, os.PathLike)) or Path(out).suffix.lower() not in FORMATS[to]:
        raise InvalidInputError(f"out: a {to} export must end in {' or '.join(FORMATS[to])}, got {out!r}")
    overwrite = check_bool(overwrite, "overwrite")
    if to == "ome-zarr":
        target = check_ome_zarr_target(out, overwrite)
    else:
        target = check_target(out, "out", folder=False, overwrite=overwrite)
    result = result if isinstance(result, Result) else open_result(result)

    bar = tqdm(desc=f"sum-hq export {to}", unit="step", disable=not progress)
    state = {"done": 0, "total": 0}

    def step(done: int | None = None, total: int | None = None) -> None:
        state["done"] = state["done"] + 1 if done is None else done
        if total is not None:
            state["total"] = total
        bar.total = state["total"]
        bar.n = state["done"]
        bar.refresh()
        if on_progress is not None:
            on_progress(state["done"], state["total"])

    with bar:
        table = scan_objects(result, on_block=step)
        visit = to not in ("csv", "ome-zarr") or (
            result.uncertainty is not None and bool(np.isnan(table.mean_uncertainty).any()))
        windows = object_windows(result, table, band_width=band_width, values=to != "imagej-roi", on_object=step)
        if visit:
            step(state["done"], state["total"] + len(table))
        if to == "ome-zarr":
            for _ in windows if visit else ():  # fills in the uncertainties the table lacks
                pass
            step(state["done"], state["total"] + count_blocks(result))
            recorded = result.table or {}
            stability = dict(zip(np.asarray(recorded["label"]).tolist(), np.asarray(recorded["stability"]).tolist())) \
                if "stability" in recorded else None
            return export_ome_zarr(result, target, id_properties(table, stability), on_block=step)
        with staged(target, folder=False) as temp:
            if to == "imagej-roi":
                with zipfile.ZipFile(temp, "w", zipfile.ZIP_DEFLATED) as archive:
                    write_imagej_rois(archive, result, windows)
            else:
                with open(temp, "w", encoding="utf-8", newline="") as file:
                    if to == "geojson":
                        write_geojson(file, result, table, windows, object_type=object_type,
                                      classification=classification)
                    elif to == "coco":
                        write_coco(file, result, table, windows, category=classification or "object")
                    else:
                        for _ in windows if visit else ():  # fills in the uncertainties the table lacks
                            pass
                        write_csv(file, result, table)
    return target
