"""Issue 14 item 9 (interactive widget): a tooltip on every control, a form that scrolls, the task choice only for SUM
models and in plain words, every uncertainty method explained in one line (GUI, shown viewer)."""

from __future__ import annotations

import pytest
from napari_fixtures import disk_image, drain_thread_pool, open_widget, tiny_checkpoint  # noqa: F401
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def sum_checkpoint(tmp_path_factory):
    import torch
    from small_models import small_vit_config
    from sum_core.modeling import build_from_config

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("napari_sum") / "tiny_sum.pth"
    torch.save(build_from_config(small_vit_config(sum_tokens=True)).state_dict(), path)
    return path


def test_every_control_has_a_tooltip_and_the_words_are_plain(make_napari_viewer, qtbot, tiny_checkpoint, sum_checkpoint):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(disk_image(), name="img")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "img")
    controls = [
        w
        for kind in (QAbstractButton, QComboBox, QAbstractSpinBox, QLineEdit)
        for w in widget.findChildren(kind)
        if not isinstance(w.parent(), (QComboBox, QAbstractSpinBox))  # a combo's / spin box's own parts
    ]
    assert len(controls) > 20
    viewer.window._qt_window.resize(1200, 500)
    qtbot.wait(200)
    assert widget.scroll_area.verticalScrollBar().maximum() > 0  # a short window scrolls the form
    missing = [f"{type(w).__name__} {getattr(w, 'text', lambda: '')()!r}" for w in controls if not w.toolTip()]
    assert missing == []

    combo = widget.uncertainty_combo
    for i in range(combo.count()):  # every method: one line of explanation
        tip = combo.itemData(i, Qt.ToolTipRole)
        assert tip and "\n" not in tip and f"{combo.itemText(i)}: {tip}" in combo.toolTip()

    assert not widget.task_combo.isVisible() and not widget.task_label.isVisible()  # plain HQ-SAM: no task
    widget.set_model_source(str(sum_checkpoint))
    qtbot.waitUntil(lambda: widget.predictors.model is not None and widget.predictors.model.config.sum_tokens)
    qtbot.waitUntil(widget.task_combo.isVisible)
    names = [widget.task_combo.itemText(i) for i in range(widget.task_combo.count())]
    assert names == ["salient object", "entity", "anything, as SAM"]  # no bare indices
    assert widget.task_combo.currentData() == 1
