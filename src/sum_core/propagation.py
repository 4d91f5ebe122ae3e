"""Follow one object through the slices of a 3D (or time) stack.

:func:`propagate` segments the object in one slice (or takes its mask), then walks to the
neighbouring slices in both directions, prompting each slice with the previous slice's
result: its logits as ``mask_input`` (when the previous mask came from the model; SAM's
low-resolution logits for slices encoded as one window, the full-size logits for tiled
ones), its bounding box, and one positive click at the pixel deepest inside it (the
centre of its largest inscribed disc); ``projection`` picks a subset of these prompts (micro-sam's
propagation choices) and ``box_extension`` enlarges the box. A direction stops when the object
ends: the slice is constant, the mask is empty, its predicted IoU is below ``score_threshold``,
or its IoU with the previous slice's mask is below ``iou_threshold``; ``return_info=True`` also
returns which of these rules ended each direction and, per segmented slice, the mask's predicted IoU,
stability and uncertainty window (:class:`PropagationInfo`, :class:`SliceScores`).

Slices are read one at a time from the (lazy) volume and converted to 8 bits with one
intensity window for the whole volume (:func:`sum_core.sources.fixed_normalization`).
Planes of any size are segmented by one :class:`~sum_core.predictor.Predictor`, which
returns full-size results (planes larger than the encoder are tiled, and each slice
encodes only the tiles the object reaches).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import InvalidInputError, check_cancel
from .image import Normalization, to_uint8_rgb
from .mask_ops import stability_score
from .modeling import SamModel
from .object_scores import BAND_WIDTH, STABILITY_OFFSET
from .prediction import Prediction, PredictOptions
from .predictor import Predictor
from .prompts import prompts_from_mask, validate_prompts
from .sources import Planes, fixed_normalization, open_image
from .tiling import Region
from .validation import check_bool, check_index, check_range

__all__ = ["PROJECTIONS", "DirectionStop", "PropagationInfo", "SliceScores", "propagate"]

#: How the previous slice's result prompts the next one: which of its mask logits
#: (``mask_input``), bounding box and deepest point are passed.
PROJECTIONS: dict[str, tuple[bool, bool, bool]] = {
    "points_and_mask_and_box": (True, True, True),  # (point, mask logits, box): the default
    "mask": (False, True, True),  # micro-sam's "mask": the logits and the box
    "points_and_mask": (True, True, False),
    "box": (False, False, True),
    "points": (True, False, False),  # the one deepest point
}

StopRule = Literal["end", "constant_slice", "empty_mask", "score", "iou"]


@dataclass(frozen=True)
class DirectionStop:
    """Why one direction of a propagation ended.

    Attributes
    ----------
    stop_slice : int or None
        The first slice not taken (None when the walk reached the end of the stack).
    rule : str
        ``"end"`` (end of the stack), ``"constant_slice"``, ``"empty_mask"``, ``"score"``
        (predicted IoU below ``score_threshold``) or ``"iou"`` (IoU with the previous slice
        below ``iou_threshold``).
    value : float or None
        The failing value for ``"score"`` / ``"iou"``; None otherwise.
    """

    stop_slice: int | None
    rule: StopRule
    value: float | None = None


@dataclass(frozen=True, eq=False)
class SliceScores:
    """The prediction behind the mask of one slice a propagation took (the inputs of
    :func:`sum_core.object_scores.object_scores` for that slice's object).

    Attributes
    ----------
    predicted_iou : float
        The mask's predicted IoU (the decoder's ``score``).
    stability : float
        :func:`sum_core.mask_ops.stability_score` of its logits (offset
        :data:`~sum_core.object_scores.STABILITY_OFFSET`).
    region : Region
        The mask's bounding box grown by :data:`~sum_core.object_scores.BAND_WIDTH` pixels (clipped to the
        plane): the window holding the object and its boundary band.
    uncertainty : numpy.ndarray
        float32 ``region.shape``: the per-pixel uncertainty there.
    """

    predicted_iou: float
    stability: float
    region: Region
    uncertainty: np.ndarray

    @classmethod
    def of(cls, pred: Prediction) -> SliceScores:
        """The scores of a single-object prediction whose mask is not empty."""
        rows, cols = np.flatnonzero(pred.mask.any(axis=1)), np.flatnonzero(pred.mask.any(axis=0))
        h, w = pred.mask.shape
        region = Region(max(int(rows[0]) - BAND_WIDTH, 0), max(int(cols[0]) - BAND_WIDTH, 0),
                        min(int(rows[-1]) + 1 + BAND_WIDTH, h), min(int(cols[-1]) + 1 + BAND_WIDTH, w))  # fmt: skip
        stability = float(stability_score(torch.as_tensor(pred.logits[0]), 0.0, STABILITY_OFFSET))
        uncertainty = np.ascontiguousarray(pred.uncertainty[region.slices], dtype=np.float32)
        return cls(float(pred.score), stability, region, uncertainty)


@dataclass(frozen=True)
class PropagationInfo:
    """How a propagation ended in each direction, and the scores of the slices it segmented.

    Attributes
    ----------
    down : DirectionStop
        Towards slice 0.
    up : DirectionStop
        Towards the last slice.
    slices : dict of int to SliceScores
        Every slice whose mask came from the model (a start slice given as a mask has none).
    """

    down: DirectionStop
    up: DirectionStop
    slices: dict[int, SliceScores] = field(default_factory=dict, compare=False)


class _SliceSegmenter:
    """Encode one slice and decode prompts on it with one Predictor (the tests replace :meth:`segment`)."""

    def __init__(self, predictor: Predictor, planes: Planes, normalization: Normalization | None) -> None:
        self.predictor = predictor
        self.planes = planes
        self.normalization = normalization

    def segment(
        self,
        slice_index: int,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        box: np.ndarray | None,
        mask_input: np.ndarray | None,
        options: dict[str, Any],
    ) -> Prediction | None:
        """Full-size prediction of one object on one slice; None for a constant slice."""
        pixels = to_uint8_rgb(self.planes.read(slice_index), self.normalization)
        if pixels.min() == pixels.max():
            return None
        self.predictor.set_image(pixels)
        return self.predictor.predict(points=points, labels=labels, box=box, mask_input=mask_input, **options)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def propagate(
    volume: Any,
    axis: int,
    index: int,
    mask_or_prompts: np.ndarray | Mapping[str, Any],
    model: SamModel | str | os.PathLike | None = None,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.5,
    normalization: Normalization | None = None,
    multimask: bool = False,
    task: int = 1,
    device: str | torch.device | None = None,
    progress: bool = True,
    *,
    cancel: threading.Event | None = None,
    projection: str = "points_and_mask_and_box",
    box_extension: float = 0.0,
    return_info: bool = False,
) -> np.ndarray | tuple[np.ndarray, PropagationInfo]:
    """Segment an object in slice ``index`` and follow it through the stack.

    Parameters
    ----------
    volume : array-like or path
        A stack of 2D (or 2D + channel) planes; numpy, dask, zarr or a path
        (:func:`sum_core.sources.open_image`). Read one slice at a time.
    axis : int
        The slice axis (Z or T).
    index : int
        The slice where the object is given.
    mask_or_prompts : array or mapping
        The object in slice ``index``: a boolean ``(H, W)`` mask, or a mapping with
        ``points`` / ``labels`` (default positive) / one ``box`` as for
        :meth:`sum_core.predictor.Predictor.predict`.
    model : SamModel, str or path-like, optional
        A loaded model, registry name or checkpoint (default
        :data:`sum_core.zoo.DEFAULT_MODEL`; names and paths are loaded once, see
        :func:`sum_core.loading.resolve_model`).
    iou_threshold : float
        Stop when a slice's mask overlaps the previous one by less than this IoU.
    score_threshold : float
        Stop when the predicted IoU of a slice's mask is below this.
    normalization : Normalization, optional
        Intensity window, computed once for the whole volume.
    multimask, task
        Passed to :meth:`~sum_core.predictor.Predictor.predict`.
    device : str or torch.device, optional
        Where to run.
    progress : bool
        Show a tqdm progress bar (one step per slice visited).
    cancel : threading.Event, optional
        Checked before each slice and between the tiles of a tiled slice: raises
        :class:`sum_core.errors.Cancelled` when set.
    projection : str
        Which prompts the previous slice's result gives the next slice (a key of
        :data:`PROJECTIONS`): ``"points_and_mask_and_box"`` (default: its logits as
        ``mask_input``, its bounding box and its deepest point), ``"mask"`` (logits and box,
        micro-sam's "mask"), ``"points_and_mask"``, ``"box"`` or ``"points"``. The logits are
        passed only when the previous mask came from the model (not for a given start mask).
    box_extension : float
        Enlarge the projected box on each side by this fraction of its height / width, in
        ``[0, 1]`` (micro-sam's ``box_extension``; 0 keeps the mask's box).
    return_info : bool
        Also return a :class:`PropagationInfo`: which rule ended each direction, at which slice, and each
        segmented slice's :class:`SliceScores` (predicted IoU, stability, uncertainty around the object).

    Returns
    -------
    np.ndarray or (np.ndarray, PropagationInfo)
        bool, the volume's shape without its channel axis; True where the object is. With
        ``return_info``, the pair (masks, info).

    Raises
    ------
    InvalidInputError
        Bad axis or index, a mask of the wrong shape or empty, prompts outside the slice or
        more than one box, bad thresholds, an unknown projection, a box extension outside
        ``[0, 1]``; all found before the model is loaded.
    """
    if axis is None:
        raise InvalidInputError("axis must be the slice axis of the volume (an int), got None")
    planes = Planes(open_image(volume), stack_axis=axis)
    n = planes.n_slices
    index = check_index(index, f"index (slices along axis {axis})", n)
    iou_threshold = check_range(iou_threshold, "iou_threshold", 0.0, 1.0)
    score_threshold = check_range(score_threshold, "score_threshold", 0.0, 1.0)
    progress = check_bool(progress, "progress")
    return_info = check_bool(return_info, "return_info")
    box_extension = check_range(box_extension, "box_extension", 0.0, 1.0)
    if projection not in PROJECTIONS:
        raise InvalidInputError(f"projection must be one of {sorted(PROJECTIONS)}, got {projection!r}")
    use_point, use_mask, use_box = PROJECTIONS[projection]
    PredictOptions(multimask=multimask, task=task)  # refuse bad options before any work
    start_mask = None
    if isinstance(mask_or_prompts, Mapping):
        unknown = sorted(set(mask_or_prompts) - {"points", "labels", "box"})
        if unknown:
            raise InvalidInputError(
                f"mask_or_prompts: unknown keys {unknown}; use 'points', 'labels' and 'box'"
            )
        start = validate_prompts(
            mask_or_prompts.get("points"), mask_or_prompts.get("labels"), mask_or_prompts.get("box"),
            image_shape=planes.plane_shape, default_positive=True,
        )  # fmt: skip
        if start.num_masks > 1:
            raise InvalidInputError(
                f"mask_or_prompts: propagate follows one object, got {start.num_masks} boxes"
            )
    else:
        start_mask = np.asarray(mask_or_prompts)
        if start_mask.shape != planes.plane_shape:
            raise InvalidInputError(
                f"mask_or_prompts: mask has shape {start_mask.shape}, slices are {planes.plane_shape}"
            )
        start_mask = start_mask.astype(bool)
        if not start_mask.any():
            raise InvalidInputError("mask_or_prompts: the mask is empty")
    if not isinstance(model, SamModel):
        from .loading import resolve_model
        from .zoo import DEFAULT_MODEL

        model = resolve_model(DEFAULT_MODEL if model is None else model, device=device)
    predictor = Predictor(model, device)
    segmenter = _SliceSegmenter(predictor, planes, fixed_normalization(planes, normalization))
    options = {"multimask": multimask, "task": task, "cancel": cancel}
    out_shape = list(planes.plane_shape)
    out_shape.insert(planes.stack_axis, n)
    out = np.zeros(out_shape, dtype=bool)

    def put(s: int, mask: np.ndarray) -> None:
        idx: list[Any] = [slice(None), slice(None)]
        idx.insert(planes.stack_axis, s)
        out[tuple(idx)] = mask

    def result(down: DirectionStop, up: DirectionStop) -> np.ndarray | tuple[np.ndarray, PropagationInfo]:
        return (out, PropagationInfo(down, up, scores)) if return_info else out

    start_prompt, scores = None, {}
    if start_mask is None:
        check_cancel(cancel)
        pred = segmenter.segment(index, start.points, start.labels, start.boxes, None, options)
        if pred is None or not pred.mask.any():
            stop = DirectionStop(index, "constant_slice" if pred is None else "empty_mask")
            return result(stop, stop)
        start_mask, start_prompt = pred.mask, pred.mask_prompt()
        if return_info:
            scores[index] = SliceScores.of(pred)
    put(index, start_mask)
    stops: dict[int, DirectionStop] = {}
    with tqdm(total=n - 1, desc="propagating", unit="slice", disable=not progress) as bar:
        for step in (1, -1):
            prev_mask, prev_prompt, s = start_mask, start_prompt, index + step
            stops[step] = DirectionStop(None, "end")
            while 0 <= s < n:
                check_cancel(cancel)
                bar.update(1)
                points, labels, box = prompts_from_mask(prev_mask, box_extension)
                pred = segmenter.segment(
                    s,
                    points if use_point else None,
                    labels if use_point else None,
                    box if use_box else None,
                    prev_prompt if use_mask else None,
                    options,
                )
                stop = _stop_rule(pred, prev_mask, score_threshold, iou_threshold)
                if stop is not None:
                    stops[step] = DirectionStop(s, *stop)
                    break
                put(s, pred.mask)
                if return_info:
                    scores[s] = SliceScores.of(pred)
                prev_mask, prev_prompt, s = pred.mask, pred.mask_prompt(), s + step
    return result(stops[-1], stops[1])


def _stop_rule(
    pred: Prediction | None, prev_mask: np.ndarray, score_threshold: float, iou_threshold: float
) -> tuple[StopRule, float | None] | None:
    """(rule, failing value) that ends a direction at this slice's prediction, or None to go on."""
    if pred is None:
        return "constant_slice", None
    if not pred.mask.any():
        return "empty_mask", None
    if pred.score < score_threshold:
        return "score", float(pred.score)
    iou = _iou(pred.mask, prev_mask)
    return ("iou", iou) if iou < iou_threshold else None
