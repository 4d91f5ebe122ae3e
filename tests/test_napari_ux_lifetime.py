"""Issue 14 item 5: closing the dock widget with its x releases it; reopening it from the Plugins
menu does not double the work and restores the last model and image (GUI, shown viewer)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from napari.utils.key_bindings import coerce_keybinding
from napari_fixtures import (  # noqa: F401
    disk_image,
    drain_thread_pool,
    notifications,
    tiny_checkpoint,
    wait_for_encode,
)
from qtpy.QtWidgets import QPushButton
from test_napari_widget import click, errors, press

pytestmark = pytest.mark.gui

PLUGIN, WIDGET = "napari-sum-hq", "Interactive segmentation"
KEYS = ("S", "C", "T", "Shift-C", "Control-Z", "Shift-S")


def open_from_plugins_menu(viewer):
    """What the Plugins menu entry does: the dock widget and the widget in it."""
    return viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)


def test_closing_the_dock_releases_the_widget_and_reopening_restores_it(
    make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch, notifications
):
    import napari_sum_hq._interactive_images as images

    prepared = []  # (widget, slice) of every preparation started
    original = images.prepare_steps

    def counting(choice, model, plane, slice_key, *rest):
        prepared.append(slice_key)
        if slice_key == (4,):
            time.sleep(1.0)  # a slow preparation, running when the dock is closed
        return (yield from original(choice, model, plane, slice_key, *rest))

    monkeypatch.setattr(images, "prepare_steps", counting)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(disk_image(shape=(6, 64, 64), center=(32, 32), radius=12), name="stack")
    dock, widget = open_from_plugins_menu(viewer)
    widget.set_model_source(str(tiny_checkpoint))
    widget.image_combo.setCurrentIndex(widget.image_combo.findText("stack"))
    wait_for_encode(widget, qtbot)
    widget.task_combo.setCurrentIndex(widget.task_combo.findData(0))
    widget.commit_mode_combo.setCurrentText("protect pixels")
    points = widget.layers.points()
    first = prepared[0]
    viewer.dims.set_current_step(0, 4)  # scrolling prepares the new slice in a worker
    qtbot.waitUntil(lambda: prepared[-1] == (4,) and widget.is_busy, timeout=10_000)

    click(qtbot, dock.findChild(QPushButton, "QTitleBarCloseButton"))  # the dock's x, during that job
    qtbot.wait(50)

    assert widget.is_released and not widget.is_busy  # the job is cancelled
    qtbot.waitUntil(lambda: widget.running_workers == 0, timeout=10_000)
    assert widget.predictors.model is None and widget.predictors.predictor((4,)) is None  # its result dropped
    for owner in (viewer, points):
        assert all(owner.keymap.get(coerce_keybinding(key)) is None for key in KEYS)
    viewer.dims.set_current_step(0, 3)  # a new slice: nothing prepares it any more
    press(viewer, qtbot, "s")
    qtbot.wait(2 * images.SLICE_DEBOUNCE_MS)
    assert prepared == [first, (4,)] and not widget.is_busy and widget.running_workers == 0

    dock2, reopened = open_from_plugins_menu(viewer)  # Plugins menu again: a new widget
    wait_for_encode(reopened, qtbot)
    assert reopened is not widget
    assert reopened.model_combo.currentText() == str(tiny_checkpoint)
    assert reopened.image_layer is viewer.layers["stack"] and reopened.task_combo.currentData() == 0
    assert reopened.commit_mode_combo.currentText() == "protect pixels"
    assert prepared[2:] == [(3,)]  # one preparation, by the new widget, of the displayed slice
    assert reopened.layers.points() is points  # the image's own layers and state, not copies
    points.add([[3, 32, 32]])
    press(viewer, qtbot, "s")  # the keys reach the new widget only
    wait_for_encode(reopened, qtbot)
    assert reopened.layers.current().data[3].any()
    assert not widget.is_busy and len([name for name in viewer.window._wrapped_dock_widgets if WIDGET in name]) == 1
    assert errors(notifications) == []
    np.testing.assert_array_equal(reopened.layers.committed().data, 0)
