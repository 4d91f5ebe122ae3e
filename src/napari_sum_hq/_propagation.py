"""Qt-free worker function of the interactive widget's 3D propagation (Shift+S)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._jobs import CancelToken, ProgressRelay, ReportingVolume
from ._interactive_scores import ObjectScore, piece_score
from ._session import ModelChoice, ObjectPiece, UncertaintyPiece, load_model, object_piece


@dataclass
class PropagationResult:
    """What a finished propagation hands back to the GUI thread.

    Attributes
    ----------
    model : SamModel
        The model used (resolved in the worker when the widget had none yet).
    objects : tuple of ObjectPiece
        The object on every slice where it was found, cut to its bounding box there.
    info : PropagationInfo
        Which rule ended each direction and each segmented slice's scores and uncertainty window
        (:func:`sum_core.propagate`'s ``return_info``).
    thresholds : dict
        ``iou_threshold`` / ``score_threshold`` used, for the status line.
    scores : dict of int to ObjectScore
        The object's scores on every slice the propagation segmented (not the start slice), with its
        uncertainties (:func:`napari_sum_hq._interactive_scores.piece_score`), by slice.
    """

    model: Any
    objects: tuple[ObjectPiece, ...]
    info: Any
    thresholds: dict[str, float]
    scores: dict[int, ObjectScore] = field(default_factory=dict)


def _describe(stop: Any, thresholds: dict[str, float]) -> str:
    if stop.rule == "end":
        return "reached the end of the stack"
    if stop.rule == "score":
        why = f"predicted IoU {stop.value:.2f} < {thresholds['score_threshold']:.2f}"
    elif stop.rule == "iou":
        why = f"IoU with the previous slice {stop.value:.2f} < {thresholds['iou_threshold']:.2f}"
    else:
        why = "the slice is constant" if stop.rule == "constant_slice" else "the mask is empty"
    return f"stopped at slice {stop.stop_slice}: {why}"


def describe_stops(result: PropagationResult) -> str:
    """Where and by which rule a propagation ended in each direction, for the status line."""
    info = result.info
    return f"down: {_describe(info.down, result.thresholds)}; up: {_describe(info.up, result.thresholds)}"


def propagation_job(
    choice: ModelChoice,
    model: Any,
    stack: Any,
    index: int,
    mask: np.ndarray,
    token: CancelToken,
    relay: ProgressRelay,
    task: int,
    options: dict[str, Any],
) -> PropagationResult:
    """Follow the object ``mask`` of slice ``index`` through ``stack`` (slice axis first).

    Runs :func:`sum_core.propagate` (with ``options``: thresholds, projection, box extension) on a
    :class:`~napari_sum_hq._jobs.ReportingVolume`, so every slice read is a progress step and a
    cancel stops the walk at the next slice (raising :class:`~napari_sum_hq._jobs.JobCancelled`).
    The intensity window is computed once from the stack itself, outside the progress count. The
    result is cut into one window per slice here, so the GUI thread writes only those windows.
    """
    if model is None:
        model = load_model(choice)
    from sum_core.propagation import propagate
    from sum_core.sources import Planes, fixed_normalization

    normalization = fixed_normalization(Planes(stack, stack_axis=0))
    out, info = propagate(
        ReportingVolume(stack, token, relay),
        axis=0,
        index=index,
        mask_or_prompts=mask,
        model=model,
        normalization=normalization,
        task=task,
        device=next(model.parameters()).device,
        progress=False,
        cancel=token.event,  # also stops inside a slice, between its tiles
        return_info=True,
        **options,
    )
    pieces = tuple(piece for z, plane in enumerate(out) if (piece := object_piece((z,), plane, 1)) is not None)
    thresholds = {k: options[k] for k in ("iou_threshold", "score_threshold")}
    scores = {}
    for piece in pieces:
        z = piece.slice_key[0]
        if z in info.slices:
            found = info.slices[z]
            uncertainty = UncertaintyPiece(piece.slice_key, found.region, found.uncertainty)
            scores[z] = piece_score(piece, found.predicted_iou, found.stability, uncertainty, out.shape[1:])
    return PropagationResult(model, pieces, info, thresholds, scores)
