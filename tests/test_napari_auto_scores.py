"""GUI tests of the automatic widget's per-object features in AMG mode and of its id numbering when a slice's
result is written (run under Xvfb: ``xvfb-run -a python -m pytest``)."""

from __future__ import annotations

import numpy as np
import pytest
from napari_fixtures import disk_image, drain_thread_pool, tiny_checkpoint  # noqa: F401
from test_napari_ais import open_auto_widget, wait_checked
from test_napari_jobs import amg, click, wait_job

pytestmark = pytest.mark.gui


def amg_widget(viewer, qtbot, checkpoint):
    widget = open_auto_widget(viewer, checkpoint)
    wait_checked(widget, qtbot)
    assert widget.auto_mode.mode() == "amg"  # the tiny checkpoint has no AIS decoder
    amg(widget)["points_per_side"].setValue(4)
    amg(widget)["pred_iou_thresh"].setValue(0.0)
    amg(widget)["stability_thresh"].setValue(0.0)
    return widget


def test_amg_results_carry_their_scores_as_features(make_napari_viewer, qtbot, tiny_checkpoint):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(disk_image(), name="img")
    widget = amg_widget(viewer, qtbot, tiny_checkpoint)
    click(qtbot, widget.run_button)
    wait_job(widget, qtbot)
    labels = viewer.layers["img auto labels"]
    features = labels.features
    ids, areas = np.unique(labels.data, return_counts=True)
    ids, areas = ids[ids > 0], areas[ids > 0]
    assert len(ids) >= 1 and features["index"].tolist() == ids.tolist()  # one row per id present
    np.testing.assert_array_equal(features["area"], areas)
    for column in ("predicted_iou", "stability", "mean_uncertainty", "boundary_uncertainty"):
        assert features[column].between(0, 1).all(), column  # NaN fails too


def test_slice_ids_follow_the_layer_as_it_is_when_written_and_never_wrap(make_napari_viewer, qtbot, tiny_checkpoint):
    stack = np.stack([disk_image(), disk_image()])
    viewer = make_napari_viewer(show=True)
    viewer.add_image(stack, name="stack")
    layer = viewer.add_labels(np.zeros(stack.shape, np.uint32), name="stack auto labels")
    widget = amg_widget(viewer, qtbot, tiny_checkpoint)
    viewer.dims.set_current_step(0, 1)
    click(qtbot, widget.run_button)
    edited = np.zeros(stack.shape, np.uint32)
    edited[0, :5, :5] = 50
    layer.data = edited  # the user's edit while the job runs (the result reaches the GUI thread after it)
    wait_job(widget, qtbot)
    ids = np.unique(layer.data[1])
    assert ids[1] == 51 and layer.features["index"].tolist() == ids[1:].tolist()

    edited = layer.data.copy()
    edited[0, :5, :5] = 2**32 - 1  # the largest uint32 id: the slice's objects cannot follow it
    layer.data = edited
    before = layer.data.copy()
    click(qtbot, widget.run_button)
    wait_job(widget, qtbot)
    assert "beyond the largest uint32 id" in widget.status_label.text()
    np.testing.assert_array_equal(layer.data, before)  # nothing written, nothing wrapped
