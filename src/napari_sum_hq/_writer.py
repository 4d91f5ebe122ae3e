"""The npe2 writers of segmentation results: File → Save Selected Layers on a Labels layer (and its
uncertainty Image layer, selected with it), or ``viewer.layers.save(path, selected=True,
plugin="napari-sum-hq")``.

The layers become a :func:`sum_core.results.open_result` result (level 0 of a multiscale layer; the
layer's pixel size and units unless napari's default of 1 pixel; its ``features`` as the object table,
napari's ``index`` column being the id; the interactive widget's committed scores only while they are
current, see :func:`_table`) and are written by :func:`sum_core.results.export_result`
(streaming, object by object; replacing the file napari's Save dialog confirmed). Layers it refuses raise
a :class:`sum_core.errors.SumError` naming the problem:

- ``.geojson``: QuPath GeoJSON (:func:`write_geojson`);
- ``.zip``: ImageJ ROI zip for Fiji's ROI Manager (:func:`write_imagej_roi`);
- ``.ome.zarr``: an OME-Zarr (NGFF 0.5) label image folder, the uncertainty layer as its ``uncertainty``
  multiscale image (:func:`write_ome_zarr`; an existing folder is replaced only when it is an earlier
  export of sum-hq).
"""

from __future__ import annotations

from typing import Any

__all__ = ["layers_result", "write_geojson", "write_imagej_roi", "write_ome_zarr"]


def write_geojson(path: str, layer_data: list[tuple[Any, dict[str, Any], str]]) -> list[str]:
    """napari writer: a Labels layer (with an uncertainty Image layer) as QuPath GeoJSON."""
    return _export(path, layer_data, "geojson")


def write_imagej_roi(path: str, layer_data: list[tuple[Any, dict[str, Any], str]]) -> list[str]:
    """napari writer: a Labels layer (with an uncertainty Image layer) as an ImageJ ROI zip."""
    return _export(path, layer_data, "imagej-roi")


def write_ome_zarr(path: str, layer_data: list[tuple[Any, dict[str, Any], str]]) -> list[str]:
    """napari writer: a Labels layer (with an uncertainty Image layer) as an OME-Zarr label image."""
    return _export(path, layer_data, "ome-zarr")


def _export(path: str, layer_data: list[tuple[Any, dict[str, Any], str]], to: str) -> list[str]:
    """Export; a refusal is raised as a plain :class:`SumError`: napari (0.9) takes a ``ValueError`` from a
    writer for "no writer" and would replace the message with "not a valid writer"."""
    from sum_core.errors import InvalidInputError, SumError
    from sum_core.results import export_result

    try:
        return [str(export_result(layers_result(layer_data), path, to=to, overwrite=True))]
    except InvalidInputError as err:
        raise SumError(str(err)) from err


def layers_result(layer_data: list[tuple[Any, dict[str, Any], str]]) -> Any:
    """The :class:`sum_core.results.Result` of one Labels layer and at most one Image layer (its uncertainty).

    Raises
    ------
    InvalidInputError
        Not exactly one Labels layer, more than one Image layer, or layers ``open_result`` refuses (an
        uncertainty that is not a float map of the labels' shape, labels that are not 2D / 3D).
    """
    from sum_core.errors import InvalidInputError
    from sum_core.results import open_result

    labels = [layer for layer in layer_data if layer[2] == "labels"]
    images = [layer for layer in layer_data if layer[2] == "image"]
    if len(labels) != 1 or len(images) > 1 or len(labels) + len(images) != len(layer_data):
        kinds = ", ".join(f"{meta.get('name')!r} ({kind})" for _, meta, kind in layer_data)
        raise InvalidInputError(
            f"layers: select one Labels layer, and its uncertainty Image layer if it has one, to save as a "
            f"result; got {kinds}"
        )
    data, meta, _ = labels[0]
    scale, units = _physical(meta)
    return open_result(
        _level0(data, meta),
        _level0(*images[0][:2]) if images else None,
        scale=scale,
        units=units,
        table=_table(meta.get("features"), stale=_marked_stale(meta)),
    )


def _level0(data: Any, meta: dict[str, Any]) -> Any:
    return data[0] if meta.get("multiscale") else data


def _physical(meta: dict[str, Any]) -> tuple[tuple[float, ...] | None, tuple[str | None, ...] | None]:
    """The layer's scale and units (``"pixel"`` as None), or ``(None, None)`` for napari's default
    (1 pixel per pixel)."""
    scale = tuple(float(s) for s in meta.get("scale", ()))
    units = tuple(None if str(u) == "pixel" else str(u) for u in meta.get("units") or (None,) * len(scale))
    if all(s == 1.0 for s in scale) and all(u is None for u in units):
        return None, None
    return scale, units


def _marked_stale(meta: dict[str, Any]) -> bool:
    """Whether the layer's features are marked as the interactive widget's committed scores that no longer
    describe its pixels (:func:`napari_sum_hq._interactive_scores.marked_stale`: edited since by the brush,
    napari's own undo, ...)."""
    from ._interactive_scores import marked_stale

    return marked_stale(meta.get("metadata") or {})


def _table(features: Any, stale: bool = False) -> dict[str, Any] | None:
    """A Labels layer's ``features`` as an object table (``index`` -> ``label``), or None without ids.

    ``stale``: the features' scores no longer describe the pixels (:func:`_marked_stale`): their
    :data:`~napari_sum_hq._interactive_scores.SCORE_COLUMNS` (area, bounding box, uncertainties, predicted
    IoU, stability) are left out, so the export recounts the area and computes the uncertainties from the
    uncertainty layer when one is saved with it; predicted IoU and stability are dropped for every object
    (which objects changed is not known).
    """
    if features is None or "index" not in getattr(features, "columns", ()):
        return None
    from ._interactive_scores import SCORE_COLUMNS

    dropped = set(SCORE_COLUMNS) if stale else set()
    return {("label" if name == "index" else str(name)): features[name].to_numpy()
            for name in features.columns if name not in dropped}  # fmt: skip
