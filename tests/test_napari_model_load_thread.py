"""Issue 14 item 6: the first use of a model never loads it on the GUI thread (it froze napari ~4 s).

A fresh checkpoint (not in ``resolve_model``'s cache) is used the way a user first does: the
interactive widget prepares the sole image, S segments a point; the automatic widget's Run. Every
read of the checkpoint (``torch.load``) is recorded with its thread: none may be the GUI thread.
"""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
import torch
from napari_fixtures import disk_image, drain_thread_pool, notifications, tiny_checkpoint, wait_for_encode  # noqa: F401
from qtpy.QtCore import Qt
from test_napari_jobs import amg, click, errors, wait_job
from test_napari_widget import press

pytestmark = pytest.mark.gui


def test_first_use_of_a_model_loads_it_in_a_worker_thread(
    make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch, tmp_path, notifications
):
    from napari_sum_hq._auto_widget import AutomaticSegmentationWidget
    from napari_sum_hq._interactive_widget import InteractiveSegmentationWidget

    loads = []  # (checkpoint, loaded on the GUI thread)
    real_load = torch.load

    def recording_load(f, *args, **kwargs):
        loads.append((str(getattr(f, "name", f)), threading.current_thread() is threading.main_thread()))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(disk_image(), name="cells")

    first = shutil.copy(tiny_checkpoint, tmp_path / "first_use.pth")  # never loaded before: no cache hit
    widget = InteractiveSegmentationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_model_source(str(first))  # the sole image is chosen: preparing it loads the model
    wait_for_encode(widget, qtbot)
    widget.layers.points().add([[48, 60]])
    press(viewer, qtbot, Qt.Key_S)
    wait_for_encode(widget, qtbot)
    assert widget.layers.current().data.any()

    second = shutil.copy(tiny_checkpoint, tmp_path / "first_auto_use.pth")
    auto = AutomaticSegmentationWidget(viewer)
    viewer.window.add_dock_widget(auto)
    auto.model.set_source(str(second))
    amg(auto)["points_per_side"].setValue(4)
    click(qtbot, auto.run_button)
    wait_job(auto, qtbot)
    assert auto.status_label.text().startswith("Found"), auto.status_label.text()

    loaded = {path for path, _ in loads}
    assert {str(first), str(second)} <= loaded, loads
    assert [path for path, on_gui_thread in loads if on_gui_thread] == []
    assert errors(notifications) == []
    np.testing.assert_array_equal(widget.layers.committed().data, 0)
