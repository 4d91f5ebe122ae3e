"""The interactive widget's 3D / time propagation (Shift+S): start the job, write its result.

The controls are :class:`napari_sum_hq._propagation_group.PropagationGroup`; the worker function
is :func:`napari_sum_hq._propagation.propagation_job`.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from sum_core.errors import InvalidInputError, SumError

from ._job_widget import show_failure
from ._jobs import CancelToken, ProgressRelay
from ._layers import CURRENT_NAME, clear_slice, clear_windows, write_objects, write_uncertainty
from ._propagation import PropagationResult, describe_stops, propagation_job
from ._session import SliceKey, UncertaintyPiece


class PropagationPart:
    """Part of :class:`~napari_sum_hq._interactive_widget.InteractiveSegmentationWidget`: propagation."""

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
        """Replace the current object by the propagated one (its windows only), with the predicted IoU,
        stability and uncertainty (around the object) of every slice the propagation segmented; the start
        slice keeps those of its own segmentation."""
        state = self.state
        current, uncertainty = self.layers.current(), self.layers.uncertainty()
        clear_windows(current, state.current_windows)
        write_objects(current, result.objects, state.current_windows)
        for other in [k for k, _ in state.uncertainty_windows.items() if k != key]:
            clear_slice(uncertainty, state.uncertainty_windows, other)
        for scored in [scored for scored in state.current_scores if scored[0] != key]:
            del state.current_scores[scored]
        state.current_scores.update((((z,), 1), score) for z, score in result.scores.items())
        for z, scores in result.info.slices.items():
            write_uncertainty(uncertainty, UncertaintyPiece((z,), scores.region, scores.uncertainty),
                              state.uncertainty_windows)  # fmt: skip
        current.refresh()
        uncertainty.refresh()
        self._clear_suggestion()
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
