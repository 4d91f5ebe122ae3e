"""Which Labels layers annotate which Image layers, and the bundle of their arrays for training.

A pair is (image layer, labels layer) of the same spatial shape. The interactive widget's
``<image> committed objects`` layer pairs with ``<image>``; any other Labels layer pairs with
the one image of its shape, when there is exactly one. The chosen pairs are saved as one
``.npz`` bundle (``names``, ``rgb``, ``image_<i>``, ``labels_<i>``) that
``python -m training.from_annotations`` turns into a dataset folder: the plugin never
imports ``training`` (an import contract), so the arrays cross as a file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

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


def _full_resolution(layer: Image | Labels) -> np.ndarray:
    return np.asarray(layer.data[0] if layer.multiscale else layer.data)


def write_bundle(pairs: list[Pair], path: Path) -> int:
    """Save the arrays of ``pairs`` as the ``.npz`` bundle at ``path`` (atomically); returns the
    number of pairs with at least one object.

    Raises
    ------
    InvalidInputError
        No pair is chosen, or none has an object.
    """
    if not pairs:
        raise InvalidInputError("annotations: choose at least one labels layer")
    arrays: dict[str, np.ndarray] = {}
    names, rgb, annotated = [], [], 0
    image_names = [image.name for image, _ in pairs]
    for index, (image, labels) in enumerate(pairs):
        label_data = _full_resolution(labels)
        annotated += bool(label_data.any())
        arrays[f"image_{index}"] = _full_resolution(image)
        arrays[f"labels_{index}"] = label_data
        names.append(image.name if image_names.count(image.name) == 1 else labels.name)
        rgb.append(bool(image.rgb))
    if not annotated:
        raise InvalidInputError("annotations: the chosen labels layers have no objects; commit some objects first")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    try:
        np.savez(tmp, names=np.array(names), rgb=np.array(rgb), **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return annotated
