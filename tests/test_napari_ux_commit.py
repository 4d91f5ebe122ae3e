"""Issue 14 item 3: commits never destroy earlier work (GUI, shown viewer, real keys and buttons).

The decoder is replaced by one that returns, for a click, the first of two overlapping ellipses
holding it, so the overlap is exact and known (the issue's case: object 2 overlapping object 1).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from napari_fixtures import (  # noqa: F401
    camera_image,
    drain_thread_pool,
    ellipse,
    notifications,
    open_widget,
    tiny_checkpoint,
)
from napari_ux_helpers import save_screenshot
from qtpy.QtCore import Qt
from test_napari_widget import click, errors, press, segment

pytestmark = pytest.mark.gui

SHAPE = (512, 640)
FIRST = ellipse(SHAPE, (200, 220), (150, 190))  # the large object 1
SECOND = ellipse(SHAPE, (330, 420), (110, 130))  # object 2, overlapping it
FIRST_CLICK, SECOND_CLICK = (200, 200), (380, 470)


def overlapping_decoder(objects):
    """A ``sum_core.predictor.decode_window``: the first object holding the first click."""
    from sum_core.decoding import WindowMasks

    def decode(model, image, prompts, options):
        row, col = (int(v) for v in prompts.points[0])
        mask = next(m for m in objects if m[row, col])
        size = model.config.low_res_size
        return WindowMasks(
            logits=torch.from_numpy(np.where(mask, 8.0, -8.0).astype(np.float32)[None]),
            scores=torch.full((1,), 0.9),
            uncertainty=torch.from_numpy((mask * np.float32(0.25))[None]),
            low_res_logits=torch.zeros(1, 1, size, size),
        )

    return decode


@pytest.fixture
def two_objects(make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch):
    import sum_core.predictor as predictor_module

    assert FIRST[FIRST_CLICK] and not SECOND[FIRST_CLICK] and SECOND[SECOND_CLICK] and not FIRST[SECOND_CLICK]
    monkeypatch.setattr(predictor_module, "decode_window", overlapping_decoder([FIRST, SECOND]))
    viewer = make_napari_viewer(show=True)
    viewer.add_image(camera_image(SHAPE), name="cells")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "cells")
    widget.layers.points().add([FIRST_CLICK])
    segment(viewer, qtbot, widget, key=True)
    click(qtbot, widget.commit_button)
    return viewer, widget


def test_committing_an_overlapping_object_keeps_the_first_and_undo_restores(two_objects, qtbot, notifications):
    viewer, widget = two_objects
    layers = widget.layers
    committed = layers.committed()
    before = int(np.count_nonzero(committed.data == 1))
    assert widget.commit_mode_combo.currentText() == "protect objects"  # the default
    layers.points().add([SECOND_CLICK])
    segment(viewer, qtbot, widget, key=True)
    current_color = layers.current().get_color(1)
    save_screenshot(viewer, qtbot, "interactive_2d.png")  # committed object 1, current object 2 (yellow)
    press(viewer, qtbot, Qt.Key_C)

    after = int(np.count_nonzero(committed.data == 1))
    overlap = int(np.count_nonzero(FIRST & SECOND))
    print(f"\nobject 1: {before} px before committing the overlapping object 2, {after} px after; "
          f"overlap {overlap} px; object 2 committed with {np.count_nonzero(committed.data == 2)} px")
    assert before == after == FIRST.sum() and overlap > 5000
    np.testing.assert_array_equal(committed.data == 2, SECOND & ~FIRST)
    assert f"{overlap} px on committed objects left to them" in widget.status_label.text()
    colors = [tuple(committed.get_color(i)) for i in (1, 2)]
    assert colors[0] != colors[1] and tuple(current_color) not in colors  # current object: its own colour

    press(viewer, qtbot, Qt.Key_Z, Qt.ControlModifier)  # napari's undo history holds the commit
    np.testing.assert_array_equal(committed.data, FIRST.astype(committed.data.dtype))

    widget.commit_mode_combo.setCurrentText("overwrite")  # micro-sam's 'none': the new object wins
    layers.points().add([SECOND_CLICK])
    segment(viewer, qtbot, widget, key=True)
    click(qtbot, widget.commit_button)
    np.testing.assert_array_equal(committed.data == 3, SECOND)  # (an id freed by an undo is not handed out again)
    assert np.count_nonzero(committed.data == 1) == FIRST.sum() - overlap
    press(viewer, qtbot, Qt.Key_Z, Qt.ControlModifier)
    np.testing.assert_array_equal(committed.data, FIRST.astype(committed.data.dtype))  # restored exactly
    assert errors(notifications) == []


def test_segmenting_a_committed_object_again_commits_nothing(two_objects, qtbot, notifications):
    viewer, widget = two_objects
    layers = widget.layers
    committed = layers.committed()
    layers.points().add([FIRST_CLICK])  # object 1 again
    segment(viewer, qtbot, widget, key=True)
    press(viewer, qtbot, Qt.Key_C)
    np.testing.assert_array_equal(committed.data, FIRST.astype(committed.data.dtype))
    assert "current object(s) matching committed ones not committed again (1 = committed 1)" in (
        widget.status_label.text()
    )
    assert layers.current().data.any()  # kept: the user may still overwrite on purpose

    widget.commit_mode_combo.setCurrentText("protect pixels")  # every pixel is object 1's: nothing to write
    press(viewer, qtbot, Qt.Key_C)
    np.testing.assert_array_equal(committed.data, FIRST.astype(committed.data.dtype))
    assert "Nothing committed" in widget.status_label.text()
    assert errors(notifications) == []
