"""GUI test: the batch widget takes a folder of images (one segment_many job), in a shown viewer
(run under Xvfb: ``xvfb-run -a python -m pytest``)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile
from napari_fixtures import drain_thread_pool, notifications, tiny_checkpoint  # noqa: F401
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFileDialog, QPushButton

from test_batch import blobs, fake_records

pytestmark = pytest.mark.gui
JOB_TIMEOUT_MS = 120_000


def click(qtbot, button) -> None:
    qtbot.mouseClick(button, Qt.LeftButton)


def wait_job(widget, qtbot) -> None:
    qtbot.waitUntil(lambda: not widget.is_running and widget.running_workers == 0, timeout=JOB_TIMEOUT_MS)


def test_batch_widget_folder_cancel_resume_list_and_open(make_napari_viewer, qtbot, tiny_checkpoint, tmp_path,
                                                         monkeypatch, notifications):
    import sum_core.batch.auto as batch_auto
    from napari_sum_hq._batch_widget import BatchSegmentationWidget

    calls = []
    monkeypatch.setattr(batch_auto, "window_records", lambda *a, **k: calls.append(1) or fake_records(*a[:4]))
    folder = tmp_path / "images"
    folder.mkdir()
    for i, name in enumerate(("a.tif", "b.tif", "c.tif")):
        tifffile.imwrite(folder / name, blobs((64, 80), seed=i))
    (folder / "broken.tif").write_bytes(b"II*\0 not a TIFF")
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(folder))

    viewer = make_napari_viewer(show=True)
    widget = BatchSegmentationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model.set_source(str(tiny_checkpoint))
    qtbot.waitUntil(lambda: not widget.auto_mode.checking, timeout=JOB_TIMEOUT_MS)  # the model's modes known
    click(qtbot, next(b for b in widget.findChildren(QPushButton) if b.text() == "folder..."))
    assert widget.source_edit.text() == str(folder)
    widget.target_edit.setText(str(tmp_path / "out"))
    widget.tiling.tile_spin.setValue(32)
    widget.tiling.halo_spin.setValue(8)  # 2 x 3 tiles per 64 x 80 image
    statuses = []
    rows = widget.outputs_list.model()
    rows.rowsInserted.connect(lambda *_: widget.is_running and widget.cancel())  # cancel once a file is listed

    click(qtbot, widget.run_button)
    qtbot.waitUntil(lambda: statuses.append(widget.status_label.text()) or widget.running_workers == 0,
                    timeout=JOB_TIMEOUT_MS)
    assert widget.status_label.text() == "Cancelled."
    assert any(s.startswith("Running: file 1 of 4, a.tif") for s in statuses)
    assert widget.outputs_list.item(0).text().startswith("a.tif -> a.zarr: done, ")
    with open(tmp_path / "out" / "summary.csv", newline="") as handle:
        first = [row["status"] for row in csv.DictReader(handle)]
    assert first[0] == "done" and first[-1] == "pending"
    done_before = len(calls)

    rows.rowsInserted.disconnect()
    click(qtbot, widget.run_button)
    wait_job(widget, qtbot)
    text = widget.status_label.text()
    assert text.startswith("Done: 3 of 4 images segmented into") and "Failed: broken.tif" in text
    items = [widget.outputs_list.item(i) for i in range(widget.outputs_list.count())]
    assert [i.text().split(":")[0] for i in items] == [
        "a.tif -> a.zarr", "b.tif -> b.zarr", "broken.tif -> broken.zarr", "c.tif -> c.zarr"]
    assert "failed" in items[2].text() and "broken.tif" in items[2].toolTip()
    assert len(calls) - done_before <= 3 * 6 - 6  # the file finished before the cancel was not recomputed

    widget.outputs_list.scrollToItem(items[1])
    widget.outputs_list.doItemsLayout()  # the view lays its items out lazily (on its next paint)
    centre = widget.outputs_list.visualItemRect(items[1]).center()
    qtbot.mouseClick(widget.outputs_list.viewport(), Qt.LeftButton, pos=centre)  # Qt opens on a press, then a double-click
    qtbot.mouseDClick(widget.outputs_list.viewport(), Qt.LeftButton, pos=centre)
    labels = viewer.layers["b.zarr labels"]
    assert np.asarray(labels.data).shape == (64, 80) and int(np.asarray(labels.data).max()) > 0
    assert "b.zarr uncertainty" in viewer.layers
