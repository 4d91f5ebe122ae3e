"""The OME-Zarr image a batch job makes for a source that is not one (``format="ome-zarr"``).

A local target path ``T`` becomes a new OME-Zarr (NGFF 0.5) **image** (attribute ``sum_hq_image``
marks it as made by a job; so does, when its ``zarr.json`` is lost or damaged, a folder holding only
level arrays and a ``labels`` folder whose one label image is a target of ours; any other non-empty
folder is refused): ``T/0..L-1`` a copy of the pixels
the model sees (the chosen channels first as a ``c`` axis, then the output axes; level 0 read from
the source chunk by chunk, higher levels nearest-neighbour sampled, the levels of the label image;
one flagged task per level chunk, ``done/image<l>`` in the label image), the ``T/labels`` listing
and the label image ``T/labels/sum-hq`` (:mod:`sum_core.batch.ngff`, ``source.image`` = ``"../.."``),
which is the job's target. The image's ``ome`` attributes are written before the label image
completes, the listing after.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..errors import InvalidInputError
from ..ngff_labels import multiscale_metadata, nearest_indices
from ..tiling import Region
from .ngff import level_chunks, ngff_axes, out_shape, parent_image, volume_scales
from .lock import LOCK_NAME
from .volume import Volume
from .writer import Target, provably_ours, zarr_metadata

__all__ = ["IMAGE_LABEL"]

#: The name of the label image inside the OME-Zarr image made for a non-OME source.
IMAGE_LABEL = "sum-hq"
_IMAGE_ATTR = "sum_hq_image"


def image_folder(source: Any, key: str | None, target: Any) -> Path | None:
    """The OME-Zarr image group to make at ``target`` for a source that is not an OME-Zarr image (a local
    target path), else None; the job's label image is then ``<target>/labels/sum-hq``."""
    if parent_image(source, key) is not None or not isinstance(target, (str, os.PathLike)):
        return None
    return Path(target)


def check_image_folder(folder: Path) -> None:
    """Refuse an image folder that is not new, empty or an image group made by a job (another
    program's data is never written into).

    Raises
    ------
    InvalidInputError
        Naming the folder.
    """
    if not folder.exists():
        return
    if not folder.is_dir():
        raise InvalidInputError(f"target: {folder} is a file; give a folder path for the OME-Zarr image")
    entries = {p.name for p in folder.iterdir()}
    if not entries:
        return
    layout = all(e in ("zarr.json", "labels") or e.isdigit() for e in entries)
    attributes = _attributes(folder)
    if attributes is None and layout and _made_by_a_job(folder):
        return  # its zarr.json was lost or damaged (an interrupted job): create_image writes it again
    if _IMAGE_ATTR not in (attributes or {}) or not layout:
        raise InvalidInputError(
            f"target: {folder} holds data that was not written by a sum-hq batch job; choose a new target "
            "(another program's data is never replaced, also not with overwrite=True / --overwrite)"
        )


def _attributes(folder: Path) -> dict[str, Any] | None:
    """The attributes in ``folder/zarr.json`` of a zarr v3 group, or None when it is missing or unreadable."""
    metadata = zarr_metadata(folder)
    if metadata is None or metadata.get("node_type") != "group":
        return None
    return metadata.get("attributes") or {}


def _made_by_a_job(folder: Path) -> bool:
    """Whether an image folder without readable group metadata is provably a job's: its entries are level
    arrays (``0``, ``1``...) and ``labels``, which holds (besides its listing and lock) only the job's label
    image, a target of ours (:func:`sum_core.batch.writer.provably_ours`)."""
    labels = folder / "labels"
    if not labels.is_dir():
        return False
    inner = {p.name for p in labels.iterdir()} - {"zarr.json", LOCK_NAME}
    if inner != {IMAGE_LABEL} or not provably_ours(labels / IMAGE_LABEL):
        return False
    return all(_is_array(folder / e) for e in _levels(folder))


def _levels(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.isdigit()]


def _is_array(folder: Path) -> bool:
    return (zarr_metadata(folder) or {}).get("node_type") == "array"


def create_image(target: Target, folder: Path, volume: Volume, chunks: tuple[int, ...]) -> zarr.Group:
    """Create the image group's level arrays (``0``, ``1``...: the channels the model sees first, then the
    output axes) and their flags (``done/image<l>`` in the label image), unless they exist as needed.
    Group metadata that was lost or damaged (a folder :func:`check_image_folder` proved ours) is written
    again."""
    if _attributes(folder) is None:
        (folder / "zarr.json").unlink(missing_ok=True)
    group = zarr.open_group(str(folder), mode="a", zarr_format=3)
    if _IMAGE_ATTR not in group.attrs:
        group.attrs[_IMAGE_ATTR] = True
    channels = _channels(volume)
    for level, plane in enumerate(tuple(p) for p in target.info["planes"]):
        shape = (*channels, *out_shape(volume, plane))
        name = str(level)
        if name not in group or group[name].shape != shape or group[name].dtype != volume.planes.dtype:
            group.create_array(name, shape=shape, dtype=volume.planes.dtype, chunks=(*(1 for _ in channels), *chunks),
                               fill_value=0, overwrite=True,
                               dimension_names=(*("c" for _ in channels), *target.labels.metadata.dimension_names))
        grid = level_chunks(plane, chunks[-2:])
        target.create_flags(f"image{level}", (volume.n_slices, grid[0] * grid[1]))
    return group


def _channels(volume: Volume) -> tuple[int, ...]:
    """``(C,)`` when the model sees C channels of each pixel, else ``()``."""
    return tuple(volume.read(0, Region(0, 0, 1, 1)).shape[2:])


def image_tasks(target: Target, image: zarr.Group, volume: Volume) -> dict[str, Any]:
    """The dask tasks of the pending chunks of the image copy (level ``l`` of a plane after its level ``l - 1``)."""
    graph: dict[str, Any] = {}
    below: dict[int, list[str]] = {}
    for level in range(int(target.info["levels"])):
        done = target.flags(f"image{level}")
        pending: dict[int, list[str]] = {}
        for s in range(volume.n_slices):
            for c in np.nonzero(~done[s])[0].tolist():
                key = f"sum-hq-image{level}-{s}-{c}"
                graph[key] = (run_image, target, image, volume, level, s, c, *below.get(s, ()))
                pending.setdefault(s, []).append(key)
        below = pending
    return graph


def run_image(target: Target, image: zarr.Group, volume: Volume, level: int, slice_index: int, chunk_index: int,
              *_below: Any) -> None:
    """Write one chunk of level ``level`` of the image copy: level 0 read from the source (the channels the
    model sees), higher levels by nearest-neighbour sampling of the level below; then set its flag."""
    planes = [tuple(p) for p in target.info["planes"]]
    plane = planes[level]
    tile = image["0"].chunks[-2:]
    row, col = divmod(chunk_index, level_chunks(plane, tile)[1])
    region = Region(row * tile[0], col * tile[1], min((row + 1) * tile[0], plane[0]),
                    min((col + 1) * tile[1], plane[1]))
    channels = _channels(volume)
    index = (*(slice(None) for _ in channels), *volume.out_index(slice_index, region))
    if level == 0:
        data = volume.read(slice_index, region)
        data = np.moveaxis(data, -1, 0) if channels else data
    else:
        below = planes[level - 1]
        rows = nearest_indices(region.row0, region.row1, below[0], plane[0])
        cols = nearest_indices(region.col0, region.col1, below[1], plane[1])
        slices = () if volume.out_slice_axis is None else (slice_index,)
        data = image[str(level - 1)].oindex[(*(slice(None) for _ in channels), *slices, rows, cols)]
    image[str(level)][index] = data
    target.mark_done(f"image{level}", (slice_index, chunk_index))


def finish_image(image: zarr.Group, volume: Volume, planes: list[tuple[int, ...]]) -> None:
    """Write the image group's ``ome`` attributes (axes: a channel axis first when the model sees channels)."""
    axes = ngff_axes(volume)
    scales = volume_scales(volume, planes)
    if _channels(volume):
        axes = [{"name": "c", "type": "channel"}, *axes]
        scales = [[1.0, *scale] for scale in scales]
    image.attrs.update({"ome": multiscale_metadata("image", axes, scales)})
