"""Writes the interactive widget's annotation file off the GUI thread, one save after another."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from qtpy.QtCore import QObject, Signal
from sum_core.errors import SumError

from ._annotation_file import CommitPrompts, save_annotations


class AnnotationSaver(QObject):
    """One saver thread: saves are written in the order they were asked for (the order of the commits).

    Signals
    -------
    done(str, bool)
        ``("Saved to PATH.", False)`` or ``("Not saved: REASON", True)`` after each save.
    """

    done = Signal(str, bool)

    def __init__(self) -> None:
        super().__init__()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sum-hq-save")

    def submit(self, path: str, labels: np.ndarray, prompts: CommitPrompts, image_name: str) -> None:
        """Save snapshots (``labels`` and ``prompts`` must not change afterwards) to ``path``."""
        self._executor.submit(self._save, path, labels, prompts, image_name)

    def _save(self, path: str, labels: np.ndarray, prompts: CommitPrompts, image_name: str) -> None:
        try:
            save_annotations(path, labels, prompts, image_name)
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
