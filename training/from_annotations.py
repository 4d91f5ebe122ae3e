"""Annotated images -> a training dataset folder: ``python -m training.from_annotations``.

The napari plugin's fine-tuning widget hands over the committed objects of the open
images as one ``.npz`` bundle (the plugin and ``training`` never import each other, so
the arrays cross as a file): for every image ``i`` the arrays ``image_<i>`` and
``labels_<i>`` and one ``names`` array of the image names. This module turns them into
the documented dataset layout (``docs/training-data.md``, read by
:func:`training.dataset.scan_dataset`)::

    ROOT/images/<stem>.tif     the 2D image (gray, or RGB(A) as its last axis)
    ROOT/masks/<stem>.tif      its instance labels (0 = background), uint32
    ROOT/unlabeled/<stem>.tif  images to pseudo-label (only if the bundle asks for them)
    ROOT/annotations.json      marker and list of what was written (``"written_by"``)

A 2D image with objects gives one pair (stem: its name); a 3D stack gives one pair per
slice that has objects (stem ``<name>_z<index>``). Slices and images without objects are
skipped. The bundle may also carry ``unlabeled_names`` and ``unlabeled_<j>`` (2D images
without committed objects, written to ``unlabeled/`` for ``training.pseudolabel``) and
``pseudo_annotated`` (true: every annotated plane is also written to ``unlabeled/``, so
that the objects the user did not commit get pseudo-labels, see ``--exclude-masks`` of
``training.pseudolabel``). The folder is written next to ``ROOT`` under a temporary name and
renamed into place only when complete, so an interrupted export leaves no half folder; an existing
``ROOT`` is replaced only if it is an export of this module (it has the marker), never
a folder of the user's.

Example::

    python -m training.from_annotations annotations.npz runs/cells/annotations
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sum_core.errors import InvalidInputError, SumError
from sum_core.imageio import write_images

MARKER = "annotations.json"
WRITTEN_BY = "training.from_annotations"
#: The dataset folder's images to pseudo-label (``training.dataset.scan_dataset``'s ``unlabeled/``).
UNLABELED = "unlabeled"


def _safe_stem(name: str) -> str:
    """A file-name-safe stem for a layer name (anything but letters, digits, ``-`` ``_`` ``.`` -> ``_``)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return stem or "image"


def annotated_planes(
    name: str, image: np.ndarray, labels: np.ndarray, rgb: bool = False
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """The 2D (stem, image, labels) pairs of one annotated image that have objects.

    Parameters
    ----------
    name : str
        The image's name (its napari layer name); stems derive from it.
    image : ndarray
        ``(Y, X)`` or ``(Z, Y, X)``, with a trailing channel axis if ``rgb``.
    labels : ndarray
        Instance labels of the image's spatial shape (0 = background).
    rgb : bool
        Whether the last axis of ``image`` is a colour axis.

    Yields
    ------
    (str, ndarray, ndarray)
        Stem, 2D image and 2D uint32 labels of each plane with at least one object
        (a 2D image: stem ``name``; a stack: ``<name>_z<index>``, index zero-padded).

    Raises
    ------
    InvalidInputError
        If the shapes do not match, the image is neither 2D nor 3D, or a label is
        negative or not an integer.
    """
    image, labels = np.asarray(image), np.asarray(labels)
    spatial = image.shape[:-1] if rgb else image.shape
    if labels.shape != spatial:
        raise InvalidInputError(
            f"{name}: labels of shape {labels.shape} do not match the image's shape {spatial}"
        )
    if labels.ndim not in (2, 3):
        raise InvalidInputError(f"{name}: a 2D image or a 3D stack is needed, got shape {spatial}")
    if labels.dtype.kind not in "biu":
        raise InvalidInputError(f"{name}: labels must be integers, got dtype {labels.dtype}")
    if labels.dtype.kind == "i" and labels.size and labels.min() < 0:
        raise InvalidInputError(f"{name}: labels must be >= 0")
    stem = _safe_stem(name)
    if labels.ndim == 2:
        if labels.any():
            yield stem, image, labels.astype(np.uint32)
        return
    width = len(str(labels.shape[0] - 1))
    for index in range(labels.shape[0]):
        plane = labels[index]
        if plane.any():
            yield f"{stem}_z{index:0{width}d}", image[index], plane.astype(np.uint32)


def is_export(root: str | os.PathLike) -> bool:
    """Whether ``root`` is a folder written by :func:`write_training_folder` (it has the marker)."""
    marker = Path(root) / MARKER
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("written_by") == WRITTEN_BY
    except (OSError, ValueError, AttributeError):
        return False


def _check_target(root: Path) -> None:
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        raise InvalidInputError(f"output: {root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()) and not is_export(root):
        raise InvalidInputError(
            f"output: {root} is a folder with files that are not an annotation export "
            f"(no {MARKER} of {WRITTEN_BY}); choose a new or empty folder"
        )
    if root.is_dir() and is_export(root):  # replaced whole: only when it holds nothing but what it lists
        marker = json.loads((root / MARKER).read_text(encoding="utf-8"))
        samples, unlabeled = marker.get("samples", []), marker.get(UNLABELED, [])
        listed = {MARKER, "images", "masks", UNLABELED}
        listed |= {f"{d}/{s}.tif" for s in samples for d in ("images", "masks")}
        listed |= {f"{UNLABELED}/{s}.tif" for s in unlabeled}
        extra = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.relative_to(root).as_posix() not in listed)
        if extra:
            raise InvalidInputError(
                f"output: {root} is an earlier annotation export with files it did not write ({', '.join(extra[:3])}"
                f"{', ...' if len(extra) > 3 else ''}); they would be lost: move them or choose another folder"
            )


def write_training_folder(
    root: str | os.PathLike,
    pairs: Iterable[tuple[str, np.ndarray, np.ndarray]],
    unlabeled: Iterable[tuple[str, np.ndarray]] = (),
    annotated_unlabeled: bool = False,
) -> dict:
    """Write (stem, 2D image, 2D labels) pairs as a dataset folder, atomically.

    Parameters
    ----------
    root : path-like
        The dataset folder. It may be missing, empty, or an earlier export (replaced
        whole); any other existing folder is refused before anything is written.
    pairs : iterable of (str, ndarray, ndarray)
        As yielded by :func:`annotated_planes`; stems must be unique.
    unlabeled : iterable of (str, ndarray)
        2D images without annotations, written to ``unlabeled/<stem>.tif`` (to pseudo-label).
    annotated_unlabeled : bool
        Also write every pair's image to ``unlabeled/`` (its unannotated rest gets pseudo-labels).

    Returns
    -------
    dict
        The marker's content: ``written_by``, ``samples`` (the stems), ``objects``
        (instance count per stem) and ``unlabeled`` (the stems in ``unlabeled/``).

    Raises
    ------
    InvalidInputError
        ``root`` is not ours, no pair has an object, or two pairs (or two unlabeled
        images) share a stem.
    """
    root = Path(root)
    _check_target(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    try:
        (staging / "images").mkdir()
        (staging / "masks").mkdir()
        objects: dict[str, int] = {}
        for stem, image, labels in pairs:
            if stem in objects:
                raise InvalidInputError(f"two annotated planes share the name {stem!r}; rename one image layer")
            objects[stem] = int(np.unique(labels[labels != 0]).size)
            write_images([(staging / "images" / f"{stem}.tif", image), (staging / "masks" / f"{stem}.tif", labels)])
            if annotated_unlabeled:
                _write_unlabeled(staging, stem, image)
        if not objects:
            raise InvalidInputError("no annotated objects: commit objects on the chosen images first")
        to_label = list(objects) if annotated_unlabeled else []
        for stem, image in unlabeled:
            if stem in objects or stem in to_label:
                raise InvalidInputError(f"two images share the name {stem!r}; rename one image layer")
            _write_unlabeled(staging, stem, image)
            to_label.append(stem)
        manifest = {"written_by": WRITTEN_BY, "samples": list(objects), "objects": objects, UNLABELED: to_label}
        (staging / MARKER).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        _check_target(root)  # unchanged since the first check?
        old = None
        if root.exists():
            old = root.with_name(f".{root.name}.{os.getpid()}.old")
            os.replace(root, old)
        os.replace(staging, root)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return manifest


def _write_unlabeled(staging: Path, stem: str, image: np.ndarray) -> None:
    image = np.asarray(image)
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4))):
        raise InvalidInputError(f"{stem}: an image to pseudo-label must be 2D (gray or RGB), got shape {image.shape}")
    (staging / UNLABELED).mkdir(exist_ok=True)
    write_images([(staging / UNLABELED / f"{stem}.tif", image)])


def _open_bundle(path: Path) -> Any:
    """The plugin ``.npz`` bundle at ``path`` (an ``NpzFile``, to use in a ``with``)."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"bundle: {path} cannot be read as an .npz file: {exc}") from exc


def write_bundle_folder(bundle: str | os.PathLike, root: str | os.PathLike) -> dict:
    """Write a plugin ``.npz`` bundle as the dataset folder ``root`` (see the module docstring);
    returns the marker's content (:func:`write_training_folder`)."""
    path = Path(bundle)
    with _open_bundle(path) as data:
        names = data["unlabeled_names"] if "unlabeled_names" in data.files else []
        unlabeled = ((_safe_stem(str(name)), data[f"unlabeled_{j}"]) for j, name in enumerate(names))
        also = bool(data["pseudo_annotated"]) if "pseudo_annotated" in data.files else False
        return write_training_folder(root, bundle_planes(path), unlabeled, also)


def bundle_planes(bundle: str | os.PathLike) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """The annotated planes of a plugin ``.npz`` bundle (see the module docstring)."""
    path = Path(bundle)
    with _open_bundle(path) as data:
        if "names" not in data.files:
            raise InvalidInputError(f"bundle: {path} has no 'names' array")
        rgb = data["rgb"] if "rgb" in data.files else np.zeros(len(data["names"]), bool)
        for index, name in enumerate(data["names"]):
            yield from annotated_planes(
                str(name), data[f"image_{index}"], data[f"labels_{index}"], bool(rgb[index])
            )


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m training.from_annotations BUNDLE ROOT``; prints the marker as JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m training.from_annotations",
        description="Write the annotated planes of a napari bundle (.npz) as a training dataset folder.",
    )
    parser.add_argument(
        "bundle", type=Path,
        help=".npz with names, image_<i>, labels_<i> (and rgb, unlabeled_names, unlabeled_<j>, pseudo_annotated)",
    )
    parser.add_argument("output", type=Path, help="dataset folder to write (new, empty, or an earlier export)")
    args = parser.parse_args(argv)
    try:
        manifest = write_bundle_folder(args.bundle, args.output)
    except SumError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
