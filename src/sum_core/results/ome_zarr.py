"""A segmentation result as an NGFF 0.5 (zarr v3) label image: ``export_result(..., to="ome-zarr")``.

Layout: a **label image on its own**, the layout :mod:`sum_core.batch.ngff` writes for a batch target that
is not inside its source image (a result carries no image pixels to copy), built by the same functions
(:mod:`sum_core.ngff_labels`):

- ``0``, ``1``, ... ``L-1``: the labels (uint32, uint64 when an id needs it), the slice axis first for a
  stack (axes ``z, y, x``; ``y, x`` for a plane), the plane halved until its longer side is at most
  :data:`~sum_core.ngff_labels.SMALLEST_LEVEL` px, each level the nearest-neighbour sample of the one below;
- ``uncertainty/0`` ... ``uncertainty/L-1`` (when the result has an uncertainty map): a separate multiscale
  image, float16, sampled like the labels;
- attributes ``ome``: ``multiscales`` (one ``scale`` per level: the result's pixel size, 1.0 when unknown,
  times the sampling; axis units when known) and ``image-label`` (``colors``: one RGBA per id; ``properties``:
  ``label-value``, ``area`` in px, ``predicted-iou``, ``stability``, ``mean-uncertainty`` and
  ``boundary-uncertainty`` where known, NaN left out), and ``sum_hq_export`` (marks an export of ours: only
  such a folder is replaced with ``overwrite``).

Properties are per id: an id with rows in several planes of a stack gets the sum of its areas, the
area-weighted mean of its mean uncertainties and no boundary uncertainty (the planes' bands do not add up).

Everything is streamed: level 0 is copied block by block (:data:`sum_core.results.objects.BLOCK` px a side),
each higher level block by block from the level below; no plane is ever read whole.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..batch.writer import zarr_metadata
from ..errors import InvalidInputError
from ..export.target import check_target, staged
from ..ngff_labels import (SMALLEST_LEVEL, halving_planes, label_color, label_properties, level_scales,
                           multiscale_metadata, nearest_indices, ngff_axes, per_id_columns)
from ..sources import read_block
from ..tiling import TileGrid
from . import objects
from .objects import ObjectTable
from .result import Result

__all__ = ["MARKER", "check_ome_zarr_target", "count_blocks", "export_ome_zarr", "id_properties", "write_ome_zarr"]

#: The root attribute marking an OME-Zarr export of ours.
MARKER = "sum_hq_export"
CHUNK = 512  # chunk side of the written levels (a chunk per slice)


def _attributes(target: Path) -> dict[str, Any]:
    """The root attributes of the folder ``target`` (empty when it has no readable ``zarr.json``)."""
    attributes = (zarr_metadata(target) or {}).get("attributes")
    return attributes if isinstance(attributes, dict) else {}


def _ours(target: Path) -> tuple[str, ...]:
    """The names an earlier export in ``target`` wrote (the manifest, ``zarr.json``, first): its levels as
    its metadata lists them, not any folder that looks like one."""
    try:
        datasets = _attributes(target)["ome"]["multiscales"][0]["datasets"]
        levels = [str(d["path"]) for d in datasets if str(d["path"]).isdigit()]
    except (KeyError, IndexError, TypeError):
        levels = []
    return ("zarr.json", "uncertainty", *levels)


def check_ome_zarr_target(out: Any, overwrite: bool) -> Path:
    """Check that an OME-Zarr export may be written to the folder ``out`` (before any pixel is read).

    Raises
    ------
    InvalidInputError
        ``out`` does not end in ``.zarr``, its folder is missing or read-only, it exists without
        ``overwrite``, or it is not an OME-Zarr export of ours (another program's data is never replaced).
    """
    target = check_target(out, "out", folder=True, overwrite=overwrite, ours=_ours(Path(out)))
    if target.exists() and any(target.iterdir()):
        if MARKER not in _attributes(target):
            raise InvalidInputError(
                f"out: {target} is not an OME-Zarr export of sum-hq (no {MARKER} attribute); it is kept: choose "
                "another path"
            )
    return target


def id_properties(table: ObjectTable, stability: dict[int, float] | None = None) -> list[dict[str, Any]]:
    """The ``image-label`` properties of a result's objects, one per id (see the module docstring).

    Parameters
    ----------
    table : ObjectTable
        One row per object and slice (:func:`~sum_core.results.scan_objects`, uncertainties filled in by
        :func:`~sum_core.results.object_windows`).
    stability : dict of int to float, optional
        A recorded stability score per id.
    """
    rows = {"area": table.area, "score": table.score, "mean_uncertainty": table.mean_uncertainty,
            "boundary_uncertainty": table.boundary_uncertainty}
    if stability:
        rows["stability"] = np.asarray([stability.get(int(k), np.nan) for k in table.label], dtype=np.float64)
    ids, columns = per_id_columns(table.label, rows)
    return label_properties(ids, columns)


def write_ome_zarr(
    result: Result,
    folder: Path,
    properties: list[dict[str, Any]],
    on_block: Callable[[], None] | None = None,
) -> int:
    """Write ``result`` as a new label image in the (new or empty) ``folder``; return the number of levels.

    Parameters
    ----------
    result : Result
    folder : Path
        Where to write (the temporary folder of :func:`sum_core.export.target.staged`).
    properties : list of dict
        The ``image-label`` properties (:func:`id_properties`); their ids give the colours.
    on_block : callable, optional
        Called after each block written.
    """
    planes = halving_planes(result.plane_shape, SMALLEST_LEVEL)
    stack = result.slice_axis is not None
    n = result.n_slices
    ids = [p["label-value"] for p in properties]
    dtype = np.uint32 if not ids or max(ids) <= np.iinfo(np.uint32).max else np.uint64
    names = ("z", "y", "x") if stack else ("y", "x")
    chunks = (*((1,) if stack else ()), *(min(CHUNK, k) for k in planes[0]))
    root = zarr.open_group(str(folder), mode="w", zarr_format=3)
    outputs = [("", result.labels, dtype)]
    if result.uncertainty is not None:
        root.create_group("uncertainty")
        outputs.append(("uncertainty/", result.uncertainty, np.float16))
    shapes = [(*((n,) if stack else ()), *plane) for plane in planes]
    for prefix, source, kind in outputs:
        for level, shape in enumerate(shapes):
            array = root.create_array(f"{prefix}{level}", shape=shape, dtype=kind, chunks=chunks, fill_value=0,
                                      dimension_names=names)
            if level == 0:
                _copy_level0(result, source, array, on_block)
            else:
                _sample_level(root[f"{prefix}{level - 1}"], array, planes[level - 1], planes[level], n, stack,
                              on_block)
    order = [result.slice_axis, *(a for a in range(result.labels.ndim) if a != result.slice_axis)] if stack \
        else [0, 1]
    scale = [1.0] * len(names) if result.scale is None else [float(result.scale[a]) for a in order]
    units = [None] * len(names) if result.units is None else [result.units[a] for a in order]
    axes = ngff_axes(names, units)
    scales = level_scales(scale, shapes)
    if result.uncertainty is not None:
        root["uncertainty"].attrs["ome"] = multiscale_metadata("uncertainty", axes, scales)
    image_label = {"colors": [{"label-value": int(k), "rgba": label_color(int(k))} for k in ids],
                   "properties": properties}
    root.attrs.update({"ome": {**multiscale_metadata(result.name, axes, scales), "image-label": image_label},
                       MARKER: True})
    return len(planes)


def _copy_level0(result: Result, source: Any, array: zarr.Array, on_block: Callable[[], None] | None) -> None:
    """Copy level 0 of ``source`` (labels or uncertainty of ``result``) block by block into ``array``."""
    grid = TileGrid(result.plane_shape, (objects.BLOCK, objects.BLOCK))
    for s in range(result.n_slices):
        for tile in grid:
            rows, cols = tile.inner.slices
            where = f"rows {rows.start}:{rows.stop}, cols {cols.start}:{cols.stop} of {result.name}"
            block = read_block(source, result.index(s, rows, cols), where)
            if array.dtype.kind in "ui" and block.size and np.issubdtype(block.dtype, np.signedinteger) \
                    and block.min() < 0:
                raise InvalidInputError(f"labels: negative ids in {where} (0 is background)")
            array[(s, rows, cols) if result.slice_axis is not None else (rows, cols)] = block.astype(array.dtype)
            if on_block is not None:
                on_block()


def _sample_level(below: zarr.Array, array: zarr.Array, plane_below: tuple[int, int], plane: tuple[int, int],
                  n: int, stack: bool, on_block: Callable[[], None] | None) -> None:
    """Write ``array`` block by block as the nearest-neighbour sample of the level ``below``."""
    grid = TileGrid(plane, (objects.BLOCK, objects.BLOCK))
    for s in range(n):
        for tile in grid:
            rows, cols = tile.inner.slices
            picked = (nearest_indices(rows.start, rows.stop, plane_below[0], plane[0]),
                      nearest_indices(cols.start, cols.stop, plane_below[1], plane[1]))
            index = (s, rows, cols) if stack else (rows, cols)
            array[index] = below.oindex[(s, *picked) if stack else picked]
            if on_block is not None:
                on_block()


def count_blocks(result: Result) -> int:
    """The number of blocks :func:`write_ome_zarr` writes (for progress)."""
    planes = halving_planes(result.plane_shape, SMALLEST_LEVEL)
    level0 = len(TileGrid(result.plane_shape, (objects.BLOCK, objects.BLOCK)))
    higher = sum(len(TileGrid(plane, (objects.BLOCK, objects.BLOCK))) for plane in planes[1:])
    return (level0 + higher) * result.n_slices * (2 if result.uncertainty is not None else 1)


def export_ome_zarr(result: Result, target: Path, properties: list[dict[str, Any]],
                    on_block: Callable[[], None] | None = None) -> Path:
    """Write the export into a temporary folder beside ``target`` (checked by :func:`check_ome_zarr_target`)
    and rename it to ``target`` when complete (an earlier export of ours is replaced only then)."""
    with staged(target, folder=True, ours=_ours(target)) as temp:
        write_ome_zarr(result, temp, properties, on_block)
    return target
