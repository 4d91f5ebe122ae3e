"""The interactive widget's background jobs: one job whose result is used at a time.

Every job (prepare, segment, propagate) runs in a napari worker thread and gets a generation
number; the results of cancelled or superseded jobs are dropped. Progress goes to the widget's
bar and napari's activity dock (:class:`~napari_sum_hq._job_widget.ProgressTracker`), failures to
the red status line (:func:`~napari_sum_hq._job_widget.show_failure`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from sum_core.errors import Cancelled

from ._job_widget import ProgressTracker, set_status, show_failure
from ._jobs import JobCancelled, ProgressRelay, start_worker
from ._session import PREPARE_STEPS

#: How often the status line of a running segmentation shows the tiles encoded so far.
PROGRESS_POLL_MS = 200


@dataclass
class RunningJob:
    """The running job whose result will be used."""

    name: str
    worker: Any
    stop: Callable[[], None] | None
    status: Callable[[], str] | None


class JobsPart:
    """Part of :class:`~napari_sum_hq._interactive_widget.InteractiveSegmentationWidget`: its jobs,
    progress bar, Cancel button and status line."""

    @property
    def is_busy(self) -> bool:
        """Whether a job whose result will be used (prepare, segment, propagate) is running."""
        return self._job is not None

    @property
    def running_workers(self) -> int:
        """Number of worker threads still running, cancelled ones included."""
        return len(self._workers)

    def _start_job(
        self,
        name: str,
        function: Callable,
        args: tuple,
        on_result: Callable,
        *,
        stop: Callable[[], None] | None = None,
        status: Callable[[], str] | None = None,
        relay: ProgressRelay | None = None,
        steps: bool = False,
    ) -> None:
        """Run ``function(*args)`` in a worker; ``on_result`` gets its value on the GUI thread.

        ``stop`` is called by Cancel (sets the job's cancel event or token); ``status`` is
        polled for the status line while the job runs; ``relay`` reports ``(done, total)``;
        ``steps``: ``function`` is a generator yielding the names of :data:`PREPARE_STEPS`.
        """
        from napari.qt.threading import create_worker

        self.cancel(quiet=True)
        self._generation += 1
        generation = self._generation
        worker = create_worker(function, *args, _start_thread=False, _ignore_errors=True)
        if steps:
            worker.yielded.connect(partial(self._on_job_step, generation))
        worker.returned.connect(partial(self._on_job_done, generation, on_result))
        worker.errored.connect(partial(self._on_job_error, generation))
        worker.finished.connect(partial(self._workers.discard, worker))
        if relay is not None:
            relay.progressed.connect(partial(self._on_job_progress, generation))
        self._workers.add(worker)
        self._job = RunningJob(name, worker, stop, status)
        self._tracker = ProgressTracker(self.progress_bar, name)
        self.cancel_button.setEnabled(True)
        if steps:
            self.progress_bar.setRange(0, len(PREPARE_STEPS))
            self.progress_bar.setValue(0)
        else:
            self.progress_bar.setRange(0, 0)  # busy until the job reports progress
        self._status(f"{name} running...")
        if status is not None:
            self._progress_timer.start()
        start_worker(worker)

    def _show_job_status(self) -> None:
        if self._job is not None and self._job.status is not None:
            self._status(self._job.status())

    def _on_job_step(self, generation: int, step: str) -> None:
        if generation == self._generation:
            self._status(f"{step}...")
            # last: napari's activity dock runs the event loop when it adds the entry (the job may end in it)
            self._tracker.update(PREPARE_STEPS.index(step), len(PREPARE_STEPS))

    def _on_job_progress(self, generation: int, done: int, total: int) -> None:
        if generation == self._generation and self._job is not None:
            self._tracker.update(done, total)

    def _on_job_done(self, generation: int, on_result: Callable, value: Any) -> None:
        if generation != self._generation:
            return  # superseded or cancelled: drop it
        self._finish_job(f"{self._job.name} finished.")
        on_result(value)

    def _on_job_error(self, generation: int, exc: BaseException) -> None:
        if generation != self._generation:
            return
        name = self._job.name
        self._segment_when_ready = False
        if isinstance(exc, (Cancelled, JobCancelled)):
            self._finish_job(f"{name} cancelled.")
            return
        self._end_job(done=True)
        show_failure(self.status_label, exc, f"{name} failed")

    def _status(self, text: str, error: bool = False) -> None:
        """The status line (red for an error; :func:`napari_sum_hq._job_widget.set_status`)."""
        set_status(self.status_label, text, error=error)

    def _finish_job(self, status: str) -> None:
        self._end_job(done=True)
        self._status(status)

    def _end_job(self, done: bool) -> None:
        """Forget the running job and reset the progress controls (full bar when ``done``)."""
        self._job = None
        self._preparing = None
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None
        self._progress_timer.stop()
        self.cancel_button.setEnabled(False)
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(int(done))

    def cancel(self, quiet: bool = False) -> None:
        """Stop the running job: its worker stops at its next check (between tiles, slices
        or steps) and its result, if it still arrives, is dropped."""
        job = self._job
        if job is None:
            return
        job.worker.quit()
        if job.stop is not None:
            job.stop()
        self._generation += 1
        self._segment_when_ready = False
        self._end_job(done=False)
        if not quiet:
            self._status(f"{job.name} cancelled.")
