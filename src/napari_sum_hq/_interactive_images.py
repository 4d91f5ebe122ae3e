"""The interactive widget's image, model and slice choice, and the preparation of a plane.

Choosing an image switches to its own annotation state (:mod:`napari_sum_hq._annotations`);
choosing an image, a model or a cache folder, or showing another slice of a stack, prepares the
displayed plane in a worker (:func:`napari_sum_hq._session.prepare_steps`). A registry model
that is not downloaded is never downloaded here: the status line says so in red.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.layers import Image
from qtpy.QtWidgets import QFileDialog
from sum_core.errors import InvalidInputError, SumError

from ._annotation_file import default_path, is_ours
from ._job_widget import show_failure
from ._layers import COMMITTED_NAME, CURRENT_NAME, POSITIVE, UNCERTAINTY_NAME
from ._session import STACK_MEMORY_TILES, Prepared, SliceKey, describe, prepare_steps
from ._widget_parts import sole_image

NO_IMAGE_ITEM = "(choose an image layer)"
#: Delay before preparing a newly shown slice (so scrolling does not start a job per step).
SLICE_DEBOUNCE_MS = 300


class ImagesPart:
    """Part of :class:`~napari_sum_hq._interactive_widget.InteractiveSegmentationWidget`: what is
    segmented (image, model, slice) and its preparation."""

    @property
    def image_layer(self) -> Image | None:
        """The image being segmented (``None`` when none is chosen)."""
        layer = self.image_combo.currentData()
        return layer if layer in self.viewer.layers else None

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
