"""Base dock widget for one cancellable background job, and the status line every widget uses."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

from napari.utils.notifications import show_error
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)
from sum_core.errors import Cancelled, SumError

from ._jobs import CancelToken, JobCancelled, ProgressRelay, start_worker

#: Colour of a status line that reports a failure.
ERROR_STYLE = "color: #ff5c5c;"
#: Longest text a status line shows; a longer one is cut there, its whole text one click away (Details).
STATUS_CHARS = 240


def set_status(label: QLabel, text: str, error: bool = False, detail: str | None = None) -> None:
    """Show ``text`` in a widget's status line: red for an ``error``, the ``detail`` as its tooltip.

    Every widget writes its status through this function (or :func:`show_failure`), so a line
    never keeps an earlier colour or tooltip. A text longer than :data:`STATUS_CHARS` is cut
    there and becomes the detail (unless one is given).
    """
    if len(text) > STATUS_CHARS:
        detail = detail or text
        text = text[: STATUS_CHARS - 1].rstrip() + "…"
    label.setText(text)
    label.setStyleSheet(ERROR_STYLE if error else "")
    label.setToolTip(detail or "")


def show_failure(label: QLabel, exc: BaseException, prefix: str = "Failed") -> str:
    """Report a failed job in the status line ``label`` (red); a pop-up only for an unexpected error.

    A ``sum_core`` error (:class:`~sum_core.errors.SumError`: bad input, a missing file, ...)
    is said in the status line only; any other exception also gets napari's error
    notification (a bug: the user should see it wherever they look).

    Parameters
    ----------
    label : QLabel
        The widget's status line.
    exc : BaseException
        The job's exception.
    prefix : str
        Words before the message (``"Segment failed"``).

    Returns
    -------
    str
        The message shown after ``prefix``.
    """
    expected = isinstance(exc, SumError)
    message = str(exc) if expected else f"{type(exc).__name__}: {exc}"
    set_status(label, f"{prefix}: {message}", error=True)
    if not expected:
        show_error(message)
    return message


def format_eta(seconds: float) -> str:
    """``"ETA 1 min 05 s"`` / ``"ETA 12 s"`` for a remaining time in seconds."""
    seconds = max(0, round(seconds))
    return f"ETA {seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"ETA {seconds} s"


class ProgressTracker:
    """Progress of one job in a widget's bar (``done/total`` and an ETA) and in napari's activity dock.

    Parameters
    ----------
    bar : QProgressBar
        The widget's bar.
    description : str
        The job's name in napari's activity dock.
    """

    def __init__(self, bar: QProgressBar, description: str) -> None:
        self.bar = bar
        self.description = description
        self._start: float | None = None
        self._first_done = 0
        self._activity = None

    def update(self, done: int, total: int) -> None:
        """Show ``done`` of ``total`` units; the ETA is from the rate since the first report."""
        from napari.utils import progress

        now = time.perf_counter()
        if self._start is None or done < self._first_done:
            self._start, self._first_done = now, done
        total = max(total, 1)
        self.bar.setRange(0, total)
        self.bar.setValue(min(done, total))
        rate_done = done - self._first_done
        eta = f", {format_eta((now - self._start) / rate_done * (total - done))}" if rate_done > 0 else ""
        self.bar.setFormat(f"%v/%m (%p%){eta}")
        if self._activity is None:
            self._activity = progress(total=total, desc=self.description)
        activity = self._activity  # napari may run the event loop here: a close() in it ends the entry
        activity.total = total
        activity.n = min(done, total)
        activity.set_description(f"{self.description}{eta}")
        if self._activity is activity:
            activity.refresh()

    def close(self) -> None:
        """End the activity-dock entry and reset the bar's text."""
        if self._activity is not None:
            self._activity.close()
            self._activity = None
        self.bar.setFormat("%p%")


class StatusDetails(QPushButton):
    """A "Details" button beside a status line: shows the line's full text (its tooltip) on click."""

    def __init__(self, label: QLabel) -> None:
        super().__init__("Details")
        self.label = label
        self.setToolTip("Show the full message of the last failure.")
        self.clicked.connect(self.show_details)
        self.setVisible(False)

    def refresh(self) -> None:
        """Visible only while the status line has a detail."""
        self.setVisible(bool(self.label.toolTip()))

    def show_details(self) -> None:
        """A message box with the full detail (selectable text)."""
        box = QMessageBox(QMessageBox.Information, "Details", self.label.toolTip(), parent=self)
        box.setTextInteractionFlags(Qt.TextSelectableByMouse)
        box.open()


class JobWidget(QWidget):
    """A widget that runs one job at a time in a worker thread (Run / Cancel / progress).

    Subclasses build their form in :attr:`body` (inside a scroll area, so a short window
    scrolls), add :attr:`job_row`, :attr:`progress_bar` and :attr:`status_label` to it, and
    call :meth:`start_job`. A failure turns the status line red with the message
    (:func:`show_failure`; a pop-up only for an unexpected error); a cancelled job
    (``JobCancelled`` or ``sum_core``'s ``Cancelled``) reports "Cancelled.". Progress goes to
    the bar (done/total and an ETA) and to napari's activity dock.
    """

    def __init__(self, run_text: str) -> None:
        super().__init__()
        self.run_button = QPushButton(run_text)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running job at its next tile or task (its result is dropped).")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.job_row = QHBoxLayout()
        self.job_row.addWidget(self.run_button)
        self.job_row.addWidget(self.cancel_button)
        self.progress_bar = QProgressBar()
        self.progress_bar.setValue(0)
        self.progress_bar.setToolTip("Progress of the running job: units done / all units, and the time left.")
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.details_button = StatusDetails(self.status_label)
        self.status_row = QHBoxLayout()
        self.status_row.addWidget(self.status_label, 1)
        self.status_row.addWidget(self.details_button)
        self.body = QWidget()
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.body)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self.scroll_area = scroll
        self._worker = None
        self._token: CancelToken | None = None
        self._tracker: ProgressTracker | None = None
        self._workers: set = set()
        self._generation = 0

    @property
    def is_running(self) -> bool:
        """Whether a job whose result will be used is running."""
        return self._worker is not None

    @property
    def running_workers(self) -> int:
        """Worker threads still running, cancelled ones included."""
        return len(self._workers)

    def set_status(self, text: str, error: bool = False, detail: str | None = None) -> None:
        """Write the status line (see :func:`set_status`)."""
        set_status(self.status_label, text, error, detail)
        self.details_button.refresh()

    def fail(self, exc: BaseException, prefix: str = "Failed") -> None:
        """Report a failure in the status line (see :func:`show_failure`)."""
        show_failure(self.status_label, exc, prefix)
        self.details_button.refresh()

    def start_job(self, function: Callable, args: tuple, kwargs: dict[str, Any], on_result: Callable) -> None:
        """Run ``function(*args, token, relay, **kwargs)`` in a worker; ``on_result`` gets its value."""
        from napari.qt.threading import create_worker

        self.cancel(quiet=True)
        self._generation += 1
        generation = self._generation
        token, relay = CancelToken(), ProgressRelay(self)
        worker = create_worker(function, *args, token, relay, _start_thread=False, _ignore_errors=True, **kwargs)
        relay.progressed.connect(partial(self._on_progress, generation))
        worker.returned.connect(partial(self._on_returned, generation, on_result))
        worker.errored.connect(partial(self._on_errored, generation))
        worker.finished.connect(partial(self._workers.discard, worker))
        self._workers.add(worker)
        self._worker, self._token = worker, token
        self._tracker = ProgressTracker(self.progress_bar, self.run_button.text())
        self.cancel_button.setEnabled(True)
        self.run_button.setEnabled(False)
        self.progress_bar.setRange(0, 0)
        self.set_status("Running...")
        start_worker(worker)

    def cancel(self, quiet: bool = False) -> None:
        """Stop the running job before its next unit of work (its result is dropped)."""
        if self._worker is None:
            return
        self._token.cancel()
        self._generation += 1
        self._done()
        if not quiet:
            self.set_status("Cancelled.")
        self.progress_bar.setValue(0)

    def _done(self) -> None:
        self._worker = None
        self._token = None
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None
        self.cancel_button.setEnabled(False)
        self.run_button.setEnabled(True)
        if self.progress_bar.maximum() == 0:
            self.progress_bar.setRange(0, 1)

    def _on_progress(self, generation: int, done: int, total: int) -> None:
        if generation == self._generation and self._tracker is not None:
            self._tracker.update(done, total)

    def _on_returned(self, generation: int, on_result: Callable, value: Any) -> None:
        if generation != self._generation:
            return
        self._done()
        self.set_status("Done.")
        self.progress_bar.setValue(self.progress_bar.maximum())
        on_result(value)

    def _on_errored(self, generation: int, exc: BaseException) -> None:
        if generation != self._generation or isinstance(exc, (JobCancelled, Cancelled)):
            return
        self._done()
        self.progress_bar.setValue(0)
        self.fail(exc)
