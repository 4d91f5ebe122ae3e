"""Mask utilities for automatic segmentation: stability, boxes, point grid, clean-up, labels.

Boxes
-----
Public boxes are ``(row0, col0, row1, col1)`` **inclusive** pixel indices (as SAM's
``batched_mask_to_box``, so a one-pixel mask has a zero-area box). :func:`sum_core.nms.nms`
takes ``(x0, y0, x1, y1)``; :func:`boxes_to_xyxy` converts, keeping the values, so NMS sees
exactly SAM's boxes (areas ``x1 - x0`` without ``+1``).

Crops and tiles are given as half-open regions ``(row0, col0, row1, col1)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from .errors import InvalidInputError
from .validation import check_int, check_range

__all__ = [
    "box_touches_edge",
    "boxes_to_xyxy",
    "clean_small_regions",
    "masks_to_boxes",
    "masks_to_label_image",
    "pixel_counts",
    "point_grid",
    "stability_score",
]

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def pixel_counts(masks: torch.Tensor) -> torch.Tensor:
    """Number of True pixels of each ``(..., H, W)`` boolean mask, as int64 ``(...)``.

    Summed over the flattened pixels in int32 when a mask cannot overflow it (1.8x faster
    than torch's default int64 sum over two axes on the CPU: 16 masks of 1024² in 74 vs
    130 ms), which matters because the automatic mask generator counts every candidate
    mask three times (stability thresholds and area).
    """
    h, w = masks.shape[-2:]
    dtype = torch.int32 if h * w < 2**31 else torch.int64
    return masks.flatten(-2).sum(-1, dtype=dtype).to(torch.int64)


def stability_score(
    logits: torch.Tensor, mask_threshold: float = 0.0, offset: float = 1.0
) -> torch.Tensor:
    """IoU between the masks thresholded at ``mask_threshold + offset`` and ``- offset``.

    Computed from pixel counts as SAM does: the high-threshold mask is contained in the
    low-threshold one, so IoU = count(logits > thr + offset) / count(logits > thr - offset).

    Parameters
    ----------
    logits : torch.Tensor
        ``(..., H, W)`` mask logits; any leading batch dimensions.
    mask_threshold : float
        Logit threshold of the mask (SAM: 0).
    offset : float
        Threshold offset (SAM's ``stability_score_offset``, default 1). Must be >= 0.

    Returns
    -------
    torch.Tensor
        float32 scores of shape ``(...)`` in [0, 1]. A mask that is empty even at the low
        threshold scores 0 (SAM returns NaN there, which its ``>=`` filter also rejects).
    """
    logits = torch.as_tensor(logits)
    if logits.ndim < 2:
        raise InvalidInputError(f"logits must have shape (..., H, W), got {tuple(logits.shape)}")
    check_range(offset, "offset", 0.0, float("inf"))
    high = pixel_counts(logits > mask_threshold + offset)
    low = pixel_counts(logits > mask_threshold - offset)
    return torch.where(low > 0, high.float() / low.clamp(min=1).float(), 0.0)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Inclusive bounding boxes ``(row0, col0, row1, col1)`` of binary masks.

    Parameters
    ----------
    masks : torch.Tensor
        ``(..., H, W)`` boolean (or 0/1) masks.

    Returns
    -------
    torch.Tensor
        int64 boxes of shape ``(..., 4)``; an empty mask gives ``(0, 0, 0, 0)``.
    """
    masks = torch.as_tensor(masks)
    if masks.ndim < 2:
        raise InvalidInputError(f"masks must have shape (..., H, W), got {tuple(masks.shape)}")
    masks = masks.bool()
    h, w = masks.shape[-2:]
    lead = masks.shape[:-2]
    if h == 0 or w == 0:
        return torch.zeros((*lead, 4), dtype=torch.int64, device=masks.device)
    rows = masks.any(dim=-1)  # (..., H)
    cols = masks.any(dim=-2)  # (..., W)
    row_idx = torch.arange(h, device=masks.device)
    col_idx = torch.arange(w, device=masks.device)
    row1 = torch.where(rows, row_idx, -1).amax(dim=-1)
    row0 = torch.where(rows, row_idx, h).amin(dim=-1)
    col1 = torch.where(cols, col_idx, -1).amax(dim=-1)
    col0 = torch.where(cols, col_idx, w).amin(dim=-1)
    boxes = torch.stack([row0, col0, row1, col1], dim=-1)
    empty = ~rows.any(dim=-1)
    return torch.where(empty[..., None], 0, boxes).to(torch.int64)


def boxes_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``(row0, col0, row1, col1)`` boxes as float32 ``(x0, y0, x1, y1)``, for
    :func:`sum_core.nms.nms`."""
    boxes = torch.as_tensor(boxes)
    if boxes.ndim < 1 or boxes.shape[-1] != 4:
        raise InvalidInputError(f"boxes must have shape (..., 4), got {tuple(boxes.shape)}")
    return boxes[..., [1, 0, 3, 2]].float()


def point_grid(points_per_side: int) -> np.ndarray:
    """Cell centres of a ``points_per_side`` x ``points_per_side`` grid over [0, 1]².

    Returns
    -------
    np.ndarray
        float64 ``(points_per_side**2, 2)`` points ``(row, col)``, row-major (the same
        points in the same order as SAM's ``build_point_grid``). Multiply by the crop's
        ``(height, width)`` to get pixel coordinates.
    """
    n = check_int(points_per_side, "points_per_side", 1)
    offset = 1.0 / (2 * n)
    side = np.linspace(offset, 1 - offset, n)
    rows, cols = np.meshgrid(side, side, indexing="ij")
    return np.stack([rows.ravel(), cols.ravel()], axis=-1)


def box_touches_edge(
    boxes: torch.Tensor,
    crop: Sequence[int],
    image_shape: Sequence[int],
    atol: float = 20.0,
) -> torch.Tensor:
    """Which boxes lie within ``atol`` pixels of a crop/tile edge that is not an image edge.

    SAM's ``is_box_near_crop_edge`` in (row, col): each box coordinate is compared with the
    matching crop coordinate (``row0`` with ``row0`` ...); it counts when it is within
    ``atol`` of the crop edge and not within ``atol`` of the matching image edge. As in SAM,
    the inclusive box end is compared with the exclusive crop end, so a box reaching the
    last pixel of the crop is 1 px from it.

    Parameters
    ----------
    boxes : torch.Tensor
        ``(N, 4)`` inclusive boxes ``(row0, col0, row1, col1)`` in **image** coordinates.
    crop : sequence of int
        The crop or tile ``(row0, col0, row1, col1)``, half-open, in image coordinates.
    image_shape : sequence of int
        ``(height, width)`` of the image.
    atol : float
        Distance in pixels (SAM's automatic mask generator uses 20). Must be >= 0.

    Returns
    -------
    torch.Tensor
        Boolean ``(N,)``.
    """
    boxes = torch.as_tensor(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InvalidInputError(f"boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    if len(crop) != 4:
        raise InvalidInputError(f"crop must be (row0, col0, row1, col1), got {crop!r}")
    if len(image_shape) != 2:
        raise InvalidInputError(f"image_shape must be (height, width), got {image_shape!r}")
    check_range(atol, "atol", 0.0, float("inf"))
    boxes = boxes.double()
    crop_t = torch.tensor([float(v) for v in crop], dtype=torch.float64, device=boxes.device)
    image_t = torch.tensor(
        [0.0, 0.0, float(image_shape[0]), float(image_shape[1])],
        dtype=torch.float64,
        device=boxes.device,
    )
    near_crop = (boxes - crop_t).abs() <= atol
    near_image = (boxes - image_t).abs() <= atol
    return (near_crop & ~near_image).any(dim=1)


def clean_small_regions(mask: np.ndarray, min_area: int) -> tuple[np.ndarray, bool]:
    """Fill holes, then remove islands, smaller than ``min_area`` pixels (8-connectivity).

    SAM's ``remove_small_regions`` run twice (``"holes"``, then ``"islands"``) as in its
    ``postprocess_small_regions``: a hole is any background component (including one
    touching the border) under ``min_area``; if every island is under ``min_area``, the
    largest is kept, so a non-empty mask never becomes empty.

    Parameters
    ----------
    mask : np.ndarray
        ``(H, W)`` boolean mask.
    min_area : int
        Components with fewer pixels are changed. Must be >= 0 (0 changes nothing).

    Returns
    -------
    (np.ndarray, bool)
        The cleaned boolean mask and whether anything changed.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InvalidInputError(f"mask must be 2D (H, W), got shape {mask.shape}")
    min_area = check_int(min_area, "min_area", 0)
    mask = mask.astype(bool)
    filled, changed_holes = _small_components(mask, min_area, holes=True)
    cleaned, changed_islands = _small_components(filled, min_area, holes=False)
    return cleaned, changed_holes or changed_islands


def _small_components(mask: np.ndarray, min_area: int, holes: bool) -> tuple[np.ndarray, bool]:
    """One pass of SAM's ``remove_small_regions`` (``holes`` selects the mode)."""
    working = ~mask if holes else mask
    labels, n = ndimage.label(working, structure=_EIGHT_CONNECTED)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    small = np.flatnonzero(sizes < min_area) + 1
    if small.size == 0:
        return mask, False
    if holes:
        return mask | np.isin(labels, small), True
    keep = np.flatnonzero(sizes >= min_area) + 1
    if keep.size == 0:
        keep = np.array([int(np.argmax(sizes)) + 1])
    return np.isin(labels, keep), True


def masks_to_label_image(masks: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
    """Paint binary masks into one uint32 label image; mask ``i`` gets label ``i + 1``.

    Masks are painted largest first and, among equal areas, lowest score first, so where
    masks overlap the smaller (and then the better-scoring) mask wins. Labels keep the
    input index, so a label maps back to its record; a mask completely covered by others
    leaves no pixel and its label is absent.

    Parameters
    ----------
    masks : np.ndarray
        ``(N, H, W)`` boolean masks.
    scores : np.ndarray, optional
        ``(N,)`` quality scores (higher is better), used to break area ties.

    Returns
    -------
    np.ndarray
        ``(H, W)`` uint32 labels, 0 for background.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise InvalidInputError(f"masks must have shape (N, H, W), got {masks.shape}")
    n = masks.shape[0]
    if scores is None:
        scores = np.zeros(n)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (n,):
        raise InvalidInputError(f"scores must have shape ({n},) to match masks, got {scores.shape}")
    masks = masks.astype(bool, copy=False)
    areas = masks.reshape(n, -1).sum(axis=1)
    # lexsort: last key is primary -> area descending, then score ascending, then index.
    order = np.lexsort((np.arange(n), scores, -areas))
    labels = np.zeros(masks.shape[1:], dtype=np.uint32)
    for i in order:
        labels[masks[i]] = i + 1
    return labels
