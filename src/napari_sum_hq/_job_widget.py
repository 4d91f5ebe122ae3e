"""Base dock widget for one cancellable background job with a progress bar."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from napari.utils.notifications import show_error
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget
from sum_core.errors import Cancelled, SumError

from ._jobs import CancelToken, JobCancelled, ProgressRelay


class JobWidget(QWidget):
    """A widget that runs one job at a time in a worker thread (Run / Cancel / progress).

    Subclasses build their form, add :attr:`job_row`, :attr:`progress_bar` and
    :attr:`status_label` to their layout, and call :meth:`start_job`. Errors become
    notifications; a cancelled job (``JobCancelled`` or ``sum_core``'s ``Cancelled``)
    reports "Cancelled." in the status line.
    """

    def __init__(self, run_text: str) -> None:
        super().__init__()
        self.run_button = QPushButton(run_text)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.job_row = QHBoxLayout()
        self.job_row.addWidget(self.run_button)
        self.job_row.addWidget(self.cancel_button)
        self.progress_bar = QProgressBar()
        self.progress_bar.setValue(0)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self._worker = None
        self._token: CancelToken | None = None
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
        self.cancel_button.setEnabled(True)
        self.run_button.setEnabled(False)
        self.progress_bar.setRange(0, 0)
        self.status_label.setText("Running...")
        worker.start()

    def cancel(self, quiet: bool = False) -> None:
        """Stop the running job before its next unit of work (its result is dropped)."""
        if self._worker is None:
            return
        self._token.cancel()
        self._generation += 1
        self._done("Cancelled." if not quiet else self.status_label.text())
        self.progress_bar.setValue(0)

    def _done(self, status: str) -> None:
        self._worker = None
        self._token = None
        self.cancel_button.setEnabled(False)
        self.run_button.setEnabled(True)
        if self.progress_bar.maximum() == 0:
            self.progress_bar.setRange(0, 1)
        self.status_label.setText(status)

    def _on_progress(self, generation: int, done: int, total: int) -> None:
        if generation == self._generation:
            self.progress_bar.setRange(0, max(total, 1))
            self.progress_bar.setValue(done)

    def _on_returned(self, generation: int, on_result: Callable, value: Any) -> None:
        if generation != self._generation:
            return
        self._done("Done.")
        self.progress_bar.setValue(self.progress_bar.maximum())
        on_result(value)

    def _on_errored(self, generation: int, exc: BaseException) -> None:
        if generation != self._generation or isinstance(exc, (JobCancelled, Cancelled)):
            return
        message = str(exc) if isinstance(exc, SumError) else f"{type(exc).__name__}: {exc}"
        self._done(f"Failed: {message}")
        show_error(message)
