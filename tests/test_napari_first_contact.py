"""Issue 14 items 1, 2, 6, 9 (automatic and batch widgets): what a new user meets first, in a shown viewer.

A registry model that is not downloaded (the default one, pointed at a throttled local HTTP server),
the Download / Cancel buttons, an offline server, failing jobs, progress of a tiled job, a short
window and the tooltips. Screenshots (``SUM_HQ_SCREENSHOTS=docs/images``): first_contact.png and
error_status.png.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import threading
import time

import numpy as np
import pytest
from qtpy.QtWidgets import (
    QAbstractButton,
    QAbstractSpinBox,
    QComboBox,
    QLineEdit,
    QMessageBox,
    QProgressBar,
)

from http_server import unused_url
from napari_fixtures import EventLoopGaps, disk_image, drain_thread_pool, notifications, tiny_checkpoint  # noqa: F401
from napari_ux_helpers import save_screenshot
from test_napari_jobs import amg, click, errors, wait_job

pytestmark = pytest.mark.gui

PAYLOAD = np.random.default_rng(0).integers(0, 256, 3 * 2**20, dtype=np.uint8).tobytes()  # 3 MiB
SEND_BYTES, SEND_PAUSE_S = 64 * 1024, 0.03  # about 2 MB/s: a download of ~1.5 s, time to click Cancel
WAIT_MS = 60_000


class _ThrottledHandler(http.server.SimpleHTTPRequestHandler):
    """Serves PAYLOAD for every path, slowly (HEAD gives its size)."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _headers(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's name)
        self._headers()

    def do_GET(self) -> None:  # noqa: N802
        self._headers()
        try:
            for start in range(0, len(PAYLOAD), SEND_BYTES):
                self.wfile.write(PAYLOAD[start : start + SEND_BYTES])
                time.sleep(SEND_PAUSE_S)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client cancelled


@pytest.fixture
def model_cache(tmp_path, monkeypatch):
    """A private model cache; the default registry model is served by a throttled local server."""
    from sum_core import zoo

    from napari_sum_hq import _download

    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(zoo.MODELS_FILE_ENV, raising=False)
    monkeypatch.setattr(_download, "_SIZES", {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ThrottledHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    entry = dataclasses.replace(
        zoo.BUILTIN_MODELS[zoo.DEFAULT_MODEL],
        url=f"http://127.0.0.1:{server.server_address[1]}/weights.pth",
        known_hash="sha256:" + hashlib.sha256(PAYLOAD).hexdigest(),
    )
    monkeypatch.setitem(zoo.BUILTIN_MODELS, zoo.DEFAULT_MODEL, entry)
    yield tmp_path / "cache"
    server.shutdown()
    server.server_close()
    thread.join()


def cache_files(folder) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def failing_with(message: str):
    from sum_core.errors import InvalidInputError

    raise InvalidInputError(message)


def open_auto(viewer):
    from napari_sum_hq._auto_widget import AutomaticSegmentationWidget

    widget = AutomaticSegmentationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return widget


def test_not_downloaded_model_is_offered_downloaded_with_progress_and_cancelled(
    make_napari_viewer, qtbot, model_cache, notifications
):
    from sum_core import zoo

    from napari_sum_hq._job_widget import ERROR_STYLE

    viewer = make_napari_viewer(show=True)
    viewer.add_image(disk_image(), name="cells")
    widget = open_auto(viewer)
    panel = widget.model.download
    name = zoo.DEFAULT_MODEL
    assert widget.image_combo.currentText() == "cells"  # the one image is pre-selected
    assert panel.isVisibleTo(widget) and not panel.downloading  # nothing starts by itself
    qtbot.waitUntil(lambda: "(3.1 MB)" in panel.message.text(), timeout=WAIT_MS)  # size from a HEAD request
    assert panel.message.text().startswith(f"model {name} (3.1 MB) is not downloaded")
    assert panel.download_button.text() == "Download 3.1 MB"

    click(qtbot, widget.run_button)  # Run does not download either: it says why it cannot start
    assert not widget.is_running and widget.status_label.styleSheet() == ERROR_STYLE
    assert "is not downloaded" in widget.status_label.text()
    assert cache_files(model_cache) == []

    click(qtbot, panel.download_button)
    qtbot.waitUntil(lambda: panel.progress_bar.value() > 0, timeout=WAIT_MS)
    assert panel.progress_bar.isVisible() and " of 3.1 MB" in panel.progress_bar.format()
    save_screenshot(viewer, qtbot, "first_contact.png")
    click(qtbot, panel.cancel_button)
    qtbot.waitUntil(lambda: panel.running_workers == 0, timeout=WAIT_MS)
    assert cache_files(model_cache) == []  # the partial file was removed, nothing under the final name
    assert panel.isVisibleTo(widget) and "cancelled" in panel.message.text()

    values = []
    panel.progress_bar.valueChanged.connect(values.append)
    click(qtbot, panel.download_button)
    qtbot.waitUntil(lambda: not panel.isVisibleTo(widget), timeout=WAIT_MS)
    assert zoo.cached_path(name).read_bytes() == PAYLOAD
    assert values == sorted(values) and len(values) > 3  # bytes, increasing
    assert widget.model.not_downloaded() == ""
    assert widget.status_label.text() == f"Model {name} downloaded." and widget.status_label.styleSheet() == ""
    assert errors(notifications) == []


def test_offline_download_ends_in_a_short_message_with_details(
    make_napari_viewer, qtbot, model_cache, monkeypatch, notifications
):
    from sum_core import zoo

    name = zoo.DEFAULT_MODEL
    down = dataclasses.replace(zoo.BUILTIN_MODELS[name], url=unused_url("weights.pth"))
    monkeypatch.setitem(zoo.BUILTIN_MODELS, name, down)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(disk_image(), name="cells")
    widget = open_auto(viewer)
    panel = widget.model.download
    qtbot.waitUntil(lambda: panel.running_workers == 0, timeout=WAIT_MS)
    assert panel.message.text().startswith(f"model {name} is not downloaded")  # size unknown offline

    click(qtbot, panel.download_button)
    qtbot.waitUntil(lambda: not panel.downloading, timeout=WAIT_MS)
    target = zoo.cached_path(name)
    assert panel.message.text() == (
        f"model {name} not downloaded; copy {target.name} to {target.parent} or run `sum-hq models download {name}`."
    )
    assert "Could not download" in panel.message.toolTip()  # the full detail, one click away
    assert panel.details_button.isVisible()
    click(qtbot, panel.details_button)
    box = next(w for w in panel.findChildren(QMessageBox) if w.isVisible())
    assert "Could not download" in box.text()
    box.close()
    assert errors(notifications) == []  # no pop-up
    assert cache_files(model_cache) == []


def test_failures_turn_the_status_line_red_and_only_unexpected_ones_pop_up(
    make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch, notifications
):
    from sum_core.errors import InvalidInputError

    from napari_sum_hq import _auto_widget, _batch_widget
    from napari_sum_hq._job_widget import ERROR_STYLE, STATUS_CHARS

    viewer = make_napari_viewer(show=True)
    viewer.add_image(disk_image(), name="cells")
    widget = open_auto(viewer)
    widget.model.set_source(str(tiny_checkpoint))
    widget.set_status("Found 12 object(s) (AMG).")  # an earlier success

    def failing(*args, **kwargs):
        raise InvalidInputError("image: 5 channels; give a grey or RGB image")

    monkeypatch.setattr(_auto_widget, "auto_job", failing)
    click(qtbot, widget.run_button)
    wait_job(widget, qtbot)
    assert widget.status_label.text() == "Failed: image: 5 channels; give a grey or RGB image"
    assert widget.status_label.styleSheet() == ERROR_STYLE and not widget.details_button.isVisibleTo(widget)
    assert errors(notifications) == []
    save_screenshot(viewer, qtbot, "error_status.png")

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(_auto_widget, "auto_job", broken)
    click(qtbot, widget.run_button)
    wait_job(widget, qtbot)
    assert widget.status_label.text() == "Failed: ZeroDivisionError: division by zero"
    assert widget.status_label.styleSheet() == ERROR_STYLE
    assert errors(notifications) == ["ZeroDivisionError: division by zero"]  # the unexpected: a pop-up too

    batch = _batch_widget.BatchSegmentationWidget(viewer)
    viewer.window.add_dock_widget(batch)
    batch.model.set_source(str(tiny_checkpoint))
    batch.source_edit.setText("in.zarr")
    batch.target_edit.setText("out.zarr")

    def other_job(*args, **kwargs):
        raise InvalidInputError(
            "target: out.zarr holds the results of a different job (differs in mode); choose a new "
            "target or pass overwrite=True (--overwrite)"
        )

    monkeypatch.setattr(_batch_widget, "batch_job_with_features", other_job)
    click(qtbot, batch.run_button)
    wait_job(batch, qtbot)
    text = batch.status_label.text()
    assert text.endswith('choose a new target or check "overwrite a target of another job"')
    assert "--overwrite" not in text and batch.overwrite_check.text() == "overwrite a target of another job"

    long_message = "source: " + "a very long path/" * 40 + " does not exist"
    monkeypatch.setattr(_batch_widget, "batch_job_with_features", lambda *a, **k: failing_with(long_message))
    click(qtbot, batch.run_button)
    wait_job(batch, qtbot)
    assert len(batch.status_label.text()) <= STATUS_CHARS and batch.status_label.text().endswith("\u2026")
    assert batch.status_label.toolTip() == "Failed: " + long_message and batch.details_button.isVisibleTo(batch)
    assert errors(notifications) == ["ZeroDivisionError: division by zero"]  # still only the one pop-up


def test_tiled_job_progress_increases_with_an_eta_in_bar_and_activity_dock(make_napari_viewer, qtbot, tiny_checkpoint):
    from napari.utils import progress

    viewer = make_napari_viewer(show=True)
    viewer.add_image(disk_image((192, 192), (96, 96), 40), name="cells")
    widget = open_auto(viewer)
    widget.model.set_source(str(tiny_checkpoint))
    widget.tiling.tile_spin.setValue(64)  # 3 x 3 tiles
    amg(widget)["points_per_side"].setValue(4)
    values, formats, activity = [], [], []

    def seen(value):
        values.append((value, widget.progress_bar.maximum()))
        formats.append(widget.progress_bar.format())
        activity.extend((p.n, p.total) for p in progress._all_instances)

    widget.progress_bar.valueChanged.connect(seen)
    with EventLoopGaps() as gaps:
        click(qtbot, widget.run_button)
        wait_job(widget, qtbot)
    print(f"longest GUI-thread block during a first tiled AMG run: {gaps.max_ms:.0f} ms")
    assert widget.status_label.text().startswith("Found")
    during = [(v, m) for v, m in values if m > 1]
    done = [v for v, _ in during]
    assert done == sorted(done) and len(set(done)) >= 5 and done[-1] == during[-1][1]
    assert any("ETA" in text for text in formats)
    assert any(0 < n < total for n, total in activity)  # napari's activity dock had a real fraction
    assert not [p for p in progress._all_instances if p.desc.startswith(widget.run_button.text())]  # closed


def test_short_window_scrolls_and_every_control_has_a_tooltip(make_napari_viewer, qtbot, model_cache, monkeypatch):
    from qtpy.QtWidgets import QPushButton

    from napari_sum_hq import _batch_widget
    from napari_sum_hq._batch_widget import BatchSegmentationWidget

    viewer = make_napari_viewer(show=True)
    auto, batch = open_auto(viewer), BatchSegmentationWidget(viewer)
    viewer.window.add_dock_widget(batch)
    viewer.window._qt_window.resize(1200, 500)
    qtbot.wait(200)
    for widget in (auto, batch):
        assert widget.scroll_area.verticalScrollBar().maximum() > 0  # the form scrolls
        controls = [
            c for kind in (QAbstractButton, QComboBox, QAbstractSpinBox, QLineEdit, QProgressBar)
            for c in widget.findChildren(kind) if c.isVisibleTo(widget) and not isinstance(c.parent(), QAbstractSpinBox)
        ]  # fmt: skip
        untipped = [c.text() if hasattr(c, "text") else type(c).__name__ for c in controls if not c.toolTip()]
        assert len(controls) > 10 and untipped == []

    dialogs = []
    monkeypatch.setattr(_batch_widget.QFileDialog, "getOpenFileName", lambda *a: dialogs.append("file") or ("", ""))
    monkeypatch.setattr(
        _batch_widget.QFileDialog, "getExistingDirectory", lambda *a: dialogs.append("folder") or "/data/img.ome.zarr"
    )
    zarr_button = next(b for b in batch.findChildren(QPushButton) if b.text() == "zarr...")
    click(qtbot, zarr_button)  # a zarr folder: one folder dialog, not a file dialog first
    assert dialogs == ["folder"] and batch.source_edit.text() == "/data/img.ome.zarr"
