"""Save and reload the committed objects of an image (and the prompts that made them).

The file is a zarr v3 group next to the image, ``<image file stem>.sum-annotations.zarr``:

* ``labels``: the committed objects, the image's spatial shape, uint32 ids (0 background);
* ``prompts/points``: float64 ``(N, 2 + ndim)``: commit number, coordinates, label (1 positive, 0 negative);
* ``prompts/boxes``: float64 ``(M, 1 + 2 ndim)``: commit number, lowest corner, highest corner;
* group attributes: the ownership marker :data:`MARKER` (the format number), the image name and
  ``commits`` (the ids of every commit, in order).

It is written whole under a temporary name in the same folder and renamed over the previous file
(:func:`sum_core.export.target.staged`), so a crash while saving leaves the last complete save. An
existing path is replaced only when its group attributes carry :data:`MARKER`; anything else is
never written to or deleted. Plain zarr rather than OME-Zarr labels: napari and any zarr reader
open it (``zarr.open_group(path)["labels"]``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sum_core.errors import InvalidInputError

#: Group attribute that marks a file as ours (its value: the format number).
MARKER = "napari_sum_hq_annotations"
FORMAT = 1
SUFFIX = ".sum-annotations.zarr"
_OURS = ("zarr.json", "labels", "prompts")


@dataclass
class CommitPrompts:
    """The prompts of the commits of one image, in the file's layout (see the module docstring)."""

    ndim: int
    points: np.ndarray = None  # type: ignore[assignment]
    boxes: np.ndarray = None  # type: ignore[assignment]
    commits: list[list[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.points is None:
            self.points = np.empty((0, 2 + self.ndim))
        if self.boxes is None:
            self.boxes = np.empty((0, 1 + 2 * self.ndim))

    def add(self, ids: list[int], points: np.ndarray, labels: np.ndarray, boxes: list[np.ndarray]) -> None:
        """Record one commit: its object ids, its points (``(N, ndim)``, labels) and box shapes (vertices)."""
        self.commits.append([int(i) for i in ids])
        number = len(self.commits)
        rows = np.column_stack([np.full(len(points), number), np.reshape(points, (-1, self.ndim)), labels])
        corners = [np.concatenate([[number], np.min(b, axis=0), np.max(b, axis=0)]) for b in boxes]
        self.points = np.concatenate([self.points, rows.reshape(-1, 2 + self.ndim)])
        self.boxes = np.concatenate([self.boxes, np.reshape(corners, (-1, 1 + 2 * self.ndim))])


    def drop_last(self) -> None:
        """Forget the last commit (undone)."""
        if self.commits:
            number = len(self.commits)
            self.commits.pop()
            self.points = self.points[self.points[:, 0] != number]
            self.boxes = self.boxes[self.boxes[:, 0] != number]


def default_path(image) -> Path | None:
    """``<stem>.sum-annotations.zarr`` beside the file the napari image layer was opened from (None: no file)."""
    source = getattr(getattr(image, "source", None), "path", None)
    if not source:
        return None
    path = Path(source)
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return path.with_name(stem + SUFFIX)


def is_ours(path: Path) -> bool:
    """Whether ``path`` is an annotation file of ours (its zarr.json carries :data:`MARKER`)."""
    try:
        meta = json.loads((path / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    return isinstance(attrs, dict) and attrs.get(MARKER) == FORMAT


def save_annotations(path: str | os.PathLike, labels: np.ndarray, prompts: CommitPrompts, image_name: str) -> Path:
    """Write the committed objects and their prompts to ``path``, atomically.

    Raises
    ------
    InvalidInputError
        ``path`` exists and is not an annotation file of ours, or its folder is missing or read-only.
    """
    import zarr

    from sum_core.export.target import check_target, staged

    target = Path(path)
    if target.exists() and not is_ours(target):
        raise InvalidInputError(
            f"annotation file: {target} exists and is not a napari-sum-hq annotation file; it is kept: "
            "choose another path"
        )
    check_target(target, "annotation file", folder=True, overwrite=True, ours=_OURS)
    labels = np.asarray(labels)
    with staged(target, folder=True, ours=_OURS) as temp:
        group = zarr.open_group(temp, mode="w", zarr_format=3)
        group.attrs.update({MARKER: FORMAT, "image": image_name, "commits": prompts.commits})
        chunks = tuple(min(n, 1 if i < labels.ndim - 2 else 1024) for i, n in enumerate(labels.shape))
        group.create_array("labels", data=labels.astype(np.uint32), chunks=chunks)
        group.create_array("prompts/points", data=prompts.points.astype(np.float64))
        group.create_array("prompts/boxes", data=prompts.boxes.astype(np.float64))
    return target


def load_annotations(path: str | os.PathLike, shape: tuple[int, ...]) -> tuple[np.ndarray, CommitPrompts]:
    """Read ``(labels, prompts)`` from an annotation file made for an image of spatial ``shape``.

    Raises
    ------
    InvalidInputError
        Not an annotation file of ours, or labels of another shape.
    """
    import zarr

    target = Path(path)
    if not is_ours(target):
        raise InvalidInputError(f"annotation file: {target} is not a napari-sum-hq annotation file")
    group = zarr.open_group(target, mode="r")
    labels = np.asarray(group["labels"][...])
    if labels.shape != tuple(shape):
        raise InvalidInputError(
            f"annotation file: {target} holds labels of shape {labels.shape}, the image is {tuple(shape)}"
        )
    ndim = len(shape)
    prompts = CommitPrompts(
        ndim,
        np.asarray(group["prompts/points"][...]).reshape(-1, 2 + ndim),
        np.asarray(group["prompts/boxes"][...]).reshape(-1, 1 + 2 * ndim),
        [list(ids) for ids in group.attrs.get("commits", [])],
    )
    return labels, prompts
