"""Segmentation results in the formats other tools read: QuPath GeoJSON, ImageJ ROI zip, COCO JSON, CSV, and
the result itself as an OME-Zarr (NGFF 0.5) label image (:mod:`sum_core.results.ome_zarr`).

:func:`open_result` opens a result lazily (a batch target, an OME-Zarr label image, a labels TIFF or zarr
array, or in-memory labels such as a napari Labels layer's data, each with its uncertainty map when there is
one); :func:`export_result` writes its objects, reading it window by window:

>>> from sum_core.results import export_result
>>> export_result("cells.zarr", "cells.geojson", to="geojson")  # doctest: +SKIP

:func:`scan_objects` and :func:`object_windows` are the streaming object pass beneath (one row per object
and slice: bounding box, centroid, area, score and uncertainties). Names are imported on first use, so
``sum_core.results.choices`` (the CLI's choices) loads alone. Never imports napari or Qt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes
_LAZY = {
    "FORMATS": ".choices",
    "OBJECT_TYPES": ".choices",
    "ObjectTable": ".objects",
    "ObjectWindow": ".objects",
    "Result": ".result",
    "coco_rle": ".rle",
    "default_output": ".export",
    "export_result": ".export",
    "mask_polygons": ".polygons",
    "object_windows": ".objects",
    "open_result": ".result",
    "result_stem": ".export",
    "scan_objects": ".objects",
}

if TYPE_CHECKING:  # pragma: no cover
    from .choices import FORMATS, OBJECT_TYPES
    from .export import default_output, export_result, result_stem
    from .objects import ObjectTable, ObjectWindow, object_windows, scan_objects
    from .polygons import mask_polygons
    from .result import Result, open_result
    from .rle import coco_rle


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)


__all__ = sorted(_LAZY)
