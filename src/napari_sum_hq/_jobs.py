"""Progress and cancellation for ``sum_core`` calls that run in a worker thread.

The widgets run ``sum_core``'s long calls in a napari ``FunctionWorker``. A
:class:`CancelToken` is the cancel flag the GUI thread sets; its :attr:`CancelToken.event`
is the ``cancel=`` event of the ``sum_core`` calls that take one (``segment_zarr``, the
predictors), which raise :class:`sum_core.errors.Cancelled` at their next check point
(between decoder batches and tiles, before the next task). Progress hooks:

- ``segment_zarr(on_progress=)`` (wired in :mod:`napari_sum_hq._batch_jobs`) reports finished
  tasks plus the decoder batches of running tiles.
- :class:`ReportingVolume`: wraps the stack given to ``propagate``; every plane read is one
  progress step, and a read after a cancel raises :class:`JobCancelled`.

Progress goes to the GUI thread through :class:`ProgressRelay`'s Qt signal (queued across
threads). Every worker is started by :func:`start_worker`. Nothing here imports torch.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, QThreadPool, Signal

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


_started = {"running": 0}  # workers started by start_worker and not finished yet


def start_worker(worker: Any) -> None:
    """Start a napari worker, keeping a thread of Qt's global thread pool free for Qt itself.

    napari runs workers in ``QThreadPool.globalInstance()``, sized to the number of cores. Qt also hands
    short tasks the GUI thread waits for to that pool (converting and scaling images, e.g. the activity
    dock's animation): were every thread held by a long job (an encoder pass, two jobs on a 2-core
    machine), the GUI thread would freeze until a job ended. So the pool grows to the running workers
    plus two before each start.
    """
    pool = QThreadPool.globalInstance()
    _started["running"] += 1
    worker.finished.connect(_worker_finished)
    needed = max(pool.activeThreadCount(), _started["running"]) + 2
    if pool.maxThreadCount() < needed:
        pool.setMaxThreadCount(needed)
    worker.start()


def _worker_finished() -> None:
    _started["running"] = max(_started["running"] - 1, 0)

