"""Issue 14 items 1, 2, 6 for the interactive widget, in a shown viewer with real clicks and keys.

Choosing an image with a registry model that is not downloaded starts no download (the status
line says so in red; the model picker's Download prepares the image afterwards); a sum_core
error turns the status line red with no pop-up; the sole image is pre-selected; the preparation's
progress goes through the ETA tracker.
"""

from __future__ import annotations

import pytest
from qtpy.QtCore import Qt

from napari_fixtures import disk_image, drain_thread_pool, notifications, tiny_checkpoint, wait_for_encode  # noqa: F401
from test_napari_first_contact import WAIT_MS, cache_files, model_cache  # noqa: F401
from test_napari_jobs import click, errors

pytestmark = pytest.mark.gui


def open_interactive(viewer):
    from napari_sum_hq._interactive_widget import InteractiveSegmentationWidget

    widget = InteractiveSegmentationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return widget


def test_choosing_an_image_with_an_undownloaded_model_downloads_nothing_until_download_is_clicked(
    make_napari_viewer, qtbot, model_cache, monkeypatch, notifications  # noqa: F811
):
    from sum_core import zoo
    from sum_core.errors import InvalidInputError

    from napari_sum_hq import _interactive_images
    from napari_sum_hq._job_widget import ERROR_STYLE

    prepared = []

    def prepare_steps(*args):  # the prepare job after the download: recorded, then a sum_core error
        prepared.append(args[0].source)
        raise InvalidInputError("image: recorded by the test")
        yield  # a generator, as the real one

    monkeypatch.setattr(_interactive_images, "prepare_steps", prepare_steps)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(disk_image(), name="cells")
    widget = open_interactive(viewer)
    panel = widget.model_picker.download
    assert widget.image_combo.currentText() == "cells"  # the sole image is pre-selected
    qtbot.wait(1500)  # a silent download of the throttled 3 MiB would be running now
    assert not panel.downloading and not widget.is_busy and cache_files(model_cache) == []
    assert prepared == []
    status = widget.status_label
    assert status.text().startswith(f"model {zoo.DEFAULT_MODEL}") and "is not downloaded" in status.text()
    assert status.styleSheet() == ERROR_STYLE and panel.isVisibleTo(widget)

    widget.layers.points().add([[48, 60]])
    click(qtbot, widget.segment_button)  # S cannot prepare either: still no download, the reason stays
    assert not panel.downloading and cache_files(model_cache) == [] and "is not downloaded" in status.text()

    click(qtbot, panel.download_button)
    qtbot.waitUntil(lambda: prepared == [zoo.DEFAULT_MODEL], timeout=WAIT_MS)  # prepared again after it
    qtbot.waitUntil(lambda: "recorded by the test" in status.text(), timeout=WAIT_MS)
    assert zoo.cached_path(zoo.DEFAULT_MODEL).is_file()
    assert status.text() == "Embedding failed: image: recorded by the test" and status.styleSheet() == ERROR_STYLE
    assert errors(notifications) == []  # a sum_core error: no pop-up


def test_a_sum_error_turns_the_status_red_without_a_pop_up_and_progress_has_an_eta(
    make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch, notifications  # noqa: F811
):
    from napari_sum_hq import _interactive_jobs
    from napari_sum_hq._job_widget import ERROR_STYLE, ProgressTracker
    from napari_sum_hq._session import PREPARE_STEPS

    reports = []

    class Recording(ProgressTracker):
        def update(self, done: int, total: int) -> None:
            reports.append((self.description, done, total))
            super().update(done, total)

    monkeypatch.setattr(_interactive_jobs, "ProgressTracker", Recording)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(disk_image(), name="cells")
    widget = open_interactive(viewer)
    widget.set_model_source(str(tiny_checkpoint))
    assert widget.image_combo.currentText() == "cells"
    wait_for_encode(widget, qtbot)
    embedding = [(done, total) for name, done, total in reports if name == "Embedding"]
    assert len(embedding) >= 2 and embedding == sorted(embedding) and {t for _, t in embedding} == {len(PREPARE_STEPS)}
    assert widget.status_label.styleSheet() == ""

    qtbot.keyClick(viewer.window._qt_viewer.canvas.native, Qt.Key_S)  # S without a prompt
    assert widget.status_label.text().startswith("Cannot segment: No prompt on this slice")
    assert widget.status_label.styleSheet() == ERROR_STYLE
    assert errors(notifications) == []

    click(qtbot, widget.commit_button)  # nothing segmented: said in red too
    assert widget.status_label.text().startswith("Nothing to commit") and widget.status_label.styleSheet() == ERROR_STYLE
    assert errors(notifications) == []
