"""Progress and cancellation for ``sum_core`` calls that run in a worker thread.

The widgets run ``sum_core``'s long calls in a napari ``FunctionWorker``. A
:class:`CancelToken` is the cancel flag the GUI thread sets; its :attr:`CancelToken.event`
is the ``cancel=`` event of the ``sum_core`` calls that take one (``segment_zarr``, the
predictors), which raise :class:`sum_core.errors.Cancelled` at their next check point
(between decoder batches and tiles, before the next task). Progress hooks:

- :class:`TaskProgress`: a dask callback for ``segment_zarr`` jobs. It counts the job's
  tasks (keys named ``sum-hq-...``) and reports each finished one. The widgets use dask's
  synchronous scheduler, so nothing keeps running after a cancel and every finished unit is
  already flagged done: rerunning the job resumes from there.
- :class:`ReportingVolume`: wraps the stack given to ``propagate``; every plane read is one
  progress step, and a read after a cancel raises :class:`JobCancelled`.

Progress goes to the GUI thread through :class:`ProgressRelay`'s Qt signal (queued across
threads). Nothing here imports torch.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from dask.callbacks import Callback
from qtpy.QtCore import QObject, Signal

#: Prefix of the dask keys of ``sum_core.batch`` tasks (one per unit of resumable work).
TASK_PREFIX = "sum-hq-"


class JobCancelled(Exception):
    """Raised inside a worker when the user cancelled its job."""


class ProgressRelay(QObject):
    """Carries ``(done, total)`` progress from a worker thread to the GUI thread."""

    progressed = Signal(int, int)


class CancelToken:
    """A cancel flag shared by the GUI thread (sets it) and a worker (checks it)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the job to stop at its next check point."""
        self._event.set()

    @property
    def event(self) -> threading.Event:
        """The flag as a ``threading.Event``, for ``sum_core``'s ``cancel=`` arguments."""
        return self._event

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`JobCancelled` if the job was cancelled."""
        if self._event.is_set():
            raise JobCancelled("cancelled")


class TaskProgress(Callback):
    """Dask callback: progress over the ``sum-hq-`` tasks of a job.

    Parameters
    ----------
    relay : ProgressRelay
        Receives ``(tasks done, tasks in this run)``.
    """

    def __init__(self, relay: ProgressRelay) -> None:
        super().__init__()
        self.relay = relay
        self.total = 0
        self.done = 0

    def _start_state(self, dsk, state) -> None:
        self.total = sum(1 for key in dsk if _is_job_task(key))
        self.done = 0
        self.relay.progressed.emit(0, self.total)

    def _posttask(self, key, result, dsk, state, worker_id) -> None:
        if _is_job_task(key):
            self.done += 1
            self.relay.progressed.emit(self.done, self.total)


def _is_job_task(key: Any) -> bool:
    return isinstance(key, str) and key.startswith(TASK_PREFIX)


class ReportingVolume:
    """A read-through view of a stack that reports plane reads and honours a cancel.

    Parameters
    ----------
    data : array-like
        The stack, slice axis first (numpy, dask, zarr...).
    token : CancelToken
        Checked before every read.
    relay : ProgressRelay
        Receives ``(planes read, n_slices)`` after each read of a whole plane.
    """

    def __init__(self, data: Any, token: CancelToken, relay: ProgressRelay) -> None:
        self.data = data
        self.shape = tuple(data.shape)
        self.dtype = np.dtype(data.dtype)
        self.ndim = len(self.shape)
        self.token = token
        self.relay = relay
        self.planes_read = 0

    def __getitem__(self, index: Any) -> np.ndarray:
        self.token.check()
        out = np.asarray(self.data[index])
        if isinstance(index, tuple) and index and isinstance(index[0], (int, np.integer)):
            if all(part == slice(None) for part in index[1:]):
                self.planes_read += 1
                self.relay.progressed.emit(min(self.planes_read, self.shape[0]), self.shape[0])
        return out
