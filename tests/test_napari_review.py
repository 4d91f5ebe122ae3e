"""GUI tests of the review queue widget in a shown viewer (run under Xvfb: ``xvfb-run -a python -m pytest``):
real clicks on the table rows and buttons, real key presses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from napari_fixtures import drain_thread_pool  # noqa: F401
from qtpy.QtCore import Qt

pytestmark = pytest.mark.gui
JOB_TIMEOUT_MS = 60_000


def plane_with_objects(shape, boxes) -> np.ndarray:
    """uint32 labels: object ``i + 1`` fills ``boxes[i]`` = (row0, col0, row1, col1)."""
    labels = np.zeros(shape, np.uint32)
    for i, (r0, c0, r1, c1) in enumerate(boxes):
        labels[r0:r1, c0:c1] = i + 1
    return labels


def open_review(viewer, qtbot, layer_name: str):
    from napari_sum_hq._review_widget import ReviewQueueWidget

    widget = ReviewQueueWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.labels_combo.setCurrentText(layer_name)
    qtbot.mouseClick(widget.run_button, Qt.LeftButton)
    wait_for_job(widget, qtbot)
    return widget


def wait_for_job(widget, qtbot) -> None:
    """Wait until the review widget's job (a scan, R's mask prompt) has finished."""
    qtbot.waitUntil(lambda: not widget.is_running and widget.running_workers == 0, timeout=JOB_TIMEOUT_MS)


def listed_ids(widget) -> list[int]:
    return [int(widget.table.item(i, 0).text()) for i in range(widget.table.rowCount())]


def click_row(widget, qtbot, i: int) -> None:
    widget.table.scrollToItem(widget.table.item(i, 0))
    rect = widget.table.visualItemRect(widget.table.item(i, 0))
    qtbot.mouseClick(widget.table.viewport(), Qt.LeftButton, pos=rect.center())


def screenshot(viewer, qtbot, name: str) -> None:
    """Save the window (canvas and docks, the view as it is) as ``<$SUM_HQ_SCREENSHOTS>/<name>`` when set."""
    import os
    from pathlib import Path

    from imageio.v3 import imwrite
    from napari_ux_helpers import SCREENSHOT_ENV

    folder = os.environ.get(SCREENSHOT_ENV)
    if folder:
        viewer.window._qt_window.resize(1500, 950)
        qtbot.wait(300)
        imwrite(Path(folder) / name, np.asarray(viewer.screenshot(canvas_only=False, flash=False)))


def camera(viewer):
    return viewer.scene.camera


BOXES = [(10, 10, 30, 40), (100, 150, 140, 200), (200, 30, 210, 45), (60, 200, 90, 250)]
UNCERTAINTY = [0.2, 0.7, 0.5, 0.1]  # mean uncertainty of objects 1..4 (queue: 2, 3, 1, 4)


def test_review_sorts_jumps_accepts_and_thresholds(make_napari_viewer, qtbot):
    """Features without positions (the auto widget's AIS table): the objects are scanned in a worker, listed by
    mean uncertainty; a clicked row centres/zooms the camera on it (scale and translate honoured); A accepts
    (stored in the layer's features) and moves to the next; the threshold and another column re-sort."""
    viewer = make_napari_viewer(show=True)
    labels = plane_with_objects((256, 320), BOXES)
    features = pd.DataFrame({"index": np.arange(1, 5), "slice": 0, "area": [0] * 4, "mean_uncertainty": UNCERTAINTY,
                             "boundary_uncertainty": [0.3, 0.1, 0.9, 0.4]})
    layer = viewer.add_labels(labels, name="cells committed objects", features=features, scale=(2, 2),
                              translate=(10, 20))
    widget = open_review(viewer, qtbot, layer.name)
    assert widget.column_combo.currentText() == "mean_uncertainty"
    assert listed_ids(widget) == [2, 3, 1, 4]
    assert widget.table.rowCount() == 4 and "remaining" in widget.counts_label.text()

    zoom_before = camera(viewer).zoom
    click_row(widget, qtbot, 1)  # object 3: rows 200-209, cols 30-44
    assert widget.current_position() is not None
    centre = np.array([10 + 2 * (200 + 209) / 2, 20 + 2 * (30 + 44) / 2])
    np.testing.assert_allclose(camera(viewer).center[-2:], centre, atol=1e-6)
    assert camera(viewer).zoom > zoom_before
    assert layer.selected_label == 3

    qtbot.keyClick(widget.table, Qt.Key_A)
    reviewed = dict(zip(layer.features["index"], layer.features["reviewed"]))
    assert reviewed == {1: False, 2: False, 3: True, 4: False}
    assert widget.counts_label.text().startswith("Reviewed 1 of 4 in the queue, 3 remaining")
    assert int(widget.table.item(widget.table.currentRow(), 0).text()) == 1  # the next one not reviewed
    np.testing.assert_allclose(camera(viewer).center[-2:], [10 + 2 * 19.5, 20 + 2 * 24.5], atol=1e-6)

    widget.threshold.setValue(0.3)
    assert listed_ids(widget) == [2, 3]
    assert widget.counts_label.text().startswith("Reviewed 1 of 2 in the queue, 1 remaining")
    widget.column_combo.setCurrentText("area")
    assert listed_ids(widget) == [2, 4, 1, 3]  # areas 2000, 1500, 600, 150 (all above 0.3)
    widget.order_combo.setCurrentIndex(1)
    assert listed_ids(widget) == [3, 1, 4, 2]

    layer.data_setitem((np.array([240, 241]), np.array([300, 300])), 8)  # painted since: listed after a reload
    qtbot.mouseClick(widget.run_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not widget.is_running and widget.running_workers == 0, timeout=JOB_TIMEOUT_MS)
    reviewed = dict(zip(layer.features["index"], layer.features["reviewed"]))
    assert reviewed == {1: False, 2: False, 3: True, 4: False, 8: False}
    np.testing.assert_allclose(layer.features["mean_uncertainty"][:4], UNCERTAINTY)  # the features' own values


def test_review_delete_undo_exact_and_resegment_box(make_napari_viewer, qtbot):
    """Delete (button and key) zeroes exactly the object's pixels through napari's undo history; Ctrl+Z
    (pressed on the canvas) restores the labels exactly and the row comes back. R puts the object's mask prompt
    (its box into '<image> box prompts', its deepest point into '<image> point prompts')."""
    from napari_sum_hq._prompts import boxes_on_slice, points_on_slice
    from sum_core.prompts import prompts_from_mask

    viewer = make_napari_viewer(show=True)
    labels = plane_with_objects((256, 320), BOXES)
    labels[15, 15] = 9  # another id inside object 1's box: kept
    original = labels.copy()
    viewer.add_image(np.zeros((256, 320), np.uint8), name="cells")
    layer = viewer.add_labels(labels, name="cells committed objects")
    widget = open_review(viewer, qtbot, layer.name)
    widget.column_combo.setCurrentText("area")
    assert listed_ids(widget) == [2, 4, 1, 3, 9]  # areas 2000, 1500, 599, 150, 1
    click_row(widget, qtbot, 2)
    qtbot.mouseClick(widget.delete_button, Qt.LeftButton)
    expected = original.copy()
    expected[original == 1] = 0
    np.testing.assert_array_equal(layer.data, expected)
    assert 1 not in listed_ids(widget) and "1 deleted" in widget.counts_label.text()

    viewer.layers.selection.active = layer
    qtbot.keyClick(viewer.window._qt_viewer.canvas.native, Qt.Key_Z, Qt.ControlModifier)  # Ctrl+Z on the canvas
    np.testing.assert_array_equal(layer.data, original)
    assert 1 in listed_ids(widget)

    click_row(widget, qtbot, listed_ids(widget).index(4))
    qtbot.keyClick(widget.table, Qt.Key_Delete)
    assert not np.any(layer.data == 4)
    layer.undo()
    np.testing.assert_array_equal(layer.data, original)

    click_row(widget, qtbot, listed_ids(widget).index(2))
    qtbot.keyClick(widget.table, Qt.Key_R)
    wait_for_job(widget, qtbot)
    boxes = viewer.layers["cells box prompts"]
    expected = prompts_from_mask(original == 2)
    np.testing.assert_array_equal(expected.box, [100, 150, 140, 200])  # the half-open box of object 2
    np.testing.assert_allclose(boxes_on_slice(boxes.data, ()), [expected.box])
    points = viewer.layers["cells point prompts"]
    np.testing.assert_allclose(points_on_slice(points.data, points.features["label"], ())[0], expected.points)
    assert points.features["label"].tolist() == [1]
    assert boxes.selected_data == {0} and viewer.layers.selection.active is boxes


def test_review_3d_stack(make_napari_viewer, qtbot):
    """A stack (an id on two slices has a row on each, its features' values kept by slice): a row moves the dims
    to the object's slice and centres on it; delete and undo on one slice are exact."""
    viewer = make_napari_viewer(show=True)
    stack = np.zeros((6, 64, 80), np.uint16)
    stack[1, 5:15, 10:30] = 1
    stack[4, 40:60, 50:70] = 7
    stack[4, 2:6, 2:6] = 1  # the same id on another slice: its own row
    original = stack.copy()
    features = pd.DataFrame({"index": [1, 1, 7], "slice": [1, 4, 4], "mean_uncertainty": [0.1, 0.3, 0.6]})
    layer = viewer.add_labels(stack, name="blobs labels", features=features)
    widget = open_review(viewer, qtbot, layer.name)
    assert listed_ids(widget) == [7, 1, 1]
    assert [widget.table.item(i, 1).text() for i in range(3)] == ["4", "4", "1"]

    viewer.dims.set_point(0, 0)
    click_row(widget, qtbot, 2)  # id 1 on slice 1
    assert viewer.dims.point[0] == 1
    np.testing.assert_allclose(camera(viewer).center[-2:], [9.5, 19.5])
    click_row(widget, qtbot, 0)  # id 7 on slice 4
    assert viewer.dims.point[0] == 4
    np.testing.assert_allclose(camera(viewer).center[-2:], [49.5, 59.5])

    click_row(widget, qtbot, 1)  # id 1 on slice 4 only
    qtbot.mouseClick(widget.delete_button, Qt.LeftButton)
    expected = original.copy()
    expected[4, 2:6, 2:6] = 0
    np.testing.assert_array_equal(layer.data, expected)
    layer.undo()
    np.testing.assert_array_equal(layer.data, original)


def test_review_2048_far_object_lazy_result(make_napari_viewer, qtbot):
    """A 2048x2048 lazily opened result (dask, as the reader opens a batch target) with its uncertainty layer:
    the objects are found in a worker, their uncertainty computed window by window; the most uncertain
    (far from the origin) comes first and a click centres on it; deleting is refused and nothing changes."""
    import dask.array as da

    viewer = make_napari_viewer(show=True)
    labels = np.zeros((2048, 2048), np.uint32)
    labels[1950:2030, 1940:2030] = 5
    labels[100:140, 100:150] = 2
    values = np.zeros((2048, 2048), np.float32)
    values[1950:2030, 1940:2030] = 0.8
    values[100:140, 100:150] = 0.25
    layer = viewer.add_labels(da.from_array(labels, chunks=512), name="big labels")
    viewer.add_image(da.from_array(values, chunks=512), name="big uncertainty", visible=False)
    widget = open_review(viewer, qtbot, layer.name)
    assert widget.uncertainty_combo.currentText() == "big uncertainty"
    assert listed_ids(widget) == [5, 2]
    np.testing.assert_allclose(layer.features["mean_uncertainty"], [0.25, 0.8], atol=1e-6)
    click_row(widget, qtbot, 0)
    np.testing.assert_allclose(camera(viewer).center[-2:], [(1950 + 2029) / 2, (1940 + 2029) / 2])
    viewer.layers["big uncertainty"].visible = True
    screenshot(viewer, qtbot, "review_queue.png")
    qtbot.mouseClick(widget.delete_button, Qt.LeftButton)
    assert "cannot be deleted" in widget.status_label.text()
    assert int(np.count_nonzero(np.asarray(layer.data[1950:2030, 1940:2030]) == 5)) == 80 * 90

    qtbot.keyClick(widget.table, Qt.Key_A)
    qtbot.mouseClick(widget.run_button, Qt.LeftButton)  # lazy labels, features with positions: nothing read
    assert not widget.is_running and listed_ids(widget) == [5, 2]
    assert layer.features["reviewed"].tolist() == [False, True]


def test_review_queue_order_unknown_values_and_hidden():
    """Qt-free: ties keep id order, unknown values come last (and drop out with a threshold), hidden rows and
    features without positions or with duplicate ids are not rows."""
    from napari_sum_hq._review_table import queue, rows_from_features

    rows = pd.DataFrame({"index": [1, 2, 3, 4, 5], "value": [0.5, np.nan, 0.9, 0.5, 0.1]})
    assert queue(rows, "value").tolist() == [2, 0, 3, 4, 1]
    assert queue(rows, "value", descending=False).tolist() == [4, 0, 3, 2, 1]
    assert queue(rows, "value", threshold=0.4, hidden={2}).tolist() == [0, 3]
    assert rows_from_features(rows, 2) is None  # no positions
    boxes = {"bbox_row0": [0, 0], "bbox_col0": [0, 0], "bbox_row1": [1, 1], "bbox_col1": [1, 1]}
    assert rows_from_features(pd.DataFrame({"index": [3, 3], **boxes}), 2) is None  # one id twice in a plane
    stack = rows_from_features(pd.DataFrame({"index": [3, 3], "slice": [0, 2], **boxes}), 3)
    assert stack["reviewed"].tolist() == [False, False]
