"""Issue 16 item 1: the committed objects' scores are saved in the annotation file with the objects and come
back with them in a new viewer (GUI, shown viewers, real keys); files written before had none and still load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from napari_fixtures import camera_image, drain_thread_pool, open_widget, tiny_checkpoint  # noqa: F401
from scores_fakes import recording_decoder
from test_napari_large_save import commit_object
from test_napari_scores_commit import EXTRAS, FIRST, FIRST_CLICK, SCORES, SECOND, SECOND_CLICK, SHAPE

pytestmark = pytest.mark.gui


def test_scores_are_saved_and_reloaded_with_the_objects(make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch,
                                                        tmp_path):
    import sum_core.predictor as predictor_module
    import tifffile
    from napari_sum_hq._interactive_scores import features_current

    monkeypatch.setattr(predictor_module, "decode_window", recording_decoder((FIRST, SECOND), SCORES, EXTRAS, []))
    image_file = tmp_path / "cells.tif"
    tifffile.imwrite(image_file, camera_image(SHAPE))
    viewer = make_napari_viewer(show=True)
    viewer.open(str(image_file), plugin="napari")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "cells")
    commit_object(viewer, qtbot, widget, FIRST_CLICK)
    commit_object(viewer, qtbot, widget, SECOND_CLICK)
    widget.flush_saves()
    features = widget.layers.committed().features.copy()
    assert features["index"].tolist() == [1, 2]

    viewer = make_napari_viewer(show=True)  # napari opened again: the autosave comes back
    viewer.open(str(image_file), plugin="napari")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "cells")
    committed = widget.layers.committed()
    assert sorted(np.unique(committed.data)) == [0, 1, 2]
    pd.testing.assert_frame_equal(committed.features, features)
    assert features_current(committed)  # the review queue lists them as they are


def test_a_file_without_scores_loads_without_them(tmp_path):
    from napari_sum_hq._annotation_file import CommitPrompts, load_annotations, load_objects, save_annotations

    labels = np.zeros((8, 9), np.uint32)
    labels[2:5, 3:6] = 4
    older = save_annotations(tmp_path / "old.sum-annotations.zarr", labels, CommitPrompts(2, commits=[[4]]), "img")
    assert load_objects(older) is None  # as a file of the earlier format: no table
    np.testing.assert_array_equal(load_annotations(older, (8, 9))[0], labels)
    table = {"index": np.array([4]), "area": np.array([9]), "stability": np.array([0.5]), "note": np.array(["x"])}
    newer = save_annotations(tmp_path / "new.sum-annotations.zarr", labels, CommitPrompts(2), "img", table, True)
    loaded, current = load_objects(newer)
    assert current and list(loaded) == ["index", "area", "stability"]  # non-numeric columns are not kept
    assert loaded["index"].tolist() == [4] and loaded["stability"].tolist() == [0.5]
