"""Dock widget for interactive (prompt-based) segmentation with uncertainty.

Keys (bound on the viewer and on the two prompt layers, whose own bindings
would otherwise win when they are the active layer):

======================  ==============================================
``S``                   segment the current slice from its prompts
                        (several boxes: several objects)
``C``                   commit the current objects (new ids, or the id
                        being refined) and clear the prompts
``T``                   toggle the kind of the next point
                        (positive green / negative red)
``Shift+C``             clear prompts, current objects and uncertainty
                        on every slice (*Clear slice*: this slice only)
``Ctrl+Z``              undo the last commit (with the *committed
                        objects* layer active, napari's own undo of that
                        layer, which holds the commits too)
``Shift+S``             propagate the current object from the current
                        slice through the stack (3D / time)
======================  ==============================================

**Commits never destroy earlier work** by default: the *commit mode* is micro-sam's choice
(:mod:`napari_sum_hq._commit`): *protect objects* (default; committed objects keep every pixel,
and a new object covering most of a committed one is not committed again), *protect pixels*,
or *overwrite*. Committed objects get napari's random colour per id; the current, uncommitted
objects are all yellow. After a commit or a clear the next point is positive again.

**Prompts and results belong to their image.** Every image gets its own layers
(``<image> point prompts``, ``<image> box prompts``, ``<image> current object``, ``<image>
uncertainty``, ``<image> committed objects``; see :mod:`napari_sum_hq._layers`). Choosing
another image hides the previous image's layers and shows the chosen one's, moved above it when
they lay below; nothing of one image is reused for another, and coming back to an image finds
its prompts, uncommitted objects and commits as they were (:mod:`napari_sum_hq._annotations`).
Rectangles, ellipses and polygons in the box layer are box prompts (their bounding box); lines
and paths are refused with a message.

**Saved work.** Every commit (and undo) saves the committed objects and their prompts to the
*annotation file* (default ``<image file name>.sum-annotations.zarr`` beside the image's file; see
:mod:`napari_sum_hq._annotation_file`), and choosing an image whose file exists loads it (also
*Load*): nothing committed is lost when napari closes or crashes.

**Large images.** A cache folder typed after the image was chosen prepares it again with that
folder. Point markers keep a constant size on the screen. S while a segmentation runs is ignored
with a message, so no tile is encoded twice. Planes segmented window by window follow an object
across at most *max tiles* tiles; a cut there is said in red and *Continue with all N tiles*
segments the object whole (:mod:`napari_sum_hq._large_image`).

**Lifetime.** Closing the dock widget (its x) releases it: its key bindings (viewer and prompt
layers) and event connections are removed, a running job is cancelled, timers stop and the
predictors (embeddings) are dropped, so slice changes no longer encode anything. The model
stays in :func:`sum_core.loading.resolve_model`'s small cache (two models), so opening the
widget again from the Plugins menu does not load it twice; the new widget starts from the last
model, device, task, uncertainty method, cache folder, commit mode, image and every image's
annotation state, kept in memory per viewer (:func:`napari_sum_hq._annotations.viewer_memory`).

Every plane (a 2D image or one slice of a stack) gets its own
:class:`sum_core.Predictor`, for every size (see :mod:`napari_sum_hq._session`):
choosing an image loads the model and prepares the displayed plane in a worker
thread (encoding it when it is one encoder window), and every segmentation (S)
runs in a worker thread too, encoding the tiles its object reaches on larger
planes, with progress and Cancel (a ``threading.Event`` handed to
``Predictor.predict``). Every job gets a generation number; the results of
cancelled or superseded jobs are dropped. The GUI thread only writes the
windows of the results: commits go through ``Labels.data_setitem`` (napari's
undo history holds them), clears and refreshes touch only the slice or window
that changed.
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Layer
from napari.utils.key_bindings import coerce_keybinding
from napari.utils.notifications import show_info
from qtpy.QtCore import QEvent, Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from sum_core.errors import Cancelled, InvalidInputError, SumError
from sum_core.options import UNCERTAINTY_METHODS
from sum_core.tiling import Region

from ._annotation_file import CommitPrompts, ImageIdentity, default_path, is_ours, load_annotations
from ._annotation_saver import AnnotationSaver
from ._annotations import ImageAnnotations, viewer_memory
from ._commit import COMMIT_MODES, DEFAULT_COMMIT_MODE, DEFAULT_MATCH_THRESHOLD, SlicePixels, plan_commit
from ._job_widget import ProgressTracker, set_status, show_failure
from ._jobs import CancelToken, JobCancelled, ProgressRelay
from ._large_image import TileLimit
from ._layers import (
    BOXES_NAME,
    COMMITTED_NAME,
    CURRENT_NAME,
    NEGATIVE,
    POINTS_NAME,
    POSITIVE,
    UNCERTAINTY_NAME,
    AnnotationLayers,
    clear_slice,
    clear_windows,
    last_edit,
    write_objects,
    write_uncertainty,
)
from ._propagation import PropagationResult, describe_stops, propagation_job
from ._propagation_group import PropagationGroup
from ._prompts import box_shapes, boxes_on_slice, on_slice, points_on_slice
from ._session import (
    PREPARE_STEPS,
    STACK_MEMORY_TILES,
    PlanePredictors,
    PlanePrompts,
    Prepared,
    Refinement,
    RememberedLogits,
    SegmentResult,
    SliceKey,
    describe,
    prepare_steps,
    segment_plane,
    tiles_encoded,
)
from ._widget_parts import ModelPicker, sole_image
from ._words import TASK_WORDS, UNCERTAINTY_WORDS, lines

if TYPE_CHECKING:
    import napari

NO_IMAGE_ITEM = "(choose an image layer)"
#: Delay before preparing a newly shown slice (so scrolling does not start a job per step).
SLICE_DEBOUNCE_MS = 300
#: How often the status line of a running segmentation shows the tiles encoded so far.
PROGRESS_POLL_MS = 200
#: Committed objects whose low-resolution logits are remembered for refinement.
REMEMBERED_OBJECTS = 32
_LIVE_ACTIONS = {"added", "removed", "changed"}


def _unbind_own(owner, bindings: dict[str, Callable]) -> None:
    """Remove the key bindings of ``owner`` (viewer or layer) that are still the given functions."""
    for key, function in bindings.items():
        if owner.keymap.get(coerce_keybinding(key)) is function:
            owner.bind_key(key, None)


@dataclass
class _Job:
    """The running job whose result will be used."""

    name: str
    worker: Any
    stop: Callable[[], None] | None
    status: Callable[[], str] | None


class InteractiveSegmentationWidget(QWidget):
    """Segment objects from point and box prompts, with a per-pixel uncertainty map.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer to work in (injected by napari).
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.memory = viewer_memory(viewer)
        self.predictors = PlanePredictors()
        self.state: ImageAnnotations | None = None
        self._generation = 0
        self._job: _Job | None = None
        self._tracker: ProgressTracker | None = None
        self._workers: set = set()
        self._preparing: tuple | None = None
        self._segment_when_ready = False
        self._last_result: SegmentResult | None = None
        self._docked = False
        self._released = False
        self._viewer_keys: dict[str, Callable] = {}
        self._layer_keys: list[tuple[Layer, dict[str, Callable]]] = []
        self._slice_timer = QTimer(self)
        self._slice_timer.setSingleShot(True)
        self._slice_timer.setInterval(SLICE_DEBOUNCE_MS)
        self._slice_timer.timeout.connect(self._on_slice_settled)
        self._progress_timer = QTimer(self)
        self._progress_timer.setInterval(PROGRESS_POLL_MS)
        self._progress_timer.timeout.connect(self._show_job_status)
        self._saver = AnnotationSaver()
        self._saver.done.connect(self._on_saved)
        self._build_ui()
        self._restore_choices()
        self._refresh_images()
        viewer.layers.events.inserted.connect(self._refresh_images)
        viewer.layers.events.removed.connect(self._refresh_images)
        viewer.dims.events.current_step.connect(self._on_step_changed)
        self._bind_keys(viewer)
        for state in self.memory.images.values():  # prompt layers of a previous widget: keys, live mode
            for layer in state.layers.prompt_layers():
                self._on_prompt_layer(layer)
            state.layers.on_prompt_layer = self._on_prompt_layer
        chosen = self.memory.chosen_image()
        if chosen is not None and self.image_combo.findData(chosen) > 0:
            self.image_combo.setCurrentIndex(self.image_combo.findData(chosen))

    @property
    def layers(self) -> AnnotationLayers | None:
        """The layers of the chosen image (None when no image is chosen)."""
        return None if self.state is None else self.state.layers

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        self.image_combo = QComboBox()
        self.image_combo.currentIndexChanged.connect(self._on_image_chosen)
        self.model_picker = ModelPicker()
        self.model_picker.changed.connect(self._on_model_changed)
        self.model_picker.download.downloaded.connect(self._on_model_changed)
        self.model_combo = self.model_picker.model_combo
        self.device_combo = self.model_picker.device_combo
        self.image_combo.setToolTip("The image layer to segment; its prompts and results get their own layers.")
        self.task_combo = QComboBox()
        for index, (name, tip) in TASK_WORDS.items():
            self.task_combo.addItem(name, index)
            self.task_combo.setItemData(self.task_combo.count() - 1, tip, Qt.ToolTipRole)
        self.task_combo.setCurrentIndex(self.task_combo.findData(1))
        self.task_combo.setToolTip("What a click asks a SUM model for:\n" + lines(dict(TASK_WORDS.values())))
        self.task_label = QLabel("task")
        self.uncertainty_combo = QComboBox()
        for method in ("auto", *UNCERTAINTY_METHODS):
            self.uncertainty_combo.addItem(method)
            self.uncertainty_combo.setItemData(
                self.uncertainty_combo.count() - 1, UNCERTAINTY_WORDS[method], Qt.ToolTipRole
            )
        self.uncertainty_combo.setToolTip(
            "The per-pixel uncertainty map shown with each object:\n" + lines(UNCERTAINTY_WORDS)
        )
        self.cache_edit = QLineEdit()
        self.cache_edit.setPlaceholderText("(in memory)")
        self.cache_edit.setToolTip(
            "Folder of the zarr embedding caches of tiled planes (one store per plane, in "
            "<layer>-<weights hash>/); empty keeps tile embeddings in memory."
        )
        self.cache_edit.editingFinished.connect(self._on_cache_folder_changed)
        self._prepared_cache: str | None = None
        self.tile_limit = TileLimit()
        self.tile_limit.continue_button.clicked.connect(self._continue_with_all_tiles)
        cache_button = QPushButton("...")
        cache_button.setToolTip("Choose the embedding cache folder.")
        cache_button.clicked.connect(self._browse_cache_folder)
        cache_row = QHBoxLayout()
        cache_row.addWidget(self.cache_edit)
        cache_row.addWidget(cache_button)

        settings = QGroupBox("Model")
        form = QFormLayout(settings)
        form.addRow("image", self.image_combo)
        form.addRow(self.model_picker)
        form.addRow(self.task_label, self.task_combo)
        self._show_task(False)  # until a SUM model is loaded
        form.addRow("uncertainty", self.uncertainty_combo)
        form.addRow("cache folder", cache_row)
        form.addRow("max tiles", self.tile_limit)

        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, len(PREPARE_STEPS))
        self.progress_bar.setValue(0)
        self.status_label = QLabel("Choose an image layer to compute its embedding.")
        self.status_label.setWordWrap(True)
        self.embed_button = QPushButton("Compute embedding")
        self.embed_button.clicked.connect(self.compute_embedding)
        self.embed_button.setToolTip(
            "Load the model and prepare the displayed plane again (planes of one window are encoded now)."
        )
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setToolTip("Stop the running job at its next tile, slice or step; its result is dropped.")
        self.progress_bar.setToolTip("Progress of the running job (steps, tiles or slices).")
        encode_row = QHBoxLayout()
        encode_row.addWidget(self.embed_button)
        encode_row.addWidget(self.cancel_button)

        self.point_kind_label = QLabel()
        self.toggle_button = QPushButton("Toggle positive / negative [T]")
        self.toggle_button.clicked.connect(self.toggle_point_kind)
        self.toggle_button.setToolTip(
            "Switch the next point between positive (on the object) and negative (not on it)."
        )
        self.segment_button = QPushButton("Segment [S]")
        self.segment_button.clicked.connect(self.segment)
        self.segment_button.setToolTip("Segment the displayed slice from its points and boxes (one object per box).")
        self.live_check = QCheckBox("live (segment on every prompt change)")
        self.live_check.setToolTip("Segment again after every point or box added, moved or removed.")
        self.refine_spin = QSpinBox()
        self.refine_spin.setRange(0, 2**31 - 1)
        self.refine_spin.setSpecialValueText("new object")
        self.refine_spin.setToolTip(
            "Id of a committed object to refine: its mask becomes the mask prompt, "
            "and committing replaces it on this slice."
        )
        self.commit_button = QPushButton("Commit [C]")
        self.commit_button.clicked.connect(self.commit)
        self.commit_button.setToolTip(
            "Add the current objects to the committed objects (new ids) and clear the prompts."
        )
        self.undo_button = QPushButton("Undo commit [Ctrl+Z]")
        self.undo_button.clicked.connect(self.undo_commit)
        self.undo_button.setToolTip("Undo the last commit (napari's undo history of the committed objects).")
        self.clear_button = QPushButton("Clear all [Shift+C]")
        self.clear_button.setToolTip("Remove the prompts, current objects and uncertainty of every slice.")
        self.clear_button.clicked.connect(self.clear)
        self.clear_slice_button = QPushButton("Clear slice")
        self.clear_slice_button.setToolTip(
            "Remove the prompts, current objects and uncertainty of the displayed slice only."
        )
        self.clear_slice_button.clicked.connect(self.clear_slice)
        commit_row = QHBoxLayout()
        for button in (self.commit_button, self.undo_button):
            commit_row.addWidget(button)
        clear_row = QHBoxLayout()
        for button in (self.clear_slice_button, self.clear_button):
            clear_row.addWidget(button)
        self.commit_mode_combo = QComboBox()
        for mode, tip in COMMIT_MODES.items():
            self.commit_mode_combo.addItem(mode)
            self.commit_mode_combo.setItemData(self.commit_mode_combo.count() - 1, tip, Qt.ToolTipRole)
        self.commit_mode_combo.setCurrentText(DEFAULT_COMMIT_MODE)
        self.commit_mode_combo.setToolTip(
            "What a commit does where the new objects overlap committed ones: "
            + "; ".join(f"{mode}: {tip}" for mode, tip in COMMIT_MODES.items())
            + "."
        )
        self.match_spin = QDoubleSpinBox()
        self.match_spin.setRange(0.05, 1.0)
        self.match_spin.setSingleStep(0.05)
        self.match_spin.setValue(DEFAULT_MATCH_THRESHOLD)
        self.match_spin.setToolTip(
            "protect objects: a new object covering at least this fraction of a committed object is "
            "that object again and is not committed."
        )

        self.annotation_edit = QLineEdit()
        self.annotation_edit.setPlaceholderText("(not saved)")
        self.annotation_edit.setToolTip(
            "Zarr file the committed objects and their prompts are saved to after every commit and undo "
            "(default: <image file name>.sum-annotations.zarr beside the image file; reloaded when the image is chosen "
            "again). Empty: not saved. A path that is not such a file is never overwritten."
        )
        self.annotation_edit.editingFinished.connect(self._on_annotation_path_edited)
        self.load_button = QPushButton("Load")
        self.load_button.setToolTip(
            "Replace the committed objects by those of the annotation file (Ctrl+Z undoes it)."
        )
        self.load_button.clicked.connect(self.load_annotations)
        annotation_row = QHBoxLayout()
        annotation_row.addWidget(self.annotation_edit)
        annotation_row.addWidget(self.load_button)

        prompts = QGroupBox("Prompts")
        prompt_layout = QFormLayout(prompts)
        prompt_layout.addRow(self.point_kind_label, self.toggle_button)
        prompt_layout.addRow("refine label", self.refine_spin)
        prompt_layout.addRow(self.segment_button, self.live_check)
        prompt_layout.addRow("commit mode", self.commit_mode_combo)
        prompt_layout.addRow("match threshold", self.match_spin)
        prompt_layout.addRow(commit_row)
        prompt_layout.addRow(clear_row)
        prompt_layout.addRow("annotation file", annotation_row)

        propagation = PropagationGroup()
        propagation.button.clicked.connect(self.propagate)
        self.propagation_group = propagation
        self.propagate_button = propagation.button
        self.iou_spin, self.score_spin = propagation.iou_spin, propagation.score_spin

        body = QWidget()
        layout = QVBoxLayout(body)
        layout.addWidget(settings)
        layout.addLayout(encode_row)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addWidget(prompts)
        layout.addWidget(propagation)
        layout.addStretch(1)
        self.scroll_area = QScrollArea()  # a short window scrolls the form
        self.scroll_area.setWidgetResizable(True)
        self.scroll_area.setWidget(body)
        self.scroll_area.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)  # only the height scrolls
        self.scroll_area.setMinimumWidth(body.minimumSizeHint().width() + 20)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll_area)
        self._point_kind = POSITIVE
        self._show_point_kind()

    def _bind_keys(self, viewer) -> None:
        self._viewer_keys = self._key_bindings()
        for key, function in self._viewer_keys.items():
            viewer.bind_key(key, function, overwrite=True)

    def _key_bindings(self) -> dict[str, Callable]:
        """Key -> napari key-binding function calling this widget's action through a weak reference
        (a binding left on a layer never keeps a closed widget, or its viewer, alive)."""
        return {
            key: lambda _owner, method=weakref.WeakMethod(action): (m := method()) is not None and m()
            for key, action in self._key_actions().items()
        }

    def _key_actions(self) -> dict:
        return {
            "S": self.segment,
            "C": self.commit,
            "T": self.toggle_point_kind,
            "Shift-C": self.clear,
            "Control-Z": self.undo_commit,
            "Shift-S": self.propagate,
        }

    def _on_prompt_layer(self, layer: Layer) -> None:
        bindings = self._key_bindings()
        for key, function in bindings.items():
            layer.bind_key(key, function, overwrite=True)
        self._layer_keys.append((layer, bindings))
        layer.events.data.connect(self._on_prompts_changed)
        if "label" in getattr(layer, "features", {}):
            layer.feature_defaults = {"label": self._point_kind}

    # ------------------------------------------------------------ lifetime
    def event(self, event: QEvent) -> bool:
        """Release the widget when napari takes it out of its dock (the dock's x, ``remove_dock_widget``)."""
        if event.type() == QEvent.ParentChange:
            if self.parent() is not None:
                self._docked = True
            elif self._docked:
                self.release()
        return super().event(event)

    @property
    def is_released(self) -> bool:
        """Whether :meth:`release` ran (the widget does nothing any more)."""
        return self._released

    def release(self) -> None:
        """Stop everything this widget does in the viewer (see the module docstring, *Lifetime*).

        Called when its dock is closed; idempotent. The choices and every image's annotation state
        stay in the viewer's memory for the next widget.
        """
        if self._released:
            return
        self._released = True
        self._remember_choices()
        self.cancel(quiet=True)
        for worker in list(self._workers):
            worker.quit()
        self._slice_timer.stop()
        self._progress_timer.stop()
        viewer = self.viewer
        viewer.layers.events.inserted.disconnect(self._refresh_images)
        viewer.layers.events.removed.disconnect(self._refresh_images)
        viewer.dims.events.current_step.disconnect(self._on_step_changed)
        _unbind_own(viewer, self._viewer_keys)
        for layer, bindings in self._layer_keys:
            _unbind_own(layer, bindings)
            layer.events.data.disconnect(self._on_prompts_changed)
        self._layer_keys.clear()
        for state in self.memory.images.values():
            if state.layers.on_prompt_layer == self._on_prompt_layer:
                state.layers.on_prompt_layer = None
        self.predictors.clear()
        self._saver.shutdown()  # the last commit's save is written
        self._last_result = None
        self.state = None

    def _remember_choices(self) -> None:
        memory, choice = self.memory, self.model_choice()
        memory.model_source, memory.device = choice.source, choice.device
        memory.task = self.task_combo.currentData()
        memory.uncertainty = self.uncertainty_combo.currentText()
        memory.cache_folder = self.cache_edit.text()
        memory.commit_mode = self.commit_mode_combo.currentText()
        image = self.image_layer
        memory.image = None if image is None else weakref.ref(image)

    def _restore_choices(self) -> None:
        memory = self.memory
        if memory.model_source is not None:
            self.model_picker.set_source(memory.model_source)
            self.device_combo.setCurrentText(memory.device)
            self.task_combo.setCurrentIndex(self.task_combo.findData(memory.task))
            self.uncertainty_combo.setCurrentText(memory.uncertainty)
            self.cache_edit.setText(memory.cache_folder)
            self.commit_mode_combo.setCurrentText(memory.commit_mode)

    # --------------------------------------------------------- choices
    @property
    def image_layer(self) -> Image | None:
        """The image being segmented (``None`` when none is chosen)."""
        layer = self.image_combo.currentData()
        return layer if layer in self.viewer.layers else None

    @property
    def is_busy(self) -> bool:
        """Whether a job whose result will be used (prepare, segment, propagate) is running."""
        return self._job is not None

    @property
    def running_workers(self) -> int:
        """Number of worker threads still running, cancelled ones included."""
        return len(self._workers)

    def model_choice(self):
        """The model and device currently chosen in the widget (a ``ModelChoice``)."""
        return self.model_picker.choice()

    def set_model_source(self, source: str) -> None:
        """Choose a registry name or a checkpoint path as the model."""
        self.model_picker.set_source(source)

    def _browse_cache_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Embedding cache folder", self.cache_edit.text())
        if path:
            self.cache_edit.setText(path)
            self._on_cache_folder_changed()

    def _on_cache_folder_changed(self) -> None:
        """A cache folder typed (or cleared) after the image was prepared: prepare it again with it."""
        if self.state is not None and self._prepared_cache is not None:
            if self.cache_edit.text().strip() != self._prepared_cache:
                self.predictors.clear_slices()
                self.compute_embedding()

    def _continue_with_all_tiles(self) -> None:
        self.tile_limit.allow_all()
        self.segment()

    def _on_model_changed(self, *_args) -> None:
        self.cancel()
        self.predictors.clear()
        if self.image_layer is not None:
            self.compute_embedding()

    def _refresh_images(self, *_args) -> None:
        self.memory.forget_removed(self.viewer)
        own = {id(layer) for state in self.memory.images.values() for layer in state.layers.owned()}
        images = [
            layer for layer in self.viewer.layers if isinstance(layer, Image) and id(layer) not in own
        ]
        current = self.image_combo.currentData()
        chosen_before = current
        if current is None:  # a user with one image never has to pick it
            current = sole_image(self.viewer, skip=(f" {UNCERTAINTY_NAME}",))
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItem(NO_IMAGE_ITEM, None)
        for layer in images:
            self.image_combo.addItem(layer.name, layer)
        self.image_combo.setCurrentIndex(max(0, self.image_combo.findData(current)))
        self.image_combo.blockSignals(False)
        if self.image_combo.currentData() is not chosen_before:
            self._on_image_chosen()

    def _on_image_chosen(self, *_args) -> None:
        """Switch to the chosen image's own annotation state (the previous image's layers are hidden)."""
        self.cancel()
        self.predictors.clear_slices()
        self._last_result = None
        image, previous = self.image_layer, self.state
        if image is not None and previous is not None and previous.image is not image:
            if previous.image in self.viewer.layers:
                previous.hide()
        if image is None:
            self.state = None
            self._status("Choose an image layer to compute its embedding.")
            return
        self.state = self.memory.annotations(self.viewer, image)
        self.state.layers.on_prompt_layer = self._on_prompt_layer
        self.state.show()
        self._set_point_kind(POSITIVE)
        self._ensure_layers()
        self.compute_embedding()
        state = self.state
        if state.annotation_path is None:
            default = default_path(image)
            state.annotation_path = "" if default is None else str(default)
        self.annotation_edit.setText(state.annotation_path)
        if state.annotation_path and is_ours(Path(state.annotation_path)) and state.max_label.value() == 0:
            self.load_annotations()  # the image opened again: its saved work comes back

    def _ensure_layers(self) -> None:
        """Create the prompt and result layers if missing, keep the point layer active."""
        layers = self.layers
        for get in (layers.uncertainty, layers.committed, layers.current, layers.boxes, layers.points):
            get()
        self.viewer.layers.selection.active = layers.points()
        layers.points().mode = "add"

    def _ensure_layers_exist(self) -> None:
        if any(self.layers.existing(n) is None for n in (CURRENT_NAME, COMMITTED_NAME, UNCERTAINTY_NAME)):
            active = self.viewer.layers.selection.active
            self._ensure_layers()
            self.viewer.layers.selection.active = active

    # ------------------------------------------------------------ slice
    def current_slice(self) -> SliceKey:
        """Index of the displayed slice along the image's leading axes.

        Raises
        ------
        InvalidInputError
            If no image is chosen, or the view does not show the image's last
            two axes in 2D.
        """
        image = self.image_layer
        if image is None:
            raise InvalidInputError("No image chosen: pick an image layer in the segmentation widget first.")
        shape = self.layers.shape
        dims = self.viewer.dims
        if dims.ndisplay != 2 or tuple(dims.displayed) != (dims.ndim - 2, dims.ndim - 1):
            raise InvalidInputError(
                "Interactive segmentation works in the 2D view of the image's last two axes "
                f"(now displayed: axes {tuple(dims.displayed)} of {dims.ndim})."
            )
        lead = len(shape) - 2
        if lead == 0:
            return ()
        position = image.world_to_data(dims.point)[:lead]
        return tuple(int(np.clip(np.rint(p), 0, n - 1)) for p, n in zip(position, shape[:lead], strict=True))

    def _plane(self, key: SliceKey):
        """The image's plane ``key`` (a view or a lazy slice: nothing is read here)."""
        image = self.image_layer
        data = image.data[0] if image.multiscale else image.data
        return data[key] if key else data

    def _on_step_changed(self, *_args) -> None:
        if self.layers is not None and self.layers.ndim > 2:
            self._slice_timer.start()

    def _on_slice_settled(self) -> None:
        if self.image_layer is None:
            return
        if self._job is not None and self._job.name != "Embedding":
            return  # never interrupt a segmentation or a propagation by scrolling
        try:
            # prepared in the background: a plane that cannot be segmented (a blank slice)
            # only says so in the status line
            self._ensure_predictor(self.current_slice())
        except SumError:
            pass  # e.g. a 3D view: nothing to prepare until the user segments

    # ----------------------------------------------------------- prepare
    def compute_embedding(self) -> None:
        """(Re)load the model and prepare the current plane in a worker thread: a plane of one
        encoder window is encoded now; a larger one is encoded tile by tile by each S."""
        try:
            key = self.current_slice()
        except SumError as exc:
            show_failure(self.status_label, exc, "Cannot prepare the image")
            return
        self._start_prepare(key)

    def _ensure_predictor(self, key: SliceKey):
        """Return the predictor of plane ``key``, or start preparing it and return ``None``
        (a failure is shown in the status line)."""
        choice = self.model_choice()
        if self.predictors.model_for(choice) is not None:
            predictor = self.predictors.predictor(key)
            if predictor is not None:
                return predictor
        if self._preparing != (choice, key):
            self._start_prepare(key)
        return None

    def _start_prepare(self, key: SliceKey) -> None:
        """Prepare plane ``key`` in a worker; a registry model that is not downloaded is not
        downloaded here: the status line says so in red (the model picker offers Download)."""
        missing = self.model_picker.not_downloaded()
        if missing:
            self._status(missing, error=True)
            return
        choice = self.model_choice()
        image = self.image_layer
        memory_tiles = STACK_MEMORY_TILES if key else None
        self._start_job(
            "Embedding",
            prepare_steps,
            (choice, self.predictors.model_for(choice), self._plane(key), key,
             self.cache_edit.text().strip() or None, image.name, memory_tiles),
            self._on_prepared,
            steps=True,
        )  # fmt: skip
        self._prepared_cache = self.cache_edit.text().strip()
        self._preparing = (choice, key)
        where = f" of slice {key}" if key else ""
        self._status(f"Preparing the image{where} with {choice.source}...")

    def _show_task(self, shown: bool) -> None:
        """Show the task choice only for SUM models (the others have no task prompt)."""
        self.task_label.setVisible(shown)
        self.task_combo.setVisible(shown)

    def _on_prepared(self, prepared: Prepared) -> None:
        self.predictors.store(prepared)
        self._show_task(bool(prepared.model.config.sum_tokens))
        self._status(
            f"{describe(prepared.predictor)}: add points (T toggles their kind) or boxes, then press S."
        )
        if self._segment_when_ready:
            self._segment_when_ready = False
            self.segment()

    # ----------------------------------------------------------- prompts
    def toggle_point_kind(self) -> None:
        """Switch the kind of the next point between positive and negative."""
        self._set_point_kind(NEGATIVE if self._point_kind == POSITIVE else POSITIVE)

    def _set_point_kind(self, kind: int) -> None:
        self._point_kind = kind
        points = None if self.layers is None else self.layers.existing(POINTS_NAME)
        if points is not None:
            points.feature_defaults = {"label": kind}
        self._show_point_kind()

    def _show_point_kind(self) -> None:
        kind = "positive (green)" if self._point_kind == POSITIVE else "negative (red)"
        self.point_kind_label.setText(f"next point: {kind}")

    def _on_prompts_changed(self, event) -> None:
        if self.live_check.isChecked() and str(getattr(event, "action", "")) in _LIVE_ACTIONS:
            self.segment(live=True)

    def _prompts(self, key: SliceKey) -> PlanePrompts:
        points = self.layers.points()
        labels = points.features["label"].to_numpy()
        pts, labels = points_on_slice(self._data_coords(points, points.data), labels, key)
        shapes = self.layers.boxes()
        rects = [self._data_coords(shapes, vertices) for vertices in box_shapes(shapes.data, shapes.shape_type)]
        return PlanePrompts(pts, labels, boxes_on_slice(rects, key))

    # ----------------------------------------------------------- actions
    def segment(self, live: bool = False) -> None:
        """Segment the current slice from its prompts in a worker (errors become notifications).

        S while a segmentation runs is ignored with a message (live mode restarts it), so no tile
        is encoded twice."""
        if not live and self._job is not None and self._job.name == "Segmentation":
            self._status("A segmentation is running: press S again when it ends (Cancel stops it).")
            return
        try:
            self._segment(live)
        except SumError as exc:
            if live:
                self._status(str(exc))
            else:
                show_failure(self.status_label, exc, "Cannot segment")

    def _segment(self, live: bool) -> None:
        key = self.current_slice()
        self._ensure_layers_exist()
        prompts = self._prompts(key)
        refine_id = self.refine_spin.value()
        if len(prompts.points) == 0 and len(prompts.boxes) == 0 and not refine_id:
            if live:
                self._clear_results()
                return
            raise InvalidInputError(
                "No prompt on this slice: click points (T toggles positive / negative) "
                "or draw a rectangle in the box layer, then press S."
            )
        predictor = self._ensure_predictor(key)
        if predictor is None:
            if self._preparing is None:
                return  # not prepared and cannot be (model not downloaded): the status line says why
            self._segment_when_ready = True
            self._status("Waiting for the image to be prepared; the object is segmented then.")
            return
        refinement = None
        if refine_id:
            committed = self.layers.committed().data
            plane = committed[key] if key else committed
            refinement = Refinement(refine_id, plane, self.state.remembered.get(refine_id))
        cancel = threading.Event()
        start = tiles_encoded(predictor)
        self._start_job(
            "Segmentation",
            segment_plane,
            (predictor, key, prompts, refinement, self.task_combo.currentData(),
             self.uncertainty_combo.currentText(), cancel, self.tile_limit.spin.value()),
            self._show_result,
            stop=cancel.set,
            status=lambda: f"Segmenting: {tiles_encoded(predictor) - start} tile(s) encoded so far...",
        )  # fmt: skip

    def _clear_results(self) -> None:
        """Zero the windows of the current objects and of their uncertainty, and refresh."""
        layers, state = self.layers, self.state
        current, uncertainty = layers.existing(CURRENT_NAME), layers.existing(UNCERTAINTY_NAME)
        clear_windows(current, state.current_windows)
        clear_windows(uncertainty, state.uncertainty_windows)
        for layer in (current, uncertainty):
            if layer is not None:
                layer.refresh()
        self._last_result = None

    def _show_result(self, result: SegmentResult) -> None:
        """Write a segmentation's windows into the result layers (GUI thread)."""
        self._ensure_layers_exist()
        state = self.state
        current, uncertainty = self.layers.current(), self.layers.uncertainty()
        clear_windows(current, state.current_windows)
        clear_windows(uncertainty, state.uncertainty_windows)
        write_objects(current, result.objects, state.current_windows)
        if result.uncertainty is not None:
            write_uncertainty(uncertainty, result.uncertainty, state.uncertainty_windows)
        current.refresh()
        uncertainty.refresh()
        self._last_result = result
        scores = ", ".join(f"{s:.3f}" for s in result.scores)
        tiles = f" ({result.tiles} tile(s) encoded)" if result.tiles else ""
        if not result.complete:
            self.tile_limit.show_cut(result.plane_tiles)
            self._status(
                f"Segmented {len(result.scores)} object(s){tiles}, but an object still reaches a tile border after "
                f"{self.tile_limit.spin.value()} tiles (max tiles) and may be cut there: "
                f"'Continue with all {result.plane_tiles} tiles' segments it whole.",
                error=True,
            )
            return
        self.tile_limit.continue_button.hide()
        self._status(
            f"Segmented {len(result.scores)} object(s); score {scores}{tiles}. C commits, Shift+C clears."
        )

    def commit(self) -> None:
        """Add the current objects to the committed objects as one step of napari's undo history,
        as the *commit mode* allows (:func:`napari_sum_hq._commit.plan_commit`), and clear the prompts.

        When the mode leaves nothing to write (every object matches a committed one, or lies on
        committed pixels), nothing changes and the current objects stay."""
        state = self.state
        current = self.layers.existing(CURRENT_NAME) if self.layers else None
        pieces = [] if current is None else self._current_pixels(current)
        if not pieces:
            self._status("Nothing to commit: segment an object first (S).", error=True)
            return
        committed = self.layers.committed()
        refine_id, mode = self.refine_spin.value(), self.commit_mode_combo.currentText()
        plan = plan_commit(pieces, committed.data, mode, self.match_spin.value(), refine_id)
        kept = sorted({int(i) for piece in plan.pixels for i in np.unique(piece.ids)})
        base = 0 if refine_id else state.max_label.value()
        new_ids = {index: refine_id or base + n for n, index in enumerate(kept, start=1)}
        notes = plan.notes(mode)
        if not kept:
            self._status(f"Nothing committed{notes}. The current object(s) stay.")
            return
        lut = np.zeros(max(kept) + 1, dtype=np.int64)
        lut[kept] = [new_ids[i] for i in kept]
        where: list[tuple[np.ndarray, ...]] = []
        values: list[np.ndarray] = []
        for piece in plan.pixels:
            where.append((*(np.full(piece.rows.size, i) for i in piece.slice_key), piece.rows, piece.cols))
            values.append(lut[piece.ids])
        if refine_id:  # the refined object replaces the old one on the slices it covers
            for piece in pieces:
                old = np.asarray(committed.data[piece.slice_key]) == refine_id
                for written in plan.pixels:
                    if written.slice_key == piece.slice_key:
                        old[written.rows, written.cols] = False
                old_rows, old_cols = np.nonzero(old)
                where.append((*(np.full(old_rows.size, i) for i in piece.slice_key), old_rows, old_cols))
                values.append(np.zeros(old_rows.size, dtype=np.int64))
        index = tuple(np.concatenate(axis) for axis in zip(*where, strict=True))
        before = last_edit(committed)
        committed.data_setitem(index, np.concatenate(values).astype(committed.data.dtype))
        edit = last_edit(committed)
        if edit is not before:
            state.commit_atoms.extend(edit)
        self._remember_logits(new_ids, plan.pixels)
        points, boxes = self.layers.existing(POINTS_NAME), self.layers.existing(BOXES_NAME)
        state.commit_prompts.add(
            sorted(set(new_ids.values())),
            np.empty((0, self.layers.ndim)) if points is None else points.data,
            np.empty(0) if points is None else points.features["label"].to_numpy(),
            [] if boxes is None else boxes.data,
        )
        self._clear_prompts()
        self._status(f"Committed object id(s) {sorted(set(new_ids.values()))}{notes}.")
        self._autosave()

    def _current_pixels(self, current) -> list[SlicePixels]:
        """The pixels of the current objects, per slice window written or painted."""
        pieces = []
        for key, region in self.state.current_windows.items():
            ids = np.asarray(current.data[key + region.slices])
            rows, cols = np.nonzero(ids)
            if rows.size:
                values = ids[rows, cols].astype(np.int64)
                pieces.append(SlicePixels(key, rows + region.row0, cols + region.col0, values))
        return pieces

    def _remember_logits(self, new_ids: dict[int, int], written: list[SlicePixels]) -> None:
        """Keep SAM's low-resolution logits of a single committed object (for refinement)."""
        result = self._last_result
        if result is None or result.low_res_logits is None or len(result.objects) != 1 or len(written) != 1:
            return
        index = result.objects[0].index
        if index not in new_ids:
            return
        label_id = new_ids[index]
        (piece,) = written
        rows, cols = piece.rows, piece.cols
        region = Region(int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)
        mask = np.zeros(region.shape, dtype=bool)
        mask[rows - region.row0, cols - region.col0] = True
        logits = result.low_res_logits[index - 1]
        remembered = self.state.remembered
        remembered[label_id] = RememberedLogits(piece.slice_key, region, mask, logits)
        remembered.move_to_end(label_id)
        while len(remembered) > REMEMBERED_OBJECTS:
            remembered.popitem(last=False)

    def undo_commit(self) -> None:
        """Undo the last commit through napari's undo history of the committed objects."""
        committed = self.layers.existing(COMMITTED_NAME) if self.layers else None
        edit = None if committed is None else last_edit(committed)
        if edit is None:
            show_info("No commit to undo.")
            return
        if not all(any(atom is mine for mine in self.state.commit_atoms) for atom in edit):
            show_info(
                "The last change of 'committed objects' is not a commit (painting?): "
                "select that layer and press Ctrl+Z to undo it."
            )
            return
        committed.undo()
        self.state.commit_prompts.drop_last()
        self._status("Last commit undone.")
        self._autosave()

    # ------------------------------------------------- annotation file
    def _on_annotation_path_edited(self) -> None:
        if self.state is not None:
            self.state.annotation_path = self.annotation_edit.text().strip()

    def _autosave(self) -> None:
        """Save a snapshot of the committed objects and their prompts to the annotation file (when
        one is set) in the saver thread; saves are written in the order of the commits."""
        state = self.state
        if not state.annotation_path:
            return
        prompts = state.commit_prompts
        snapshot = CommitPrompts(prompts.ndim, prompts.points, prompts.boxes, [list(c) for c in prompts.commits])
        labels = np.array(self.layers.committed().data)
        self._saver.submit(state.annotation_path, labels, snapshot, self._image_identity())

    def _on_saved(self, message: str, error: bool) -> None:
        self._status(message if error else f"{self.status_label.text()} {message}", error=error)

    def flush_saves(self) -> None:
        """Wait until every annotation-file save started so far is written."""
        self._saver.flush()

    def _image_identity(self) -> ImageIdentity:
        return ImageIdentity.of_layer(self.image_layer, self.layers.shape)

    def load_annotations(self) -> None:
        """Replace the committed objects (one undo step) and their prompts by the annotation file's."""
        self._on_annotation_path_edited()
        path = None if self.state is None else self.state.annotation_path
        if not path:
            self._status("Load: type the annotation file's path first.", error=True)
            return
        self._saver.flush()  # a save still being written is complete before the file is read
        try:
            labels, prompts = load_annotations(path, self.layers.shape, self._image_identity())
        except SumError as exc:
            self._status(f"Load failed: {exc}", error=True)
            return
        committed = self.layers.committed()
        where = np.nonzero(np.asarray(committed.data) != labels)
        if where[0].size:
            committed.data_setitem(where, labels[where])
        self.state.commit_prompts = prompts
        self._status(f"Loaded {len(np.unique(labels)) - 1 if labels.any() else 0} object(s) from {path}.")

    def clear(self) -> None:
        """Remove the prompts, the current objects and their uncertainty (commits stay)."""
        if self.layers is not None:
            self._clear_prompts()
            self._status("Prompts cleared.")

    def _clear_prompts(self) -> None:
        layers = self.layers
        points, boxes = layers.existing(POINTS_NAME), layers.existing(BOXES_NAME)
        if points is not None and len(points.data):
            points.data = np.empty((0, layers.ndim))
        if boxes is not None and boxes.nshapes:
            boxes.data = []
        self._clear_results()
        self.refine_spin.setValue(0)
        self._set_point_kind(POSITIVE)

    def clear_slice(self) -> None:
        """Remove the prompts, current objects and uncertainty of the displayed slice only
        (the other slices of a propagated object stay; commits stay)."""
        try:
            key = self.current_slice()
        except SumError as exc:
            show_failure(self.status_label, exc, "Cannot clear the slice")
            return
        layers, state = self.layers, self.state
        points, boxes = layers.existing(POINTS_NAME), layers.existing(BOXES_NAME)
        if points is not None and len(points.data):
            points.selected_data = set(np.flatnonzero(on_slice(self._data_coords(points, points.data), key)))
            points.remove_selected()
        if boxes is not None and boxes.nshapes:
            boxes.selected_data = {
                i for i, vertices in enumerate(boxes.data) if on_slice(self._data_coords(boxes, vertices), key).all()
            }
            boxes.remove_selected()
        current, uncertainty = layers.existing(CURRENT_NAME), layers.existing(UNCERTAINTY_NAME)
        clear_slice(current, state.current_windows, key)
        clear_slice(uncertainty, state.uncertainty_windows, key)
        for layer in (current, uncertainty):
            if layer is not None:
                layer.refresh()
        self._last_result = None
        where = f"slice {key[0] if len(key) == 1 else key}" if key else "the image"
        self._status(f"Prompts and current objects of {where} cleared.")

    def _data_coords(self, layer: Layer, coords: np.ndarray) -> np.ndarray:
        """A prompt layer's coordinates in the image's data coordinates."""
        image = self.image_layer
        coords = [image.world_to_data(layer.data_to_world(c)) for c in coords]
        return np.array(coords, dtype=float).reshape(len(coords), self.layers.ndim)

    # ------------------------------------------------------ background jobs
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
        self._job = _Job(name, worker, stop, status)
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
        worker.start()

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

    # ------------------------------------------------------- propagation
    def propagate(self) -> None:
        """Follow the current object from the current slice through the stack (worker thread)."""
        try:
            self._propagate()
        except SumError as exc:
            show_failure(self.status_label, exc, "Cannot propagate")

    def _propagate(self) -> None:
        key = self.current_slice()
        if len(key) != 1:
            raise InvalidInputError(
                "Propagation needs a 3D or time stack (one axis besides the displayed plane); "
                f"this image has {len(key)} such axes."
            )
        current = self.layers.existing(CURRENT_NAME)
        mask = None if current is None else np.asarray(current.data[key]) != 0
        if mask is None or not mask.any():
            raise InvalidInputError(
                "Nothing to propagate: segment the object on this slice first (S), then press Shift+S."
            )
        image = self.image_layer
        choice = self.model_choice()
        token, relay = CancelToken(), ProgressRelay(self)
        self._start_job(
            "Propagation",
            propagation_job,
            (choice, self.predictors.model_for(choice), image.data[0] if image.multiscale else image.data,
             key[0], mask, token, relay, self.task_combo.currentData(), self.propagation_group.options()),
            partial(self._write_propagation, key),
            stop=token.cancel,
            relay=relay,
        )  # fmt: skip

    def _write_propagation(self, key: SliceKey, result: PropagationResult) -> None:
        """Replace the current object by the propagated one (its windows only); the
        uncertainty of the start slice stays (propagation computes none)."""
        state = self.state
        current = self.layers.current()
        clear_windows(current, state.current_windows)
        write_objects(current, result.objects, state.current_windows)
        current.refresh()
        self._last_result = None
        filled = [piece.slice_key[0] for piece in result.objects]
        stops = describe_stops(result)
        if not filled:
            self._status(f"Propagated from slice {key[0]}: {stops}.")
            return
        self._status(
            f"Propagated from slice {key[0]}: the object is on {len(filled)} slice(s) "
            f"({min(filled)}..{max(filled)}). Ends: {stops}. C commits all slices."
        )
