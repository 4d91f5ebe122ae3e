"""Qt-free worker function of the interactive widget's 3D propagation (Shift+S)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._jobs import CancelToken, ProgressRelay, ReportingVolume
from ._session import ModelChoice, ObjectPiece, load_model, object_piece


@dataclass
class PropagationResult:
    """What a finished propagation hands back to the GUI thread.

    Attributes
    ----------
    model : SamModel
        The model used (resolved in the worker when the widget had none yet).
    objects : tuple of ObjectPiece
        The object on every slice where it was found, cut to its bounding box there.
    """

    model: Any
    objects: tuple[ObjectPiece, ...]
    n_slices: int = 0


def describe_stops(result: PropagationResult, iou_threshold: float, score_threshold: float) -> str:
    """Where a propagation ended in each direction, and by which rules, for the status line.

    :func:`sum_core.propagate` returns only the mask stack, so an end before the first or last
    slice is reported with the rules that can end it there (a threshold of 0 cannot), not which
    one did.
    """
    filled = [piece.slice_key[0] for piece in result.objects]
    if not filled:
        return "no slice holds the object"
    ends, early = [], False
    for label, last, edge, step in (("down", min(filled), 0, -1), ("up", max(filled), result.n_slices - 1, 1)):
        if last == edge:
            ends.append(f"{label}: reached slice {edge}, the end of the stack")
        else:
            ends.append(f"{label}: stopped at slice {last + step}")
            early = True
    if not early:
        return "; ".join(ends)
    rules = ["a mask is empty or a slice constant"]
    if score_threshold > 0:
        rules.append(f"its predicted IoU is below {score_threshold:.2f}")
    if iou_threshold > 0:
        rules.append(f"its IoU with the previous slice is below {iou_threshold:.2f}")
    said = rules[0] if len(rules) == 1 else ", ".join(rules[:-1]) + " or " + rules[-1]
    return "; ".join(ends) + f" (a direction stops where {said})"


def propagation_job(
    choice: ModelChoice,
    model: Any,
    stack: Any,
    index: int,
    mask: np.ndarray,
    token: CancelToken,
    relay: ProgressRelay,
    iou_threshold: float,
    score_threshold: float,
    task: int,
) -> PropagationResult:
    """Follow the object ``mask`` of slice ``index`` through ``stack`` (slice axis first).

    Runs :func:`sum_core.propagate` on a :class:`~napari_sum_hq._jobs.ReportingVolume`, so
    every slice read is a progress step and a cancel stops the walk at the next slice
    (raising :class:`~napari_sum_hq._jobs.JobCancelled`). The intensity window is computed
    once from the stack itself, outside the progress count. The result is cut into one
    window per slice here, so the GUI thread writes only those windows.
    """
    if model is None:
        model = load_model(choice)
    from sum_core.propagation import propagate
    from sum_core.sources import Planes, fixed_normalization

    normalization = fixed_normalization(Planes(stack, stack_axis=0))
    out = propagate(
        ReportingVolume(stack, token, relay),
        axis=0,
        index=index,
        mask_or_prompts=mask,
        model=model,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
        normalization=normalization,
        task=task,
        device=next(model.parameters()).device,
        progress=False,
        cancel=token.event,  # also stops inside a slice, between its tiles
    )
    pieces = (object_piece((z,), plane, 1) for z, plane in enumerate(out))
    return PropagationResult(model, tuple(piece for piece in pieces if piece is not None), len(out))
