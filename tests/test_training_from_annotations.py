"""training.from_annotations: annotated 2D images and stack slices -> the documented dataset folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sum_core.errors import InvalidInputError
from sum_core.imageio import read_image
from training import from_annotations
from training.dataset import scan_dataset


def _annotated():
    plane = np.arange(40 * 50, dtype=np.uint16).reshape(40, 50)
    labels2d = np.zeros((40, 50), np.int32)
    labels2d[30:36, 41:48] = 7  # an object far from the origin
    stack = np.stack([plane, plane + 1, plane + 2])
    labels3d = np.zeros((3, 40, 50), np.uint8)
    labels3d[2, 5:9, 5:9] = 1
    labels3d[2, 20:25, 20:30] = 3
    return plane, labels2d, stack, labels3d


def test_2d_image_and_stack_slices_with_objects_become_a_scanned_dataset(tmp_path):
    plane, labels2d, stack, labels3d = _annotated()
    pairs = [*from_annotations.annotated_planes("cells 1", plane, labels2d),
             *from_annotations.annotated_planes("stack", stack, labels3d)]
    manifest = from_annotations.write_training_folder(tmp_path / "data", pairs)

    assert manifest["samples"] == ["cells_1", "stack_z2"]  # slices 0 and 1 have no object
    assert manifest["objects"] == {"cells_1": 1, "stack_z2": 2}
    root = tmp_path / "data"
    np.testing.assert_array_equal(read_image(root / "images" / "cells_1.tif"), plane)
    np.testing.assert_array_equal(read_image(root / "masks" / "cells_1.tif"), labels2d)
    np.testing.assert_array_equal(read_image(root / "images" / "stack_z2.tif"), stack[2])
    np.testing.assert_array_equal(read_image(root / "masks" / "stack_z2.tif"), labels3d[2])
    split = scan_dataset(root, val_fraction=0.0)
    assert sorted((s.image.name, s.num_instances) for s in split.train) == [("cells_1.tif", 1), ("stack_z2.tif", 2)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no staging folder left


def test_a_folder_that_is_not_an_export_is_refused_and_untouched_an_export_is_replaced(tmp_path):
    plane, labels2d, _, _ = _annotated()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(InvalidInputError, match="not an annotation export"):
        from_annotations.write_training_folder(mine, from_annotations.annotated_planes("a", plane, labels2d))
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]

    export = tmp_path / "export"
    from_annotations.write_training_folder(export, from_annotations.annotated_planes("a", plane, labels2d))
    from_annotations.write_training_folder(export, from_annotations.annotated_planes("b", plane, labels2d))
    assert sorted(p.name for p in (export / "images").iterdir()) == ["b.tif"]
    assert from_annotations.is_export(export)


def test_bad_annotations_are_refused_before_anything_is_written(tmp_path):
    plane, labels2d, _, _ = _annotated()
    with pytest.raises(InvalidInputError, match="no annotated objects"):
        from_annotations.write_training_folder(
            tmp_path / "d", from_annotations.annotated_planes("a", plane, np.zeros_like(labels2d)))
    with pytest.raises(InvalidInputError, match="do not match"):
        list(from_annotations.annotated_planes("a", plane, labels2d[:-1]))
    with pytest.raises(InvalidInputError, match=">= 0"):
        list(from_annotations.annotated_planes("a", plane, -labels2d))
    assert list(tmp_path.iterdir()) == []


def test_cli_reads_the_plugin_bundle(tmp_path, capsys):
    plane, labels2d, stack, labels3d = _annotated()
    rgb = np.stack([plane.astype(np.uint8)] * 3, axis=-1)
    bundle = tmp_path / "b.npz"
    np.savez(bundle, names=np.array(["gray", "rgb", "stack"]), rgb=np.array([False, True, False]),
             image_0=plane, labels_0=labels2d, image_1=rgb, labels_1=labels2d, image_2=stack, labels_2=labels3d)
    assert from_annotations.main([str(bundle), str(tmp_path / "data")]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == ["gray", "rgb", "stack_z2"]
    np.testing.assert_array_equal(read_image(tmp_path / "data" / "images" / "rgb.tif"), rgb)


def test_files_added_to_an_earlier_export_are_never_deleted(tmp_path):
    import numpy as np
    import pytest
    from sum_core.errors import InvalidInputError
    from training.from_annotations import annotated_planes, write_training_folder

    image = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    labels = np.zeros((64, 64), np.uint32)
    labels[5:20, 5:20] = 1
    root = tmp_path / "ds"
    write_training_folder(root, annotated_planes("a", image, labels))
    (root / "images" / "mine.tif").write_bytes(b"user data")
    with pytest.raises(InvalidInputError, match="did not write"):
        write_training_folder(root, annotated_planes("b", image, labels))
    assert (root / "images" / "mine.tif").read_bytes() == b"user data"
    assert (root / "images" / "a.tif").exists()
