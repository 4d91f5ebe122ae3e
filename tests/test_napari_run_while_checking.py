"""GUI test: Run clicked while the chosen checkpoint is still being checked for an AIS decoder waits for the
check, saying so, and then starts (the mode is not known before; a job started at once raced the check's model
load and once hung napari). Run under Xvfb: ``xvfb-run -a python -m pytest``."""

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
    assert not widget.is_running  # nothing started during the check
    release.set()
    qtbot.waitUntil(lambda: not widget.auto_mode.checking and not widget.is_running and widget.running_workers == 0,
                    timeout=60_000)
    if kind == "auto":  # then the job ran, with the mode the check decided
        assert "img auto labels" in viewer.layers
        assert widget.status_label.text().startswith("Found ")
    else:  # then the job started and met the missing source
        assert "missing.tif" in widget.status_label.text()
