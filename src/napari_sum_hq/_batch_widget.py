"""Dock widget for resumable batch segmentation of an image on disk into a zarr group."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
)
from sum_core.errors import SumError

from ._batch_jobs import batch_job_with_features
from ._job_widget import JobWidget
from ._widget_parts import ModelPicker, ModeOptions, TilingOptions

if TYPE_CHECKING:
    import napari
    import pandas as pd

#: The job kinds: automatic (the mode of :class:`~napari_sum_hq._widget_parts.ModeOptions`) or prompts.
AUTOMATIC, PROMPTS = "automatic", "prompts"


class BatchSegmentationWidget(JobWidget):
    """Segment a zarr / TIFF image or stack on disk into a zarr v3 group, in the background.

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
        self.source_edit.setPlaceholderText("image.zarr, image.ome.zarr or image.tif")
        self.target_edit = QLineEdit()
        self.target_edit.setPlaceholderText("result.zarr (folder)")
        self.mode_combo = QComboBox()
        self.mode_combo.addItems([AUTOMATIC, PROMPTS])
        self.prompts_edit = QLineEdit()
        self.prompts_edit.setPlaceholderText("prompts.csv (prompts mode)")
        self.axis_edit = QLineEdit()
        self.axis_edit.setPlaceholderText("slice axis: name (z, t) or index; empty = auto")
        self.overwrite_check = QCheckBox("overwrite a target of another job")
        self.model = ModelPicker()
        self.auto_mode = ModeOptions()
        self.tiling = TilingOptions("Tiling (both kinds)")
        self.mode_combo.currentTextChanged.connect(lambda kind: self.auto_mode.setVisible(kind == AUTOMATIC))
        self.run_button.clicked.connect(self.run)
        form = QFormLayout()
        form.addRow("source", _with_browse(self.source_edit, self._browse_source))
        form.addRow("target", _with_browse(self.target_edit, self._browse_target))
        form.addRow("mode", self.mode_combo)
        form.addRow("prompts", _with_browse(self.prompts_edit, self._browse_prompts))
        form.addRow("axis", self.axis_edit)
        form.addRow(self.overwrite_check)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.model)
        layout.addWidget(self.auto_mode)
        layout.addWidget(self.tiling)
        layout.addLayout(self.job_row)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addStretch(1)
        self.auto_mode.follow(self.model)

    def _browse_source(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Source image", "", "Images (*.tif *.tiff *.zarr);;All files (*)")
        path = path or QFileDialog.getExistingDirectory(self, "Source zarr folder")
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
            show_error("Batch segmentation: give a source image and a target folder.")
            return
        try:
            arguments = self.job_arguments()
        except SumError as exc:
            show_error(str(exc))
            return
        self.start_job(
            batch_job_with_features, (source, target, self.model.choice()), arguments,
            lambda result: self.open_result(*result),
        )  # fmt: skip

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
        self.viewer.add_image(
            uncertainty, name=f"{stem} uncertainty", colormap="magma", contrast_limits=(0.0, 1.0),
            blending="additive", opacity=0.7, visible=False,
        )  # fmt: skip
        self.status_label.setText(f"Done: {target} (labels {labels.shape}, opened lazily).")


def _with_browse(edit: QLineEdit, browse) -> QHBoxLayout:
    row = QHBoxLayout()
    row.addWidget(edit)
    button = QPushButton("...")
    button.clicked.connect(browse)
    row.addWidget(button)
    return row
