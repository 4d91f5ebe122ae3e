"""The interactive widget's suggested next click: shown after each segmentation, accepted with **N**.

After a segmentation of one object, :func:`sum_core.suggest_click` (computed in the segmentation's worker,
:func:`napari_sum_hq._interactive_segment.segment_plane`) gives the centre of the largest uncertain region
near the object: positive (green) when it lies outside the mask, negative (red) inside. It is drawn as a
star in the image's ``<image> suggested click`` Points layer (one point at most, on the segmented slice).
**N** adds it as a prompt point of that kind and segments again, as a click there would; clearing the
prompts (Shift+C, *Clear slice*), a commit or a segmentation with nothing to suggest removes it.
"""

from __future__ import annotations

import numpy as np

from ._layers import SUGGESTION_NAME, add_point


class SuggestPart:
    """Part of :class:`~napari_sum_hq._interactive_widget.InteractiveSegmentationWidget`: the suggested click."""

    def _show_suggestion(self, result) -> None:
        """Draw the suggestion of a segmentation result (or remove the old one when it has none)."""
        if result.suggestion is None:
            self._clear_suggestion()
            return
        layer = self.layers.suggestion()
        row, col = result.suggestion.point
        layer.data = np.array([[*result.slice_key, row, col]], dtype=float)
        features = layer.features.copy()
        features["label"] = [int(result.suggestion.label)]
        layer.features = features
        layer.refresh_colors()
        layer.selected_data = set()

    def _clear_suggestion(self) -> None:
        layer = None if self.layers is None else self.layers.existing(SUGGESTION_NAME)
        if layer is not None and len(layer.data):
            layer.data = np.empty((0, self.layers.ndim))

    def suggested_click(self) -> tuple[np.ndarray, int] | None:
        """The suggested click shown now: its data coordinates (slice axes included) and kind, or None."""
        layer = None if self.layers is None else self.layers.existing(SUGGESTION_NAME)
        if layer is None or not len(layer.data):
            return None
        return np.asarray(layer.data[0], dtype=float), int(layer.features["label"].iloc[0])

    def accept_suggestion(self) -> None:
        """Add the suggested click as a prompt point of its kind and segment again (key N)."""
        suggestion = self.suggested_click()
        if suggestion is None:
            self._status("No suggested click: segment an object first (S); a star marks the suggestion.")
            return
        coords, label = suggestion
        self._clear_suggestion()
        points = self.layers.points()
        live = self.live_check.isChecked()
        if live:  # the point is added whole (kind included) before live mode segments
            points.events.data.disconnect(self._on_prompts_changed)
        try:
            add_point(points, coords, label)
        finally:
            if live:
                points.events.data.connect(self._on_prompts_changed)
        self.segment()
