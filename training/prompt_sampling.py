"""Prompt sampling for SUM / HQ-SAM training and click-based evaluation.

Points are returned as numpy ``int64`` pixel indices in **(row, col)** order,
the project-wide convention (see :mod:`sum_core.prompts`); boxes are
``(row0, col0, row1, col1)`` with inclusive pixel indices, like SAM's own
boxes from masks.  Masks and maps may be numpy arrays or torch tensors; the
point samplers work on the CPU and take an optional CPU ``torch.Generator``
so that every draw is reproducible.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sum_core.errors import InvalidInputError
from sum_core.suggest import largest_region_click

BOX_JITTER_STD_FRACTION = 0.1
BOX_JITTER_MAX_OFFSET = 20.0


def _as_cpu_tensor(array, name: str, dtype: torch.dtype) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array)
    if tensor.ndim != 2:
        raise InvalidInputError(f"{name} must be a 2D H x W map, got shape {tuple(tensor.shape)}")
    return tensor.detach().to("cpu", dtype)


def _as_bool_2d(array, name: str) -> np.ndarray:
    out = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    if out.ndim != 2:
        raise InvalidInputError(f"{name} must be a 2D H x W mask, got shape {out.shape}")
    return out.astype(bool)


def sample_weighted_points(
    region,
    certainty=None,
    num_points: int = 1,
    replacement: bool = False,
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """Draw pixels of ``region`` with probability proportional to the certainty.

    SUM's uncertainty-aware sampling: ``P_i = c_i / sum_j c_j`` over the pixels
    ``i`` of the region (``torch.multinomial``).  Without ``certainty`` the
    draw is uniform over the region.

    Fallbacks: an empty region gives an empty ``(0, 2)`` array (the caller
    chooses another prompt, as SUM falls back to a box or mask prompt); if the
    certainty is zero on the whole region the draw is uniform over the region;
    without replacement at most as many points as pixels with non-zero weight
    are returned.

    Parameters
    ----------
    region : array_like or torch.Tensor
        ``H x W`` boolean mask of candidate pixels.
    certainty : array_like or torch.Tensor, optional
        ``H x W`` non-negative weights, e.g. ``c = 1 - u``.
    num_points : int
        Number of points to draw.
    replacement : bool
        Draw with replacement (the same pixel may repeat).
    generator : torch.Generator, optional
        CPU generator for reproducible draws.

    Returns
    -------
    numpy.ndarray
        ``(n, 2)`` int64 (row, col) pixel indices, ``n <= num_points``.
    """
    if num_points < 0:
        raise InvalidInputError(f"num_points must be >= 0, got {num_points}")
    mask = _as_cpu_tensor(region, "region", torch.bool)
    if certainty is None:
        weights = mask.to(torch.float64)
    else:
        cert = _as_cpu_tensor(certainty, "certainty", torch.float64)
        if cert.shape != mask.shape:
            raise InvalidInputError(
                f"certainty must have the shape of region {tuple(mask.shape)}, got {tuple(cert.shape)}"
            )
        if (cert < 0).any() or not torch.isfinite(cert).all():
            raise InvalidInputError("certainty must be finite and non-negative")
        weights = cert * mask
    flat = weights.flatten()
    if not mask.any() or num_points == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if flat.sum() <= 0:
        flat = mask.flatten().to(torch.float64)
    count = num_points if replacement else min(num_points, int((flat > 0).sum()))
    index = torch.multinomial(flat, count, replacement=replacement, generator=generator)
    width = mask.shape[1]
    return torch.stack([index // width, index % width], dim=1).numpy().astype(np.int64)


def sample_error_click(
    prediction,
    target,
    certainty=None,
    generator: torch.Generator | None = None,
) -> tuple[np.ndarray, int] | None:
    """One corrective click drawn from the error region (SUM's later rounds).

    The region is ``prediction != target``: false negatives give positive
    clicks, false positives negative ones; the label is the target's value at
    the drawn pixel.  The draw is weighted by ``certainty`` if given (see
    :func:`sample_weighted_points`).

    Returns
    -------
    tuple or None
        ``(point, label)`` with ``point`` an int64 ``(row, col)`` array and
        ``label`` 1 or 0, or None when prediction and target agree everywhere.
    """
    pred = _as_bool_2d(prediction, "prediction")
    gt = _as_bool_2d(target, "target")
    if pred.shape != gt.shape:
        raise InvalidInputError(
            f"prediction and target must have the same shape, got {pred.shape} and {gt.shape}"
        )
    points = sample_weighted_points(pred != gt, certainty, 1, generator=generator)
    if len(points) == 0:
        return None
    point = points[0]
    return point, int(gt[point[0], point[1]])


def box_from_mask(mask) -> np.ndarray:
    """Tight box of a mask: ``(row0, col0, row1, col1)``, inclusive indices, float64.

    Raises
    ------
    InvalidInputError
        If the mask is empty.
    """
    m = _as_bool_2d(mask, "mask")
    rows = np.flatnonzero(m.any(axis=1))
    cols = np.flatnonzero(m.any(axis=0))
    if rows.size == 0:
        raise InvalidInputError("mask is empty: no box can be drawn around it")
    return np.array([rows[0], cols[0], rows[-1], cols[-1]], dtype=np.float64)


def jitter_box(
    box,
    generator: torch.Generator | None = None,
    std_fraction: float = BOX_JITTER_STD_FRACTION,
    max_offset: float = BOX_JITTER_MAX_OFFSET,
    image_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """SUM's box jitter: one non-negative offset per axis, added to both corners.

    For a box of height ``h`` and width ``w`` the row offset is
    ``clamp(N(0, 1) * std_fraction * h, 0, max_offset)`` and the column offset
    ``clamp(N(0, 1) * std_fraction * w, 0, max_offset)`` (std 10 % of the side,
    noise clamped to [0, 20] px).  The *same* offset is added to both corners,
    so, as in the SUM reference, the box is **translated** down/right by up to
    ``max_offset`` pixels, never resized.

    Parameters
    ----------
    box : array_like
        ``(4,)`` or ``(K, 4)`` boxes ``(row0, col0, row1, col1)``.
    generator : torch.Generator, optional
        CPU generator for reproducible draws.
    image_shape : tuple of int, optional
        ``(H, W)`` of the image: if given, the result is clipped to
        ``[0, H-1] x [0, W-1]``, as the reference clips the jittered corners to the
        image size (its corners are exclusive, ``[0, W]``; ours are inclusive pixel
        indices).

    Returns
    -------
    numpy.ndarray
        float64 boxes of the input's shape.
    """
    boxes = np.asarray(box, dtype=np.float64)
    if boxes.shape[-1:] != (4,) or boxes.ndim not in (1, 2):
        raise InvalidInputError(f"box must have shape (4,) or (K, 4), got {boxes.shape}")
    if std_fraction < 0 or max_offset < 0:
        raise InvalidInputError(
            f"std_fraction and max_offset must be >= 0, got {std_fraction} and {max_offset}"
        )
    flat = boxes.reshape(-1, 4)
    sides = np.stack([flat[:, 2] - flat[:, 0], flat[:, 3] - flat[:, 1]], axis=1)
    noise = torch.randn(flat.shape[0], 2, generator=generator, dtype=torch.float64).numpy()
    offsets = np.clip(noise * std_fraction * sides, 0.0, max_offset)
    out = flat + np.concatenate([offsets, offsets], axis=1)
    if image_shape is not None:
        h, w = image_shape
        out = np.clip(out, 0, [h - 1, w - 1, h - 1, w - 1])
    return out.reshape(boxes.shape)


def noisy_mask_prompt(
    masks: torch.Tensor,
    size: int = 256,
    scale_factor: int = 8,
    noise_std: float = 1.0,
    foreground_value: float = 255.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """HQ-SAM's noisy mask prompt (Mask Transfiner's ``masks_noise``).

    The ground truth is resized bilinearly to ``size x size``; its "incoherent"
    boundary band is where ``|m - up(down(m, 1/scale_factor))| >= 0.01``
    (bilinear both ways).  Gaussian noise of std ``noise_std`` is added inside
    the band only, the result is thresholded at 0.5 and multiplied by
    ``foreground_value``.  HQ-SAM feeds these 0/255 values to the prompt
    encoder as they are (not logits); pass another ``foreground_value`` to feed
    logit-like values instead.

    Parameters
    ----------
    masks : torch.Tensor
        ``B x 1 x H x W`` or ``B x H x W`` masks in ``[0, 1]`` (or bool).
    generator : torch.Generator, optional
        Generator on ``masks.device`` for reproducible noise.

    Returns
    -------
    torch.Tensor
        ``B x 1 x size x size`` float32 with values in ``{0, foreground_value}``.
    """
    if masks.ndim == 3:
        masks = masks.unsqueeze(1)
    if masks.ndim != 4 or masks.shape[1] != 1:
        raise InvalidInputError(f"masks must be B x 1 x H x W or B x H x W, got {tuple(masks.shape)}")
    if size % scale_factor:
        raise InvalidInputError(f"size {size} must be a multiple of scale_factor {scale_factor}")
    m = F.interpolate(masks.float(), size=(size, size), mode="bilinear", align_corners=False)
    small = F.interpolate(m, size=(size // scale_factor,) * 2, mode="bilinear", align_corners=False)
    recovered = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    band = ((m - recovered).abs() >= 0.01).float()
    noise = torch.randn(m.shape, generator=generator, device=m.device, dtype=m.dtype) * noise_std
    return ((m + noise * band) > 0.5).float() * foreground_value


def center_click(prediction, target) -> tuple[np.ndarray, int] | None:
    """Deterministic evaluation click at the centre of the largest error region.

    The false-negative (``target & ~prediction``) and false-positive
    (``prediction & ~target``) maps are split into 8-connected components; the
    largest component overall is chosen (ties: false negatives first, then the
    first in raster order).  The click is the pixel of that component farthest
    from its boundary (maximum of the Euclidean distance transform, the image
    border counting as boundary; first in raster order on ties).  With an empty
    prediction this is the interior "centre" of the largest object part, SAM's
    first-click protocol.

    Returns
    -------
    tuple or None
        ``(point, label)``: int64 ``(row, col)`` and 1 for a false negative /
        0 for a false positive; None when prediction equals target.
    """
    pred = _as_bool_2d(prediction, "prediction")
    gt = _as_bool_2d(target, "target")
    if pred.shape != gt.shape:
        raise InvalidInputError(
            f"prediction and target must have the same shape, got {pred.shape} and {gt.shape}"
        )
    click = largest_region_click(gt & ~pred, pred & ~gt)  # the one rule, shared with sum_core.suggest_click
    if click is None:
        return None
    return np.array(click.point, dtype=np.int64), click.label
