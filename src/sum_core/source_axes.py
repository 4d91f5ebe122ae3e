"""Axis names and physical pixel size of a source, read as other tools write them.

:func:`axis_names` reads the names of a source's axes from OME-Zarr ``multiscales[0].axes``
(NGFF 0.4 and 0.5), zarr v3 ``dimension_names``, xarray-style ``_ARRAY_DIMENSIONS`` / ``dims``
and TIFF series axes (tifffile's ``series.axes``: ``S`` samples, ``C`` channels, ``Z``, ``T``,
``Y``, ``X``, ``Q`` / ``I`` unknown). :func:`physical_scale` reads the size of a pixel along each
axis and its unit from OME-Zarr ``coordinateTransformations`` and ``axes[].unit``, OME-TIFF
``PhysicalSizeX/Y/Z`` and ImageJ TIFF resolution tags and ``spacing`` / ``unit``. Units are
given by their NGFF (UDUNITS-2) names, e.g. ``"micrometer"``; :func:`ome_unit` turns one back
into the OME-XML symbol (``"µm"``).
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tifffile
import zarr

from .imageio import TIFF_SUFFIXES

__all__ = ["CHANNEL_NAMES", "axis_names", "channel_axes", "is_channel_name", "ome_unit", "physical_scale"]

#: Axis names (compared case-insensitively) that hold channels or colour samples, never slices.
CHANNEL_NAMES = frozenset({"c", "channel", "channels", "s", "sample", "samples", "rgb", "rgba"})

# Unit spellings of OME-XML, ImageJ and NGFF -> NGFF names; and NGFF names -> OME-XML symbols.
_UNIT_NAMES = {
    "pm": "picometer", "å": "angstrom", "nm": "nanometer", "µm": "micrometer", "um": "micrometer",
    "micron": "micrometer", "microns": "micrometer", "mm": "millimeter", "cm": "centimeter",
    "m": "meter", "km": "kilometer", "s": "second", "sec": "second", "ms": "millisecond",
    "µs": "microsecond", "us": "microsecond", "ns": "nanosecond", "min": "minute", "h": "hour",
}  # fmt: skip
_OME_SYMBOLS = {
    "picometer": "pm", "angstrom": "Å", "nanometer": "nm", "micrometer": "µm", "millimeter": "mm",
    "centimeter": "cm", "meter": "m", "kilometer": "km", "second": "s", "millisecond": "ms",
    "microsecond": "µs", "nanosecond": "ns", "minute": "min", "hour": "h",
}  # fmt: skip


def is_channel_name(name: str) -> bool:
    """Whether an axis called ``name`` holds channels (S, C, channel(s), rgb; any case)."""
    return name.lower() in CHANNEL_NAMES


def axis_names(source: Any, key: str | None, array: Any) -> list[str] | None:
    """The names of ``array``'s axes as the file describes them, or None when it does not.

    Parameters
    ----------
    source : str, path-like, zarr group or array-like
        What was opened (:func:`sum_core.sources.open_image`'s ``source``).
    key : str, optional
        The array inside a zarr group.
    array : array-like
        The opened array (level 0).

    Returns
    -------
    list of str or None
        One name per axis of ``array``; None when the source has no names or their number
        differs from ``array``'s number of axes.
    """
    names = _named_axes(source, key, array)
    return names if names is not None and len(names) == len(array.shape) else None


def channel_axes(source: Any, key: str | None, array: Any, names: Sequence[str]) -> list[int]:
    """The axes of ``array`` that hold channels: named S, C, channel(s), rgb (any case), or of
    NGFF ``type: "channel"`` whatever their name.

    Parameters
    ----------
    source, key, array
        As for :func:`axis_names`.
    names : sequence of str
        The names of ``array``'s axes (:func:`axis_names`, or the indices as strings).
    """
    found = _multiscale(source, key)
    axes = (found[0].get("axes") or []) if found is not None else []
    typed = len(axes) == len(names) and all(isinstance(a, dict) for a in axes)
    return [
        a for a, name in enumerate(names)
        if is_channel_name(name) or (typed and str(axes[a].get("type", "")).lower() == "channel")
    ]  # fmt: skip


def _named_axes(source: Any, key: str | None, array: Any) -> list[str] | None:
    tiff = _tiff_path(source)
    if tiff is not None:
        with tifffile.TiffFile(tiff) as tif:
            return list(tif.series[0].axes)
    found = _multiscale(source, key)
    if found is not None and found[0].get("axes"):
        return [a["name"] if isinstance(a, dict) else str(a) for a in found[0]["axes"]]
    metadata = getattr(array, "metadata", None)
    names = getattr(metadata, "dimension_names", None)
    if names and all(n is not None for n in names):
        return [str(n) for n in names]
    attrs = getattr(array, "attrs", None)
    dims = attrs.get("_ARRAY_DIMENSIONS") if hasattr(attrs, "get") else None
    dims = dims or getattr(array, "dims", None)
    return [str(n) for n in dims] if dims else None


def physical_scale(source: Any, key: str | None, array: Any) -> tuple[tuple[float, ...], tuple[str | None, ...]]:
    """The physical size of a pixel along each axis of ``array`` and its unit.

    Read from OME-Zarr (the level's ``scale`` transformation times the multiscale's own, and
    ``axes[].unit``), OME-TIFF (``PhysicalSizeX/Y/Z`` and their units, default µm as OME says)
    and ImageJ TIFF (``XResolution`` / ``YResolution`` in pixels per unit, ``spacing`` for Z,
    ``unit``). Other sources, and axes the file says nothing about, get 1.0 and no unit.

    Parameters
    ----------
    source, key, array
        As for :func:`axis_names`.

    Returns
    -------
    scale : tuple of float
        One size per axis of ``array`` (1.0 when unknown).
    units : tuple of str or None
        One NGFF unit name per axis (e.g. ``"micrometer"``), None when unknown.
    """
    ndim = len(array.shape)
    scale, units = [1.0] * ndim, [None] * ndim
    tiff = _tiff_path(source)
    if tiff is not None:
        with tifffile.TiffFile(tiff) as tif:
            axes = tif.series[0].axes
            sizes = _ome_sizes(tif) if tif.is_ome else _imagej_sizes(tif) if tif.is_imagej else {}
        if len(axes) == ndim:
            for letter, (size, unit) in sizes.items():
                if letter in axes:
                    scale[axes.index(letter)], units[axes.index(letter)] = size, unit
        return tuple(scale), tuple(units)
    found = _multiscale(source, key)
    if found is None:
        return tuple(scale), tuple(units)
    multiscale, level = found
    transforms = list(multiscale.get("coordinateTransformations") or [])
    transforms += list(multiscale["datasets"][level].get("coordinateTransformations") or [])
    for transform in transforms:
        values = transform.get("scale") if transform.get("type") == "scale" else None
        if values is not None and len(values) == ndim:
            scale = [s * float(v) for s, v in zip(scale, values)]
    axes = multiscale.get("axes") or []
    if len(axes) == ndim:
        units = [_unit(a.get("unit")) if isinstance(a, dict) else None for a in axes]
    scale = [s if math.isfinite(s) and s > 0 else 1.0 for s in scale]
    return tuple(scale), tuple(units)


def ome_unit(unit: str | None) -> str | None:
    """The OME-XML symbol of an NGFF unit name (``"micrometer"`` -> ``"µm"``); None when it has none."""
    return None if unit is None else _OME_SYMBOLS.get(unit)


def _unit(text: Any) -> str | None:
    """A unit spelt by OME-XML, ImageJ or NGFF as its NGFF name (unknown spellings as given)."""
    if not isinstance(text, str) or not text.strip():
        return None
    text = text.strip().replace("\\u00B5", "µ").replace("\\u00b5", "µ").replace("\u03bc", "µ")
    if text.lower() in ("pixel", "pixels", "px"):
        return None
    return _UNIT_NAMES.get(text, _UNIT_NAMES.get(text.lower(), text))


def _tiff_path(source: Any) -> Path | None:
    if isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() in TIFF_SUFFIXES:
        return Path(source)
    return None


def _multiscale(source: Any, key: str | None) -> tuple[dict, int] | None:
    """The OME-Zarr multiscale holding the opened array and the index of its dataset (level)."""
    group = source if isinstance(source, zarr.Group) else None
    if group is None and isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        try:
            node = zarr.open(str(source), mode="r")
        except Exception:  # noqa: BLE001 - open_image accepted it; the metadata are optional
            return None
        group = node if isinstance(node, zarr.Group) else None
    if group is None:
        return None
    parent, _, leaf = (key or "").strip("/").rpartition("/")
    if parent:
        try:
            group = group[parent]
        except KeyError:
            return None
    attrs = group.attrs.asdict()
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales or not multiscales[0].get("datasets"):
        return None
    paths = [str(d.get("path")) for d in multiscales[0]["datasets"]]
    if not leaf:
        return multiscales[0], 0
    return (multiscales[0], paths.index(leaf)) if leaf in paths else None


def _ome_sizes(tif: tifffile.TiffFile) -> dict[str, tuple[float, str | None]]:
    """``{"X": (size, unit), ...}`` from the first image's ``Pixels`` of an OME-TIFF."""
    try:
        root = ElementTree.fromstring(tif.ome_metadata or "")
    except ElementTree.ParseError:
        return {}
    pixels = next((e for e in root.iter() if e.tag.rpartition("}")[2] == "Pixels"), None)
    sizes: dict[str, tuple[float, str | None]] = {}
    for letter in "XYZ":
        value = _positive(None if pixels is None else pixels.get(f"PhysicalSize{letter}"))
        if value is not None:
            sizes[letter] = (value, _unit(pixels.get(f"PhysicalSize{letter}Unit", "µm")))
    return sizes


def _imagej_sizes(tif: tifffile.TiffFile) -> dict[str, tuple[float, str | None]]:
    """``{"X": (size, unit), ...}`` from an ImageJ TIFF's resolution tags and description."""
    metadata = tif.imagej_metadata or {}
    unit = _unit(metadata.get("unit"))
    tags = tif.pages[0].tags
    sizes: dict[str, tuple[float, str | None]] = {}
    for letter, tag in (("X", "XResolution"), ("Y", "YResolution")):
        value = tags[tag].value if tag in tags else None
        if isinstance(value, tuple) and len(value) == 2 and value[0] > 0:
            size = _positive(value[1] / value[0])
            if size is not None:
                sizes[letter] = (size, unit)
    spacing = _positive(metadata.get("spacing"))
    if spacing is not None:
        sizes["Z"] = (spacing, unit)
    return sizes


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None
