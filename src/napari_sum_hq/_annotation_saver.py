"""Writes the interactive widget's annotation file off the GUI thread, one save after another."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from qtpy.QtCore import QObject, Signal
from sum_core.errors import SumError

from ._annotation_file import CommitPrompts, ImageIdentity, save_annotations


class AnnotationSaver(QObject):
    """One saver thread: saves are written in the order they were asked for (the order of the commits).

    Saves are coalesced: while one is being written, only the latest snapshot asked for each file
    waits (an older one is dropped unwritten, its snapshot released), so a burst of commits costs at
    most two snapshots per file and the file always ends with the last one.

    Signals
    -------
    done(str, bool)
        ``("Saved to PATH.", False)`` or ``("Not saved: REASON", True)`` after each written save.
    """

    done = Signal(str, bool)

    def __init__(self) -> None:
        super().__init__()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sum-hq-save")
        self._lock = threading.Lock()
        self._pending: dict[str, tuple] = {}  # path -> the latest snapshot to write there
        self._draining = False  # a drain of ``_pending`` is queued or running in the saver thread

    def submit(
        self,
        path: str,
        labels: np.ndarray,
        prompts: CommitPrompts,
        image: ImageIdentity | str,
        objects: dict[str, np.ndarray] | None = None,
        objects_current: bool = False,
    ) -> None:
        """Save snapshots (``labels``, ``prompts`` and ``objects`` must not change afterwards) to ``path``
        (:func:`napari_sum_hq._annotation_file.save_annotations`)."""
        with self._lock:
            self._pending.pop(str(path), None)  # replaced by this newer snapshot, and queued last
            self._pending[str(path)] = (path, labels, prompts, image, objects, objects_current)
            if self._draining:
                return
            self._draining = True
        self._executor.submit(self._drain)

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._draining = False
                    return
                job = self._pending.pop(next(iter(self._pending)))
            self._save(*job)

    def _save(self, path: str, *snapshot) -> None:
        try:
            save_annotations(path, *snapshot)
        except Exception as exc:  # noqa: BLE001 - every failure must reach the status line
            message = str(exc) if isinstance(exc, SumError) else f"{type(exc).__name__}: {exc}"
            self.done.emit(f"Not saved: {message}", True)
            return
        self.done.emit(f"Saved to {path}.", False)

    def flush(self) -> None:
        """Wait until every save asked for so far is written."""
        self._executor.submit(lambda: None).result()

    def shutdown(self) -> None:
        """Write the pending saves, then stop the thread."""
        self._executor.shutdown(wait=True)
