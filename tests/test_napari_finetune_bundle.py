"""The fine-tune widget's bundle writer (Qt-free): what goes into the .npz, progress in bytes, and a stop
in the middle leaves no file."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sum_hq._finetune_export import Snapshot, write_bundle
from sum_core.errors import InvalidInputError


def _snapshot(pseudo_unannotated: bool) -> Snapshot:
    image = np.arange(12 * 16, dtype=np.uint16).reshape(12, 16)
    labels = np.zeros((12, 16), np.int32)
    labels[2:5, 3:7] = 9
    empty = np.zeros((12, 16), np.int32)
    free = np.full((12, 16), 7, np.uint8)
    return Snapshot(
        pairs=[("cells", "cells committed objects", image, labels, False),
               ("bare", "bare committed objects", image + 1, empty, False)],
        unlabeled=[("free", free)] if pseudo_unannotated else [],
        pseudo_unannotated=pseudo_unannotated,
    )


@pytest.mark.parametrize("pseudo_unannotated", [False, True])
def test_bundle_arrays_and_byte_progress(tmp_path, pseudo_unannotated):
    taken = _snapshot(pseudo_unannotated)
    reports = []
    counts = write_bundle(taken, tmp_path / "b.npz", lambda done, total: reports.append((done, total)))
    with np.load(tmp_path / "b.npz") as data:
        assert list(data["names"]) == ["cells"]  # the pair without objects is no training pair
        np.testing.assert_array_equal(data["labels_0"], taken.pairs[0][3])
        np.testing.assert_array_equal(data["image_0"], taken.pairs[0][2])
        if pseudo_unannotated:  # its image, and the viewer's free image, are to be pseudo-labelled
            assert list(data["unlabeled_names"]) == ["bare", "free"]
            np.testing.assert_array_equal(data["unlabeled_0"], taken.pairs[1][2])
            np.testing.assert_array_equal(data["unlabeled_1"], taken.unlabeled[0][1])
        else:
            assert list(data["unlabeled_names"]) == [] and "unlabeled_0" not in data.files
        assert not bool(data["pseudo_annotated"])
        all_bytes = sum(data[name].nbytes for name in data.files)
    assert counts == (1, 2 if pseudo_unannotated else 0)
    done = [d for d, _ in reports]
    assert done == sorted(done) and reports[-1] == (all_bytes, all_bytes)


def test_a_stop_during_the_write_leaves_no_file(tmp_path):
    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_bundle(_snapshot(True), tmp_path / "b.npz", stop)
    assert list(tmp_path.iterdir()) == []


def test_no_object_in_any_pair_is_refused(tmp_path):
    taken = _snapshot(True)
    taken.pairs = taken.pairs[1:]
    with pytest.raises(InvalidInputError, match="no objects"):
        write_bundle(taken, tmp_path / "b.npz")
    assert list(tmp_path.iterdir()) == []
