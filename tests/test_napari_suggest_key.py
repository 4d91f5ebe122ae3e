"""Issue 16 item 2 (GUI, shown viewer, real keys): after each segmentation the suggested next click
(:func:`sum_core.suggest_click`) is a star in '<image> suggested click', green (positive) outside the mask, red
(negative) inside; N adds it as a prompt of that kind and segments again; Shift+C removes it."""

from __future__ import annotations

import numpy as np
import pytest
from napari_fixtures import camera_image, drain_thread_pool, ellipse, open_widget, tiny_checkpoint  # noqa: F401
from qtpy.QtCore import Qt
from scores_fakes import recording_decoder, uncertainty_of
from sum_core.suggest import suggest_click
from test_napari_widget import click, press, segment

pytestmark = pytest.mark.gui

SHAPE = (192, 256)
FIRST, SECOND = ellipse(SHAPE, (60, 70), (30, 40)), ellipse(SHAPE, (140, 190), (30, 40))
MISSED = np.zeros(SHAPE, np.float32)
MISSED[95:106, 60:75] = 0.9  # just below FIRST, outside it: a positive suggestion
WRONG = np.zeros(SHAPE, np.float32)
WRONG[130:141, 175:190] = 0.9  # inside SECOND: a negative suggestion
GREEN, RED = [0.0, 128 / 255, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0]


def test_suggested_click_shown_accepted_with_n_and_cleared(make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch):
    import sum_core.predictor as predictor_module

    calls: list = []
    decoder = recording_decoder((FIRST, SECOND), (0.9, 0.9), (MISSED, WRONG), calls)
    monkeypatch.setattr(predictor_module, "decode_window", decoder)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(camera_image(SHAPE), name="cells")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "cells")
    points = widget.layers.points()
    points.add([[60, 70]])
    segment(viewer, qtbot, widget, key=True)

    star = viewer.layers["cells suggested click"]
    want = suggest_click(FIRST, uncertainty_of(FIRST, MISSED))
    assert want.label == 1 and FIRST.sum() > 0 and not FIRST[want.point]
    np.testing.assert_array_equal(star.data, [want.point])
    assert star.features["label"].tolist() == [1] and star.symbol[0].value == "star"
    np.testing.assert_allclose(star.face_color[0], GREEN)

    viewer.layers.selection.active = points
    press(viewer, qtbot, Qt.Key_N)  # take the suggestion: a positive point there, segmented again
    qtbot.waitUntil(lambda: len(calls) == 2 and not widget.is_busy and widget.running_workers == 0, timeout=60_000)
    np.testing.assert_array_equal(points.data, [[60, 70], want.point])
    assert points.features["label"].tolist() == [1, 1]
    np.testing.assert_array_equal(calls[-1].points, [[60, 70], want.point])
    np.testing.assert_array_equal(calls[-1].labels, [1, 1])

    press(viewer, qtbot, Qt.Key_C, Qt.ShiftModifier)  # clear: the suggestion goes with the prompts
    assert len(star.data) == 0

    points.add([[140, 190]])
    segment(viewer, qtbot, widget, key=True)
    want = suggest_click(SECOND, uncertainty_of(SECOND, WRONG))
    assert want.label == 0 and SECOND[want.point]
    np.testing.assert_array_equal(star.data, [want.point])
    np.testing.assert_allclose(star.face_color[0], RED)
    press(viewer, qtbot, Qt.Key_C)  # commit: the suggestion goes too
    assert len(star.data) == 0
    click(qtbot, widget.suggest_button)  # nothing to take: said, nothing added
    assert "No suggested click" in widget.status_label.text() and len(points.data) == 0
