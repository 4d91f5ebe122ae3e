"""First contact with a registry model: say it is not downloaded, download it on request, with progress and Cancel.

Nothing here downloads unless the user clicks Download. The size comes from one HTTP ``HEAD``
request in a worker (:func:`sum_core.zoo.download_size`); the download runs in a worker
through :func:`sum_core.zoo.fetch`'s progress/cancel hook, so Cancel stops it within one chunk
and the zoo removes the partial file.
"""

from __future__ import annotations

from functools import partial

from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget
from sum_core.errors import Cancelled, SumError

from ._job_widget import StatusDetails, set_status, show_failure
from ._jobs import CancelToken, start_worker

#: Sizes already asked of the servers in this session: registry name -> bytes (None: unknown).
_SIZES: dict[str, int | None] = {}


def missing_files(source: str) -> list[str]:
    """The registry entries a model needs that are not in the cache (model, then its AIS decoder).

    Empty for a checkpoint path or a downloaded registry model. Reads the registry only.

    Raises
    ------
    InvalidInputError
        A malformed ``SUM_HQ_MODELS`` file.
    """
    from sum_core import zoo

    entry = zoo.registry().get(source)
    if entry is None:
        return []
    return [name for name in (entry.name, entry.decoder) if name is not None and not zoo.is_cached(name)]


def format_bytes(n: int | None) -> str:
    """``"379 MB"``, ``"1.2 GB"``, ``"512 kB"`` (decimal units, as download sizes are given)."""
    if n is None:
        return "size unknown"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            value = n / scale
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{n} B"


def manual_hint(name: str) -> str:
    """The short way out when a download fails: where to copy the file, or the command to run."""
    from sum_core import zoo

    target = zoo.cached_path(name)
    return f"copy {target.name} to {target.parent} or run `sum-hq models download {name}`"


class _DownloadRelay(QObject):
    """``(registry name, bytes done, bytes total)`` from the download worker (Python ints: sizes above 2 GB)."""

    progressed = Signal(str, object, object)


def _download(names: list[str], token: CancelToken, relay: _DownloadRelay) -> list[str]:
    """Fetch ``names`` one after the other (worker thread); return them."""
    from sum_core import zoo

    for name in names:
        zoo.fetch(name, on_progress=partial(relay.progressed.emit, name), cancel=token.event)
    return names


def _sizes(names: list[str]) -> dict[str, int | None]:
    """The download sizes of ``names`` (worker thread; HEAD requests for the ones not asked yet)."""
    from sum_core import zoo

    for name in names:
        if name not in _SIZES:
            _SIZES[name] = zoo.download_size(name)
    return {name: _SIZES[name] for name in names}


class DownloadPanel(QWidget):
    """Shown while the chosen registry model is not downloaded: message, Download / Cancel, progress.

    Signals
    -------
    downloaded
        Emitted with the model's registry name when its files are all in the cache.
    """

    downloaded = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.details_button = StatusDetails(self.message)
        self.download_button = QPushButton("Download")
        self.download_button.setToolTip("Download the model's files into the model cache (once; hash-checked).")
        self.download_button.clicked.connect(self.download)
        self.cancel_button = QPushButton("Cancel download")
        self.cancel_button.setToolTip("Stop the download; nothing is kept (a later download starts again).")
        self.cancel_button.clicked.connect(self.cancel)
        self.progress_bar = QProgressBar()
        self.progress_bar.setToolTip("Bytes downloaded of the file being downloaded.")
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.download_button)
        row.addWidget(self.cancel_button)
        row.addWidget(self.details_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.message)
        layout.addLayout(row)
        layout.addWidget(self.progress_bar)
        self.source: str | None = None
        self.missing: list[str] = []
        self.sizes: dict[str, int | None] = {}
        self._token: CancelToken | None = None
        self._workers: set = set()
        self._idle()
        self.setVisible(False)

    @property
    def downloading(self) -> bool:
        """Whether a download runs."""
        return self._token is not None

    @property
    def running_workers(self) -> int:
        """Worker threads (size look-ups, downloads) still running."""
        return len(self._workers)

    def show_for(self, source: str) -> None:
        """Show the panel when ``source`` is a registry model with files missing from the cache."""
        if self.downloading and source != self.source:
            self.cancel()
        self.source = source
        try:
            self.missing = missing_files(source)
        except SumError as exc:
            self.missing = []
            show_failure(self.message, exc, "Model registry")
        self.setVisible(bool(self.missing))
        if not self.missing or self.downloading:
            return
        self.sizes = {name: _SIZES.get(name) for name in self.missing}
        self._say_missing()
        if any(name not in _SIZES for name in self.missing):
            self._start(_sizes, (list(self.missing),), partial(self._on_sizes, source))

    def status(self) -> str:
        """The one-line "not downloaded" message of the chosen model (empty when nothing is missing)."""
        if not self.missing:
            return ""
        known = [size for size in self.sizes.values() if size is not None]
        size = f" ({format_bytes(sum(known))})" if len(known) == len(self.missing) else ""
        return f"model {self.source}{size} is not downloaded: click Download, or {manual_hint(self.missing[0])}."

    def download(self) -> None:
        """Download the missing files in a worker, with progress; the panel hides when done."""
        if not self.missing or self.downloading:
            return
        from napari.qt.threading import create_worker

        self._token = token = CancelToken()
        relay = _DownloadRelay(self)
        relay.progressed.connect(partial(self._on_progress, token))
        worker = create_worker(_download, list(self.missing), token, relay, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(partial(self._on_downloaded, token, self.source))
        worker.errored.connect(partial(self._on_failed, token))
        worker.finished.connect(partial(self._workers.discard, worker))
        self._workers.add(worker)
        self.download_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress_bar.setVisible(True)
        self.progress_bar.setRange(0, 0)
        set_status(self.message, f"Downloading model {self.source}...")
        self.details_button.refresh()
        start_worker(worker)

    def cancel(self) -> None:
        """Stop the download at its next chunk (the zoo removes the partial file)."""
        if self._token is None:
            return
        self._token.cancel()
        self._token = None
        self._idle()
        set_status(self.message, f"Download of model {self.source} cancelled; nothing was kept. {self.status()}")
        self.details_button.refresh()

    def _idle(self) -> None:
        self.download_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress_bar.setVisible(False)

    def _start(self, function, args: tuple, on_result) -> None:
        from napari.qt.threading import create_worker

        worker = create_worker(function, *args, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(on_result)
        worker.finished.connect(partial(self._workers.discard, worker))
        self._workers.add(worker)
        start_worker(worker)

    def _say_missing(self) -> None:
        set_status(self.message, self.status())
        self.details_button.refresh()
        known = [size for size in self.sizes.values() if size is not None]
        self.download_button.setText(f"Download {format_bytes(sum(known))}" if known else "Download")

    def _on_sizes(self, source: str, sizes: dict[str, int | None]) -> None:
        if source == self.source and not self.downloading:
            self.sizes = {name: sizes.get(name, _SIZES.get(name)) for name in self.missing}
            self._say_missing()

    def _on_progress(self, token: CancelToken, name: str, done: int, total: int) -> None:
        if token is not self._token:
            return
        scale = 1024 if total >= 2**31 else 1  # QProgressBar holds a C int
        self.progress_bar.setRange(0, max(total // scale, 1))
        self.progress_bar.setValue(done // scale)
        of = f" of {format_bytes(total)}" if total else ""
        self.progress_bar.setFormat(f"{name}: {format_bytes(done)}{of}")

    def _on_downloaded(self, token: CancelToken, source: str, _names: list[str]) -> None:
        if token is not self._token:
            return
        self._token = None
        self._idle()
        self.show_for(source)
        self.downloaded.emit(source)

    def _on_failed(self, token: CancelToken, exc: BaseException) -> None:
        if token is not self._token or isinstance(exc, Cancelled):
            return
        self._token = None
        self._idle()
        self.missing = missing_files(self.source)
        if isinstance(exc, SumError):
            name = self.missing[0] if self.missing else str(self.source)
            short = f"model {self.source} not downloaded; {manual_hint(name)}."
            set_status(self.message, short, error=True, detail=str(exc))
        else:
            show_failure(self.message, exc, "Download failed")
        self.details_button.refresh()
