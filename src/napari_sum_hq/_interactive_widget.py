"""Dock widget for interactive (prompt-based) segmentation with uncertainty.

Keys (bound on the viewer and on the two prompt layers, whose own bindings
would otherwise win when they are the active layer):

======================  ==============================================
``S``                   segment the current slice from its prompts
``C``                   commit the current object (new id, or the id
                        being refined) and clear the prompts
``T``                   toggle the kind of the next point
                        (positive green / negative red)
``Shift+C``             clear prompts, current object and uncertainty
``Ctrl+Z``              undo the last commit (when a Labels layer is
                        active, napari's own paint undo wins: use the
                        "Undo commit" button or select a prompt layer)
``Shift+S``             propagate the current object from the current
                        slice through the stack (3D / time)
======================  ==============================================

The image encoder runs in a worker thread (with progress and Cancel); every
job (encode, propagation, large-image segmentation) gets a generation number
and the results of cancelled or superseded jobs are dropped. Decoding a prompt
is fast and runs on the GUI thread.

Large images (see :mod:`napari_sum_hq._large`) go through
:class:`sum_core.TiledPredictor`: choosing the image encodes nothing, each
segmentation runs in a worker and encodes only the tiles its object reaches
(kept in the zarr embedding cache of the "cache folder" setting, if set), and
the result is pasted by window; the uncertainty layer of a large image is a
chunked in-memory zarr array, so no full-size float array is allocated.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Image, Layer
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from sum_core.errors import InvalidInputError, SumError
from sum_core.options import TASKS, UNCERTAINTY_METHODS

from ._layers import (
    BOXES_NAME,
    COMMITTED_NAME,
    CURRENT_NAME,
    NEGATIVE,
    POINTS_NAME,
    POSITIVE,
    UNCERTAINTY_NAME,
    AnnotationLayers,
    spatial_shape,
)
from ._jobs import CancelToken, JobCancelled, ProgressRelay
from ._large import is_large, tiled_encode_steps, tiled_predict
from ._propagation import PropagationResult, propagation_job
from ._prompts import boxes_on_slice, mask_to_low_res_logits, points_on_slice
from ._session import DEVICES, ENCODE_STEPS, EmbeddingCache, EncodeResult, ModelChoice, encode_steps

if TYPE_CHECKING:
    import napari

LOCAL_FILE_ITEM = "local file..."
NO_IMAGE_ITEM = "(choose an image layer)"
#: Delay before encoding a newly shown slice (so scrolling does not start an encode per step).
SLICE_DEBOUNCE_MS = 300
_LIVE_ACTIONS = {"added", "removed", "changed"}


def _unbind_keys(viewer, keys: tuple[str, ...]) -> None:
    for key in keys:
        if key in viewer.keymap:
            viewer.bind_key(key, None)


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
        self.cache = EmbeddingCache()
        self.layers: AnnotationLayers | None = None
        self._generation = 0
        self._worker = None
        self._workers: set = set()
        self._encoding: tuple[ModelChoice, tuple[int, ...]] | None = None
        self._token: CancelToken | None = None
        self._job_name = "Embedding"
        self._large = False
        self._unc_window: tuple | None = None
        self._segment_when_ready = False
        self._last_prediction = None
        self._undo: list[tuple[tuple[np.ndarray, ...], np.ndarray]] = []
        self._low_res_memory: dict[int, tuple[tuple[int, ...], np.ndarray, np.ndarray]] = {}
        self._slice_timer = QTimer(self)
        self._slice_timer.setSingleShot(True)
        self._slice_timer.setInterval(SLICE_DEBOUNCE_MS)
        self._slice_timer.timeout.connect(self._on_slice_settled)
        self._build_ui()
        self._refresh_images()
        viewer.layers.events.inserted.connect(self._refresh_images)
        viewer.layers.events.removed.connect(self._refresh_images)
        viewer.dims.events.current_step.connect(self._on_step_changed)
        self._bind_keys(viewer)

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        self.image_combo = QComboBox()
        self.image_combo.currentIndexChanged.connect(self._on_image_chosen)
        self.model_combo = QComboBox()
        self.model_combo.addItems(self._registry_names())
        self.model_combo.addItem(LOCAL_FILE_ITEM)
        self._model_index = 0
        self.model_combo.activated.connect(self._on_model_activated)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.device_combo.currentIndexChanged.connect(self._on_model_changed)
        self.task_combo = QComboBox()
        for index, name in TASKS.items():
            self.task_combo.addItem(f"{name} ({index})", index)
        self.task_combo.setCurrentIndex(self.task_combo.findData(1))
        self.uncertainty_combo = QComboBox()
        self.uncertainty_combo.addItems(UNCERTAINTY_METHODS)
        self.cache_edit = QLineEdit()
        self.cache_edit.setPlaceholderText("(in memory)")
        self.cache_edit.setToolTip(
            "Folder of the zarr embedding cache of large images (one store per image and model, "
            "named <layer>-<data hash>-<weights hash>.zarr); empty keeps embeddings in memory."
        )
        cache_button = QPushButton("...")
        cache_button.clicked.connect(self._browse_cache_folder)
        cache_row = QHBoxLayout()
        cache_row.addWidget(self.cache_edit)
        cache_row.addWidget(cache_button)

        settings = QGroupBox("Model")
        form = QFormLayout(settings)
        form.addRow("image", self.image_combo)
        form.addRow("model", self.model_combo)
        form.addRow("device", self.device_combo)
        form.addRow("task", self.task_combo)
        form.addRow("uncertainty", self.uncertainty_combo)
        form.addRow("cache folder", cache_row)

        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, len(ENCODE_STEPS))
        self.progress_bar.setValue(0)
        self.status_label = QLabel("Choose an image layer to compute its embedding.")
        self.status_label.setWordWrap(True)
        self.embed_button = QPushButton("Compute embedding")
        self.embed_button.clicked.connect(self.compute_embedding)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        encode_row = QHBoxLayout()
        encode_row.addWidget(self.embed_button)
        encode_row.addWidget(self.cancel_button)

        self.point_kind_label = QLabel()
        self.toggle_button = QPushButton("Toggle positive / negative [T]")
        self.toggle_button.clicked.connect(self.toggle_point_kind)
        self.segment_button = QPushButton("Segment [S]")
        self.segment_button.clicked.connect(self.segment)
        self.live_check = QCheckBox("live (segment on every prompt change)")
        self.refine_spin = QSpinBox()
        self.refine_spin.setRange(0, 2**31 - 1)
        self.refine_spin.setSpecialValueText("new object")
        self.refine_spin.setToolTip(
            "Id of a committed object to refine: its mask becomes the mask prompt, "
            "and committing replaces it on this slice."
        )
        self.commit_button = QPushButton("Commit [C]")
        self.commit_button.clicked.connect(self.commit)
        self.undo_button = QPushButton("Undo commit [Ctrl+Z]")
        self.undo_button.clicked.connect(self.undo_commit)
        self.clear_button = QPushButton("Clear [Shift+C]")
        self.clear_button.clicked.connect(self.clear)
        commit_row = QHBoxLayout()
        for button in (self.commit_button, self.undo_button, self.clear_button):
            commit_row.addWidget(button)

        prompts = QGroupBox("Prompts")
        prompt_layout = QFormLayout(prompts)
        prompt_layout.addRow(self.point_kind_label, self.toggle_button)
        prompt_layout.addRow("refine label", self.refine_spin)
        prompt_layout.addRow(self.segment_button, self.live_check)
        prompt_layout.addRow(commit_row)

        self.propagate_button = QPushButton("Propagate through the stack [Shift+S]")
        self.propagate_button.clicked.connect(self.propagate)
        self.iou_spin = QDoubleSpinBox()
        self.score_spin = QDoubleSpinBox()
        for spin, value, tip in (
            (self.iou_spin, 0.5, "Stop when a slice's mask overlaps the previous slice's by less than this IoU."),
            (self.score_spin, 0.5, "Stop when the predicted IoU of a slice's mask is below this."),
        ):
            spin.setRange(0.0, 1.0)
            spin.setSingleStep(0.05)
            spin.setValue(value)
            spin.setToolTip(tip)
        propagation = QGroupBox("3D / time propagation")
        propagation_layout = QFormLayout(propagation)
        propagation_layout.addRow("stop below IoU with previous slice", self.iou_spin)
        propagation_layout.addRow("stop below predicted IoU", self.score_spin)
        propagation_layout.addRow(self.propagate_button)

        layout = QVBoxLayout(self)
        layout.addWidget(settings)
        layout.addLayout(encode_row)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addWidget(prompts)
        layout.addWidget(propagation)
        layout.addStretch(1)
        self._point_kind = POSITIVE
        self._show_point_kind()

    @staticmethod
    def _registry_names() -> list[str]:
        from sum_core.zoo import DEFAULT_MODEL, list_models

        try:
            names = list_models()
        except SumError as exc:
            show_error(str(exc))
            names = []
        return [DEFAULT_MODEL, *(n for n in names if n != DEFAULT_MODEL)]

    def _bind_keys(self, viewer) -> None:
        actions = self._key_actions()
        for key, action in actions.items():
            viewer.bind_key(key, lambda _viewer, action=action: action(), overwrite=True)
        self.destroyed.connect(partial(_unbind_keys, viewer, tuple(actions)))

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
        for key, action in self._key_actions().items():
            layer.bind_key(key, lambda _layer, action=action: action(), overwrite=True)
        layer.events.data.connect(self._on_prompts_changed)
        if "label" in getattr(layer, "features", {}):
            layer.feature_defaults = {"label": self._point_kind}

    # --------------------------------------------------------- choices
    @property
    def image_layer(self) -> Image | None:
        """The image being segmented (``None`` when none is chosen)."""
        layer = self.image_combo.currentData()
        return layer if layer in self.viewer.layers else None

    @property
    def is_encoding(self) -> bool:
        """Whether a job whose result will be used (encode, propagation...) is running."""
        return self._worker is not None

    @property
    def running_workers(self) -> int:
        """Number of worker threads still running, cancelled ones included."""
        return len(self._workers)

    def model_choice(self) -> ModelChoice:
        """The model and device currently chosen in the widget."""
        return ModelChoice(self.model_combo.currentText(), self.device_combo.currentText())

    def set_model_source(self, source: str) -> None:
        """Choose a registry name or a checkpoint path as the model."""
        index = self.model_combo.findText(source)
        if index < 0:
            index = self.model_combo.count() - 1  # just before LOCAL_FILE_ITEM
            self.model_combo.insertItem(index, source)
        self.model_combo.setCurrentIndex(index)
        self._model_index = index
        self._on_model_changed()

    def _browse_cache_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Embedding cache folder", self.cache_edit.text())
        if path:
            self.cache_edit.setText(path)

    def _on_model_activated(self, index: int) -> None:
        if self.model_combo.itemText(index) == LOCAL_FILE_ITEM:
            path, _ = QFileDialog.getOpenFileName(
                self, "Model checkpoint", "", "Checkpoints (*.pth *.pt *.ckpt *.bin);;All files (*)"
            )
            if not path:
                self.model_combo.setCurrentIndex(self._model_index)
                return
            self.set_model_source(path)
        elif index != self._model_index:
            self._model_index = index
            self._on_model_changed()

    def _on_model_changed(self, *_args) -> None:
        self.cancel()
        self.cache.clear()
        if self.image_layer is not None:
            self.compute_embedding()

    def _refresh_images(self, *_args) -> None:
        own = {id(layer) for layer in self.layers.owned()} if self.layers else set()
        images = [
            layer for layer in self.viewer.layers if isinstance(layer, Image) and id(layer) not in own
        ]
        current = self.image_combo.currentData()
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItem(NO_IMAGE_ITEM, None)
        for layer in images:
            self.image_combo.addItem(layer.name, layer)
        self.image_combo.setCurrentIndex(max(0, self.image_combo.findData(current)))
        self.image_combo.blockSignals(False)
        if current is not None and self.image_combo.currentData() is None:
            self._on_image_chosen()

    def _on_image_chosen(self, *_args) -> None:
        self.cancel()
        self.cache.clear_slices()
        self._undo.clear()
        self._low_res_memory.clear()
        self._last_prediction = None
        image = self.image_layer
        if image is None:
            self.layers = None
            self.status_label.setText("Choose an image layer to compute its embedding.")
            return
        data = image.data[0] if image.multiscale else image.data
        shape = spatial_shape(image)
        self._large = is_large(data, shape) and len(shape) <= 3 and not image.rgb
        self._unc_window = None
        self.layers = AnnotationLayers(
            self.viewer, image, on_prompt_layer=self._on_prompt_layer, lazy_results=self._large
        )
        self._ensure_layers()
        self.compute_embedding()

    def _ensure_layers(self) -> None:
        """Create the prompt and result layers if missing, keep the point layer active."""
        layers = self.layers
        for get in (layers.uncertainty, layers.committed, layers.current, layers.boxes, layers.points):
            get()
        self.viewer.layers.selection.active = layers.points()
        layers.points().mode = "add"

    # ------------------------------------------------------------ slice
    def current_slice(self) -> tuple[int, ...]:
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

    def _slice_image(self, key: tuple[int, ...]):
        image = self.image_layer
        data = image.data[0] if image.multiscale else image.data
        return data[key] if key else data

    def _on_step_changed(self, *_args) -> None:
        if self.layers is not None and self.layers.ndim > 2:
            self._slice_timer.start()

    def _on_slice_settled(self) -> None:
        if self.image_layer is None:
            return
        try:
            self._ensure_predictor(self.current_slice())
        except SumError:
            pass  # e.g. a 3D view: nothing to encode until the user segments

    # ----------------------------------------------------------- encode
    def compute_embedding(self) -> None:
        """(Re)compute the embedding of the current slice in a worker thread."""
        try:
            key = self.current_slice()
        except SumError as exc:
            show_error(str(exc))
            return
        self._start_encode(key)

    def _ensure_predictor(self, key: tuple[int, ...]):
        """Return the predictor of slice ``key``, or start its encode and return ``None``."""
        choice = self.model_choice()
        key = () if self._large else key
        if self.cache.model_for(choice) is not None:
            predictor = self.cache.predictor(key)
            if predictor is not None:
                return predictor
        if self._encoding != (choice, key):
            self._start_encode(key)
        return None

    def _start_encode(self, key: tuple[int, ...]) -> None:
        from napari.qt.threading import create_worker

        self.cancel(quiet=True)
        choice = self.model_choice()
        self._generation += 1
        generation = self._generation
        if self._large:
            key = ()
            image = self.image_layer
            lead = len(self.layers.shape) - 2
            worker = create_worker(
                tiled_encode_steps,
                choice,
                self.cache.model_for(choice),
                image.data[0] if image.multiscale else image.data,
                0 if lead else None,
                self.cache_edit.text().strip() or None,
                image.name,
                _start_thread=False,
                _ignore_errors=True,
            )
        else:
            worker = create_worker(
                encode_steps,
                choice,
                self.cache.model_for(choice),
                self._slice_image(key),
                key,
                _start_thread=False,
                _ignore_errors=True,
            )
        worker.yielded.connect(partial(self._on_encode_step, generation))
        worker.returned.connect(partial(self._on_encoded, generation))
        worker.errored.connect(partial(self._on_encode_error, generation))
        worker.finished.connect(partial(self._workers.discard, worker))
        self._workers.add(worker)
        self._worker = worker
        self._job_name = "Embedding"
        self._encoding = (choice, key)
        self.cancel_button.setEnabled(True)
        self.progress_bar.setValue(0)
        where = f" of slice {key}" if key else ""
        self.status_label.setText(f"Computing the embedding{where} with {choice.source}...")
        worker.start()

    def _on_encode_step(self, generation: int, step: str) -> None:
        if generation != self._generation:
            return
        self.progress_bar.setRange(0, len(ENCODE_STEPS))
        self.progress_bar.setValue(ENCODE_STEPS.index(step))
        self.status_label.setText(f"{step}...")

    def _on_encoded(self, generation: int, result: EncodeResult) -> None:
        if generation != self._generation:
            return  # superseded or cancelled: drop it
        self.cache.store(result)
        self._finish_encode("Embedding ready: add points (T toggles their kind) or boxes, then press S.")
        if self._segment_when_ready:
            self._segment_when_ready = False
            self.segment()

    def _on_encode_error(self, generation: int, exc: BaseException) -> None:
        if generation != self._generation:
            return
        self._segment_when_ready = False
        message = str(exc) if isinstance(exc, SumError) else f"{type(exc).__name__}: {exc}"
        self._finish_encode(f"Embedding failed: {message}")
        show_error(message)

    def _finish_encode(self, status: str) -> None:
        self._worker = None
        self._encoding = None
        self._token = None
        self.cancel_button.setEnabled(False)
        self.progress_bar.setValue(self.progress_bar.maximum())
        self.status_label.setText(status)

    def cancel(self, quiet: bool = False) -> None:
        """Stop the running encode; its result, if it still arrives, is dropped."""
        worker = self._worker
        if worker is None:
            return
        worker.quit()
        if self._token is not None:
            self._token.cancel()
            self._token = None
        self._generation += 1
        self._segment_when_ready = False
        self._worker = None
        self._encoding = None
        self.cancel_button.setEnabled(False)
        self.progress_bar.setValue(0)
        if not quiet:
            self.status_label.setText(f"{self._job_name} cancelled.")

    # ----------------------------------------------------------- prompts
    def toggle_point_kind(self) -> None:
        """Switch the kind of the next point between positive and negative."""
        self._point_kind = NEGATIVE if self._point_kind == POSITIVE else POSITIVE
        if self.layers is not None:
            self.layers.points().feature_defaults = {"label": self._point_kind}
        self._show_point_kind()

    def _show_point_kind(self) -> None:
        kind = "positive (green)" if self._point_kind == POSITIVE else "negative (red)"
        self.point_kind_label.setText(f"next point: {kind}")

    def _on_prompts_changed(self, event) -> None:
        if self.live_check.isChecked() and str(getattr(event, "action", "")) in _LIVE_ACTIONS:
            self.segment(live=True)

    def _prompts(self, key: tuple[int, ...]):
        image = self.image_layer
        points = self.layers.points()
        coords = np.array([image.world_to_data(points.data_to_world(p)) for p in points.data])
        pts, labels = points_on_slice(coords, points.features["label"].to_numpy(), key)
        shapes = self.layers.boxes()
        rects = [
            np.array([image.world_to_data(shapes.data_to_world(v)) for v in vertices])
            for vertices, kind in zip(shapes.data, shapes.shape_type, strict=True)
            if kind == "rectangle"
        ]
        boxes = boxes_on_slice(rects, key)
        return pts, labels, boxes

    def _refine_mask_input(self, key: tuple[int, ...], predictor) -> np.ndarray | None:
        label_id = self.refine_spin.value()
        if label_id == 0:
            return None
        committed = self.layers.committed().data
        mask = (committed[key] if key else committed) == label_id
        if not mask.any():
            raise InvalidInputError(
                f"refine label {label_id}: the committed objects have no pixel of that id on this slice."
            )
        remembered = self._low_res_memory.get(label_id)
        if remembered is not None and remembered[0] == key and np.array_equal(remembered[1], mask):
            return remembered[2]
        from sum_core.image import preprocess_shape

        size = predictor.model.config.image_size
        h, w = preprocess_shape(*mask.shape, size)
        low = size // 4
        return mask_to_low_res_logits(mask, (round(h * low / size), round(w * low / size)), low)

    # ----------------------------------------------------------- actions
    def segment(self, live: bool = False) -> None:
        """Segment the current slice from its prompts (errors become notifications)."""
        try:
            self._segment(live)
        except SumError as exc:
            if not live:
                show_error(str(exc))

    def _segment(self, live: bool) -> None:
        key = self.current_slice()
        self._ensure_layers_exist()
        pts, labels, boxes = self._prompts(key)
        has_mask = self.refine_spin.value() != 0
        if len(pts) == 0 and len(boxes) == 0 and not has_mask:
            if live:
                self._write_result(key, None)
                return
            raise InvalidInputError(
                "No prompt on this slice: click points (T toggles positive / negative) "
                "or draw a rectangle in the box layer, then press S."
            )
        predictor = self._ensure_predictor(key)
        if predictor is None:
            self._segment_when_ready = True
            self.status_label.setText("Waiting for the embedding; the object is segmented when it is ready.")
            return
        if self._large:
            if has_mask:
                raise InvalidInputError(
                    "refine label: large images are segmented with the tiled predictor, which takes "
                    "clicks and one box only; set refine label to 'new object'."
                )
            self._start_job(
                "Segmentation",
                tiled_predict,
                (predictor, key, pts, labels, boxes, self.task_combo.currentData(),
                 self.uncertainty_combo.currentText()),
                partial(self._write_tiled_result, key),
            )  # fmt: skip
            return
        prediction = predictor.predict(
            points=pts if len(pts) else None,
            labels=labels if len(pts) else None,
            box=(boxes[0] if len(boxes) == 1 else boxes) if len(boxes) else None,
            mask_input=self._refine_mask_input(key, predictor),
            task=self.task_combo.currentData(),
            uncertainty=self.uncertainty_combo.currentText(),
        )
        self._write_result(key, prediction)

    def _ensure_layers_exist(self) -> None:
        if any(self.layers.existing(n) is None for n in (CURRENT_NAME, COMMITTED_NAME)):
            active = self.viewer.layers.selection.active
            self._ensure_layers()
            self.viewer.layers.selection.active = active

    def _clear_results(self) -> None:
        """Zero the current object and its uncertainty (for a large image only the window
        written last, so the chunked uncertainty array is not swept)."""
        for name in (CURRENT_NAME, UNCERTAINTY_NAME):
            layer = self.layers.existing(name)
            if layer is None:
                continue
            if name == UNCERTAINTY_NAME and self._large:
                if self._unc_window is not None:
                    layer.data[self._unc_window] = 0
            else:
                layer.data[...] = 0
            layer.refresh()
        self._unc_window = None
        self._last_prediction = None

    def _write_tiled_result(self, key: tuple[int, ...], prediction) -> None:
        """Paste a :class:`sum_core.TiledPrediction` (a window of the image) into the layers."""
        self._clear_results()
        current, uncertainty = self.layers.current(), self.layers.uncertainty()
        prediction.paste_into(current.data, 1, key[0] if key else None)
        rows, cols = prediction.window.slices
        self._unc_window = (*key, rows, cols)
        uncertainty.data[self._unc_window] = prediction.uncertainty.astype(np.float32)
        current.refresh()
        uncertainty.refresh()
        self.status_label.setText(
            f"Segmented 1 object over {len(prediction.tiles)} tile(s) (window at {prediction.offset}, "
            f"{prediction.mask.shape[0]} x {prediction.mask.shape[1]}); score {np.round(prediction.score, 3)}. "
            "C commits, Shift+C clears."
        )

    def _write_result(self, key: tuple[int, ...], prediction) -> None:
        self._clear_results()
        current, uncertainty = self.layers.current(), self.layers.uncertainty()
        if prediction is not None:
            masks = np.asarray(prediction.mask)
            masks = masks[None] if masks.ndim == 2 else masks
            plane = np.zeros(masks.shape[1:], dtype=current.data.dtype)
            for index, mask in enumerate(masks, start=1):
                plane[mask] = index
            unc = np.asarray(prediction.uncertainty, dtype=np.float32)
            current.data[key] = plane
            uncertainty.data[key] = unc.max(axis=0) if unc.ndim == 3 else unc
            if len(masks) == 1:
                self._last_prediction = (key, prediction)
            self.status_label.setText(
                f"Segmented {len(masks)} object(s); score {np.round(prediction.score, 3)}. "
                "C commits, Shift+C clears."
            )
        current.refresh()
        uncertainty.refresh()

    def commit(self) -> None:
        """Add the current object to the committed objects and clear the prompts."""
        current = self.layers.existing(CURRENT_NAME) if self.layers else None
        if current is None or not current.data.any():
            show_error("Nothing to commit: segment an object first (S).")
            return
        committed = self.layers.committed()
        objects = np.asarray(current.data)
        inside = objects != 0
        refine_id = self.refine_spin.value()
        changed = inside.copy()
        if refine_id:
            # the refined object replaces the old one on the slices it covers
            covered = inside.reshape(inside.shape[: -2] + (-1,)).any(axis=-1)
            changed |= (committed.data == refine_id) & covered[..., None, None]
            new_values = np.where(inside, refine_id, 0)
        else:
            new_values = np.where(inside, objects.astype(np.int64) + int(committed.data.max()), 0)
        where = np.nonzero(changed)
        self._undo.append((where, committed.data[where].copy()))
        committed.data[where] = new_values[where].astype(committed.data.dtype)
        committed.refresh()
        if self._last_prediction is not None:
            key, prediction = self._last_prediction
            label_id = refine_id or int(new_values.max())
            plane = (committed.data[key] if key else committed.data) == label_id
            self._low_res_memory[label_id] = (key, plane, np.asarray(prediction.low_res_logits))
        ids = np.unique(new_values[inside])
        self._clear_prompts()
        self.status_label.setText(f"Committed object id(s) {ids.tolist()}.")

    def undo_commit(self) -> None:
        """Restore the committed objects as they were before the last commit."""
        if not self._undo or self.layers is None or self.layers.existing(COMMITTED_NAME) is None:
            show_info("No commit to undo.")
            return
        where, old = self._undo.pop()
        committed = self.layers.committed()
        committed.data[where] = old
        committed.refresh()
        self.status_label.setText("Last commit undone.")

    def clear(self) -> None:
        """Remove the prompts, the current object and its uncertainty (commits stay)."""
        if self.layers is not None:
            self._clear_prompts()
            self.status_label.setText("Prompts cleared.")

    def _clear_prompts(self) -> None:
        layers = self.layers
        points, boxes = layers.existing(POINTS_NAME), layers.existing(BOXES_NAME)
        if points is not None and len(points.data):
            points.data = np.empty((0, layers.ndim))
        if boxes is not None and boxes.nshapes:
            boxes.data = []
        self._clear_results()
        self.refine_spin.setValue(0)

    # ------------------------------------------------------ background jobs
    def _start_job(
        self,
        name: str,
        function,
        args: tuple,
        on_result,
        token: CancelToken | None = None,
        relay: ProgressRelay | None = None,
    ) -> None:
        """Run ``function(*args)`` in a worker; ``on_result`` gets its value on the GUI thread."""
        from napari.qt.threading import create_worker

        self.cancel(quiet=True)
        self._generation += 1
        generation = self._generation
        worker = create_worker(function, *args, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(partial(self._on_job_done, generation, on_result))
        worker.errored.connect(partial(self._on_job_error, generation))
        worker.finished.connect(partial(self._workers.discard, worker))
        if relay is not None:
            relay.progressed.connect(partial(self._on_job_progress, generation))
        self._workers.add(worker)
        self._worker, self._token, self._job_name = worker, token, name
        self.cancel_button.setEnabled(True)
        self.progress_bar.setRange(0, 0)  # busy until the job reports progress
        self.status_label.setText(f"{name} running...")
        worker.start()

    def _on_job_progress(self, generation: int, done: int, total: int) -> None:
        if generation == self._generation and self._worker is not None:
            self.progress_bar.setRange(0, max(total, 1))
            self.progress_bar.setValue(done)

    def _on_job_done(self, generation: int, on_result, value) -> None:
        if generation != self._generation:
            return
        name = self._job_name
        self._finish_encode(f"{name} finished.")
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1)
        on_result(value)

    def _on_job_error(self, generation: int, exc: BaseException) -> None:
        if generation != self._generation:
            return
        name = self._job_name
        if isinstance(exc, JobCancelled):
            self._finish_encode(f"{name} cancelled.")
            return
        message = str(exc) if isinstance(exc, SumError) else f"{type(exc).__name__}: {exc}"
        self._finish_encode(f"{name} failed: {message}")
        show_error(message)

    # ------------------------------------------------------- propagation
    def propagate(self) -> None:
        """Follow the current object from the current slice through the stack (worker thread)."""
        try:
            self._propagate()
        except SumError as exc:
            show_error(str(exc))

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
            (choice, self.cache.model_for(choice), image.data[0] if image.multiscale else image.data,
             key[0], mask, token, relay, self.iou_spin.value(), self.score_spin.value(),
             self.task_combo.currentData()),
            partial(self._write_propagation, key),
            token,
            relay,
        )  # fmt: skip

    def _write_propagation(self, key: tuple[int, ...], result: PropagationResult) -> None:
        current = self.layers.current()
        uncertainty = self.layers.existing(UNCERTAINTY_NAME)
        kept = None if uncertainty is None else np.asarray(uncertainty.data[key])
        self._clear_results()
        current.data[...] = result.mask.astype(current.data.dtype)
        if kept is not None:  # propagation has no uncertainty: keep the start slice's map
            uncertainty.data[key] = kept
            uncertainty.refresh()
        current.refresh()
        filled = np.flatnonzero(result.mask.reshape(len(result.mask), -1).any(axis=1))
        self.status_label.setText(
            f"Propagated from slice {key[0]}: the object is on {len(filled)} slice(s) "
            f"({filled.min()}..{filled.max()}); it stops where a mask is empty, its predicted IoU "
            "or its IoU with the previous slice is below the thresholds. C commits all slices."
        )
