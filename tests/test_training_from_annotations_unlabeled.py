"""training.from_annotations: a bundle's images without objects (and, with pseudo_annotated, the annotated
ones) go to unlabeled/ for training.pseudolabel; an export with them is replaced whole by the next."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sum_core.errors import InvalidInputError
from sum_core.imageio import read_image
from training import from_annotations
from training.dataset import scan_dataset


def _bundle(path, pseudo_annotated: bool, unlabeled_names=("other image",)):
    image = np.arange(30 * 40, dtype=np.uint16).reshape(30, 40)
    labels = np.zeros((30, 40), np.int32)
    labels[5:10, 5:12] = 4
    extra = {f"unlabeled_{j}": image[::-1] + j for j in range(len(unlabeled_names))}
    np.savez(path, names=np.array(["cells"]), rgb=np.array([False]), image_0=image, labels_0=labels,
             unlabeled_names=np.array(unlabeled_names, str), pseudo_annotated=np.array(pseudo_annotated), **extra)
    return image


@pytest.mark.parametrize("pseudo_annotated", [False, True])
def test_unlabeled_images_are_written_and_listed(tmp_path, pseudo_annotated):
    image = _bundle(tmp_path / "b.npz", pseudo_annotated)
    root = tmp_path / "data"
    manifest = from_annotations.write_bundle_folder(tmp_path / "b.npz", root)

    expected = ["cells", "other_image"] if pseudo_annotated else ["other_image"]
    assert manifest["unlabeled"] == expected
    assert sorted(p.name for p in (root / "unlabeled").iterdir()) == [f"{s}.tif" for s in expected]
    np.testing.assert_array_equal(read_image(root / "unlabeled" / "other_image.tif"), image[::-1])
    if pseudo_annotated:
        np.testing.assert_array_equal(read_image(root / "unlabeled" / "cells.tif"), image)
    split = scan_dataset(root, val_fraction=0.0)
    assert [s.image.name for s in split.train] == ["cells.tif"]
    assert sorted(p.name for p in split.unlabeled) == [f"{s}.tif" for s in expected]
    # the next export replaces this one whole (its unlabeled/ files are its own)
    _bundle(tmp_path / "b2.npz", False, ())
    assert from_annotations.main([str(tmp_path / "b2.npz"), str(root)]) == 0
    assert not (root / "unlabeled").exists()
    assert json.loads((root / "annotations.json").read_text())["unlabeled"] == []


def test_an_unlabeled_image_named_like_an_annotated_one_is_refused(tmp_path):
    _bundle(tmp_path / "b.npz", True, ("cells",))
    with pytest.raises(InvalidInputError, match="share the name 'cells'"):
        from_annotations.write_bundle_folder(tmp_path / "b.npz", tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_a_stack_cannot_be_an_image_to_pseudo_label(tmp_path):
    np.savez(tmp_path / "b.npz", names=np.array(["cells"]), image_0=np.zeros((8, 8), np.uint8),
             labels_0=np.ones((8, 8), np.uint8), unlabeled_names=np.array(["stack"]),
             unlabeled_0=np.zeros((5, 8, 8), np.uint8))
    with pytest.raises(InvalidInputError, match="must be 2D"):
        from_annotations.write_bundle_folder(tmp_path / "b.npz", tmp_path / "data")
