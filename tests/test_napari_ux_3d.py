"""Issue 14 item 8: 3D propagation keeps the start slice's uncertainty, says how it ended, and the
current object can be cleared slice by slice (GUI, shown viewer, real keys and buttons)."""

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
from napari_ux_helpers import save_screenshot
from qtpy.QtCore import Qt
from test_napari_widget import _ThresholdSegmenter, click, errors, press, segment

pytestmark = pytest.mark.gui


def test_propagation_keeps_uncertainty_names_its_ends_and_clears_by_slice(
    make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch, notifications
):
    import sum_core.propagation as propagation

    monkeypatch.setattr(propagation, "_SliceSegmenter", _ThresholdSegmenter)
    viewer = make_napari_viewer(show=True)
    stack = np.stack([disk_image((64, 64), (32, 32), 10 + z) for z in range(6)])
    stack[5] = 30  # the object ends before the last slice
    viewer.add_image(stack, name="stack")
    viewer.dims.set_current_step(0, 2)
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "stack")
    layers = widget.layers
    layers.points().add([[2, 32, 32]])
    segment(viewer, qtbot, widget, key=True)  # the tiny model: a mask and an uncertainty map on slice 2
    uncertainty = layers.uncertainty()
    start_map = uncertainty.data[2].copy()
    assert start_map.any()
    disk = stack[2] > 100  # the user corrects the random model's mask with the brush: the disk exactly
    fix = np.nonzero(disk != (layers.current().data[2] > 0))
    layers.current().data_setitem((np.full(fix[0].size, 2), *fix), disk[fix].astype(np.uint16))

    group = widget.propagation_group  # micro-sam's options reach sum_core.propagate
    group.projection_combo.setCurrentText("mask")
    group.box_extension_spin.setValue(0.1)
    seen, real = [], propagation.propagate
    monkeypatch.setattr(propagation, "propagate", lambda *a, **k: seen.append(k) or real(*a, **k))
    press(viewer, qtbot, Qt.Key_S, Qt.ShiftModifier)
    wait_for_encode(widget, qtbot)
    assert (seen[0]["projection"], seen[0]["box_extension"], seen[0]["return_info"]) == ("mask", 0.1, True)

    current = layers.current().data
    np.testing.assert_array_equal(current[[0, 1, 3, 4]] > 0, stack[[0, 1, 3, 4]] > 100)
    assert not current[5].any()
    np.testing.assert_array_equal(uncertainty.data[2], start_map)  # not erased by the propagation
    status = widget.status_label.text()
    assert "Ends: down: reached the end of the stack; up: stopped at slice 5: the mask is empty." in status
    save_screenshot(viewer, qtbot, "interactive_3d.png")

    viewer.dims.set_current_step(0, 3)
    click(qtbot, widget.clear_slice_button)
    assert not current[3].any()
    np.testing.assert_array_equal(current[[0, 1, 4]] > 0, stack[[0, 1, 4]] > 100)  # the other slices stay
    assert current[2].any() and uncertainty.data[2].any()
    press(viewer, qtbot, Qt.Key_C)  # commit what is left: slices 0, 1, 2, 4
    committed = layers.committed().data
    assert sorted(np.flatnonzero(committed.reshape(6, -1).any(axis=1))) == [0, 1, 2, 4]

    layers.points().add([[3, 32, 32]])
    viewer.dims.set_current_step(0, 3)
    segment(viewer, qtbot, widget, key=True)
    click(qtbot, widget.clear_button)  # clear all
    assert not current.any() and not uncertainty.data.any() and len(layers.points().data) == 0
    assert sorted(np.flatnonzero(committed.reshape(6, -1).any(axis=1))) == [0, 1, 2, 4]  # commits stay
    assert errors(notifications) == []
