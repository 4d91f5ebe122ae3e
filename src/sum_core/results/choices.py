"""The choices of a result export (torch-free: the CLI parser reads them without importing the exporters)."""

from __future__ import annotations

__all__ = ["FORMATS", "OBJECT_TYPES"]

#: Export format -> the file name endings it accepts.
FORMATS = {
    "geojson": (".geojson", ".json"),
    "imagej-roi": (".zip",),
    "coco": (".json",),
    "csv": (".csv",),
    "ome-zarr": (".zarr",),
}
#: QuPath's object types for GeoJSON features.
OBJECT_TYPES = ("detection", "annotation")
