"""GUI test: Run clicked while the chosen checkpoint is still being checked for an AIS decoder starts nothing
and says why (the mode is not known yet; a job started then raced the check's model load and could hang napari).
Run under Xvfb: ``xvfb-run -a python -m pytest``."""

from __future__ import annotations

import threading

import pytest
from napari_fixtures import drain_thread_pool, tiny_checkpoint  # noqa: F401
from qtpy.QtCore import Qt

pytestmark = pytest.mark.gui


@pytest.mark.parametrize("kind", ["auto", "batch"])
def test_run_waits_for_the_model_check(make_napari_viewer, qtbot, tiny_checkpoint, tmp_path, monkeypatch, kind):
    import numpy as np
    import napari_sum_hq._widget_parts as parts
    from napari_sum_hq._auto_widget import AutomaticSegmentationWidget
    from napari_sum_hq._batch_widget import BatchSegmentationWidget

    release = threading.Event()
    real = parts.decoder_mode
    monkeypatch.setattr(parts, "decoder_mode", lambda choice: release.wait(60) and real(choice))
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((64, 64), np.uint8), name="img")
    widget = (AutomaticSegmentationWidget if kind == "auto" else BatchSegmentationWidget)(viewer)
    viewer.window.add_dock_widget(widget)
    if kind == "batch":
        widget.source_edit.setText(str(tmp_path / "missing.tif"))
        widget.target_edit.setText(str(tmp_path / "out.zarr"))
    widget.model.set_source(str(tiny_checkpoint))
    assert widget.auto_mode.checking
    qtbot.mouseClick(widget.run_button, Qt.LeftButton)
    assert widget.status_label.text() == parts.CHECKING_MODEL
    assert not widget.is_running and widget.running_workers == 0
    release.set()
    qtbot.waitUntil(lambda: not widget.auto_mode.checking, timeout=60_000)
