"""The interactive widget's controls: model group, job row, prompt group, 3D group, scrolling."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
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
from sum_core.options import UNCERTAINTY_METHODS

from ._commit import COMMIT_MODES, DEFAULT_COMMIT_MODE, DEFAULT_MATCH_THRESHOLD
from ._large_image import TileLimit
from ._layers import POSITIVE
from ._propagation_group import PropagationGroup
from ._session import PREPARE_STEPS
from ._widget_parts import ModelPicker
from ._words import TASK_WORDS, UNCERTAINTY_WORDS, lines


class FormPart:
    """Part of :class:`~napari_sum_hq._interactive_widget.InteractiveSegmentationWidget`: builds its
    controls (every one with a tooltip) and connects them to its actions."""

    def _build_ui(self) -> None:
        settings = self._build_model_group()
        encode_row = self._build_job_row()
        prompts = self._build_prompt_group()
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

    def _build_model_group(self) -> QGroupBox:
        """Image, model (with its download panel), task, uncertainty, cache folder, max tiles."""
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
        return settings

    def _build_job_row(self) -> QHBoxLayout:
        """Progress bar, status line, *Compute embedding* and *Cancel* (the row is returned)."""
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
        return encode_row

    def _build_prompt_group(self) -> QGroupBox:
        """Point kind, refine label, Segment / live, commit mode and threshold, commit / undo / clear,
        annotation file."""
        self.point_kind_label = QLabel()
        self.toggle_button = QPushButton("Toggle positive / negative [T]")
        self.toggle_button.clicked.connect(self.toggle_point_kind)
        self.toggle_button.setToolTip(
            "Switch the next point between positive (on the object) and negative (not on it)."
        )
        self.segment_button = QPushButton("Segment [S]")
        self.segment_button.clicked.connect(self.segment)
        self.segment_button.setToolTip("Segment the displayed slice from its points and boxes (one object per box).")
        self.suggest_button = QPushButton("Take suggested click [N]")
        self.suggest_button.clicked.connect(self.accept_suggestion)
        self.suggest_button.setToolTip(
            "After a segmentation a star marks where a click should help most (the centre of the largest "
            "uncertain region near the object; green: add it, red: remove it): add it as a prompt and segment again."
        )
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
            "Zarr file the committed objects, their prompts and scores are saved to after every commit and undo "
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
        prompt_layout.addRow(self.suggest_button)
        prompt_layout.addRow("commit mode", self.commit_mode_combo)
        prompt_layout.addRow("match threshold", self.match_spin)
        prompt_layout.addRow(commit_row)
        prompt_layout.addRow(clear_row)
        prompt_layout.addRow("annotation file", annotation_row)
        return prompts
