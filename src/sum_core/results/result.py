"""Open a segmentation result lazily, whatever wrote it: :func:`open_result` -> :class:`Result`.

A result is a label image (0 = background, one id per object; a 2D plane or a stack of planes along one
slice axis), optionally a per-pixel uncertainty map of the same shape, the physical pixel size and units
when known, and the per-object values a writer recorded (an object table). Nothing is read when a result
is opened but metadata: the arrays are read window by window by :mod:`sum_core.results.objects`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..batch.objects import object_table
from ..batch.writer import ATTR, Target
from ..errors import InvalidInputError
from ..imageio import TIFF_SUFFIXES, check_input_path, is_zarr_path
from ..source_axes import physical_scale
from ..sources import open_image
from ..validation import check_index, check_range

__all__ = ["TABLE_COLUMNS", "Result", "open_result"]

#: Per-object values a result may record, and the names writers give them (NGFF ``image-label``
#: ``properties`` keys, the batch ``objects/`` table's columns).
#: ``score`` is the predicted IoU (:mod:`sum_core.object_scores`' ``predicted_iou``), ``stability`` SAM's
#: stability score; the later columns of the exports follow this order (``stability`` last: added later).
TABLE_COLUMNS = {
    "score": ("score", "predicted_iou", "predicted-iou", "predicted IoU", "iou"),
    "mean_uncertainty": ("mean_uncertainty", "mean-uncertainty", "mean uncertainty"),
    "boundary_uncertainty": ("boundary_uncertainty", "boundary-uncertainty", "boundary uncertainty"),
    "stability": ("stability", "stability_score", "stability-score", "stability score"),
}


@dataclass(frozen=True)
class Result:
    """A segmentation result opened lazily (see :func:`open_result`).

    Attributes
    ----------
    labels : array-like
        2D ``(H, W)`` or 3D integer labels (numpy, zarr, dask, a TIFF through tifffile's zarr store).
    uncertainty : array-like or None
        Float per-pixel uncertainty in [0, 1], the shape of ``labels``.
    slice_axis : int or None
        The axis of ``labels`` holding the planes of a stack (None for a 2D plane).
    scale : tuple of float or None
        Physical size of a pixel along each axis of ``labels``, when known.
    units : tuple of (str or None) or None
        The unit of each axis (e.g. ``"micrometer"``), when known.
    table : dict of str to numpy.ndarray or None
        Per-object values recorded by the writer: ``label`` (uint64), optionally ``slice`` (int64), and any of
        :data:`TABLE_COLUMNS` (float64).
    name : str
        How messages and exports call the result (its file name, or ``"labels"``).
    """

    labels: Any
    uncertainty: Any = None
    slice_axis: int | None = None
    scale: tuple[float, ...] | None = None
    units: tuple[str | None, ...] | None = None
    table: dict[str, np.ndarray] | None = None
    name: str = "labels"

    @property
    def n_slices(self) -> int:
        """Number of planes (1 for a 2D result)."""
        return 1 if self.slice_axis is None else int(self.labels.shape[self.slice_axis])

    @property
    def plane_shape(self) -> tuple[int, int]:
        """``(height, width)`` of a plane."""
        return tuple(int(n) for a, n in enumerate(self.labels.shape) if a != self.slice_axis)  # type: ignore[return-value]

    @property
    def pixel_size(self) -> tuple[tuple[float, float], tuple[str | None, str | None]] | None:
        """``((row size, col size), (row unit, col unit))`` of a plane, or None when the scale is unknown."""
        if self.scale is None:
            return None
        axes = [a for a in range(self.labels.ndim) if a != self.slice_axis]
        units = self.units or (None,) * self.labels.ndim
        return (self.scale[axes[0]], self.scale[axes[1]]), (units[axes[0]], units[axes[1]])

    def index(self, slice_index: int, rows: slice, cols: slice) -> tuple[Any, ...]:
        """The numpy index of a window of one plane."""
        if self.slice_axis is None:
            return rows, cols
        index: list[Any] = [rows, cols]
        index.insert(self.slice_axis, slice_index)
        return tuple(index)


def open_result(
    source: Any,
    uncertainty: Any = None,
    *,
    slice_axis: int | None = None,
    scale: tuple[float, ...] | None = None,
    units: tuple[str | None, ...] | None = None,
    table: dict[str, Any] | None = None,
) -> Result:
    """Open a segmentation result for export, reading metadata only.

    Parameters
    ----------
    source : path, zarr group or array-like
        - a batch target (a zarr group written by :func:`sum_core.batch.segment_zarr`, complete, in either
          format): its labels, uncertainty, slice axis, pixel size (the arrays' ``scale`` / ``units``
          attributes, else the OME-Zarr metadata) and, for AIS jobs, its object table;
        - an OME-Zarr (NGFF 0.4 / 0.5) label image (a group with ``multiscales`` and ``image-label``
          metadata): level 0 (``multiscales[0].datasets[0].path``), its scale and axis units, the
          ``properties`` of ``image-label`` as the table, and level 0 of the multiscale image
          ``uncertainty/`` inside it when there is one (as sum-hq writes it);
        - an OME-Zarr image group holding exactly one label image under ``labels/``: that label image (a
          multiscale group with neither ``image-label`` metadata nor ``labels/`` is taken as labels too);
        - a TIFF file (pixel size from OME-XML or ImageJ tags, :func:`sum_core.source_axes.physical_scale`)
          or a zarr array of labels;
        - an in-memory array (numpy, dask: a napari Labels layer's ``data``).
    uncertainty : path or array-like, optional
        The per-pixel uncertainty (a TIFF, a zarr array or an array), when the source has none.
    slice_axis : int, optional
        The axis of a 3D result holding its planes (default: the one the writer recorded, else 0).
    scale, units : tuple, optional
        Physical pixel size and units per axis of the labels (default: from the source's metadata).
    table : dict, optional
        Per-object values (``label``, optional ``slice``, and any of :data:`TABLE_COLUMNS`), e.g. a napari
        Labels layer's ``features``; replaces the source's.

    Returns
    -------
    Result

    Raises
    ------
    InvalidInputError
        A path that is missing or of no supported kind, labels that are not 2D / 3D integers, an
        uncertainty of another shape or not a float map, an incomplete batch target, a bad slice axis,
        scale or units.
    """
    found = _open_source(source)
    if uncertainty is not None:
        if found.get("uncertainty") is not None:
            raise InvalidInputError(f"uncertainty: {found['name']} holds its own uncertainty map; do not pass one")
        found["uncertainty"] = _open_array(uncertainty, "uncertainty")
    labels, values = found["labels"], found.get("uncertainty")
    if labels.ndim not in (2, 3) or labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise InvalidInputError(
            f"labels: {found['name']} must be a 2D plane or a 3D stack of integer labels, got {labels.dtype} "
            f"of shape {tuple(labels.shape)}"
        )
    if values is not None and (tuple(values.shape) != tuple(labels.shape) or not np.issubdtype(values.dtype, np.floating)):
        raise InvalidInputError(
            f"uncertainty: expected a float map of the labels' shape {tuple(labels.shape)}, got {values.dtype} "
            f"of shape {tuple(values.shape)}"
        )
    axis = found.get("slice_axis") if slice_axis is None else check_index(slice_axis, "slice_axis", labels.ndim)
    if labels.ndim == 3 and axis is None:
        axis = 0
    if labels.ndim == 2 and axis is not None:
        raise InvalidInputError(f"slice_axis: {found['name']} is a 2D plane, it has no slice axis")
    return Result(
        labels=labels,
        uncertainty=values,
        slice_axis=axis,
        scale=_scale(found.get("scale") if scale is None else scale, labels.ndim),
        units=_units(found.get("units") if units is None else units, labels.ndim),
        table=_table(found.get("table") if table is None else table),
        name=found["name"],
    )


def _open_source(source: Any) -> dict[str, Any]:
    """The labels and metadata of ``source`` (see :func:`open_result`)."""
    if isinstance(source, zarr.Group):
        return _open_group(source, str(source.store))
    if not isinstance(source, (str, os.PathLike)):
        return {"labels": _open_array(source, "source"), "name": "labels"}
    path = check_input_path(source, "source")
    if is_zarr_path(path):
        try:
            node = zarr.open(str(path), mode="r")
        except Exception as err:  # noqa: BLE001 - any unreadable store
            raise InvalidInputError(f"source: could not open the zarr store {path} ({err})") from None
        if isinstance(node, zarr.Group):
            return _open_group(node, str(path))
        return {"labels": node, "name": path.name}
    if path.suffix.lower() in TIFF_SUFFIXES:
        labels = open_image(path)
        return {"labels": labels, "name": path.name, **_physical(*physical_scale(path, None, labels))}
    raise InvalidInputError(
        f"source: {path} is not a result sum-hq can read (a batch target or OME-Zarr labels folder, a zarr "
        "array, or a TIFF file of labels)"
    )


def _open_group(group: zarr.Group, name: str) -> dict[str, Any]:
    attrs = group.attrs.asdict()
    if ATTR in attrs:
        info = attrs[ATTR]
        if not info.get("complete"):
            raise InvalidInputError(f"source: the batch job of {name} is not complete; rerun it to finish first")
        target = Target(group, name)
        labels = target.labels
        found = {"labels": labels, "uncertainty": target.uncertainty, "slice_axis": target.slice_axis,
                 "name": Path(name).name,
                 **(_physical(labels.attrs.get("scale"), labels.attrs.get("units"))
                    or _physical(*physical_scale(group, None, labels)))}
        if "objects" in group:
            found["table"] = object_table(group)
        return found
    meta = attrs.get("ome", attrs)
    if "multiscales" in meta and "image-label" in meta:
        return _open_ngff(group, meta, name)
    labels = None
    if "labels" in group and isinstance(group["labels"], zarr.Group):
        listing = group["labels"].attrs.asdict()
        labels = listing.get("ome", listing).get("labels")
    if isinstance(labels, list) and len(labels) == 1:
        return _open_group(group["labels"][labels[0]], f"{name}/labels/{labels[0]}")
    if "multiscales" in meta and labels is None:  # a multiscale image without image-label metadata
        return _open_ngff(group, meta, name)
    raise InvalidInputError(
        f"source: {name} is neither a sum-hq batch target nor an OME-Zarr label image"
        + (f" (it holds the label images {labels}: open one of them, e.g. {name}/labels/{labels[0]})"
           if isinstance(labels, list) and labels else "")
    )


def _open_ngff(group: zarr.Group, meta: dict[str, Any], name: str) -> dict[str, Any]:
    """Level 0 of an OME-Zarr multiscale label image, its scale and units
    (:func:`sum_core.source_axes.physical_scale`), slice axis and ``image-label`` properties."""
    try:
        multiscale = meta["multiscales"][0]
        dataset = multiscale["datasets"][0]
        labels = group[str(dataset["path"])]
        axes = [a if isinstance(a, dict) else {"name": a} for a in multiscale.get("axes", [])]
    except (KeyError, IndexError, TypeError) as err:
        raise InvalidInputError(f"source: the OME-Zarr multiscales metadata of {name} is unreadable ({err!r})") from None
    found: dict[str, Any] = {"labels": labels, "name": name.rstrip("/").split("/")[-1] or name,
                             **_physical(*physical_scale(group, None, labels))}
    if len(axes) == labels.ndim:
        space = [i for i, a in enumerate(axes) if a.get("type") in (None, "space")]
        others = [i for i in range(labels.ndim) if i not in space[-2:]]
        if labels.ndim == 3 and others:
            found["slice_axis"] = others[0]
    values = _uncertainty_image(group) if "image-label" in meta else None
    if values is not None:
        found["uncertainty"] = values
    properties = meta.get("image-label", {}).get("properties")
    if properties:
        found["table"] = {"label": [p.get("label-value") for p in properties]} | {
            column: [_first(p, names) for p in properties] for column, names in TABLE_COLUMNS.items()
            if any(_first(p, names) is not None for p in properties)
        }
    return found


def _uncertainty_image(group: zarr.Group) -> zarr.Array | None:
    """Level 0 of the ``uncertainty`` multiscale image inside an OME-Zarr label image (as ``sum-hq export --to
    ome-zarr`` and batch ``--format ome-zarr`` targets write it), else None."""
    if "uncertainty" not in group:
        return None
    node = group["uncertainty"]
    try:
        path = node.attrs["ome"]["multiscales"][0]["datasets"][0]["path"]
        array = node[str(path)]
    except (KeyError, IndexError, TypeError):
        return None
    return array if isinstance(array, zarr.Array) else None


def _physical(scale: Any, units: Any) -> dict[str, Any]:
    """``scale`` / ``units`` entries when the writer recorded a pixel size (not all 1.0 without units)."""
    if scale is None or (all(v == 1.0 for v in scale) and not any(units or ())):
        return {}
    return {"scale": tuple(scale), "units": None if units is None else tuple(units)}


def _first(values: dict[str, Any], names: tuple[str, ...]) -> Any:
    return next((values[n] for n in names if n in values), None)


def _open_array(value: Any, name: str) -> Any:
    """An array-like from an array, a zarr array or a TIFF / zarr path."""
    if isinstance(value, (str, os.PathLike)):
        path = check_input_path(value, name)
        if path.suffix.lower() not in TIFF_SUFFIXES and not is_zarr_path(path):
            raise InvalidInputError(f"{name}: {path} must be a TIFF file or a zarr array")
        return open_image(path)
    if not all(hasattr(value, a) for a in ("shape", "dtype", "__getitem__")):
        raise InvalidInputError(f"{name}: expected an array, a zarr group or a path, got {type(value).__name__}")
    return value


def _scale(value: Any, ndim: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    values = tuple(value) if isinstance(value, (tuple, list, np.ndarray)) else ()
    if len(values) != ndim:
        raise InvalidInputError(f"scale: expected one pixel size per axis ({ndim}), got {value!r}")
    return tuple(check_range(v, "scale", 0.0, float("inf")) for v in values)


def _units(value: Any, ndim: int) -> tuple[str | None, ...] | None:
    if value is None:
        return None
    values = tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(values) != ndim or not all(v is None or isinstance(v, str) for v in values):
        raise InvalidInputError(f"units: expected one unit (a string or None) per axis ({ndim}), got {value!r}")
    return values


def _table(value: Any) -> dict[str, np.ndarray] | None:
    """Per-object values as columns: ``label`` uint64, ``slice`` int64, the :data:`TABLE_COLUMNS` float64."""
    if value is None:
        return None
    try:
        columns = {str(k): np.asarray(v) for k, v in dict(value).items()}
        table = {"label": columns["label"].astype(np.uint64)}
        if "slice" in columns:
            table["slice"] = columns["slice"].astype(np.int64)
        for column, names in TABLE_COLUMNS.items():
            name = next((n for n in names if n in columns), None)
            if name is not None:
                table[column] = np.asarray(
                    [np.nan if v is None else v for v in columns[name].tolist()], dtype=np.float64
                )
    except (KeyError, TypeError, ValueError) as err:
        raise InvalidInputError(
            f"table: expected columns 'label' (integers), optionally 'slice' and {sorted(TABLE_COLUMNS)} of one "
            f"length ({type(err).__name__}: {err})"
        ) from None
    if len({len(v) for v in table.values()}) != 1 or table["label"].ndim != 1:
        raise InvalidInputError("table: its columns must be 1D and of one length")
    return table
