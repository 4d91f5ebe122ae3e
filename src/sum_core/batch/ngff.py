"""OME-Zarr (NGFF 0.5, zarr v3) output of a batch job: ``segment_zarr(..., format="ome-zarr")``.

Layout
------
The target group is an NGFF **label image** (``image-label``), which also holds the job's own
bookkeeping (``sum_hq_batch`` attributes, ``checksums/``, ``done/``, ``work/``, ``counts``,
``objects/``; see :mod:`sum_core.batch.writer`), so it resumes and verifies as any batch target:

- ``0``, ``1``, ... ``L-1``: the labels (uint32) pyramid, ``L`` levels: the number of levels of
  the parent image when the source is an OME-Zarr image (the plane of each level as the
  parent's, the slice axis kept), else halving the plane until its longer side is at most
  :data:`SMALLEST_LEVEL` px. Level ``l`` is the nearest-neighbour sample of level ``l - 1``
  (pixel ``i`` takes pixel ``i * n_{l-1} // n_l`` along each plane axis: ids are never mixed).
  Level 0 is written and checksummed by the job's chunk stage; every higher level chunk is a
  flagged unit of its own (``done/level<l>``, one flag per slice and chunk), computed from the
  level below once that plane's chunks are done (derived data: checked by being redone with
  its plane when the plane is repaired, not checksummed).
- ``uncertainty/``: a separate multiscale **image** (a float map cannot be a label image):
  ``uncertainty/0`` ... ``uncertainty/L-1`` (float16, in [0, 1], sampled like the labels).
- attributes ``ome`` (``"version": "0.5"``), written when the job completes, together with its
  completion: ``multiscales`` (axes with their types and units; per level one ``scale``
  transformation, the source's pixel size times the level's sampling, or, inside an OME-Zarr parent
  image, the parent level's own transformations, translations included, so the labels align with
  their image: :func:`parent_transforms`), ``image-label``: ``colors`` (one RGBA per id, fixed by
  the id) and ``properties`` (one per object: ``label-value`` and, from whatever columns the
  target's ``objects/`` table holds (:mod:`sum_core.batch.objects`), ``area`` in px,
  ``predicted-iou``, ``stability``, ``mean-uncertainty`` and ``boundary-uncertainty``, NaN values
  left out; :func:`sum_core.ngff_labels.label_properties`) and ``source.image`` (the relative path
  to the parent image when it is known). The ``uncertainty`` group gets its ``multiscales``.

The metadata builders and sampling rules are :mod:`sum_core.ngff_labels`, shared with the result
export to OME-Zarr (:mod:`sum_core.results.ome_zarr`).

Axes are the source's without the channel axis, with the slice axis first (``z``, or ``t`` when
so named); axes without NGFF names are called ``z``, ``y``, ``x``.

Where
-----
For an OME-Zarr (0.5) source image, the target ``<image>/labels/<name>`` writes the label image
**inside** the image: only that group and the ``labels`` listing (``<image>/labels/zarr.json``,
``"ome": {"labels": [...]}``: the name added, existing entries and attributes kept, replaced in one
rename, under the lock of the ``labels`` folder so that jobs adding names at once keep each other's)
are ever written; the listing is updated when the job completes (or returns a completed target).
For an OME-Zarr source, any other target is a label image on its own (``source.image`` pointing
to the source).

For a source that is not an OME-Zarr image, a local target path becomes a new OME-Zarr image
holding a copy of the pixels and this label image as ``labels/sum-hq`` (:mod:`sum_core.batch.ngff_image`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from .. import ngff_labels
from ..errors import InvalidInputError
from ..ngff_labels import label_color, label_properties, multiscale_metadata, nearest_indices, per_id_columns
from ..tiling import Region
from .lock import folder_lock, location
from .volume import Volume
from .writer import NGFF_PATHS, Target, zarr_metadata

__all__ = ["FORMATS", "SMALLEST_LEVEL", "check_format"]

FORMATS = ("zarr", "ome-zarr")
#: Without a parent pyramid, levels halve the plane until its longer side is at most this.
SMALLEST_LEVEL = ngff_labels.SMALLEST_LEVEL


def check_format(format: Any) -> str:
    """The output format, validated.

    Raises
    ------
    InvalidInputError
        Not one of :data:`FORMATS`.
    """
    if not isinstance(format, str) or format not in FORMATS:
        raise InvalidInputError(
            f"format must be one of {FORMATS} ('zarr': the batch group of labels and uncertainty; 'ome-zarr': an "
            f"NGFF 0.5 label image), got {format!r}"
        )
    return format


def parent_image(source: Any, key: str | None) -> Path | None:
    """The folder of an OME-Zarr 0.5 image source (its ``zarr.json`` holds ``ome.multiscales``), else None."""
    found = _parent_multiscale(source, key)
    return None if found is None else found[0]


def _parent_multiscale(source: Any, key: str | None) -> tuple[Path, dict[str, Any]] | None:
    """The folder and first ``multiscales`` entry of an OME-Zarr 0.5 image source, else None."""
    folder = location(source)
    if folder is None or key is not None:
        return None
    metadata = zarr_metadata(Path(folder))
    ome = (metadata.get("attributes") or {}).get("ome") if metadata is not None else None
    return (Path(folder), ome["multiscales"][0]) if isinstance(ome, dict) and ome.get("multiscales") else None


def labels_inside(source: Any, key: str | None, target: Any) -> tuple[Path, str] | None:
    """``(image folder, name)`` when ``target`` is ``<OME-Zarr source image>/labels/<name>``, else None."""
    image, path = parent_image(source, key), location(target)
    if image is None or path is None:
        return None
    path = Path(os.path.abspath(path))
    if path.parent.name != "labels" or not path.name or os.path.realpath(path.parent.parent) != os.path.realpath(image):
        return None
    return image, path.name


def check_layout(volume: Volume) -> None:
    """Refuse a volume whose output axes cannot be NGFF axes (the slice axis must come first).

    Raises
    ------
    InvalidInputError
        Naming the axes.
    """
    if volume.out_slice_axis not in (None, 0):
        raise InvalidInputError(
            f"format='ome-zarr': the slice axis {volume.names[volume.slice_axis]!r} must be the first output axis "
            f"(the outputs' axes are {list(volume.out_names)}); use format='zarr' for this source"
        )


def level_planes(volume: Volume, source: Any, key: str | None) -> list[tuple[int, int]]:
    """The plane shape of each pyramid level (see the module docstring)."""
    image = parent_image(source, key)
    if image is not None:
        group = zarr.open_group(str(image), mode="r", zarr_format=3)
        datasets = group.attrs["ome"]["multiscales"][0]["datasets"]
        level0 = tuple(group[datasets[0]["path"]].shape)
        plane_axes = [a for a in range(len(level0)) if a not in (volume.slice_axis, volume.channel_axis)]
        planes = []
        for dataset in datasets:
            shape = group[dataset["path"]].shape
            planes.append((int(shape[plane_axes[0]]), int(shape[plane_axes[1]])))
        return planes
    return ngff_labels.halving_planes(tuple(volume.plane_shape), SMALLEST_LEVEL)


def out_shape(volume: Volume, plane: tuple[int, int]) -> tuple[int, ...]:
    """The output shape of a level whose plane is ``plane`` (the slice axis first)."""
    return plane if volume.out_slice_axis is None else (volume.n_slices, *plane)


def info(planes: list[tuple[int, int]]) -> dict[str, Any]:
    """The ``sum_hq_batch`` attributes of an OME-Zarr target (paths of the outputs, levels, their planes)."""
    return {"paths": dict(NGFF_PATHS), "levels": len(planes), "planes": [list(p) for p in planes]}


def level_flags_name(level: int) -> str:
    """The ``done/<stage>`` flags of a pyramid level."""
    return f"level{level}"


def create_levels(target: Target, volume: Volume, chunks: tuple[int, ...]) -> None:
    """Create the pyramid arrays of levels 1.. and their flags (one per slice and chunk), unless they exist."""
    planes = [tuple(p) for p in target.info["planes"]]
    for level, plane in enumerate(planes[1:], start=1):
        shape = out_shape(volume, plane)
        for name, dtype in ((str(level), "uint32"), (f"uncertainty/{level}", "float16")):
            if name not in target.group:
                target.group.create_array(name, shape=shape, dtype=dtype, chunks=chunks, fill_value=0,
                                          dimension_names=target.labels.metadata.dimension_names)
        grid = level_chunks(plane, chunks[-2:])
        target.create_flags(level_flags_name(level), (volume.n_slices, grid[0] * grid[1]))


def level_chunks(plane: tuple[int, int], tile: tuple[int, ...]) -> tuple[int, int]:
    """The chunk grid ``(rows, cols)`` of a level's plane."""
    return -(-plane[0] // tile[0]), -(-plane[1] // tile[1])


def run_level(target: Target, volume: Volume, level: int, slice_index: int, chunk_index: int, *_below: Any) -> None:
    """Write one chunk of pyramid level ``level`` (labels and uncertainty) by nearest-neighbour sampling
    of level ``level - 1``; then set its flag."""
    planes = [tuple(p) for p in target.info["planes"]]
    plane, below = planes[level], planes[level - 1]
    tile = target.labels.chunks[-2:]
    cols = level_chunks(plane, tile)[1]
    row, col = divmod(chunk_index, cols)
    region = Region(row * tile[0], col * tile[1], min((row + 1) * tile[0], plane[0]),
                    min((col + 1) * tile[1], plane[1]))
    rows = nearest_indices(region.row0, region.row1, below[0], plane[0])
    columns = nearest_indices(region.col0, region.col1, below[1], plane[1])
    index = volume.out_index(slice_index, region)
    for name in (str(level), f"uncertainty/{level}"):
        source = target.group[_below_name(name, level)]
        picked = (rows, columns) if volume.out_slice_axis is None else (slice_index, rows, columns)
        target.group[name][index] = source.oindex[picked]
    target.mark_done(level_flags_name(level), (slice_index, chunk_index))


def _below_name(name: str, level: int) -> str:
    return name[: -len(str(level))] + str(level - 1)


def ngff_axes(volume: Volume) -> list[dict[str, Any]]:
    """NGFF axes of the outputs: names, types and units (:func:`sum_core.ngff_labels.ngff_axes`)."""
    return ngff_labels.ngff_axes(volume.out_names, volume.units)


def metadata(target: Target, volume: Volume, name: str, source: Any, key: str | None,
             ids: np.ndarray, image: Path | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``ome`` attributes of the label image (``ids``: the volume's object ids; the per-object table,
    when the target has one, gives their properties; ``image``: the image group made for a non-OME
    source) and of its ``uncertainty`` image. Inside an OME-Zarr parent image, each level has the
    coordinate transformations of the parent's level (:func:`parent_transforms`)."""
    planes = [tuple(p) for p in target.info["planes"]]
    axes = ngff_axes(volume)
    transforms, common = parent_transforms(volume, source, key, len(axes)) or (None, None)

    def multiscale(label: str) -> dict[str, Any]:
        return multiscale_metadata(label, axes, volume_scales(volume, planes), transforms=transforms,
                                   common=common)

    table = _table(target, ids)
    if table is None:
        ids = np.unique(ids)
    else:  # one row per (slice, object): an object on several slices (prompts mode) is one id
        ids, table = per_id_columns(table.pop("label"), table)
    image_label: dict[str, Any] = {
        "colors": [{"label-value": int(k), "rgba": label_color(int(k))} for k in ids],
        "properties": label_properties(ids, table),
    }
    parent = parent_image(source, key) or image
    if parent is not None:
        image_label["source"] = {"image": os.path.relpath(parent, location(target.where) or ".")}
    return {**multiscale(name), "image-label": image_label}, multiscale("uncertainty")


def parent_transforms(volume: Volume, source: Any, key: str | None,
                      n_axes: int) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]] | None] | None:
    """The coordinate transformations of each level of an OME-Zarr parent image, and of its whole
    multiscale, without the channel axis (labels align with their image: the same scales and
    translations); None without a parent, or when they do not fit the ``n_axes`` output axes."""
    found = _parent_multiscale(source, key)
    if found is None:
        return None
    multiscale = found[1]
    drop = volume.channel_axis

    def without_channel(transforms: Any) -> list[dict[str, Any]] | None:
        kept = []
        for transform in transforms or []:
            transform = dict(transform)
            for field in ("scale", "translation"):
                if field in transform:
                    values = list(transform[field])
                    if drop is not None and len(values) == n_axes + 1:
                        del values[drop]
                    if len(values) != n_axes:
                        return None
                    transform[field] = [float(v) for v in values]
            kept.append(transform)
        return kept

    levels = [without_channel(d.get("coordinateTransformations")) for d in multiscale["datasets"]]
    common = without_channel(multiscale.get("coordinateTransformations"))
    if any(t is None or not t for t in levels) or common is None:
        return None
    return levels, common or None


def volume_scales(volume: Volume, planes: list[tuple[int, ...]]) -> list[list[float]]:
    """The physical pixel size of each level along the output axes (the source's times the sampling)."""
    return ngff_labels.level_scales(volume.scale, [out_shape(volume, plane) for plane in planes])


def _table(target: Target, ids: np.ndarray) -> dict[str, np.ndarray] | None:
    """The per-object table (:mod:`sum_core.batch.objects`): each column it holds, read whole; None
    without a table."""
    if "objects" not in target.group:
        return None
    group = target.group["objects"]
    table = {name: np.asarray(array[...]) for name, array in group.arrays()}
    if "label" not in table or not np.array_equal(table["label"], ids):
        raise target.damaged(["the objects table does not list the ids of the labels"])
    return table


def level_tasks(target: Target, volume: Volume, planes_pending: dict[int, list[str]]) -> dict[str, Any]:
    """The dask tasks of the pending pyramid chunks (``planes_pending``: the keys of the level-0 tasks of
    each plane with pending work): a chunk of level ``l`` of a plane waits for the plane's tasks of
    level ``l - 1``."""
    graph: dict[str, Any] = {}
    for level in range(1, int(target.info["levels"])):
        done = target.flags(level_flags_name(level))
        below = planes_pending
        planes_pending = {}
        for s in range(volume.n_slices):
            keys = [f"sum-hq-level{level}-{s}-{c}" for c in np.nonzero(~done[s])[0].tolist()]
            for key in keys:
                c = int(key.rsplit("-", 1)[1])
                graph[key] = (run_level, target, volume, level, s, c, *below.get(s, ()))
            if keys:
                planes_pending[s] = keys
    return graph


def object_ids(target: Target, mode: str, prompt_ids: list[int]) -> np.ndarray:
    """The object ids of a completed job: its object table's when it has one (any mode; an AIS job
    always does), else ``1..N`` (AMG), the prompts' (prompts mode)."""
    if mode == "ais" or "objects/label" in target.group:
        return np.asarray(target.group["objects/label"][...], dtype=np.int64)
    if mode == "amg" and target.id_stride is None:
        return np.arange(1, int(np.clip(target.group["counts"][...], 0, None).sum()) + 1)
    return np.array(sorted(set(prompt_ids)), dtype=np.int64)


def list_label(image: Path, name: str) -> None:
    """Add ``name`` to the ``labels`` listing of the OME-Zarr image ``image`` (``labels/zarr.json``),
    keeping its other entries and attributes, replaced in one rename; nothing else is written. The
    read-modify-write holds the lock of the ``labels`` folder (:func:`~sum_core.batch.lock.folder_lock`),
    so two jobs adding names at once both end up listed."""
    with folder_lock(image / "labels"):
        _list_label(image / "labels" / "zarr.json", name)


def _list_label(path: Path, name: str) -> None:
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        metadata = {"zarr_format": 3, "node_type": "group", "attributes": {}}
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InvalidInputError(f"target: the labels listing {path} cannot be read ({err}); it is left as it is") from None
    ome = metadata.setdefault("attributes", {}).setdefault("ome", {})
    ome.setdefault("version", "0.5")
    listed = ome.setdefault("labels", [])
    if name in listed:
        return
    listed.append(name)
    handle, temporary = tempfile.mkstemp(prefix=".zarr.json.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(metadata, file, indent=2)
        if path.exists():  # the user's permissions, not mkstemp's 0600
            os.chmod(temporary, path.stat().st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise

