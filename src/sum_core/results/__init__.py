"""Segmentation results in the formats other tools read: QuPath GeoJSON, ImageJ ROI zip, COCO JSON, CSV.

:func:`open_result` opens a result lazily (a batch target, an OME-Zarr label image, a labels TIFF or zarr
array, or in-memory labels such as a napari Labels layer's data, each with its uncertainty map when there is
one); :func:`export_result` writes its objects, reading it window by window:

>>> from sum_core.results import export_result
>>> export_result("cells.zarr", "cells.geojson", to="geojson")  # doctest: +SKIP

:func:`scan_objects` and :func:`object_windows` are the streaming object pass beneath (one row per object
and slice: bounding box, centroid, area, score and uncertainties). Never imports napari or Qt.
"""

from .export import FORMATS, default_output, export_result
from .objects import ObjectTable, ObjectWindow, object_windows, scan_objects
from .polygons import mask_polygons
from .result import Result, open_result
from .rle import coco_rle

__all__ = [
    "FORMATS",
    "ObjectTable",
    "ObjectWindow",
    "Result",
    "coco_rle",
    "default_output",
    "export_result",
    "mask_polygons",
    "object_windows",
    "open_result",
    "scan_objects",
]
