"""Segmentation losses for SAM / HQ-SAM / SUM fine-tuning.

Every function takes mask *logits* (not probabilities) and float targets in
``[0, 1]``.  Masks may be shaped ``B x 1 x H x W`` or ``B x H x W``; all
per-sample reductions flatten every dimension after the first, so both layouts
give the same numbers.  Uncertainty maps ``u`` are in ``[0, 1]`` (0 = certain)
and the certainty is ``c = 1 - u``, as in SUM (Eq. 1-3).

Reductions are stated per function: the ``*_loss`` building blocks return one
value per sample (shape ``(B,)``); the combined losses return a dict of scalar
tensors whose ``"loss"`` entry is the value to back-propagate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sum_core.errors import InvalidInputError

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
#: Both released SUM code paths default to 0.5; the paper's text gives 0.6.
UA_DICE_THRESHOLD = 0.5
#: torch-em's ``DiceLoss`` epsilon (its denominator's lower bound).
DISTANCE_DICE_EPS = 1e-7
HQ_NUM_POINTS = 112 * 112
HQ_OVERSAMPLE_RATIO = 3.0
HQ_IMPORTANCE_SAMPLE_RATIO = 0.75


def _check_same_shape(name: str, tensor: torch.Tensor, logits: torch.Tensor) -> None:
    if tensor.shape != logits.shape:
        raise InvalidInputError(
            f"{name} must have the shape of logits {tuple(logits.shape)}, got {tuple(tensor.shape)}"
        )


def _check_mask_batch(logits: torch.Tensor) -> None:
    if logits.ndim not in (3, 4) or (logits.ndim == 4 and logits.shape[1] != 1):
        raise InvalidInputError(
            f"logits must be shaped B x 1 x H x W or B x H x W, got {tuple(logits.shape)}"
        )


def sigmoid_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = FOCAL_ALPHA,
    gamma: float = FOCAL_GAMMA,
) -> torch.Tensor:
    """Element-wise sigmoid focal loss (Lin et al.), no reduction.

    With ``p = sigmoid(x)``, ``ce = BCE(x, y)``, ``p_t = p y + (1 - p)(1 - y)``
    and ``alpha_t = alpha y + (1 - alpha)(1 - y)``::

        focal = alpha_t * (1 - p_t) ** gamma * ce

    ``alpha < 0`` disables the class weighting (``alpha_t = 1``), as in
    torchvision.

    Parameters
    ----------
    logits, targets : torch.Tensor
        Same shape, any layout; targets in ``[0, 1]``.
    alpha, gamma : float
        Class balance and focusing parameters (SAM: 0.25 and 2).

    Returns
    -------
    torch.Tensor
        The loss of every element, shaped like ``logits``.
    """
    _check_same_shape("targets", targets, logits)
    targets = targets.to(logits.dtype)
    prob = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = FOCAL_ALPHA,
    gamma: float = FOCAL_GAMMA,
) -> torch.Tensor:
    """Sigmoid focal loss averaged over the pixels of each sample.

    ``L_b = mean_i focal(x_bi, y_bi)``; returns shape ``(B,)``.
    """
    _check_mask_batch(logits)
    return sigmoid_focal_loss(logits, targets, alpha, gamma).flatten(1).mean(1)


def _soft_dice(
    prob: torch.Tensor, targets: torch.Tensor, smooth: float, squared: bool = False, eps: float = 0.0
) -> torch.Tensor:
    """The package's one Dice loss, over dims 1.. of each sample.

    ``1 - (2 sum(p q) + s) / max(sum(p^k) + sum(q^k) + s, eps)`` with ``k = 2`` if
    ``squared`` else 1: SAM's smoothed Dice (``k = 1``, ``s = 1``, ``eps = 0``) and
    torch-em's ``DiceLoss`` (``k = 2``, ``s = 0``, ``eps = 1e-7``).
    """
    prob = prob.flatten(1)
    targets = targets.flatten(1).to(prob.dtype)
    numerator = 2 * (prob * targets).sum(1) + smooth
    if squared:
        prob, targets = prob * prob, targets * targets
    denominator = prob.sum(1) + targets.sum(1) + smooth
    return 1 - numerator / denominator.clamp(min=eps)


def dice_loss(
    logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0
) -> torch.Tensor:
    """Dice loss on probabilities, one value per sample.

    With ``p = sigmoid(x)`` summed over all pixels of a sample::

        L_b = 1 - (2 sum(p q) + smooth) / (sum(p) + sum(q) + smooth)

    An empty target with an empty prediction gives ~0 thanks to the smoothing.
    Returns shape ``(B,)``.
    """
    _check_mask_batch(logits)
    _check_same_shape("targets", targets, logits)
    return _soft_dice(torch.sigmoid(logits), targets, smooth)


def uncertainty_aware_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    uncertainty: torch.Tensor,
    alpha: float = FOCAL_ALPHA,
    gamma: float = FOCAL_GAMMA,
) -> torch.Tensor:
    """SUM's uncertainty-aware focal loss (Eq. 1), one value per sample.

    ``L_b = (1/m) sum_i c_i focal(x_bi, y_bi)`` with ``c = 1 - u`` and ``m`` the
    number of pixels (a plain mean, *not* normalised by ``sum(c)``, as in the
    SUM code).  A sample with ``u = 1`` everywhere gives exactly 0.
    Returns shape ``(B,)``.
    """
    _check_mask_batch(logits)
    _check_same_shape("uncertainty", uncertainty, logits)
    certainty = 1 - uncertainty.to(logits.dtype)
    return (certainty * sigmoid_focal_loss(logits, targets, alpha, gamma)).flatten(1).mean(1)


def uncertainty_aware_dice_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    uncertainty: torch.Tensor,
    threshold: float = UA_DICE_THRESHOLD,
    mode: str = "hard",
    smooth: float = 1.0,
) -> torch.Tensor:
    """SUM's uncertainty-aware Dice loss (Eq. 2), one value per sample.

    A per-pixel weight ``w`` multiplies both the probability and the target
    before the usual smoothed Dice::

        L_b = 1 - (2 sum(w p w q) + smooth) / (sum(w p) + sum(w q) + smooth)

    * ``mode="hard"`` (paper, default): ``w = 1[c > threshold]`` with
      ``c = 1 - u``, so only confidently labelled pixels count.  The default
      ``threshold = 0.5`` is the released SUM code's (the paper's text says 0.6).
    * ``mode="soft"`` (SUM's HQ-SAM-variant option): ``w = c``; ``threshold``
      is ignored.

    If no pixel is selected (e.g. ``u = 1`` everywhere) both sums vanish and the
    loss is ``1 - smooth / smooth = 0``: an empty selection contributes no loss
    and no gradient.  Returns shape ``(B,)``.
    """
    _check_mask_batch(logits)
    _check_same_shape("targets", targets, logits)
    _check_same_shape("uncertainty", uncertainty, logits)
    certainty = 1 - uncertainty.to(logits.dtype)
    if mode == "hard":
        weight = (certainty > threshold).to(logits.dtype)
    elif mode == "soft":
        weight = certainty
    else:
        raise InvalidInputError(f"mode must be 'hard' or 'soft', got {mode!r}")
    prob = torch.sigmoid(logits)
    return _soft_dice(weight * prob, weight * targets.to(logits.dtype), smooth)


def mask_iou_torch(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of ``logits > 0`` with ``targets > 0.5`` per sample, shape ``(B,)``.

    Two empty masks have IoU 1 (they agree perfectly).
    """
    pred = (logits > 0).flatten(1)
    gt = (targets > 0.5).flatten(1)
    intersection = (pred & gt).sum(1).to(torch.float32)
    union = (pred | gt).sum(1).to(torch.float32)
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))


def iou_head_loss(
    iou_pred: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """MSE between the IoU head's prediction and the actual mask IoU.

    ``L_b = (iou_pred_b - IoU(x_b > 0, y_b > 0.5)) ** 2``; the actual IoU is a
    constant (no gradient flows through the mask here).  ``iou_pred`` is shaped
    ``(B,)`` or ``(B, 1)``.  Returns shape ``(B,)``.
    """
    _check_mask_batch(logits)
    _check_same_shape("targets", targets, logits)
    iou_pred = iou_pred.reshape(-1)
    if iou_pred.shape[0] != logits.shape[0]:
        raise InvalidInputError(
            f"iou_pred must hold one score per mask ({logits.shape[0]}), got shape "
            f"{tuple(iou_pred.shape)}"
        )
    with torch.no_grad():
        actual = mask_iou_torch(logits, targets).to(iou_pred.dtype)
    return (iou_pred - actual) ** 2


def sam_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    iou_pred: torch.Tensor | None = None,
    focal_weight: float = 20.0,
    dice_weight: float = 1.0,
    iou_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """SAM's supervised loss: ``20 focal + 1 Dice + 1 IoU-MSE``, batch mean.

    Each term is the per-sample loss of :func:`focal_loss`, :func:`dice_loss`
    and :func:`iou_head_loss` averaged over the batch.  ``iou_pred=None`` drops
    the IoU term (HQ-SAM-style heads have no IoU score).

    Returns
    -------
    dict
        Scalars ``"loss"`` (weighted total), ``"focal"``, ``"dice"``, ``"iou"``
        (the unweighted batch means; ``"iou"`` is 0 without ``iou_pred``).
    """
    focal = focal_loss(logits, targets).mean()
    dice = dice_loss(logits, targets).mean()
    iou = iou_head_loss(iou_pred, logits, targets).mean() if iou_pred is not None else focal.new_zeros(())
    total = focal_weight * focal + dice_weight * dice + iou_weight * iou
    return {"loss": total, "focal": focal, "dice": dice, "iou": iou}


def uncertainty_aware_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    uncertainty: torch.Tensor,
    iou_pred: torch.Tensor | None = None,
    threshold: float = UA_DICE_THRESHOLD,
    dice_mode: str = "hard",
    focal_weight: float = 20.0,
    dice_weight: float = 1.0,
    iou_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """SUM's loss for pseudo-labelled masks: ``20 UA-focal + 1 UA-Dice (+ IoU-MSE)``.

    Same weights and batch-mean reduction as :func:`sam_loss`, with the focal
    and Dice terms replaced by :func:`uncertainty_aware_focal_loss` and
    :func:`uncertainty_aware_dice_loss`.  The IoU term (only if ``iou_pred`` is
    given) is the plain :func:`iou_head_loss`; the paper defines no
    uncertainty-weighted IoU loss.
    """
    focal = uncertainty_aware_focal_loss(logits, targets, uncertainty).mean()
    dice = uncertainty_aware_dice_loss(logits, targets, uncertainty, threshold, dice_mode).mean()
    iou = iou_head_loss(iou_pred, logits, targets).mean() if iou_pred is not None else focal.new_zeros(())
    total = focal_weight * focal + dice_weight * dice + iou_weight * iou
    return {"loss": total, "focal": focal, "dice": dice, "iou": iou}


def point_sample(inputs: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample ``N x C x H x W`` maps at normalised points.

    ``coords`` is ``N x P x 2`` in ``[0, 1]``, **(row, col)** order, where 0 and
    1 are the outer edges of the first and last pixel (``grid_sample`` with
    ``align_corners=False``, zero padding).  Returns ``N x C x P``.
    """
    if inputs.ndim != 4 or coords.ndim != 3 or coords.shape[-1] != 2 or coords.shape[0] != inputs.shape[0]:
        raise InvalidInputError(
            f"point_sample needs inputs N x C x H x W and coords N x P x 2, got "
            f"{tuple(inputs.shape)} and {tuple(coords.shape)}"
        )
    grid = (2 * coords.flip(-1) - 1).unsqueeze(2).to(inputs.dtype)  # (x, y) in [-1, 1]
    return F.grid_sample(inputs, grid, mode="bilinear", align_corners=False).squeeze(3)


def sample_uncertain_points(
    logits: torch.Tensor,
    num_points: int = HQ_NUM_POINTS,
    oversample_ratio: float = HQ_OVERSAMPLE_RATIO,
    importance_sample_ratio: float = HQ_IMPORTANCE_SAMPLE_RATIO,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """PointRend importance sampling of the least confident points.

    Draws ``int(num_points * oversample_ratio)`` uniform candidates, scores
    them by ``-|logit|`` (sampled bilinearly), keeps the
    ``int(importance_sample_ratio * num_points)`` most uncertain and fills the
    rest with fresh uniform points.

    Parameters
    ----------
    logits : torch.Tensor
        ``N x 1 x H x W`` mask logits (no gradient is needed).
    generator : torch.Generator, optional
        For reproducible draws; must live on ``logits.device``.

    Returns
    -------
    torch.Tensor
        ``N x num_points x 2`` (row, col) coordinates in ``[0, 1]``.
    """
    if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1 or num_points < 1:
        raise InvalidInputError(
            "need num_points >= 1, oversample_ratio >= 1 and importance_sample_ratio in [0, 1], got "
            f"{num_points}, {oversample_ratio}, {importance_sample_ratio}"
        )
    n = logits.shape[0]
    num_candidates = int(num_points * oversample_ratio)
    num_important = int(importance_sample_ratio * num_points)
    kwargs = {"device": logits.device, "dtype": logits.dtype, "generator": generator}
    with torch.no_grad():
        candidates = torch.rand(n, num_candidates, 2, **kwargs)
        uncertainty = -point_sample(logits, candidates)[:, 0].abs()
        top = uncertainty.topk(num_important, dim=1).indices
        chosen = torch.gather(candidates, 1, top.unsqueeze(-1).expand(-1, -1, 2))
        uniform = torch.rand(n, num_points - num_important, 2, **kwargs)
    return torch.cat([chosen, uniform], dim=1)


def point_sampled_mask_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    num_masks: float | None = None,
    num_points: int = HQ_NUM_POINTS,
    oversample_ratio: float = HQ_OVERSAMPLE_RATIO,
    importance_sample_ratio: float = HQ_IMPORTANCE_SAMPLE_RATIO,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """HQ-SAM's training loss: BCE + Dice on importance-sampled points.

    Points come from :func:`sample_uncertain_points` on ``logits``; logits and
    targets are both read at those points with :func:`point_sample` (so the
    target may have another resolution, e.g. 1024 vs 256 logits).  Per mask,
    ``bce = mean_points BCE(x, y)`` and ``dice = 1 - (2 sum(p y) + 1) /
    (sum(p) + sum(y) + 1)`` over the points; each term is summed over the
    masks and divided by ``num_masks`` (default: the batch size).

    Returns
    -------
    dict
        Scalars ``"loss"`` (``bce + dice``, weights 1 : 1), ``"bce"``, ``"dice"``.
    """
    _check_mask_batch(logits)
    if targets.ndim != logits.ndim or targets.shape[0] != logits.shape[0]:
        raise InvalidInputError(
            f"targets must be laid out like logits {tuple(logits.shape)}, got {tuple(targets.shape)}"
        )
    if logits.ndim == 3:
        logits, targets = logits.unsqueeze(1), targets.unsqueeze(1)
    if num_masks is None:
        num_masks = logits.shape[0]
    if num_masks <= 0:
        raise InvalidInputError(f"num_masks must be positive, got {num_masks}")
    coords = sample_uncertain_points(
        logits.detach(), num_points, oversample_ratio, importance_sample_ratio, generator
    )
    with torch.no_grad():
        point_targets = point_sample(targets.to(logits.dtype), coords)[:, 0]
    point_logits = point_sample(logits, coords)[:, 0]
    bce = F.binary_cross_entropy_with_logits(point_logits, point_targets, reduction="none")
    bce = bce.mean(1).sum() / num_masks
    dice = _soft_dice(torch.sigmoid(point_logits), point_targets, 1.0).sum() / num_masks
    return {"loss": bce + dice, "bce": bce, "dice": dice}


def distance_dice_loss(maps: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """The AIS decoder's loss: torch-em's ``DiceBasedDistanceLoss(mask_distances_in_bg=True)``.

    micro-sam trains its AIS decoder with it. Per channel ``k`` of :data:`AIS_CHANNELS
    <sum_core.modeling.AIS_CHANNELS>`, a Dice loss over the whole batch (all images and
    pixels summed together, as torch-em's channel-wise Dice)::

        D(p, q) = 1 - 2 sum(p q) / max(sum(p^2) + sum(q^2), 1e-7)

    ``loss = D(p0, q0) + D(p1 q0, q1 q0) + D(p2 q0, q2 q0)``: the foreground and the two
    distances, the distances only inside the target foreground ``q0``.

    Parameters
    ----------
    maps : torch.Tensor
        ``B×3×H×W`` decoder outputs (after the sigmoid, in 0..1).
    targets : torch.Tensor
        ``B×3×H×W`` targets (:func:`training.ais_targets.ais_targets`).

    Returns
    -------
    dict of str to torch.Tensor
        Scalars ``"loss"`` (the sum) and its three terms ``"foreground"``, ``"center"``,
        ``"boundary"``.

    Raises
    ------
    InvalidInputError
        If the shapes differ or are not ``B×3×H×W``.
    """
    _check_same_shape("targets", targets, maps)
    if maps.ndim != 4 or maps.shape[1] != 3:
        raise InvalidInputError(f"maps must be shaped B x 3 x H x W, got {tuple(maps.shape)}")
    targets = targets.to(maps.dtype)
    foreground = targets[:, 0]

    def dice(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _soft_dice(prob.reshape(1, -1), target.reshape(1, -1), 0.0, True, DISTANCE_DICE_EPS)[0]

    parts = {
        "foreground": dice(maps[:, 0], foreground),
        "center": dice(maps[:, 1] * foreground, targets[:, 1] * foreground),
        "boundary": dice(maps[:, 2] * foreground, targets[:, 2] * foreground),
    }
    return {"loss": parts["foreground"] + parts["center"] + parts["boundary"], **parts}
