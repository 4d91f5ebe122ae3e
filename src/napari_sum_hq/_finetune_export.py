"""Which Labels layers annotate which Image layers, and the bundle of their arrays for training.

A pair is (image layer, labels layer) of the same spatial shape. The interactive widget's
``<image> committed objects`` layer pairs with ``<image>``; any other Labels layer pairs with
the one image of its shape, when there is exactly one. The chosen pairs (and, to pseudo-label,
the 2D images without objects) are saved as one ``.npz`` bundle (``names``, ``rgb``,
``image_<i>``, ``labels_<i>``; ``unlabeled_names``, ``unlabeled_<j>``; ``pseudo_annotated``)
that ``python -m training.from_annotations`` turns into a dataset folder: the plugin never
imports ``training`` (an import contract), so the arrays cross as a file.

Writing takes seconds for large images, so it runs in a worker thread: :func:`snapshot`
(GUI thread) copies the labels layers' in-memory arrays (what the user paints: some tens of
milliseconds for several 2048 x 2048 labels) and :func:`write_bundle` (worker) writes that
copy, so edits made meanwhile do not reach the file. Image arrays, which napari's tools do not
edit, and lazy labels (dask, zarr) are not copied: the worker reads them.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from sum_core.errors import InvalidInputError

from ._layers import COMMITTED_NAME, spatial_shape

if TYPE_CHECKING:
    import napari

Pair = tuple[Image, Labels]


def _labels_shape(layer: Labels) -> tuple[int, ...]:
    data = layer.data[0] if layer.multiscale else layer.data
    return tuple(data.shape)


def annotation_pairs(viewer: napari.viewer.Viewer) -> list[Pair]:
    """The (image, labels) pairs of the viewer's layers, in layer order (see the module docstring)."""
    images = [layer for layer in viewer.layers if isinstance(layer, Image)]
    pairs: list[Pair] = []
    for labels in viewer.layers:
        if not isinstance(labels, Labels):
            continue
        shape = _labels_shape(labels)
        same = [image for image in images if spatial_shape(image) == shape]
        named = [image for image in same if labels.name == f"{image.name} {COMMITTED_NAME}"]
        if named:
            pairs.append((named[0], labels))
        elif len(same) == 1:
            pairs.append((same[0], labels))
    return pairs


def pair_name(pair: Pair) -> str:
    """How the widget lists a pair: ``labels -> image``."""
    image, labels = pair
    return f"{labels.name} \N{RIGHTWARDS ARROW} {image.name}"


def _full_resolution(layer: Image | Labels) -> Any:
    return layer.data[0] if layer.multiscale else layer.data


def _frozen(data: Any) -> Any:
    """A copy of an in-memory labels array (so later edits do not reach it); a lazy array as it is."""
    return np.array(data, copy=True) if isinstance(data, np.ndarray) else data


#: Suffix of the uncertainty Image layers the plugin adds (never pseudo-labelled).
UNCERTAINTY_SUFFIX = " uncertainty"


@dataclass
class Snapshot:
    """What :func:`write_bundle` writes, taken on the GUI thread by :func:`snapshot`.

    Attributes
    ----------
    pairs : list of (str, str, array, array, bool)
        Image name, labels name, image, labels, whether the image is RGB.
    unlabeled : list of (str, array)
        2D images of the viewer in no chosen pair (to pseudo-label): name, image.
    pseudo_unannotated : bool
        Pseudo-label the images without objects: :attr:`unlabeled` and the 2D images of
        chosen pairs whose labels are empty.
    pseudo_annotated : bool
        Pseudo-label the annotated images too (their objects not committed).
    """

    pairs: list[tuple[str, str, Any, Any, bool]] = field(default_factory=list)
    unlabeled: list[tuple[str, Any]] = field(default_factory=list)
    pseudo_unannotated: bool = False
    pseudo_annotated: bool = False


def _is_2d_image(image: Image) -> bool:
    return len(spatial_shape(image)) == 2


def snapshot(
    pairs: list[Pair], viewer: napari.viewer.Viewer, pseudo_unannotated: bool = False, pseudo_annotated: bool = False
) -> Snapshot:
    """Take what the bundle needs from ``pairs`` (GUI thread: the labels are copied, the images referenced).

    Parameters
    ----------
    pairs : list of Pair
        The chosen (image, labels) pairs.
    viewer : napari.viewer.Viewer
        The viewer of the layers.
    pseudo_unannotated : bool
        Pseudo-label images without objects: the viewer's 2D Image layers in no chosen pair
        (not uncertainty layers, nor multiscale slides, which would be labelled as one
        window resized to the encoder) and the 2D images of chosen pairs whose labels turn
        out empty (decided by :func:`write_bundle`).
    pseudo_annotated : bool
        Pseudo-label the annotated images too.

    Raises
    ------
    InvalidInputError
        No pair is chosen.
    """
    if not pairs:
        raise InvalidInputError("annotations: choose at least one labels layer")
    image_names = [image.name for image, _ in pairs]
    taken = Snapshot(pseudo_unannotated=pseudo_unannotated, pseudo_annotated=pseudo_annotated)
    for image, labels in pairs:
        name = image.name if image_names.count(image.name) == 1 else labels.name
        taken.pairs.append(
            (name, labels.name, _full_resolution(image), _frozen(_full_resolution(labels)), bool(image.rgb))
        )
    if pseudo_unannotated:
        for layer in viewer.layers:
            if (isinstance(layer, Image) and layer.name not in image_names and _is_2d_image(layer)
                    and not layer.multiscale and not layer.name.endswith(UNCERTAINTY_SUFFIX)):
                taken.unlabeled.append((layer.name, _full_resolution(layer)))
    return taken


def _write_npz(path: Path, arrays: dict[str, Any], progress: Callable[[int, int], None] | None) -> None:
    """``numpy.savez`` one array at a time (uncompressed, as savez), reporting (bytes, all bytes)."""
    total = sum(_nbytes(array) for array in arrays.values())
    done = 0
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, value in arrays.items():
            array = np.asarray(value)
            with archive.open(f"{name}.npy", "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, array, allow_pickle=False)
            done += array.nbytes
            if progress is not None:
                progress(done, total)


def _nbytes(array: Any) -> int:
    return int(np.prod(array.shape)) * np.dtype(array.dtype).itemsize


def write_bundle(
    taken: Snapshot, path: Path, progress: Callable[[int, int], None] | None = None
) -> tuple[int, int]:
    """Save a :class:`Snapshot` as the ``.npz`` bundle at ``path`` (atomically; worker thread).

    Parameters
    ----------
    taken : Snapshot
    path : Path
    progress : callable, optional
        Called with (bytes written, all bytes) after each array; it may raise to stop
        (the partial file is removed).

    Returns
    -------
    (int, int)
        The number of pairs with at least one object, and of images to pseudo-label.

    Raises
    ------
    InvalidInputError
        No pair has an object.
    """
    arrays: dict[str, Any] = {}
    names, rgb, unlabeled = [], [], []
    for name, _, image, labels, is_rgb in taken.pairs:
        labels = np.asarray(labels)
        if labels.any():
            index = len(names)
            arrays[f"image_{index}"], arrays[f"labels_{index}"] = image, labels
            names.append(name)
            rgb.append(is_rgb)
        elif taken.pseudo_unannotated and np.ndim(image) == 2 + is_rgb:
            unlabeled.append((name, image))
    if not names:
        raise InvalidInputError("annotations: the chosen labels layers have no objects; commit some objects first")
    unlabeled += taken.unlabeled
    for index, (_, image) in enumerate(unlabeled):
        arrays[f"unlabeled_{index}"] = image
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    meta = {
        "names": np.array(names), "rgb": np.array(rgb, bool),
        "unlabeled_names": np.array([name for name, _ in unlabeled], str),
        "pseudo_annotated": np.array(taken.pseudo_annotated),
    }
    try:
        _write_npz(tmp, meta | arrays, progress)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return len(names), len(unlabeled) + (len(names) if taken.pseudo_annotated else 0)
