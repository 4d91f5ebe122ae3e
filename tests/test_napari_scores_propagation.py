"""Issue 16 item 1 in a stack (GUI, shown viewer, real keys): every slice a propagation (Shift+S) writes gets its
own row of scores when committed (C), keyed (slice, id), from that slice's prediction; the widget's undo
(Ctrl+Z) restores the rows of before the commit (none)."""

from __future__ import annotations

import numpy as np
import pytest
from napari_fixtures import camera_image, drain_thread_pool, ellipse, open_widget, tiny_checkpoint  # noqa: F401
from napari_fixtures import ENCODE_TIMEOUT_MS, wait_for_encode
from qtpy.QtCore import Qt
from scores_fakes import recording_decoder
from test_napari_scores_commit import expected_row
from test_napari_widget import press, segment

pytestmark = pytest.mark.gui

STACK = (5, 96, 128)
OBJECT = ellipse(STACK[1:], (45, 60), (25, 35))
START = 2


def test_propagated_slices_get_their_scores(make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch):
    import sum_core.predictor as predictor_module

    calls: list = []
    extra = np.zeros(STACK[1:], np.float32)
    monkeypatch.setattr(predictor_module, "decode_window", recording_decoder((OBJECT,), (0.75,), (extra,), calls))
    viewer = make_napari_viewer(show=True)
    viewer.add_image(camera_image(STACK), name="stack")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "stack")
    viewer.dims.set_point(0, START)
    # the slice debounce, then its preparation: wait for START's predictor itself (not a fixed time)
    qtbot.waitUntil(lambda: widget.predictors.predictor((START,)) is not None, timeout=ENCODE_TIMEOUT_MS)
    wait_for_encode(widget, qtbot)
    widget.layers.points().add([[START, 45, 60]])
    segment(viewer, qtbot, widget, key=True)
    press(viewer, qtbot, Qt.Key_S, Qt.ShiftModifier)  # propagate
    wait_for_encode(widget, qtbot)
    assert (widget.layers.current().data != 0).any(axis=(1, 2)).all()  # the object on every slice
    press(viewer, qtbot, Qt.Key_C)

    committed = widget.layers.committed()
    features = committed.features
    assert features["slice"].tolist() == list(range(STACK[0])) and set(features["index"]) == {1}
    want = expected_row(OBJECT, 1, 0.75, extra)
    for _, row in features.iterrows():
        for name, value in want.items():
            if name != "slice":  # float32 decoder outputs against float64: 1e-6 relative
                np.testing.assert_allclose(row[name], value, rtol=1e-6, err_msg=f"slice {row['slice']}: {name}")

    viewer.layers.selection.active = widget.layers.points()
    press(viewer, qtbot, Qt.Key_Z, Qt.ControlModifier)
    assert not committed.data.any() and len(committed.features) == 0
