"""Save and reload the committed objects of an image (and the prompts that made them).

The file is a zarr v3 group next to the image, ``<image file name>.sum-annotations.zarr`` (the whole
name: ``cell.tif`` and ``cell.png`` get files of their own):

* ``labels``: the committed objects, the image's spatial shape, uint32 ids (0 background);
* ``prompts/points``: float64 ``(N, 2 + ndim)``: commit number, coordinates, label (1 positive, 0 negative);
* ``prompts/boxes``: float64 ``(M, 1 + 2 ndim)``: commit number, lowest corner, highest corner;
* ``objects/<column>`` (files written since the committed objects have scores; older files have none and
  load as before): the committed objects' table, one array per numeric column of the committed layer's
  ``features`` (:mod:`napari_sum_hq._interactive_scores`: id, slice, area, predicted IoU, stability,
  uncertainties, bounding box), in the group attribute ``object_columns``' order, and ``objects_current``
  (whether the table described the labels when saved);
* group attributes: the ownership marker :data:`MARKER` (the format number), the image name,
  ``image_identity`` (the image's source path, spatial shape and dtype, :class:`ImageIdentity`) and
  ``commits`` (the ids of every commit, in order).

A save or a load for an image whose identity differs from the file's is refused
(:class:`~sum_core.errors.InvalidInputError` naming both images; nothing is written).

It is written whole under a temporary name in the same folder and renamed over the previous file
(:func:`sum_core.export.target.staged`), so a crash while saving leaves the last complete save
(put back by :func:`sum_core.export.target.recover` before the next load or save). An
existing path is replaced only when its group attributes carry :data:`MARKER`; anything else is
never written to or deleted. Plain zarr rather than OME-Zarr labels: napari and any zarr reader
open it (``zarr.open_group(path)["labels"]``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sum_core.errors import InvalidInputError

#: Group attribute that marks a file as ours (its value: the format number).
MARKER = "napari_sum_hq_annotations"
FORMAT = 1
SUFFIX = ".sum-annotations.zarr"
_OURS = ("zarr.json", "labels", "prompts", "objects")
_COLUMN_NAME = re.compile(r"^[A-Za-z0-9_]+$")


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


@dataclass(frozen=True)
class ImageIdentity:
    """What an annotation file was made for: the image's name, source file, spatial shape and dtype.

    ``None`` fields are unknown (an image without a file, or a file written before identities were
    stored) and never conflict.
    """

    name: str
    source: str | None = None
    shape: tuple[int, ...] | None = None
    dtype: str | None = None

    @classmethod
    def of_layer(cls, layer, shape: tuple[int, ...]) -> ImageIdentity:
        """The identity of a napari image layer of spatial ``shape``."""
        source = getattr(getattr(layer, "source", None), "path", None)
        return cls(
            str(layer.name),
            str(Path(source).absolute()) if source else None,
            tuple(int(n) for n in shape),
            np.dtype(layer.dtype).name,
        )

    @classmethod
    def from_attrs(cls, attrs: dict) -> ImageIdentity:
        """The identity stored in a file's group attributes (unknown fields: ``None``)."""
        stored = attrs.get("image_identity")
        stored = stored if isinstance(stored, dict) else {}
        shape = stored.get("shape")
        return cls(
            str(attrs.get("image", "")),
            stored.get("source"),
            None if shape is None else tuple(int(n) for n in shape),
            stored.get("dtype"),
        )

    def to_attrs(self) -> dict:
        """The group attributes that store this identity."""
        shape = None if self.shape is None else list(self.shape)
        return {"image": self.name, "image_identity": {"source": self.source, "shape": shape, "dtype": self.dtype}}

    def differs(self, other: ImageIdentity) -> bool:
        """Whether a field known to both identities differs."""
        pairs = ((self.source, other.source), (self.shape, other.shape), (self.dtype, other.dtype))
        return any(a is not None and b is not None and a != b for a, b in pairs)

    def __str__(self) -> str:
        where = self.source or f"'{self.name}'"
        shape = "?" if self.shape is None else tuple(self.shape)
        return f"{where} (shape {shape}, dtype {self.dtype or '?'})"


def default_path(image) -> Path | None:
    """``<file name>.sum-annotations.zarr`` beside the file the napari image layer was opened from (None: no file)."""
    source = getattr(getattr(image, "source", None), "path", None)
    if not source:
        return None
    path = Path(source)
    return path.with_name(path.name + SUFFIX)


def _attributes(path: Path) -> dict | None:
    """The group attributes of an annotation file of ours (None: not ours, or unreadable)."""
    try:
        meta = json.loads((path / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    return attrs if isinstance(attrs, dict) and attrs.get(MARKER) == FORMAT else None


def is_ours(path: Path) -> bool:
    """Whether ``path`` is an annotation file of ours (its zarr.json carries :data:`MARKER`)."""
    return _attributes(path) is not None


def _check_identity(target: Path, attrs: dict, image: ImageIdentity, action: str) -> None:
    stored = ImageIdentity.from_attrs(attrs)
    if stored.differs(image):
        raise InvalidInputError(
            f"annotation file: {target} belongs to the image {stored}, not to {image}; not {action}: "
            "choose another annotation file"
        )


def save_annotations(
    path: str | os.PathLike,
    labels: np.ndarray,
    prompts: CommitPrompts,
    image: ImageIdentity | str,
    objects: Mapping[str, np.ndarray] | None = None,
    objects_current: bool = False,
) -> Path:
    """Write the committed objects and their prompts to ``path``, atomically.

    ``image`` is the annotated image (a bare name: only its shape, that of ``labels``, is known);
    ``objects`` the committed objects' table by column (its numeric columns named ``[A-Za-z0-9_]+`` are
    kept) and ``objects_current`` whether it describes ``labels`` (see the module docstring).

    Raises
    ------
    InvalidInputError
        ``path`` exists and is not an annotation file of ours, or belongs to another image, or its
        folder is missing or read-only.
    """
    import zarr

    from sum_core.export.target import check_target, recover, staged

    target = Path(path)
    recover(target)  # a save killed between its renames: the previous file comes back first
    labels = np.asarray(labels)
    if not isinstance(image, ImageIdentity):
        image = ImageIdentity(str(image), shape=labels.shape)
    if target.exists():
        attrs = _attributes(target)
        if attrs is None:
            raise InvalidInputError(
                f"annotation file: {target} exists and is not a napari-sum-hq annotation file; it is kept: "
                "choose another path"
            )
        _check_identity(target, attrs, image, "saved")
    check_target(target, "annotation file", folder=True, overwrite=True, ours=_OURS)
    with staged(target, folder=True, ours=_OURS) as temp:
        group = zarr.open_group(temp, mode="w", zarr_format=3)
        group.attrs.update({MARKER: FORMAT, **image.to_attrs(), "commits": prompts.commits})
        chunks = tuple(min(n, 1 if i < labels.ndim - 2 else 1024) for i, n in enumerate(labels.shape))
        group.create_array("labels", data=labels.astype(np.uint32), chunks=chunks)
        group.create_array("prompts/points", data=prompts.points.astype(np.float64))
        group.create_array("prompts/boxes", data=prompts.boxes.astype(np.float64))
        columns = [] if objects is None else [
            name for name, values in objects.items()
            if _COLUMN_NAME.match(str(name)) and np.asarray(values).dtype.kind in "biuf"
        ]  # fmt: skip
        for name in columns:
            group.create_array(f"objects/{name}", data=np.asarray(objects[name]))
        if objects is not None:
            group.attrs.update({"object_columns": columns, "objects_current": bool(objects_current)})
    return target


def load_objects(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], bool] | None:
    """The committed objects' table of an annotation file and whether it was current when saved; None for a
    file without one (written before tables were saved, or by a widget that had none).

    Raises
    ------
    InvalidInputError
        Not an annotation file of ours, or one that cannot be read.
    """
    import zarr

    target = Path(path)
    attrs = _attributes(target)
    if attrs is None:
        raise InvalidInputError(f"annotation file: {target} is not a napari-sum-hq annotation file")
    columns = attrs.get("object_columns")
    if not isinstance(columns, list):
        return None
    try:
        group = zarr.open_group(target, mode="r")
        table = {str(name): np.asarray(group[f"objects/{name}"][...]) for name in columns}
    except Exception as exc:  # noqa: BLE001 - any read failure: the file is unusable as it is
        raise InvalidInputError(
            f"annotation file: {target} could not be read ({type(exc).__name__}: {exc}); try loading it again"
        ) from exc
    return table, bool(attrs.get("objects_current", False))


def load_annotations(
    path: str | os.PathLike, shape: tuple[int, ...], image: ImageIdentity | None = None
) -> tuple[np.ndarray, CommitPrompts]:
    """Read ``(labels, prompts)`` from an annotation file made for an image of spatial ``shape``.

    ``image``: the image to load into; a file stored for an image of another identity is refused.

    Raises
    ------
    InvalidInputError
        Not an annotation file of ours, one of another image or of labels of another shape, or a
        file that cannot be read (e.g. replaced by another process while reading).
    """
    import zarr

    from sum_core.export.target import recover

    target = Path(path)
    recover(target)  # a save killed between its renames: the previous file comes back
    attrs = _attributes(target)
    if attrs is None:
        raise InvalidInputError(f"annotation file: {target} is not a napari-sum-hq annotation file")
    if image is not None:
        _check_identity(target, attrs, image, "loaded")
    try:
        group = zarr.open_group(target, mode="r")
        labels = np.asarray(group["labels"][...])
        if labels.shape != tuple(shape):
            raise InvalidInputError(
                f"annotation file: {target} holds labels of shape {labels.shape}, the image is {tuple(shape)}"
            )
        ndim = len(shape)
        points = np.asarray(group["prompts/points"][...]).reshape(-1, 2 + ndim)
        boxes = np.asarray(group["prompts/boxes"][...]).reshape(-1, 1 + 2 * ndim)
        commits = [[int(i) for i in ids] for ids in group.attrs.get("commits", [])]
    except InvalidInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any read failure: the file is unusable as it is
        raise InvalidInputError(
            f"annotation file: {target} could not be read ({type(exc).__name__}: {exc}); try loading it again"
        ) from exc
    return labels, CommitPrompts(ndim, points, boxes, commits)
