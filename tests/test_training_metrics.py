"""Metrics of training/metrics.py on hand-checked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sum_core.errors import InvalidInputError
from training import metrics


def square(shape, r0, c0, size):
    m = np.zeros(shape, dtype=bool)
    m[r0 : r0 + size, c0 : c0 + size] = True
    return m


def test_mask_iou_known_cases():
    a = square((10, 10), 2, 2, 4)
    assert metrics.mask_iou(a, a) == 1.0
    assert metrics.mask_iou(a, square((10, 10), 6, 6, 4)) == 0.0
    assert metrics.mask_iou(a, square((10, 10), 2, 3, 4)) == pytest.approx(12 / 20)
    assert metrics.mask_iou(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
    with pytest.raises(InvalidInputError, match="target must have the shape"):
        metrics.mask_iou(a, a[:5])


def test_mask_boundary_width_follows_the_diagonal():
    # 10 x 10: 0.02 * 14.1 rounds to 0 -> at least 1 pixel
    band = metrics.mask_boundary(square((10, 10), 2, 2, 4))
    assert band.sum() == 16 - 4
    # 100 x 100: round(0.02 * 141.4) = 3 -> 20 x 20 square minus its 14 x 14 core
    band = metrics.mask_boundary(square((100, 100), 40, 40, 20))
    assert band.sum() == 400 - 196
    # the image border counts as an edge (one-pixel padding)
    full = metrics.mask_boundary(np.ones((5, 5), dtype=bool))
    ring = np.ones((5, 5), dtype=bool)
    ring[1:4, 1:4] = False
    assert np.array_equal(full, ring)


def test_boundary_iou_hand_checked():
    gt = square((10, 10), 2, 2, 4)
    pred = square((10, 10), 2, 3, 4)
    # each band has 12 pixels; the overlap (rows 2-5, cols 3-5) minus both cores
    # {(3,3),(3,4),(3,5),(4,3),(4,4),(4,5)} leaves 6 -> 6 / (12 + 12 - 6)
    assert metrics.boundary_iou(pred, gt) == pytest.approx(1 / 3)
    assert metrics.boundary_iou(gt, gt) == 1.0
    assert metrics.boundary_iou(gt, square((10, 10), 6, 6, 4)) == 0.0
    assert metrics.boundary_iou(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0


def test_auroc_perfect_inverted_random_and_ties():
    error = np.zeros((4, 4), dtype=bool)
    error[0] = True
    perfect = error.astype(float)
    assert metrics.uncertainty_auroc(perfect, error) == 1.0
    assert metrics.uncertainty_auroc(1 - perfect, error) == 0.0
    assert metrics.uncertainty_auroc(np.full((4, 4), 0.3), error) == 0.5
    rng = np.random.default_rng(0)
    big_error = rng.random((200, 200)) < 0.2
    assert metrics.uncertainty_auroc(rng.random((200, 200)), big_error) == pytest.approx(0.5, abs=0.02)


def test_auroc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, size=(6, 5)).astype(float)
    error = rng.random((6, 5)) < 0.4
    pos, neg = scores[error], scores[~error]
    diff = pos[:, None] - neg[None, :]
    expected = ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size
    assert metrics.uncertainty_auroc(scores, error) == pytest.approx(expected)


def test_auroc_auprc_degenerate_cases():
    u = np.random.default_rng(2).random((3, 3))
    none = np.zeros((3, 3), dtype=bool)
    assert math.isnan(metrics.uncertainty_auroc(u, none))
    assert math.isnan(metrics.uncertainty_auroc(u, ~none))
    assert math.isnan(metrics.uncertainty_auprc(u, none))
    assert metrics.uncertainty_auprc(u, ~none) == 1.0
    with pytest.raises(InvalidInputError, match="finite"):
        metrics.uncertainty_auroc(np.full((3, 3), np.nan), none)


def test_auprc_hand_values_and_region():
    scores = np.array([[0.9, 0.8, 0.7, 0.6]])
    error = np.array([[True, False, True, False]])
    # P/R steps: (1, .5), (.5, .5), (2/3, 1) -> .5 * 1 + .5 * 2/3
    assert metrics.uncertainty_auprc(scores, error) == pytest.approx(0.5 + 1 / 3)
    tied = np.array([[0.9, 0.9, 0.1]])
    # one threshold at 0.9: P .5, R .5; then P 2/3, R 1
    assert metrics.uncertainty_auprc(tied, np.array([[True, False, True]])) == pytest.approx(0.25 + 1 / 3)
    # restricting to a region drops the misranked pixel
    region = np.array([[True, False, True, True]])
    assert metrics.uncertainty_auprc(scores, error, region) == 1.0
    assert metrics.uncertainty_auroc(scores, error, region) == 1.0


def test_certainty_accuracy_split():
    target = np.array([[1, 1, 0, 0]], dtype=bool)
    pred = np.array([[1, 0, 0, 1]], dtype=bool)
    certainty = np.array([[0.9, 0.2, 0.7, 0.6]])  # 0.6 is not > 0.6 -> uncertain
    result = metrics.certainty_accuracy(pred, target, certainty)
    assert result == (1.0, 0.0, 0.5)
    everything = metrics.certainty_accuracy(pred, target, np.ones((1, 4)))
    assert everything.certain == 0.5 and math.isnan(everything.uncertain)
    assert everything.certain_fraction == 1.0
