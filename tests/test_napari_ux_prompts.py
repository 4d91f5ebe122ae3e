"""Issue 14 item 4: prompt state (GUI, shown viewer, real keys and buttons).

After a commit or a clear the next point is positive again; a second image gets its own layers,
above it, and none of the first image's prompts; ellipses and polygons are box prompts, lines
are refused with a message.
"""

from __future__ import annotations

import numpy as np
import pytest
from napari_fixtures import (  # noqa: F401
    disk_image,
    drain_thread_pool,
    notifications,
    open_widget,
    tiny_checkpoint,
    wait_for_encode,
)
from qtpy.QtCore import Qt
from test_napari_widget import click, errors, press, segment

pytestmark = pytest.mark.gui

KINDS = ("point prompts", "box prompts", "current object", "uncertainty", "committed objects")


def test_next_point_is_positive_after_commit_and_clear(make_napari_viewer, qtbot, tiny_checkpoint, notifications):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(disk_image(), name="img")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "img")
    points = widget.layers.points()
    for finish in (lambda: press(viewer, qtbot, Qt.Key_C), lambda: press(viewer, qtbot, Qt.Key_C, Qt.ShiftModifier)):
        points.add([[48, 60]])
        press(viewer, qtbot, Qt.Key_T)  # the next point is negative
        points.add([[5, 5]])
        segment(viewer, qtbot, widget, key=True)
        finish()  # commit, then clear
        assert "positive" in widget.point_kind_label.text()
        points.add([[48, 60]])
        assert points.features["label"].tolist() == [1]
        click(qtbot, widget.clear_button)
    assert errors(notifications) == []


def test_a_second_image_gets_its_own_layers_above_it(make_napari_viewer, qtbot, tiny_checkpoint, notifications):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(disk_image(), name="a")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "a")
    first = widget.layers
    first.points().add([[48, 60]])
    segment(viewer, qtbot, widget, key=True)
    a_object = first.current().data.copy()
    image_b = viewer.add_image(disk_image(center=(40, 50), radius=15), name="b")  # opened later: on top

    widget.image_combo.setCurrentIndex(widget.image_combo.findText("b"))
    wait_for_encode(widget, qtbot)

    second = widget.layers
    names = [layer.name for layer in viewer.layers]
    assert all(f"b {kind}" in names for kind in KINDS) and not any("[" in name for name in names)
    assert all(names.index(f"b {kind}") > names.index("b") for kind in KINDS)  # above the image
    assert len(second.points().data) == 0 and not second.current().data.any()  # nothing of image a
    assert not any(layer.visible for layer in first.owned())  # a's layers do not cover b
    assert viewer.layers.selection.active is second.points()
    second.points().add([[40, 50]])
    segment(viewer, qtbot, widget, key=True)
    press(viewer, qtbot, Qt.Key_C)
    assert second.committed().data.any()
    assert not first.committed().data.any()
    assert image_b.visible

    widget.image_combo.setCurrentIndex(widget.image_combo.findText("a"))  # back to a: its work is there
    wait_for_encode(widget, qtbot)
    assert widget.layers is first and first.points().visible and not second.points().visible
    np.testing.assert_array_equal(first.current().data, a_object)
    click(qtbot, widget.commit_button)  # a's uncommitted object is committed to a
    np.testing.assert_array_equal(first.committed().data > 0, a_object > 0)
    assert [widget.image_combo.itemText(i) for i in range(1, widget.image_combo.count())] == ["a", "b"]
    assert errors(notifications) == []


def test_ellipses_and_polygons_are_boxes_and_lines_are_refused(
    make_napari_viewer, qtbot, tiny_checkpoint, notifications
):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(disk_image(), name="img")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "img")
    boxes = widget.layers.boxes()
    boxes.add_ellipses(np.array([[48, 60], [23, 25]]))  # centre and radii
    boxes.add_polygons([np.array([[10, 10], [30, 15], [20, 40]])])
    segment(viewer, qtbot, widget, key=True)
    assert "Segmented 2 object(s)" in widget.status_label.text()
    assert set(np.unique(widget.layers.current().data)) <= {0, 1, 2}

    boxes.add_lines(np.array([[80, 10], [90, 100]]))
    segment(viewer, qtbot, widget, key=True)
    assert "a line is not a prompt" in widget.status_label.text() and errors(notifications) == []
