"""Per-pixel uncertainty maps from mask logits, and prompt perturbations for ensembles.

Every map is float32 in [0, 1] (0 certain, 1 maximally uncertain) and has the
shape of its input logits. Logits are log-odds of "pixel is foreground"; use
one token's logit (the SAM-token or the HQ-token logit), not the SAM + HQ sum
that HQ-SAM thresholds by default, which is not a calibrated log-odds.

- :func:`disagreement`: ``|σ(s_SAM) − σ(s_HQ)|``, the closest analogue of SUM's
  refinement uncertainty (SUM Eq. 3, with HQ-SAM's HQ token as the refiner).
- :func:`bernoulli_entropy`: normalised binary entropy of one token.
- :func:`ensemble_entropy`: normalised predictive entropy of the mean of K
  members, e.g. the predictions for the prompts from :func:`perturb_prompts`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InvalidInputError
from .validation import check_int

__all__ = ["bernoulli_entropy", "disagreement", "ensemble_entropy", "perturb_prompts"]

_LOG2 = math.log(2.0)


def _as_float(logits: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor):
        raise InvalidInputError(f"{name}: expected a torch.Tensor, got {type(logits).__name__}")
    if not (logits.is_floating_point()):
        raise InvalidInputError(f"{name}: expected floating-point logits, got dtype {logits.dtype}")
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def _binary_entropy_of_prob(p: torch.Tensor) -> torch.Tensor:
    """``H(p) / log 2`` for probabilities ``p``, with ``0 log 0 = 0``; clamped to [0, 1]."""
    h = -(torch.special.xlogy(p, p) + torch.special.xlogy(1.0 - p, 1.0 - p)) / _LOG2
    return h.clamp_(0.0, 1.0).float()


def disagreement(sam_logits: torch.Tensor, hq_logits: torch.Tensor) -> torch.Tensor:
    """Disagreement between the SAM-token and HQ-token masks.

    ``u = |sigmoid(sam_logits) − sigmoid(hq_logits)|``, elementwise.

    Parameters
    ----------
    sam_logits, hq_logits : torch.Tensor
        Logits of the same shape: the selected SAM-token logit and the HQ-token
        logit (both before the SAM + HQ sum).

    Returns
    -------
    torch.Tensor
        float32 in [0, 1], same shape.
    """
    sam = _as_float(sam_logits, "sam_logits")
    hq = _as_float(hq_logits, "hq_logits")
    if sam.shape != hq.shape:
        raise InvalidInputError(
            f"hq_logits: shape {tuple(hq.shape)} differs from sam_logits shape {tuple(sam.shape)}"
        )
    return (torch.sigmoid(sam) - torch.sigmoid(hq)).abs().float()


def bernoulli_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Normalised binary entropy of one token's foreground probability.

    With ``p = sigmoid(s)``: ``H = (−p log p − (1 − p) log(1 − p)) / log 2``,
    computed from the logit as ``(p · softplus(−s) + (1 − p) · softplus(s)) /
    log 2`` (``−log p = softplus(−s)``), so it is exact and finite for any
    finite logit (0 at ±100, 1 at 0).

    Parameters
    ----------
    logits : torch.Tensor
        One token's logits, any shape.

    Returns
    -------
    torch.Tensor
        float32 in [0, 1], same shape.
    """
    s = _as_float(logits, "logits")
    p = torch.sigmoid(s)
    h = (p * F.softplus(-s) + (1.0 - p) * F.softplus(s)) / _LOG2
    return h.clamp_(0.0, 1.0).float()


def ensemble_entropy(logit_stack: torch.Tensor) -> torch.Tensor:
    """Normalised predictive entropy of an ensemble.

    ``H(p̄) / log 2`` with ``p̄ = mean_k sigmoid(logit_stack[k])``, the mean
    foreground probability over the K members along dimension 0.

    Parameters
    ----------
    logit_stack : torch.Tensor
        ``K×...`` logits of K >= 1 members (e.g. one prediction per perturbed
        prompt).

    Returns
    -------
    torch.Tensor
        float32 in [0, 1], shape ``logit_stack.shape[1:]``.
    """
    s = _as_float(logit_stack, "logit_stack")
    if s.ndim < 1 or s.shape[0] < 1:
        raise InvalidInputError(f"logit_stack: expected K×... with K >= 1 members, got shape {tuple(s.shape)}")
    return _binary_entropy_of_prob(torch.sigmoid(s).mean(dim=0))


def _check_image_shape(image_shape) -> tuple[int, int]:
    try:
        h, w = (float(v) for v in image_shape)
    except (TypeError, ValueError):
        raise InvalidInputError(f"image_shape: expected (H, W), got {image_shape!r}") from None
    if h <= 0 or w <= 0:
        raise InvalidInputError(f"image_shape: H and W must be positive, got {image_shape!r}")
    return h, w


def _jitter_boxes(boxes: np.ndarray, rng: np.random.Generator, rel_std: float, h: float, w: float) -> np.ndarray:
    sides = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)
    std = np.tile(sides, 2) * rel_std  # (row0, col0, row1, col1) <- (height, width, height, width)
    noise = np.clip(rng.standard_normal(boxes.shape), -2.0, 2.0) * std
    out = boxes + noise
    rows = np.clip(np.sort(out[:, [0, 2]], axis=1), 0.0, h)
    cols = np.clip(np.sort(out[:, [1, 3]], axis=1), 0.0, w)
    return np.stack([rows[:, 0], cols[:, 0], rows[:, 1], cols[:, 1]], axis=1)


def _move_points(points: np.ndarray, rng: np.random.Generator, radius: float, h: float, w: float) -> np.ndarray:
    angle = rng.uniform(0.0, 2.0 * np.pi, len(points))
    dist = radius * np.sqrt(rng.uniform(0.0, 1.0, len(points)))  # uniform over the disc
    moved = points + np.stack([dist * np.sin(angle), dist * np.cos(angle)], axis=1)
    return np.stack([np.clip(moved[:, 0], 0.0, h), np.clip(moved[:, 1], 0.0, w)], axis=1)


def perturb_prompts(
    points: np.ndarray | None,
    labels: np.ndarray | None,
    boxes: np.ndarray | None,
    k: int,
    generator: np.random.Generator | int | None = None,
    *,
    image_shape: tuple[int, int],
    box_jitter: float = 0.1,
    click_radius: float = 0.02,
) -> list[tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]]:
    """K perturbed copies of a prompt, for the prompt-perturbation ensemble.

    All coordinates are numpy (row, col) in image pixels. Member 0 is the
    unperturbed prompt; members 1..K-1 are drawn independently:

    - **Boxes**: each of the four coordinates gets independent Gaussian noise
      with standard deviation ``box_jitter`` × the box's side along that axis
      (height for rows, width for columns; SUM uses 10 %), truncated at ±2
      standard deviations so no member is wildly off. Unlike SUM's training
      jitter (one non-negative shift, clamped to [0, 20] px, added to both
      corners), the box edges move independently in both directions, so the
      box changes size as well as position. The result is clipped to
      ``[0, H] × [0, W]``, and a coordinate pair that crossed is swapped.
    - **Clicks**: each click moves by an offset drawn uniformly from the disc
      of radius ``click_radius`` × the image diagonal, then is clipped to
      ``[0, H] × [0, W]``. Labels are kept.

    Parameters
    ----------
    points : numpy.ndarray or None
        ``(N, 2)`` clicks (row, col).
    labels : numpy.ndarray or None
        ``(N,)`` labels, returned unchanged in every member.
    boxes : numpy.ndarray or None
        ``(M, 4)`` boxes (row0, col0, row1, col1).
    k : int
        Number of members, >= 1.
    generator : numpy.random.Generator or int, optional
        Random generator or seed; the same seed gives the same members.
    image_shape : tuple of int
        ``(H, W)`` of the image, for clipping and the click radius.
    box_jitter : float
        Standard deviation of the box noise, relative to the box side.
    click_radius : float
        Largest click displacement, relative to the image diagonal.

    Returns
    -------
    list of tuple
        ``k`` tuples ``(points, labels, boxes)`` (float64 arrays or None),
        new arrays that do not share memory with the inputs.
    """
    k = check_int(k, "k (ensemble members)", 1)
    if box_jitter < 0 or click_radius < 0:
        raise InvalidInputError(
            f"box_jitter, click_radius: must be >= 0, got box_jitter={box_jitter}, click_radius={click_radius}"
        )
    h, w = _check_image_shape(image_shape)
    rng = np.random.default_rng(generator)
    pts = None if points is None else np.asarray(points, dtype=np.float64).reshape(-1, 2)
    bxs = None if boxes is None else np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    lab = None if labels is None else np.asarray(labels)
    radius = click_radius * math.hypot(h, w)

    def copy(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a.copy()

    members = [(copy(pts), copy(lab), copy(bxs))]
    for _ in range(k - 1):
        new_pts = None if pts is None else _move_points(pts, rng, radius, h, w)
        new_boxes = None if bxs is None else _jitter_boxes(bxs, rng, box_jitter, h, w)
        members.append((new_pts, copy(lab), new_boxes))
    return members
