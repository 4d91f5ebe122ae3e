"""Follow one object through the slices of a 3D (or time) stack.

:func:`propagate` segments the object in one slice (or takes its mask), then walks to the
neighbouring slices in both directions, prompting each slice with the previous slice's
result: its logits as ``mask_input`` (when the previous mask came from the model; SAM's
low-resolution logits for slices encoded as one window, the full-size logits for tiled
ones), its bounding box, and one positive click at the pixel deepest inside it (the
centre of its largest inscribed disc). A direction stops when the object ends: the mask
is empty, its predicted IoU is below ``score_threshold``, or its IoU with the previous
slice's mask is below ``iou_threshold``.

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
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from tqdm.auto import tqdm

from .errors import InvalidInputError, check_cancel
from .image import Normalization, to_uint8_rgb
from .modeling import SamModel
from .prediction import Prediction, PredictOptions
from .predictor import Predictor
from .prompts import validate_prompts
from .sources import Planes, fixed_normalization, open_image
from .validation import check_bool, check_index, check_range

__all__ = ["propagate"]


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


def _mask_prompts(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points (1, 2), labels (1,), box (4,)) derived from a non-empty mask."""
    rows, cols = np.nonzero(mask)
    box = np.array([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1], dtype=np.float64)
    depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(np.argmax(depth), mask.shape)
    return np.array([[r + 0.5, c + 0.5]]), np.array([1]), box


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
) -> np.ndarray:
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

    Returns
    -------
    np.ndarray
        bool, the volume's shape without its channel axis; True where the object is.

    Raises
    ------
    InvalidInputError
        Bad axis or index, a mask of the wrong shape or empty, prompts outside the slice or
        more than one box, bad thresholds; all found before the model is loaded.
    """
    if axis is None:
        raise InvalidInputError("axis must be the slice axis of the volume (an int), got None")
    planes = Planes(open_image(volume), stack_axis=axis)
    n = planes.n_slices
    index = check_index(index, f"index (slices along axis {axis})", n)
    iou_threshold = check_range(iou_threshold, "iou_threshold", 0.0, 1.0)
    score_threshold = check_range(score_threshold, "score_threshold", 0.0, 1.0)
    progress = check_bool(progress, "progress")
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

    start_prompt = None
    if start_mask is None:
        check_cancel(cancel)
        pred = segmenter.segment(index, start.points, start.labels, start.boxes, None, options)
        if pred is None or not pred.mask.any():
            return out
        start_mask, start_prompt = pred.mask, pred.mask_prompt()
    put(index, start_mask)
    with tqdm(total=n - 1, desc="propagating", unit="slice", disable=not progress) as bar:
        for step in (1, -1):
            prev_mask, prev_prompt, s = start_mask, start_prompt, index + step
            while 0 <= s < n:
                check_cancel(cancel)
                bar.update(1)
                points, labels, box = _mask_prompts(prev_mask)
                pred = segmenter.segment(s, points, labels, box, prev_prompt, options)
                if (
                    pred is None
                    or not pred.mask.any()
                    or pred.score < score_threshold
                    or _iou(pred.mask, prev_mask) < iou_threshold
                ):
                    break
                put(s, pred.mask)
                prev_mask, prev_prompt, s = pred.mask, pred.mask_prompt(), s + step
    return out
