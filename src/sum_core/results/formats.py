"""The export formats: each writer streams objects from :func:`sum_core.results.objects.object_windows` to
an open file, one object at a time (only the CSV table, one short row per object, is held until the end).

- **GeoJSON** (QuPath): a FeatureCollection; one Feature per object and slice, its geometry a ``Polygon``
  (with holes) or a ``MultiPolygon`` (an object in several 4-connected parts) in pixel coordinates
  (origin top-left, x = column, y = row; vertices on pixel corners, see :mod:`sum_core.results.polygons`);
  ``properties``: ``objectType``, ``name`` (the id), ``classification`` (when given) and ``measurements``.
  In a stack, the geometry carries QuPath's ``plane`` (``{"c": -1, "z": slice, "t": 0}``).
- **ImageJ ROI zip** (Fiji's ROI Manager, through ``roifile``): one ROI per object and slice, named by the
  id, ``position`` = slice + 1; a traced polygon with integer pixel-corner vertices, or a composite (shape)
  ROI for an object with holes or several parts (rings as sub-paths, holes wound the other way).
- **COCO** JSON: one image per slice (``id`` = slice + 1), one category, one annotation per object and slice
  with a compressed RLE ``segmentation`` (:mod:`sum_core.results.rle`), ``bbox`` ``[x, y, w, h]``, ``area``,
  the object's ``label`` and its score (predicted IoU), uncertainties and stability when known.
- **CSV**: the object table, one row per object and slice, sorted by slice then id (``score`` is the
  predicted IoU; ``stability`` SAM's stability score; empty where unknown); with a known pixel size,
  the centroid in physical units (pixel index times pixel size, as napari and OME-Zarr place pixel centres)
  and the physical area.
"""

from __future__ import annotations

import csv
import json
import math
import uuid
import zipfile
from collections.abc import Iterable
from typing import IO, Any

import numpy as np
import roifile

from .objects import ObjectTable, ObjectWindow
from .polygons import mask_polygons
from .result import TABLE_COLUMNS, Result
from .rle import coco_rle

__all__ = ["CSV_COLUMNS", "write_coco", "write_csv", "write_geojson", "write_imagej_rois"]

#: The CSV table's columns (physical columns follow when the pixel size is known).
CSV_COLUMNS = ("label", "slice", "bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1", "centroid_row",
               "centroid_col", "area", *TABLE_COLUMNS)
_NAMESPACE = uuid.UUID("5d1f0c3e-2b8a-4f7e-9a51-7c0e6b1d2a43")  # GeoJSON feature ids: uuid5 of (name, slice, id)


def _values(table: ObjectTable, row: int) -> dict[str, float]:
    """The known score and uncertainties of a row (NaN left out: JSON has no NaN)."""
    values = {column: float(getattr(table, column)[row]) for column in TABLE_COLUMNS}
    return {column: value for column, value in values.items() if not math.isnan(value)}


def _measurements(result: Result, table: ObjectTable, row: int) -> dict[str, float | int]:
    measurements: dict[str, float | int] = {"label": int(table.label[row]), "slice": int(table.slice[row]),
                                            "Area px^2": int(table.area[row])}
    if (size := result.pixel_size) is not None:
        (dy, dx), (unit, _) = size
        measurements[f"Area {unit or 'unit'}^2"] = float(table.area[row] * dy * dx)
    names = {"score": "Score", "mean_uncertainty": "Mean uncertainty", "boundary_uncertainty": "Boundary uncertainty",
             "stability": "Stability"}
    measurements.update({names[column]: value for column, value in _values(table, row).items()})
    return measurements


def write_geojson(
    file: IO[str], result: Result, table: ObjectTable, windows: Iterable[ObjectWindow], *,
    object_type: str, classification: str | None,
) -> None:
    """Write a QuPath-style GeoJSON FeatureCollection (see the module docstring)."""
    file.write('{"type": "FeatureCollection", "features": [')
    for k, window in enumerate(windows):
        polygons = [[ring.tolist() for ring in rings] for rings in mask_polygons(window.mask, window.offset)]
        geometry: dict[str, Any] = (
            {"type": "Polygon", "coordinates": polygons[0]} if len(polygons) == 1
            else {"type": "MultiPolygon", "coordinates": polygons}
        )
        if result.slice_axis is not None:
            geometry["plane"] = {"c": -1, "z": window.slice, "t": 0}
        properties: dict[str, Any] = {"objectType": object_type, "name": str(window.label)}
        if classification is not None:
            properties["classification"] = {"name": classification}
        properties["measurements"] = _measurements(result, table, window.row)
        feature = {"type": "Feature", "id": str(uuid.uuid5(_NAMESPACE, f"{result.name}/{window.slice}/{window.label}")),
                   "geometry": geometry, "properties": properties}
        file.write(("\n" if k == 0 else ",\n") + json.dumps(feature, separators=(",", ":")))
    file.write("\n]}\n")


def write_imagej_rois(archive: zipfile.ZipFile, result: Result, windows: Iterable[ObjectWindow]) -> None:
    """Write one ImageJ ROI per object and slice into a zip archive (see the module docstring)."""
    stack = result.slice_axis is not None
    for window in windows:
        rings = [ring for rings in mask_polygons(window.mask, window.offset) for ring in rings]
        name = str(window.label)
        if len(rings) == 1:
            roi = roifile.ImagejRoi.frompoints(rings[0][:-1], name=name, position=window.slice)
            roi.roitype = roifile.ROI_TYPE.TRACED
        else:
            roi = roifile.ImagejRoi(name=name, position=window.slice + 1)
            roi.roitype = roifile.ROI_TYPE.RECT
            path = [np.concatenate([[op, *point] for op, point in zip([0] + [1] * (len(ring) - 2), ring[:-1])] + [[4]])
                    for ring in rings]
            roi.multi_coordinates = np.concatenate(path).astype(np.float32)
            roi.shape_roi_size = len(roi.multi_coordinates)
        corners = np.concatenate(rings)
        (roi.left, roi.top), (roi.right, roi.bottom) = corners.min(axis=0).tolist(), corners.max(axis=0).tolist()
        member = f"{window.slice + 1:04d}-{name}.roi" if stack else f"{name}.roi"
        archive.writestr(member, roi.tobytes())


def write_coco(
    file: IO[str], result: Result, table: ObjectTable, windows: Iterable[ObjectWindow], *, category: str,
) -> None:
    """Write a COCO instance-segmentation JSON with RLE masks (see the module docstring)."""
    height, width = result.plane_shape
    stem = result.name.rsplit(".", 1)[0] if "." in result.name else result.name
    images = [{"id": s + 1, "file_name": result.name if result.slice_axis is None else f"{stem}_{s:04d}",
               "height": height, "width": width, "slice": s} for s in range(result.n_slices)]
    head = {"info": {"description": f"sum-hq objects of {result.name}"}, "images": images,
            "categories": [{"id": 1, "name": category, "supercategory": "object"}]}
    file.write(json.dumps(head)[:-1] + ', "annotations": [')
    for k, window in enumerate(windows):
        row = window.row
        r0, c0, r1, c1 = (int(v) for v in table.bbox[row])
        annotation = {"id": k + 1, "image_id": window.slice + 1, "category_id": 1, "label": window.label,
                      "segmentation": coco_rle(window.mask, window.offset, (height, width)),
                      "area": int(table.area[row]), "bbox": [c0, r0, c1 - c0, r1 - r0], "iscrowd": 0,
                      **_values(table, row)}
        file.write(("\n" if k == 0 else ",\n") + json.dumps(annotation, separators=(",", ":")))
    file.write("\n]}\n")


def write_csv(file: IO[str], result: Result, table: ObjectTable) -> None:
    """Write the object table (see :data:`CSV_COLUMNS`; empty cells for unknown values)."""
    columns = list(CSV_COLUMNS)
    size = result.pixel_size
    if size is not None:
        (dy, dx), (unit_y, unit_x) = size
        columns += [f"centroid_y_{unit_y or 'unit'}", f"centroid_x_{unit_x or 'unit'}",
                    f"area_{unit_y or 'unit'}^2"]
    writer = csv.writer(file, lineterminator="\n")
    writer.writerow(columns)
    for i in range(len(table)):
        values = [int(table.label[i]), int(table.slice[i]), *(int(v) for v in table.bbox[i]),
                  *(repr(float(v)) for v in table.centroid[i]), int(table.area[i]),
                  *("" if math.isnan(v) else repr(float(v)) for v in (getattr(table, c)[i] for c in TABLE_COLUMNS))]
        if size is not None:
            values += [repr(float(table.centroid[i, 0] * dy)), repr(float(table.centroid[i, 1] * dx)),
                       repr(float(table.area[i] * dy * dx))]
        writer.writerow(values)
