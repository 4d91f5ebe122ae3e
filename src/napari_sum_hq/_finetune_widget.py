"""Fine-tune from annotations: train on the committed objects of the open images, watch the loss,
cancel and resume, load the result into the interactive widget.

Run takes the chosen (labels, image) pairs (:mod:`._finetune_export`: the labels are copied on the
GUI thread), writes them in a worker thread as a bundle, which a child process turns into a dataset
folder in the run folder; with "Pseudo-label" checked, child processes then pseudo-label the
images without committed objects (and, if asked, the rest of the annotated ones) and write their
SUM uncertainty maps; then ``python -m training.finetune`` trains in a child process
(:mod:`._finetune_run`); the loss curve and the progress bar follow the run's ``metrics.csv``.
Cancel sends the child SIGINT: the training saves a resumable state and exits, and Run on the
same folder resumes it (with the data exported at the start). When the run has finished,
"Load into interactive widget" makes its ``final.pth`` the interactive widget's model (docking
one if there is none).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from sum_core.errors import InvalidInputError, SumError

from ._finetune_export import Snapshot, annotation_pairs, pair_name, snapshot, write_bundle
from ._finetune_plot import LossPlot
from ._finetune_run import (
    BUNDLE,
    EXIT_INTERRUPTED,
    FINAL_FILE,
    FINISHED,
    RESUMABLE,
    SCHEMES,
    ChildProcess,
    RunSettings,
    clear_pseudo,
    export_command,
    finetune_command,
    images_to_pseudo_label,
    last_error,
    pseudo_mask_count,
    pseudo_progress,
    pseudolabel_command,
    read_losses,
    refine_command,
    run_state,
    total_steps,
)
from ._job_widget import ProgressTracker, StatusDetails, set_status, show_failure
from ._jobs import CancelToken, JobCancelled, ProgressRelay, start_worker
from ._layers import COMMITTED_NAME
from ._widget_parts import ModelPicker

if TYPE_CHECKING:
    import napari

#: How often the widget looks at the child process and the run's metrics (ms).
POLL_MS = 250
#: Characters of the model choice shown (a checkpoint path is elided to them).
MODEL_CHARS = 24
#: Height of the annotations list (px; it scrolls beyond some five pairs).
PAIRS_LIST_HEIGHT = 100
SCHEME_TIPS = {
    "hq": "HQ modules and SUM task tables only (light; HQ-SAM's recipe)",
    "decoder": "prompt encoder + mask decoder",
    "full": "everything, the image encoder included (needs a GPU)",
    "ais": "the automatic-segmentation (AIS) decoder, on the instance masks",
}
#: What each stage of a run is called in the status line, napari's activity dock and an error.
STAGE_NAMES = {
    "bundle": "Writing the annotations", "export": "Export", "pseudolabel": "Pseudo-labelling",
    "refine": "Uncertainty maps", "training": "Fine-tuning",
}
PSEUDO_UNANNOTATED_TIP = (
    "Also learn from the open images that have no committed objects. The model first labels them\n"
    "itself (SAM's automatic masks), then a small helper model, trained on your objects, marks where\n"
    "those labels are doubtful; training trusts those places less (SUM's uncertainty-aware training).\n"
    "2D Image layers in no checked pair count (not uncertainty layers or multiscale slides).\n"
    "Slower: minutes per image on a CPU."
)
PSEUDO_ANNOTATED_TIP = (
    "Your committed objects are complete, but the rest of an annotated image is not background: it is\n"
    "unknown. Checked, the annotated images are labelled by the model too; its masks that lie mostly on\n"
    "your objects are dropped, the others train weighted by their uncertainty map (pixels the helper\n"
    "model doubts count less), as SUM trains on its pseudo-labels. Unchecked, only your objects train.\n"
    "As in SUM, a mask smaller than --min-uncertainty-area (10000 pixels of the 1024 frame) counts as\n"
    "certain; for small cells set e.g. --min-uncertainty-area 0 in more options."
)


class FinetuneWidget(QWidget):
    """Fine-tune a model on the objects annotated in the viewer.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose Labels layers are the annotations (injected by napari).
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.child: ChildProcess | None = None
        self._worker = None
        self._token: CancelToken | None = None
        self._stage = ""
        self._settings: RunSettings | None = None
        self._tracker: ProgressTracker | None = None
        self._cancelling = False
        self.checkpoint: Path | None = None
        self._build()
        self.refresh_annotations()
        self.use_interactive_model()
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.refresh_annotations)
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.stop)

    # -- form --

    def _build(self) -> None:
        self.pairs_list = QListWidget()
        self.pairs_list.setMaximumHeight(PAIRS_LIST_HEIGHT)
        self.pairs_list.setToolTip(
            "Labels layers and the image each annotates (same shape). Checked ones are exported: a 2D image\n"
            "with objects gives one training image, a 3D stack one per slice with objects."
        )
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh_annotations)
        data = QGroupBox("Annotations")
        data_layout = QVBoxLayout(data)
        data_layout.addWidget(self.pairs_list)
        data_layout.addWidget(refresh)

        self.model_picker = ModelPicker()
        combo = self.model_picker.model_combo  # a long checkpoint path must not widen the dock
        combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(MODEL_CHARS)
        same = QPushButton("Same as the interactive widget")
        same.setToolTip("Start from the model chosen in the interactive segmentation widget.")
        same.clicked.connect(self.use_interactive_model)
        self.scheme_combo = QComboBox()
        for scheme in SCHEMES:
            self.scheme_combo.addItem(scheme)
            self.scheme_combo.setItemData(self.scheme_combo.count() - 1, SCHEME_TIPS[scheme], Qt.ToolTipRole)
        self.scheme_combo.setToolTip("What trains:\n" + "\n".join(f"{k}: {v}" for k, v in SCHEME_TIPS.items()))
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 10_000)
        self.epochs_spin.setValue(10)
        self.epochs_spin.setToolTip("Passes over the annotated images.")
        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText("run folder (new, or a cancelled run to resume)")
        self.output_edit.setToolTip(
            "The run folder: the exported annotations (annotations/), the training's metrics, resumable\n"
            "state and checkpoints (final.pth). Run on a cancelled run's folder resumes it."
        )
        browse = QPushButton("...")
        browse.clicked.connect(self._browse_output)
        output_row = QHBoxLayout()
        output_row.addWidget(self.output_edit)
        output_row.addWidget(browse)
        self.extra_edit = QLineEdit()
        self.extra_edit.setPlaceholderText("e.g. --lr 1e-4 --no-augment")
        self.extra_edit.setToolTip("More options of `python -m training.finetune` (see its --help).")
        settings = QGroupBox("Training")
        form = QFormLayout(settings)
        form.addRow(self.model_picker)
        form.addRow(same)
        form.addRow("scheme", self.scheme_combo)
        form.addRow("epochs", self.epochs_spin)
        form.addRow("output", output_row)
        form.addRow("more options", self.extra_edit)

        self.pseudo_check = QCheckBox("Pseudo-label unannotated images")
        self.pseudo_check.setToolTip(PSEUDO_UNANNOTATED_TIP)
        self.pseudo_annotated_check = QCheckBox("Rest of annotated images is unknown (uncertainty-weighted)")
        self.pseudo_annotated_check.setToolTip(PSEUDO_ANNOTATED_TIP)
        self.pseudo_extra_edit = QLineEdit()
        self.pseudo_extra_edit.setPlaceholderText("e.g. --points-per-side 16")
        self.pseudo_extra_edit.setToolTip(
            "More options of `python -m training.pseudolabel` (see its --help; default: SUM's filters)."
        )
        self.refine_extra_edit = QLineEdit()
        self.refine_extra_edit.setPlaceholderText("e.g. --epochs 5 --min-iou 0.5")
        self.refine_extra_edit.setToolTip("More options of `python -m training.refine` (see its --help).")
        pseudo = QGroupBox("Pseudo-labels (SUM)")
        pseudo_form = QFormLayout(pseudo)
        pseudo_form.addRow(self.pseudo_check)
        pseudo_form.addRow(self.pseudo_annotated_check)
        pseudo_form.addRow("pseudo-label options", self.pseudo_extra_edit)
        pseudo_form.addRow("refiner options", self.refine_extra_edit)

        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Export the checked annotations and train (or resume the run in the output folder).")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after the current step, saving a state that Run resumes.")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        job_row = QHBoxLayout()
        job_row.addWidget(self.run_button)
        job_row.addWidget(self.cancel_button)
        self.progress_bar = QProgressBar()
        self.progress_bar.setToolTip("Training steps done / all steps, and the time left.")
        self.loss_plot = LossPlot()
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.details_button = StatusDetails(self.status_label)
        status_row = QHBoxLayout()
        status_row.addWidget(self.status_label, 1)
        status_row.addWidget(self.details_button)
        self.load_button = QPushButton("Load into interactive widget")
        self.load_button.setToolTip("Make the finished run's final.pth the interactive widget's model.")
        self.load_button.setEnabled(False)
        self.load_button.clicked.connect(self.load_into_interactive)
        self.checkpoint_edit = QLineEdit()
        self.checkpoint_edit.setReadOnly(True)
        self.checkpoint_edit.setPlaceholderText("checkpoint of the finished run")
        self.checkpoint_edit.setToolTip("The trained model (loads with sum_core.load_model and in every widget).")

        body = QWidget()
        layout = QVBoxLayout(body)
        for part in (data, settings, pseudo):
            layout.addWidget(part)
        layout.addLayout(job_row)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.loss_plot)
        layout.addLayout(status_row)
        layout.addWidget(self.checkpoint_edit)
        layout.addWidget(self.load_button)
        layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setWidget(body)
        scroll.setMinimumWidth(body.minimumSizeHint().width() + 20)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)

    def _browse_output(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Run folder", self.output_edit.text())
        if path:
            self.output_edit.setText(path)

    def set_status(self, text: str, error: bool = False) -> None:
        """Write the status line."""
        set_status(self.status_label, text, error)
        self.details_button.refresh()

    def refresh_annotations(self, *_args) -> None:
        """List the viewer's (labels, image) pairs; keep the check marks of pairs listed before,
        check new ``committed objects`` layers."""
        checked = {self.pairs_list.item(i).text(): self.pairs_list.item(i).checkState()
                   for i in range(self.pairs_list.count())}
        self.pairs_list.clear()
        self._pairs = annotation_pairs(self.viewer)
        for pair in self._pairs:
            item = QListWidgetItem(pair_name(pair))
            default = Qt.Checked if pair[1].name.endswith(f" {COMMITTED_NAME}") else Qt.Unchecked
            item.setCheckState(checked.get(item.text(), default))
            self.pairs_list.addItem(item)

    def chosen_pairs(self) -> list:
        """The checked (image, labels) pairs."""
        return [pair for i, pair in enumerate(self._pairs) if self.pairs_list.item(i).checkState() == Qt.Checked]

    def interactive_widget(self):
        """The docked interactive segmentation widget, or None."""
        from ._interactive_widget import InteractiveSegmentationWidget

        window = getattr(self.viewer, "window", None)
        docks = getattr(window, "dock_widgets", {}) if window is not None else {}
        return next((w for w in docks.values() if isinstance(w, InteractiveSegmentationWidget)), None)

    def use_interactive_model(self) -> None:
        """Take the interactive widget's model and device as the base model (if one is docked)."""
        widget = self.interactive_widget()
        if widget is None:
            return
        choice = widget.model_choice()
        self.model_picker.set_source(choice.source)
        self.model_picker.device_combo.setCurrentText(choice.device)

    def settings(self) -> RunSettings:
        """The form's settings (checked: an output folder, a model that is downloaded)."""
        output = self.output_edit.text().strip()
        if not output:
            raise InvalidInputError("output: choose a run folder")
        missing = self.model_picker.not_downloaded()
        if missing:
            raise InvalidInputError(missing)
        choice = self.model_picker.choice()
        extra = {}
        for name, edit in (("more", self.extra_edit), ("pseudo-label", self.pseudo_extra_edit),
                           ("refiner", self.refine_extra_edit)):
            try:
                extra[name] = tuple(shlex.split(edit.text()))
            except ValueError as exc:
                raise InvalidInputError(f"{name} options: {exc}") from exc
        scheme = self.scheme_combo.currentText()
        pseudo = self.pseudo_check.isChecked(), self.pseudo_annotated_check.isChecked()
        if scheme == "ais" and any(pseudo):
            raise InvalidInputError(
                "pseudo-labels: the ais scheme trains on instance masks only; choose hq, decoder or full, "
                "or uncheck the pseudo-label options"
            )
        return RunSettings(
            checkpoint=choice.source, output=Path(output).expanduser(), scheme=scheme,
            epochs=self.epochs_spin.value(), device=choice.torch_device, extra=extra["more"],
            pseudo_unannotated=pseudo[0], pseudo_annotated=pseudo[1],
            pseudo_extra=extra["pseudo-label"], refine_extra=extra["refiner"],
        )

    # -- the run --

    @property
    def is_running(self) -> bool:
        """Whether the bundle is being written or a child process (export, pseudo-labels, training) runs."""
        return self.child is not None or self._worker is not None

    def run(self) -> None:
        """Start (or resume) the run of the form's output folder."""
        if self.is_running:
            return
        try:
            settings = self.settings()
            state = run_state(settings.output)
            if state == FINISHED:
                self._finished(settings.output)
                self.set_status(f"{settings.output} holds a finished run; choose a new output folder to train again.")
                return
            self._settings = settings
            self.loss_plot.set_points(read_losses(settings.output))
            if state == RESUMABLE:
                command = finetune_command(settings, resume=True)
                self._start("training", command, "Resuming the run (with its saved settings)…")
                return
            taken = snapshot(self.chosen_pairs(), self.viewer, settings.pseudo_unannotated, settings.pseudo_annotated)
        except SumError as exc:
            show_failure(self.status_label, exc, "Cannot run")
            self.details_button.refresh()
            return
        self._start_bundle(taken, settings.output)

    def _start_bundle(self, taken: Snapshot, output: Path) -> None:
        """Write the bundle in a worker thread (the GUI stays responsive; ``taken`` holds copies of the labels)."""
        from napari.qt.threading import create_worker

        token, relay = CancelToken(), ProgressRelay(self)
        worker = create_worker(_write_job, taken, output, token, relay, _start_thread=False, _ignore_errors=True)
        relay.progressed.connect(self._on_bundle_progress)
        worker.returned.connect(self._on_bundle_written)
        worker.errored.connect(self._on_bundle_failed)
        self._worker, self._token = worker, token
        self._begin("bundle", "Writing the annotations…")
        start_worker(worker)

    def _begin(self, stage: str, message: str) -> None:
        """Enter ``stage``: buttons, status, a progress entry of its own."""
        self._stage = stage
        self._cancelling = False
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.load_button.setEnabled(False)
        self.set_status(message)
        if self._tracker is not None:
            self._tracker.close()
        self._tracker = ProgressTracker(self.progress_bar, STAGE_NAMES[stage])
        self.progress_bar.setRange(0, 0)  # busy until the stage reports progress

    def _on_bundle_progress(self, done: int, total: int) -> None:
        if self._stage == "bundle" and self._tracker is not None:
            self._tracker.update(done, total)

    def _on_bundle_written(self, counts: tuple[int, int]) -> None:
        cancelled = self._token is not None and self._token.cancelled
        self._worker = self._token = None
        if cancelled:
            self._ended("Cancelled.")
            return
        annotated, pseudo = counts
        also = f" and {pseudo} to pseudo-label" if pseudo else ""
        message = f"Exporting the objects of {annotated} image(s){also}…"
        self._start("export", export_command(self._settings.output), message)

    def _on_bundle_failed(self, exc: BaseException) -> None:
        self._worker = self._token = None
        if isinstance(exc, JobCancelled):
            self._ended("Cancelled.")
            return
        self._ended("")
        show_failure(self.status_label, exc, "Cannot run")
        self.details_button.refresh()

    def _start(self, stage: str, command: list[str], message: str) -> None:
        self._begin(stage, message)
        self.child = ChildProcess(command)
        self._timer.start()

    def cancel(self) -> None:
        """Stop the run after its current step; a training state is saved and Run resumes it."""
        if self._token is not None:
            self._token.cancel()
            self.set_status("Cancelling…")
        if self.child is not None:
            self._cancelling = True
            self.child.interrupt()
            message = "saving a resumable state" if self._stage == "training" else "stopping"
            self.set_status(f"Cancelling: {message}…")

    def stop(self) -> None:
        """Cancel when napari closes: the child (in its own session) saves its state and exits on its own."""
        if self._token is not None:
            self._token.cancel()
        if self.child is not None:
            self.child.interrupt()
            self._timer.stop()

    def _ended(self, message: str) -> None:
        """Back to idle: buttons, progress, status."""
        self._timer.stop()
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None
        if self.progress_bar.maximum() == 0:
            self.progress_bar.setRange(0, 1)
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if message:
            self.set_status(message)

    def _show_progress(self, output: Path, points: list[tuple[int, float]]) -> None:
        done, total = 0, 0
        if self._stage == "training":
            done, total = (points[-1][0] if points else 0), total_steps(output)
        elif self._stage == "pseudolabel":
            done, total = pseudo_progress(output)
        if total and self._tracker is not None:
            self._tracker.update(done, total)

    def _next_stage(self, output: Path) -> bool:
        """Start the stage after a successful export / pseudo-labelling / refinement; False after training."""
        settings = self._settings
        if self._stage == "export":
            (output / BUNDLE).unlink(missing_ok=True)
            count = len(images_to_pseudo_label(output))
            if count:
                self._start("pseudolabel", pseudolabel_command(settings), f"Pseudo-labelling {count} image(s)…")
                return True
        elif self._stage == "pseudolabel":
            if not pseudo_mask_count(output):
                raise InvalidInputError(
                    "pseudo-labels: no mask of the model passed the filters (SUM's: predicted IoU > 0.88, stability "
                    ">= 0.95, area <= 0.95 of the image); lower them in the pseudo-label options (e.g. "
                    "--pred-iou-thresh 0.7) or uncheck pseudo-labelling"
                )
            self._start(
                "refine", refine_command(settings),
                "Training the mask-refinement module on your objects and writing the uncertainty maps…",
            )
            return True
        if self._stage in ("export", "refine"):
            resume = run_state(output) == RESUMABLE
            self._start("training", finetune_command(settings, resume), "Training…")
            return True
        return False

    def _poll(self) -> None:
        output = self._settings.output
        points = read_losses(output)
        self.loss_plot.set_points(points)
        self._show_progress(output, points)
        child = self.child
        code = child.poll()
        if code is None:
            return
        text = child.output()
        child.close()
        self.child = None
        try:
            if code == 0 and not self._cancelling and self._next_stage(output):
                return
        except SumError as exc:
            self._ended("")
            show_failure(self.status_label, exc, f"{STAGE_NAMES[self._stage]} failed")
            self.details_button.refresh()
            return
        self._ended("")
        if code == 0 and self._stage == "training":
            self._finished(output)
            last = f", loss {points[-1][1]:.4g}" if points else ""
            self.set_status(f"Finished{last}: {output / FINAL_FILE}")
        elif code == EXIT_INTERRUPTED or self._cancelling:
            saved = run_state(output) == RESUMABLE
            self.set_status("Cancelled: the state is saved; Run resumes the run." if saved else "Cancelled.")
        else:
            stage = STAGE_NAMES[self._stage]
            set_status(self.status_label, f"{stage} failed: {last_error(text)}", error=True, detail=text[-4000:])
            self.details_button.refresh()

    def _finished(self, output: Path) -> None:
        self.checkpoint = output / FINAL_FILE
        self.checkpoint_edit.setText(str(self.checkpoint))
        self.load_button.setEnabled(True)

    def load_into_interactive(self) -> None:
        """Make the finished run's checkpoint the interactive widget's model (docking one if needed)."""
        if self.checkpoint is None:
            return
        widget = self.interactive_widget()
        if widget is None:
            from ._interactive_widget import InteractiveSegmentationWidget

            widget = InteractiveSegmentationWidget(self.viewer)
            self.viewer.window.add_dock_widget(widget, name="Interactive segmentation")
        widget.set_model_source(str(self.checkpoint))
        self.set_status(f"The interactive widget now uses {self.checkpoint}.")


def _write_job(taken: Snapshot, output: Path, token: CancelToken, relay: ProgressRelay) -> tuple[int, int]:
    """Worker thread: clear an earlier start's pseudo-labels, write the bundle (progress in KiB;
    a cancel stops it between arrays, leaving no file)."""

    def progress(done: int, total: int) -> None:
        token.check()
        relay.progressed.emit(-(-done // 1024), -(-total // 1024))  # KiB: a Qt int holds 2 TiB of them

    token.check()
    clear_pseudo(output)
    return write_bundle(taken, output / BUNDLE, progress)
