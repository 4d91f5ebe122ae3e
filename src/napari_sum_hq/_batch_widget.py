"""Dock widget for resumable batch segmentation of an image on disk into a zarr group, or of a
folder of images into an output folder (one zarr group each)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
)
from sum_core.batch.many import SUMMARY, is_many, list_sources
from sum_core.errors import InvalidInputError, SumError

from ._batch_jobs import batch_job_with_features, many_job
from ._job_widget import JobWidget
from ._uncertainty_style import UNCERTAINTY_STYLE
from ._widget_parts import ModelPicker, ModeOptions, TilingOptions, WaitsForModelCheck

if TYPE_CHECKING:
    import napari
    import pandas as pd

#: The job kinds: automatic (the mode of :class:`~napari_sum_hq._widget_parts.ModeOptions`) or prompts.
AUTOMATIC, PROMPTS = "automatic", "prompts"
#: The overwrite checkbox's text.
OVERWRITE_LABEL = "overwrite a target of another job"
#: How ``sum_core.batch``'s messages name its overwrite switch -> the widget's words for it.
CLI_OVERWRITE = {
    "pass overwrite=True (--overwrite)": f'check "{OVERWRITE_LABEL}"',
    "rerun with overwrite=True (--overwrite)": f'check "{OVERWRITE_LABEL}" and run again',
    "overwrite=True (--overwrite)": f'"{OVERWRITE_LABEL}"',
}


class _FileSignals(QObject):
    """What a many-file job reports from its worker, besides the bar: a file starts or ends
    (``files_progressed(files_done, n_files)``) and a file's :class:`sum_core.batch.FileResult`."""

    files_progressed = Signal(int, int)
    file_done = Signal(object)


class BatchSegmentationWidget(WaitsForModelCheck, JobWidget):
    """Segment a zarr / TIFF image or stack on disk into a zarr v3 group, in the background.

    A **folder** of images as the source (button "folder...", or a glob pattern / list file typed
    in) runs :func:`sum_core.batch.segment_many` instead: the target is then an output folder with
    one zarr group per image and ``summary.csv``; the status line names the file being segmented,
    the bar moves over all the files, and the outputs are listed as they finish (double-click one
    to open it). A failed file is listed with its error while the others go on; Cancel stops the
    job and Run resumes it (finished files are not recomputed).

    Runs :func:`sum_core.batch.segment_zarr` (automatic: mode ``ais``, offered and preselected
    when the model carries an AIS decoder, or ``amg``; or ``prompts`` with a CSV prompt table)
    with progress and Cancel. A cancelled job keeps everything finished so far:
    running it again with the same settings resumes. When the job is complete, the target's
    ``labels`` and ``uncertainty`` arrays are opened lazily (``dask.array.from_zarr``) as
    layers ``"<target> labels"`` and ``"<target> uncertainty"``; an AIS job's per-object table
    (:func:`sum_core.batch.object_table`, read in the worker) becomes the labels layer's
    ``features``.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer to open the result in (injected by napari).
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__("Run (resumes an interrupted job)")
        self.viewer = viewer
        self.source_edit = QLineEdit()
        self.source_edit.setPlaceholderText("image.zarr, image.ome.zarr, image.tif, or a folder of images")
        self.source_edit.setToolTip(
            "The image on disk: a zarr / OME-Zarr folder or a TIFF file (2D, or a stack); or many: a folder of images, "
            "a pattern such as images/*.tif or a .txt list of paths."
        )
        self.target_edit = QLineEdit()
        self.target_edit.setPlaceholderText("result.zarr (folder)")
        self.target_edit.setToolTip(
            "The zarr v3 group written (arrays 'labels' and 'uncertainty'); the same target and settings resume a job. "
            "For a folder of images: the output folder (one zarr group per image and summary.csv)."
        )
        self.outputs_list = QListWidget()
        self.outputs_list.setToolTip("The outputs of the last folder job; double-click one to open it.")
        self.outputs_list.setVisible(False)
        self.outputs_list.itemDoubleClicked.connect(lambda item: self.open_result(item.data(Qt.UserRole)))
        self._file_signals: _FileSignals | None = None
        self._many_sources: list[Path] = []
        self.mode_combo = QComboBox()
        self.mode_combo.addItems([AUTOMATIC, PROMPTS])
        self.mode_combo.setToolTip(
            "automatic: segment every object (AIS or AMG, below); prompts: the points / boxes of a CSV prompt table."
        )
        self.prompts_edit = QLineEdit()
        self.prompts_edit.setPlaceholderText("prompts.csv (prompts mode)")
        self.prompts_edit.setToolTip("CSV prompt table of the prompts kind (`sum-hq batch --help` gives its columns).")
        self.axis_edit = QLineEdit()
        self.axis_edit.setPlaceholderText("slice axis: name (z, t) or index; empty = auto")
        self.axis_edit.setToolTip("The axis along which a stack is cut into 2D slices: a name (z, t) or an index.")
        self.overwrite_check = QCheckBox(OVERWRITE_LABEL)
        self.overwrite_check.setToolTip(
            "Replace a target written by a job with other settings (or damaged); unchecked, such a target is refused."
        )
        self.run_button.setToolTip("Start the job in the background, or resume it where it stopped.")
        self.model = ModelPicker()
        self.auto_mode = ModeOptions()
        self.tiling = TilingOptions("Tiling (both kinds)")
        self.mode_combo.currentTextChanged.connect(lambda kind: self.auto_mode.setVisible(kind == AUTOMATIC))
        self.run_button.clicked.connect(self.run)
        form = QFormLayout()
        source_file = ("file...", self._browse_source_file, "Choose a TIFF (or other image) file.")
        source_zarr = ("zarr...", self._browse_source_zarr, "Choose a zarr / OME-Zarr folder.")
        source_folder = ("folder...", self._browse_source_folder, "Choose a folder of images: one job for all of them.")
        target = ("...", self._browse_target, "Choose the folder the target is created in.")
        prompts = ("...", self._browse_prompts, "Choose the CSV prompt table.")
        form.addRow("source", _with_browse(self.source_edit, source_file, source_zarr, source_folder))
        form.addRow("target", _with_browse(self.target_edit, target))
        form.addRow("mode", self.mode_combo)
        form.addRow("prompts", _with_browse(self.prompts_edit, prompts))
        form.addRow("axis", self.axis_edit)
        form.addRow(self.overwrite_check)
        layout = QVBoxLayout(self.body)
        layout.addLayout(form)
        layout.addWidget(self.model)
        layout.addWidget(self.auto_mode)
        layout.addWidget(self.tiling)
        layout.addLayout(self.job_row)
        layout.addWidget(self.progress_bar)
        layout.addLayout(self.status_row)
        layout.addWidget(self.outputs_list)
        layout.addStretch(1)
        self.auto_mode.follow(self.model)
        self.model.download.downloaded.connect(lambda name: self.set_status(f"Model {name} downloaded."))

    def _browse_source_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Source image file", "", "TIFF (*.tif *.tiff);;All files (*)")
        if path:
            self.source_edit.setText(path)

    def _browse_source_zarr(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Source zarr / OME-Zarr folder")
        if path:
            self.source_edit.setText(path)

    def _browse_source_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder of images (one job for all)")
        if path:
            self.source_edit.setText(path)

    def _browse_target(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Target folder (a zarr group is created inside)")
        if path:
            self.target_edit.setText(str(Path(path) / "segmentation.zarr"))

    def _browse_prompts(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Prompt table", "", "CSV (*.csv);;All files (*)")
        if path:
            self.prompts_edit.setText(path)

    def job_arguments(self) -> dict:
        """The ``segment_zarr`` keyword arguments of the current form.

        Raises
        ------
        InvalidInputError
            An automatic option out of range.
        """
        automatic = self.mode_combo.currentText() == AUTOMATIC
        axis_text = self.axis_edit.text().strip()
        return {
            "mode": self.auto_mode.mode() if automatic else PROMPTS,
            "prompts": None if automatic else (self.prompts_edit.text().strip() or None),
            "axis": (int(axis_text) if axis_text.lstrip("-").isdigit() else axis_text) or None,
            "overwrite": self.overwrite_check.isChecked(),
            "options": self.auto_mode.options() if automatic else None,
            **self.tiling.tiling(),
        }

    def run(self) -> None:
        """Start (or resume) the job in a worker thread."""
        source, target = self.source_edit.text().strip(), self.target_edit.text().strip()
        if not source or not target:
            self.set_status("Give a source image and a target folder.", error=True)
            return
        missing = self.model.not_downloaded()
        if missing:
            self.set_status(missing, error=True)
            return
        if self.run_after_check():  # the mode is not known yet: started once the check has answered
            return
        try:
            arguments = self.job_arguments()
        except SumError as exc:
            self.fail(exc, "Cannot start")
            return
        if is_many(source):
            self._run_many(source, target, arguments)
            return
        self.start_job(
            batch_job_with_features, (source, target, self.model.choice()), arguments,
            lambda result: self.open_result(*result),
        )  # fmt: skip

    def _run_many(self, source: str, target: str, arguments: dict) -> None:
        """Start (or resume) a folder job: ``segment_many`` into the output folder ``target``."""
        try:
            self._many_sources = list_sources(source)
        except SumError as exc:
            self.fail(exc, "Cannot start")
            return
        signals = self._file_signals = _FileSignals(self)
        signals.files_progressed.connect(partial(self._on_files, signals))
        signals.file_done.connect(partial(self._on_file, signals, Path(target)))
        self.outputs_list.clear()
        self.outputs_list.setVisible(True)
        arguments = {**arguments, "on_file": signals.file_done.emit, "on_files": signals.files_progressed.emit}
        self.start_job(many_job, (source, target, self.model.choice()), arguments, self._many_finished)
        self.set_status(f"Running: {len(self._many_sources)} images...")

    def _on_files(self, signals: _FileSignals, files_done: int, n_files: int) -> None:
        if signals is self._file_signals and self.is_running and files_done < n_files:
            name = self._many_sources[files_done].name
            self.set_status(f"Running: file {files_done + 1} of {n_files}, {name}...")

    def _on_file(self, signals: _FileSignals, out_dir: Path, result: Any) -> None:
        """List a finished file: its output (double-click opens it) or its error."""
        if signals is not self._file_signals:
            return
        counted = f", {result.objects} objects" if result.objects is not None else ""
        item = QListWidgetItem(f"{Path(result.file).name} -> {result.output}: {result.status}{counted}")
        item.setData(Qt.UserRole, str(out_dir / result.output))
        if result.status != "done":
            item.setForeground(QColor("red"))
            item.setToolTip(result.error)
            item.setFlags(item.flags() & ~Qt.ItemIsEnabled)
        self.outputs_list.addItem(item)

    def _many_finished(self, value: tuple[Any, list]) -> None:
        """Report a finished folder job; its outputs are listed (none is opened: there may be many)."""
        out_dir, results = value
        failed = [Path(r.file).name for r in results if r.status != "done"]
        text = (f"Done: {len(results) - len(failed)} of {len(results)} images segmented into {out_dir} "
                f"({SUMMARY}); double-click an output to open it.")
        if failed:
            text += f" Failed: {', '.join(failed)} (errors in the list); fix them and run again."
        self.set_status(text, error=bool(failed))

    def open_result(self, target: str, features: pd.DataFrame | None = None) -> None:
        """Open a finished target's arrays lazily as a Labels and an Image layer.

        ``features`` (AIS targets: the per-object table) become the Labels layer's ``features``.
        """
        import dask.array as da

        stem = Path(target).name
        labels = da.from_zarr(target, component="labels")
        uncertainty = da.from_zarr(target, component="uncertainty")
        for name in (f"{stem} labels", f"{stem} uncertainty"):
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        self.viewer.add_labels(labels, name=f"{stem} labels", features=features)
        self.viewer.add_image(uncertainty, name=f"{stem} uncertainty", **UNCERTAINTY_STYLE, visible=False)
        self.set_status(f"Done: {target} (labels {labels.shape}, opened lazily).")

    def fail(self, exc: BaseException, prefix: str = "Failed") -> None:
        """Report a failure (see :meth:`JobWidget.fail`); ``sum_core``'s overwrite flag is named as the checkbox."""
        message = str(exc)
        if isinstance(exc, SumError) and "(--overwrite)" in message:
            for cli, words in CLI_OVERWRITE.items():
                message = message.replace(cli, words)
            exc = InvalidInputError(message)
        super().fail(exc, prefix)


def _with_browse(edit: QLineEdit, *buttons: tuple[str, Callable[[], None], str]) -> QHBoxLayout:
    """``edit`` followed by one button per ``(text, slot, tooltip)``."""
    row = QHBoxLayout()
    row.addWidget(edit)
    for text, browse, tip in buttons:
        button = QPushButton(text)
        button.setToolTip(tip)
        button.clicked.connect(browse)
        row.addWidget(button)
    return row
