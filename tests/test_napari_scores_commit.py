"""Issue 16 items 1 and 3 (GUI, shown viewer, real keys and buttons): every committed object gets its scores in
the committed layer's features, an undo restores them, the review queue lists them without a scan, and its R
prompts the interactive widget with the object's mask (box + deepest point), which S segments.

The decoder is a fake with known masks, scores, logits and uncertainty (:mod:`scores_fakes`), so every value is
compared with what it must be.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from napari_fixtures import camera_image, drain_thread_pool, ellipse, open_widget, tiny_checkpoint  # noqa: F401
from qtpy.QtCore import Qt
from scores_fakes import expected_stability, recording_decoder, uncertainty_of
from sum_core.object_scores import object_scores
from test_napari_review import click_row, listed_ids, wait_for_job
from test_napari_widget import click, press, segment

pytestmark = pytest.mark.gui

SHAPE = (256, 320)
FIRST, SECOND = ellipse(SHAPE, (90, 100), (40, 50)), ellipse(SHAPE, (185, 235), (30, 40))
THIRD = ellipse(SHAPE, (120, 160), (30, 40))  # overlaps FIRST: committed without the overlap
FIRST_CLICK, SECOND_CLICK, THIRD_CLICK = (90, 100), (185, 235), (130, 175)
SCORES = (0.875, 0.625, 0.5)  # exact in float32
EXTRAS = (np.zeros(SHAPE, np.float32),) * 3


@pytest.fixture
def committed_first(make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch):
    """The viewer, the widget and the decoder's calls after segmenting and committing FIRST (key C)."""
    import sum_core.predictor as predictor_module

    calls: list = []
    monkeypatch.setattr(predictor_module, "decode_window", recording_decoder((FIRST, SECOND, THIRD), SCORES, EXTRAS, calls))
    viewer = make_napari_viewer(show=True)
    viewer.add_image(camera_image(SHAPE), name="cells")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "cells")
    widget.layers.points().add([FIRST_CLICK])
    segment(viewer, qtbot, widget, key=True)
    press(viewer, qtbot, Qt.Key_C)
    return viewer, widget, calls


def expected_row(mask: np.ndarray, label_id: int, score: float, extra: np.ndarray, predicted=None) -> dict:
    """The row the commit must write for the committed pixels ``mask`` of the prediction ``predicted`` (default:
    the same): object_scores on the whole plane (the widget computes it in a window)."""
    predicted = mask if predicted is None else predicted
    table = object_scores(mask.astype(np.uint32), uncertainty_of(predicted, extra))
    rows, cols = np.nonzero(mask)
    return {"index": label_id, "slice": 0, "area": int(mask.sum()), "predicted_iou": score,
            "stability": expected_stability(predicted), "mean_uncertainty": table.mean_uncertainty[0],
            "boundary_uncertainty": table.boundary_uncertainty[0], "bbox_row0": rows.min(),
            "bbox_col0": cols.min(), "bbox_row1": rows.max() + 1, "bbox_col1": cols.max() + 1}  # fmt: skip


def assert_rows(features: pd.DataFrame, expected: list[dict]) -> None:
    assert len(features) == len(expected)
    for (_, row), want in zip(features.iterrows(), expected, strict=True):
        for name, value in want.items():
            if isinstance(value, float):
                # float32 decoder outputs (score, stability) against float64: 1e-6 relative
                np.testing.assert_allclose(row[name], value, rtol=1e-6, err_msg=name)
            else:
                assert int(row[name]) == int(value), name


def test_commit_writes_scores_and_undo_restores_them(committed_first, qtbot):
    viewer, widget, _ = committed_first
    committed = widget.layers.committed()
    first = [expected_row(FIRST, 1, SCORES[0], EXTRAS[0])]
    assert_rows(committed.features, first)
    assert first[0]["stability"] < 1 and first[0]["boundary_uncertainty"] < first[0]["mean_uncertainty"]
    before = committed.features.copy()

    widget.layers.points().add([SECOND_CLICK])
    segment(viewer, qtbot, widget, key=True)
    click(qtbot, widget.commit_button)
    assert_rows(committed.features, [*first, expected_row(SECOND, 2, SCORES[1], EXTRAS[1])])

    viewer.layers.selection.active = widget.layers.points()
    press(viewer, qtbot, Qt.Key_Z, Qt.ControlModifier)  # the widget's undo of the last commit
    assert not np.any(committed.data == 2)
    pd.testing.assert_frame_equal(committed.features, before)  # the rows as they were before that commit

    widget.layers.points().add([THIRD_CLICK])  # protect objects: committed without FIRST's pixels, scored so
    segment(viewer, qtbot, widget, key=True)
    press(viewer, qtbot, Qt.Key_C)
    assert np.count_nonzero(THIRD & FIRST) > 0
    assert_rows(committed.features, [*first, expected_row(THIRD & ~FIRST, 3, SCORES[2], EXTRAS[2], THIRD)])


def test_review_lists_committed_scores_and_r_prompts_with_the_mask(committed_first, qtbot, monkeypatch):
    import napari_sum_hq._review_widget as review_module
    from sum_core.prompts import prompts_from_mask
    from test_napari_review import open_review

    viewer, widget, calls = committed_first

    def no_scan(*_args):
        raise AssertionError("the committed layer's features are current: no scan")

    monkeypatch.setattr(review_module, "scan_rows", no_scan)
    review = open_review(viewer, qtbot, "cells committed objects")
    columns = [review.column_combo.itemText(i) for i in range(review.column_combo.count())]
    assert {"predicted_iou", "stability", "mean_uncertainty", "boundary_uncertainty"} <= set(columns)
    assert listed_ids(review) == [1] and "1 object(s) from the features" in review.status_label.text()

    click_row(review, qtbot, 0)
    qtbot.keyClick(review.table, Qt.Key_R)
    wait_for_job(review, qtbot)
    expected = prompts_from_mask(FIRST)
    viewer.layers.selection.active = widget.layers.points()
    segment(viewer, qtbot, widget, key=True)  # S in the interactive widget
    prompts = calls[-1]
    np.testing.assert_allclose(prompts.boxes, [expected.box])
    np.testing.assert_allclose(prompts.points, expected.points)
    assert prompts.labels.tolist() == [1]
    np.testing.assert_array_equal(widget.layers.current().data != 0, FIRST)  # segmented again
