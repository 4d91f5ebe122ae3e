"""The interactive widget's prompts and segmentation: point kind, S (and live mode), clearing.

The prompts of the displayed slice (points, and boxes: rectangles, ellipses and polygons as
their bounding box) are segmented in a worker (:func:`napari_sum_hq._interactive_segment.segment_plane`);
the GUI thread writes only the windows of the result into the current-object and uncertainty
layers, keeps the objects' scores for the commit (:mod:`napari_sum_hq._interactive_scores`), shows the
suggested next click (:mod:`napari_sum_hq._interactive_suggest`), and clears only what was written.
"""

from __future__ import annotations

import threading

import numpy as np
from napari.layers import Layer
from sum_core.errors import InvalidInputError, SumError

from ._interactive_segment import PlanePrompts, Refinement, SegmentResult, segment_plane
from ._job_widget import show_failure
from ._layers import (
    BOXES_NAME,
    CURRENT_NAME,
    NEGATIVE,
    POINTS_NAME,
    POSITIVE,
    UNCERTAINTY_NAME,
    clear_slice,
    clear_windows,
    write_objects,
    write_uncertainty,
)
from ._prompts import box_shapes, boxes_on_slice, on_slice, points_on_slice
from ._session import SliceKey, tiles_encoded

_LIVE_ACTIONS = {"added", "removed", "changed"}


class PromptsPart:
    """Part of :class:`~napari_sum_hq._interactive_widget.InteractiveSegmentationWidget`: prompts,
    segmentation and clearing."""

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
        state.current_scores.clear()
        self._clear_suggestion()

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
        state.current_scores.clear()
        state.current_scores.update(((result.slice_key, index), score) for index, score in result.object_scores.items())
        self._show_suggestion(result)
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
        suggested = " N takes the suggested click (star)." if result.suggestion is not None else ""
        self._status(
            f"Segmented {len(result.scores)} object(s); score {scores}{tiles}. C commits, Shift+C clears.{suggested}"
        )

    def _continue_with_all_tiles(self) -> None:
        self.tile_limit.allow_all()
        self.segment()

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
        for scored in [scored for scored in state.current_scores if scored[0] == key]:
            del state.current_scores[scored]
        self._clear_suggestion()
        where = f"slice {key[0] if len(key) == 1 else key}" if key else "the image"
        self._status(f"Prompts and current objects of {where} cleared.")

    def _data_coords(self, layer: Layer, coords: np.ndarray) -> np.ndarray:
        """A prompt layer's coordinates in the image's data coordinates."""
        image = self.image_layer
        coords = [image.world_to_data(layer.data_to_world(c)) for c in coords]
        return np.array(coords, dtype=float).reshape(len(coords), self.layers.ndim)
