"""Prompt validation, and the one conversion from numpy (row, col) to SAM's (x, y).

Public prompts use numpy **(row, col)** coordinates in pixels of the original
image:

- ``points``: ``(N, 2)`` clicks ``(row, col)``; ``labels``: ``(N,)``, 1 positive,
  0 negative.
- ``box``: ``(4,)`` or ``(K, 4)`` boxes ``(row0, col0, row1, col1)``; K boxes
  give K masks.
- ``mask_input`` (here): ``(1, L, L)`` logits in the decoder's low-resolution frame (a
  previous prediction's ``low_res_logits[k]``); full-size masks and logits are mapped into
  that frame, window by window, with :func:`mask_logits` and :func:`to_low_res_frame`.

Coordinates are continuous: pixel ``(r, c)`` covers ``[r, r+1) × [c, c+1)``.
Valid coordinates lie in the closed range ``[0, H] × [0, W]``: the far edge is
allowed so that a box ``(0, 0, H, W)`` covers the whole image. A box may have
zero height or width (SAM's own boxes of single-pixel masks do), but not
``row1 < row0`` or ``col1 < col0``.

:func:`to_model_frame` is the only place where (row, col) becomes SAM's
(x, y) and is scaled into the resized model-input frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from scipy import ndimage

from .errors import InvalidInputError

__all__ = [
    "MASK_PROMPT_LOGIT",
    "MaskPrompts",
    "ModelPrompts",
    "Prompts",
    "batch_to_model_frame",
    "mask_logits",
    "prompts_from_mask",
    "to_low_res_frame",
    "to_model_frame",
    "validate_prompts",
    "window_mask_prompt",
]

#: Logit magnitude given to the pixels of a binary mask used as a mask prompt (logit of 0.999).
MASK_PROMPT_LOGIT = float(np.log(0.999 / 0.001))


@dataclass(frozen=True)
class Prompts:
    """Validated prompts in numpy (row, col) image coordinates.

    Attributes
    ----------
    points : numpy.ndarray or None
        ``(N, 2)`` float64 ``(row, col)``, N >= 1.
    labels : numpy.ndarray or None
        ``(N,)`` int64 in {0, 1}; present exactly when ``points`` is.
    boxes : numpy.ndarray or None
        ``(K, 4)`` float64 ``(row0, col0, row1, col1)``, K >= 1.
    mask_input : numpy.ndarray or None
        ``(1, L, L)`` float32 logits.
    image_shape : tuple of int
        ``(H, W)`` of the image the coordinates refer to.
    """

    points: np.ndarray | None
    labels: np.ndarray | None
    boxes: np.ndarray | None
    mask_input: np.ndarray | None
    image_shape: tuple[int, int]

    @property
    def num_masks(self) -> int:
        """Number of masks these prompts produce: K boxes give K masks, otherwise one."""
        return 1 if self.boxes is None else len(self.boxes)


class ModelPrompts(NamedTuple):
    """Prompts in SAM's model-input frame, shaped for the prompt encoder.

    ``point_coords`` ``B×N×2`` float32 (x, y); ``point_labels`` ``B×N`` int32;
    ``boxes`` ``K×4`` float32 (x0, y0, x1, y1); ``mask_input`` ``B×1×L×L`` float32 (the one
    mask prompt repeated for each object). ``B`` is K when there are K boxes (the points are
    repeated for each box, as SAM does), else 1. Absent prompts are None.
    """

    point_coords: torch.Tensor | None
    point_labels: torch.Tensor | None
    boxes: torch.Tensor | None
    mask_input: torch.Tensor | None


def _as_float_array(value, name: str) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.float64)  # always a copy
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name}: must be numeric, got {type(value).__name__} ({exc})") from None
    return arr


def _check_image_shape(image_shape) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in image_shape)
    except (TypeError, ValueError):
        raise InvalidInputError(f"image_shape: expected (H, W), got {image_shape!r}") from None
    if h < 1 or w < 1:
        raise InvalidInputError(f"image_shape: H and W must be positive, got {(h, w)}")
    return h, w


def _check_points(pts: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise InvalidInputError(
            f"points: expected shape (N, 2) of (row, col), got {pts.shape}; for one point use [[row, col]]"
        )
    bad = np.flatnonzero(~np.isfinite(pts).all(axis=1))
    if bad.size:
        raise InvalidInputError(f"points: point {bad[0]} is not finite: {pts[bad[0]].tolist()}")
    h, w = shape
    outside = np.flatnonzero((pts[:, 0] < 0) | (pts[:, 0] > h) | (pts[:, 1] < 0) | (pts[:, 1] > w))
    if outside.size:
        i = outside[0]
        raise InvalidInputError(
            f"points: point {i} (row, col) = {pts[i].tolist()} is outside the image of shape {(h, w)}; "
            f"rows must be in [0, {h}] and columns in [0, {w}]"
        )
    return pts


def _check_labels(lab: np.ndarray, n: int) -> np.ndarray:
    if lab.ndim != 1 or lab.shape[0] != n:
        raise InvalidInputError(f"labels: expected shape ({n},) to match {n} point(s), got {lab.shape}")
    bad = np.flatnonzero((lab != 0) & (lab != 1))
    if bad.size:
        raise InvalidInputError(
            f"labels: must be 1 (positive) or 0 (negative), label {bad[0]} is {lab[bad[0]]:g}"
        )
    return lab.astype(np.int64)


def _check_boxes(box, shape: tuple[int, int]) -> np.ndarray:
    boxes = _as_float_array(box, "box")
    if boxes.ndim == 1 and boxes.shape[0] == 4:
        boxes = boxes[None]
    if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] == 0:
        raise InvalidInputError(
            f"box: expected shape (4,) or (K, 4) of (row0, col0, row1, col1), got {boxes.shape}"
        )
    h, w = shape
    for i, (r0, c0, r1, c1) in enumerate(boxes):
        desc = f"box {i} (row0, col0, row1, col1) = {boxes[i].tolist()}"
        if not np.isfinite(boxes[i]).all():
            raise InvalidInputError(f"box: {desc} is not finite")
        if r1 < r0 or c1 < c0:
            raise InvalidInputError(f"box: {desc} is inverted; it needs row0 <= row1 and col0 <= col1")
        if r0 < 0 or c0 < 0 or r1 > h or c1 > w:
            raise InvalidInputError(
                f"box: {desc} is outside the image of shape {(h, w)}; rows must be in [0, {h}] "
                f"and columns in [0, {w}]"
            )
    return boxes


def _check_mask_input(mask_input, low_res_size: int) -> np.ndarray:
    mask = _as_float_array(mask_input, "mask_input")
    size = low_res_size
    if mask.shape != (1, size, size):
        raise InvalidInputError(
            f"mask_input: expected low-resolution logits of shape (1, {size}, {size}) "
            f"(a previous prediction's low_res_logits[k]), got {mask.shape}"
        )
    _check_logit_values(mask)
    return mask.astype(np.float32)


#: Largest mask-prompt logit magnitude accepted: sigmoid saturates near 17 in float32, and values
#: near 1e19 overflow the prompt encoder's normalisation (NaN masks).
MAX_PROMPT_LOGIT = 1e6


def _check_logit_values(values: np.ndarray) -> None:
    if not np.isfinite(values).all():
        raise InvalidInputError(f"mask_input: contains {int((~np.isfinite(values)).sum())} non-finite value(s)")
    largest = float(np.abs(values).max()) if values.size else 0.0
    if largest > MAX_PROMPT_LOGIT:
        raise InvalidInputError(
            f"mask_input: logits must lie within +-{MAX_PROMPT_LOGIT:g} (got {largest:g}); pass logits such as "
            "a previous prediction's, or a bool mask"
        )


def validate_prompts(
    points=None,
    labels=None,
    box=None,
    mask_input=None,
    *,
    image_shape: tuple[int, int],
    low_res_size: int = 256,
    default_positive: bool = False,
) -> Prompts:
    """Check prompts against an image and return them as :class:`Prompts`.

    Parameters
    ----------
    points : array_like, optional
        ``(N, 2)`` clicks ``(row, col)`` in image pixels. An empty ``(0, 2)``
        array counts as no points.
    labels : array_like, optional
        ``(N,)`` labels, 1 positive and 0 negative.
    box : array_like, optional
        ``(4,)`` or ``(K, 4)`` boxes ``(row0, col0, row1, col1)``.
    mask_input : array_like, optional
        ``(1, L, L)`` logits with ``L = low_res_size``.
    image_shape : tuple of int
        ``(H, W)`` of the image.
    low_res_size : int
        Side of the decoder's low-resolution masks (256 for SAM).
    default_positive : bool
        If True, points without labels are all positive; if False, labels
        are required with points.

    Returns
    -------
    Prompts

    Raises
    ------
    InvalidInputError
        Malformed, non-finite or out-of-image points or boxes, labels not in
        {0, 1} or of the wrong length, labels without points, missing labels
        (unless ``default_positive``), inverted boxes, a mask of the wrong
        shape, or no prompt at all.
    """
    shape = _check_image_shape(image_shape)
    pts = lab = None
    if points is not None:
        pts = _as_float_array(points, "points")
        pts = _check_points(pts, shape) if pts.size else None
    if labels is not None:
        lab = _as_float_array(labels, "labels")
        if pts is not None:
            lab = _check_labels(lab, len(pts))
        elif lab.size:
            raise InvalidInputError("labels: given without points")
        else:
            lab = None
    elif pts is not None:
        if not default_positive:
            raise InvalidInputError(
                f"labels: required with points ({len(pts)} point(s)); use 1 for positive, 0 for negative"
            )
        lab = np.ones(len(pts), dtype=np.int64)
    boxes = None if box is None else _check_boxes(box, shape)
    mask = None if mask_input is None else _check_mask_input(mask_input, low_res_size)
    if pts is None and boxes is None and mask is None:
        raise InvalidInputError("prompts: give at least one of points, box or mask_input")
    return Prompts(points=pts, labels=lab, boxes=boxes, mask_input=mask, image_shape=shape)


def _scales(original_size: tuple[int, int], input_size: tuple[int, int]) -> tuple[float, float]:
    """Per-axis factors (x: neww / w, y: newh / h), computed as SAM's ``apply_coords`` does."""
    (h, w), (newh, neww) = original_size, input_size
    return neww / w, newh / h


def to_model_frame(
    prompts: Prompts,
    original_size: tuple[int, int],
    input_size: tuple[int, int],
    device: torch.device | str | None = None,
) -> ModelPrompts:
    """Convert prompts to SAM's (x, y) resized frame, as tensors for the prompt encoder.

    Exactly SAM's ``ResizeLongestSide.apply_coords`` / ``apply_boxes``: ``x = col
    * (neww / w)`` and ``y = row * (newh / h)`` in float64, then float32. A box
    ``(row0, col0, row1, col1)`` becomes ``(x0, y0, x1, y1) = (col0, row0, col1,
    row1)`` scaled the same way.

    Parameters
    ----------
    prompts : Prompts
        Validated prompts (see :func:`validate_prompts`).
    original_size : tuple of int
        ``(H, W)`` of the original image.
    input_size : tuple of int
        ``(newh, neww)`` of the resized image (see ``image.preprocess_shape``).
    device : torch.device or str, optional
        Device of the returned tensors (CPU by default).

    Returns
    -------
    ModelPrompts
    """
    sx, sy = _scales(original_size, input_size)
    k = prompts.num_masks
    coords = labels = boxes = mask = None
    if prompts.points is not None:
        xy = prompts.points[:, ::-1] * np.array([sx, sy])
        coords = torch.as_tensor(xy, dtype=torch.float32, device=device)[None].repeat(k, 1, 1)
        labels = torch.as_tensor(prompts.labels, dtype=torch.int32, device=device)[None].repeat(k, 1)
    if prompts.boxes is not None:
        xyxy = prompts.boxes[:, [1, 0, 3, 2]] * np.array([sx, sy, sx, sy])
        boxes = torch.as_tensor(xyxy, dtype=torch.float32, device=device)
    if prompts.mask_input is not None:  # one mask prompt, for every object
        mask = torch.as_tensor(prompts.mask_input, dtype=torch.float32, device=device)[None].repeat(k, 1, 1, 1)
    return ModelPrompts(coords, labels, boxes, mask)


def batch_to_model_frame(
    objects: Sequence[Prompts],
    original_size: tuple[int, int],
    input_size: tuple[int, int],
    device: torch.device | str | None = None,
) -> ModelPrompts:
    """Prompts of ``B`` objects, one :class:`Prompts` each, as one batch for the prompt encoder.

    Each object's prompts go through :func:`to_model_frame`; the object axis is ``B =
    len(objects)``. Objects with fewer clicks than the most (or none) are padded with
    label -1 at (0, 0), SAM's "not a point" (as SAM pads its own point prompts).

    Parameters
    ----------
    objects : sequence of Prompts
        One object each (at most one box), all on the image of ``original_size``.
    original_size, input_size, device
        See :func:`to_model_frame`.

    Returns
    -------
    ModelPrompts
        ``point_coords`` ``B×N×2``, ``point_labels`` ``B×N``, ``boxes`` ``B×4``,
        ``mask_input`` ``B×1×L×L``; None where no object has that prompt.

    Raises
    ------
    InvalidInputError
        No object, an object with several boxes, or a box or mask prompt given for some
        objects only.
    """
    if not objects:
        raise InvalidInputError("prompts: need at least one object")
    many = [i for i, p in enumerate(objects) if p.num_masks != 1]
    if many:
        raise InvalidInputError(
            f"prompts: object {many[0]} has {objects[many[0]].num_masks} boxes; give one box per object"
        )
    frames = [to_model_frame(p, original_size, input_size, device) for p in objects]
    for name in ("boxes", "mask_input"):
        given = sum(getattr(f, name) is not None for f in frames)
        if 0 < given < len(frames):
            raise InvalidInputError(
                f"prompts: {name} given for {given} of {len(frames)} objects; give it for all or none"
            )
    coords = labels = boxes = masks = None
    width = max(0 if f.point_coords is None else f.point_coords.shape[1] for f in frames)
    if width:
        coords = torch.zeros(len(frames), width, 2, dtype=torch.float32, device=device)
        labels = torch.full((len(frames), width), -1, dtype=torch.int32, device=device)
        for i, f in enumerate(frames):
            if f.point_coords is not None:
                coords[i, : f.point_coords.shape[1]] = f.point_coords[0]
                labels[i, : f.point_labels.shape[1]] = f.point_labels[0]
    if frames[0].boxes is not None:
        boxes = torch.cat([f.boxes for f in frames])
    if frames[0].mask_input is not None:
        masks = torch.cat([f.mask_input for f in frames])
    return ModelPrompts(coords, labels, boxes, masks)


def mask_logits(mask: np.ndarray) -> np.ndarray:
    """A full-size mask prompt as float32 logits: bool masks become ``±MASK_PROMPT_LOGIT``,
    numeric arrays are taken as logits (e.g. a previous prediction's ``logits``)."""
    arr = np.asarray(mask)
    if arr.dtype == np.bool_:
        return np.where(arr, MASK_PROMPT_LOGIT, -MASK_PROMPT_LOGIT).astype(np.float32)
    values = _as_float_array(arr, "mask_input")
    _check_logit_values(values)
    return values.astype(np.float32)


def window_mask_prompt(
    logits: np.ndarray, input_size: tuple[int, int], image_size: int, low_res_size: int
) -> np.ndarray:
    """A full-resolution mask prompt of one encoded window (logits from :func:`mask_logits`, cropped
    to the window) as the decoder's ``(1, L, L)`` ``mask_input``; the padding is sure background."""
    return to_low_res_frame(logits, input_size, image_size, low_res_size, -MASK_PROMPT_LOGIT).numpy()


def to_low_res_frame(
    values: np.ndarray | torch.Tensor,
    input_size: tuple[int, int],
    image_size: int,
    low_res_size: int,
    pad_value: float,
) -> torch.Tensor:
    """Map an image-resolution ``(H, W)`` float map into SAM's ``L×L`` low-resolution frame.

    The inverse of ``SamModel.postprocess_masks``: bilinear resize to the resized-image
    size ``input_size``, pad bottom/right with ``pad_value`` to ``image_size``, then an
    antialiased bilinear reduction to ``low_res_size``. This is how a full-size mask
    prompt (:func:`mask_logits`) reaches the decoder of each window it covers.

    Returns
    -------
    torch.Tensor
        float32 ``(1, L, L)``.
    """
    x = values if torch.is_tensor(values) else torch.as_tensor(np.asarray(values, dtype=np.float32))
    x = x.float()[None, None]
    x = torch.nn.functional.interpolate(x, input_size, mode="bilinear", align_corners=False)
    pad = (0, image_size - input_size[1], 0, image_size - input_size[0])
    x = torch.nn.functional.pad(x, pad, value=pad_value)
    x = torch.nn.functional.interpolate(
        x, (low_res_size, low_res_size), mode="bilinear", align_corners=False, antialias=True
    )
    return x[0]


class MaskPrompts(NamedTuple):
    """The prompts :func:`prompts_from_mask` derives from a mask (arguments of ``Predictor.predict``)."""

    points: np.ndarray  #: ``(1, 2)`` float64 ``(row, col)``: the centre of the deepest pixel.
    labels: np.ndarray  #: ``(1,)`` int64, positive.
    box: np.ndarray  #: ``(4,)`` float64 ``(row0, col0, row1, col1)``.


def prompts_from_mask(mask: np.ndarray, box_extension: float = 0.0) -> MaskPrompts:
    """A box and one positive point that prompt for the object of a mask: the one rule (propagation to the next
    slice, re-segmenting a committed object).

    The box is the mask's bounding box (half-open, so it covers every pixel), enlarged on each side by
    ``box_extension`` times its height / width and clipped to the plane; the point is the centre of the mask's
    pixel deepest inside it (the largest Euclidean distance to a pixel outside it or to the plane's border; the
    first in raster order on ties). Only the mask's bounding box is searched.

    Parameters
    ----------
    mask : numpy.ndarray
        ``(H, W)`` bool (or non-zero foreground) with at least one pixel set.
    box_extension : float
        Fraction of the box's height / width added on each side, >= 0.

    Returns
    -------
    MaskPrompts

    Raises
    ------
    InvalidInputError
        A mask that is not 2D or is empty; a negative ``box_extension``.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((8, 10), bool); mask[2:5, 3:8] = True
    >>> p = prompts_from_mask(mask)
    >>> p.points.tolist(), p.labels.tolist(), p.box.tolist()
    ([[3.5, 4.5]], [1], [2.0, 3.0, 5.0, 8.0])
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InvalidInputError(f"mask: expected a 2D (H, W) mask, got shape {mask.shape}")
    if not box_extension >= 0:
        raise InvalidInputError(f"box_extension must be >= 0, got {box_extension!r}")
    mask = mask != 0
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise InvalidInputError("mask: the mask is empty (no pixel to prompt for)")
    r0, c0, r1, c1 = int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1
    box = np.array([r0, c0, r1, c1], dtype=np.float64)
    if box_extension:
        grow = box_extension * np.tile(box[2:] - box[:2], 2) * np.array([-1, -1, 1, 1])
        box = np.clip(box + grow, 0, np.tile(mask.shape, 2))
    # The plane's border counts as outside (padding); the box holds every pixel that can be deepest.
    depth = ndimage.distance_transform_edt(np.pad(mask, 1)[r0 : r1 + 2, c0 : c1 + 2])[1:-1, 1:-1]
    r, c = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return MaskPrompts(np.array([[r + r0 + 0.5, c + c0 + 0.5]]), np.array([1], dtype=np.int64), box)
