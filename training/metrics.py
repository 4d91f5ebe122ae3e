"""Evaluation metrics (numpy): mask IoU, boundary IoU, uncertainty quality.

Masks are 2D arrays interpreted as booleans (non-zero = foreground).  The
uncertainty metrics score how well an uncertainty map finds the *error*
pixels (``prediction != target``), as suggested by SUM App. D.3: AUROC,
AUPRC (average precision) and the accuracy inside the certain and the
uncertain region.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage

from sum_core.errors import InvalidInputError

BOUNDARY_DILATION_RATIO = 0.02


def _masks(name_a: str, a, name_b: str, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2:
        raise InvalidInputError(f"{name_a} must be a 2D H x W array, got shape {a.shape}")
    if a.shape != b.shape:
        raise InvalidInputError(
            f"{name_b} must have the shape of {name_a} {a.shape}, got {b.shape}"
        )
    return a, b


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def mask_iou(prediction, target) -> float:
    """Intersection over union of two masks; 1.0 when both are empty."""
    pred, gt = _masks("prediction", prediction, "target", target)
    return _iou(pred.astype(bool), gt.astype(bool))


def mask_boundary(mask, dilation_ratio: float = BOUNDARY_DILATION_RATIO) -> np.ndarray:
    """Inner boundary band of a mask, as in Cheng et al.'s boundary IoU code.

    ``d = max(1, round(dilation_ratio * sqrt(H^2 + W^2)))``; the mask is padded
    with one background pixel on every side, eroded ``d`` times with a 3 x 3
    square, cropped back, and the band is ``mask & ~eroded``.  The padding
    makes the image border count as an edge.
    """
    m = np.asarray(mask).astype(bool)
    if m.ndim != 2:
        raise InvalidInputError(f"mask must be a 2D H x W array, got shape {m.shape}")
    h, w = m.shape
    dilation = max(1, int(round(dilation_ratio * np.sqrt(h * h + w * w))))
    padded = np.pad(m, 1)
    eroded = ndimage.binary_erosion(padded, structure=np.ones((3, 3), bool), iterations=dilation)
    return m & ~eroded[1:-1, 1:-1]


def boundary_iou(
    prediction, target, dilation_ratio: float = BOUNDARY_DILATION_RATIO
) -> float:
    """IoU of the boundary bands (:func:`mask_boundary`) of two masks.

    The band width is set by the image diagonal (HQ-SAM / SUM use 0.02).
    Returns 1.0 when both masks (hence both bands) are empty.
    """
    pred, gt = _masks("prediction", prediction, "target", target)
    return _iou(mask_boundary(pred, dilation_ratio), mask_boundary(gt, dilation_ratio))


def _scores_and_labels(uncertainty, error, region) -> tuple[np.ndarray, np.ndarray]:
    u, err = _masks("uncertainty", uncertainty, "error", error)
    u = u.astype(np.float64)
    if not np.isfinite(u).all():
        raise InvalidInputError("uncertainty must be finite")
    err = err.astype(bool)
    if region is None:
        return u.ravel(), err.ravel()
    _, sel = _masks("uncertainty", u, "region", region)
    sel = sel.astype(bool)
    return u[sel], err[sel]


def uncertainty_auroc(uncertainty, error, region=None) -> float:
    """Area under the ROC curve of ``uncertainty`` as a detector of error pixels.

    Computed as the Mann-Whitney statistic with average ranks for ties: the
    probability that a random error pixel is more uncertain than a random
    correct one (ties count one half).  1 = perfect ranking, 0.5 = random,
    0 = inverted.

    Parameters
    ----------
    uncertainty : array_like
        ``H x W`` scores, higher = less certain.
    error : array_like
        ``H x W`` booleans, True where the prediction is wrong.
    region : array_like, optional
        ``H x W`` booleans restricting the pixels (e.g. a boundary band).

    Returns
    -------
    float
        The AUROC, or NaN when there are no error pixels or no correct
        pixels (the curve is undefined).
    """
    scores, labels = _scores_and_labels(uncertainty, error, region)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], ordered.size]
    average_rank = (starts + 1 + ends) / 2.0  # mean of the 1-based ranks start+1 .. end
    ranks = average_rank[np.cumsum(first) - 1]
    rank_sum = ranks[labels[order]].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def uncertainty_auprc(uncertainty, error, region=None) -> float:
    """Average precision of ``uncertainty`` as a detector of error pixels.

    ``AP = sum_k (R_k - R_{k-1}) P_k`` over the distinct uncertainty values
    taken as thresholds from high to low (the step-wise area under the
    precision-recall curve, no interpolation).  Its chance level is the error
    rate.

    Returns
    -------
    float
        The AP; 1.0 when every pixel is an error; NaN when there is no error
        pixel (recall undefined).
    """
    scores, labels = _scores_and_labels(uncertainty, error, region)
    n_pos = int(labels.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    ordered = scores[order]
    last = np.r_[ordered[1:] != ordered[:-1], True]  # last index of each tie group
    true_pos = np.cumsum(labels[order])[last]
    predicted = np.flatnonzero(last) + 1
    precision = true_pos / predicted
    recall = true_pos / n_pos
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


class CertaintyAccuracy(NamedTuple):
    """Pixel accuracy of a prediction split by a certainty threshold."""

    certain: float
    """Accuracy where ``certainty > threshold`` (NaN if no such pixel)."""
    uncertain: float
    """Accuracy where ``certainty <= threshold`` (NaN if no such pixel)."""
    certain_fraction: float
    """Fraction of pixels in the certain region."""


def certainty_accuracy(
    prediction, target, certainty, threshold: float = 0.6
) -> CertaintyAccuracy:
    """Accuracy in the certain vs uncertain region (SUM App. D.3).

    SUM reports 98 % pseudo-label accuracy where ``c > 0.6`` against 28.5 %
    elsewhere: a useful certainty map separates the two.
    """
    pred, gt = _masks("prediction", prediction, "target", target)
    _, cert = _masks("prediction", pred, "certainty", certainty)
    correct = pred.astype(bool) == gt.astype(bool)
    certain = np.asarray(cert, dtype=np.float64) > threshold
    n_certain = int(certain.sum())
    n_uncertain = certain.size - n_certain
    acc_certain = float(correct[certain].mean()) if n_certain else float("nan")
    acc_uncertain = float(correct[~certain].mean()) if n_uncertain else float("nan")
    return CertaintyAccuracy(acc_certain, acc_uncertain, n_certain / certain.size)
