"""Prompt samplers of training/prompt_sampling.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from sum_core.errors import InvalidInputError
from training import prompt_sampling as ps


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_weighted_sampling_frequencies_follow_certainty():
    region = np.zeros((2, 3), dtype=bool)
    region[0, :] = True
    region[1, 0] = True
    certainty = np.array([[0.1, 0.2, 0.3], [0.4, 1.0, 1.0]])  # (1, 1), (1, 2) are outside
    n = 20000
    points = ps.sample_weighted_points(region, certainty, n, replacement=True, generator=gen(0))
    assert points.shape == (n, 2) and points.dtype == np.int64
    counts = np.zeros((2, 3), dtype=np.int64)
    np.add.at(counts, (points[:, 0], points[:, 1]), 1)
    assert counts[1, 1] == 0 and counts[1, 2] == 0
    observed = np.array([counts[0, 0], counts[0, 1], counts[0, 2], counts[1, 0]])
    expected = n * np.array([0.1, 0.2, 0.3, 0.4])
    assert stats.chisquare(observed, expected).pvalue > 0.001
    # the same counts are far from a uniform draw: the test has power
    assert stats.chisquare(observed, np.full(4, n / 4)).pvalue < 1e-6


def test_weighted_sampling_is_deterministic_and_accepts_tensors():
    region = torch.rand(16, 16, generator=gen(3)) > 0.5
    certainty = torch.rand(16, 16, generator=gen(4))
    a = ps.sample_weighted_points(region, certainty, 10, generator=gen(7))
    b = ps.sample_weighted_points(region.numpy(), certainty.numpy(), 10, generator=gen(7))
    assert np.array_equal(a, b)
    assert len(np.unique(a, axis=0)) == 10  # no replacement
    assert region[a[:, 0], a[:, 1]].all()


def test_weighted_sampling_fallbacks():
    region = np.zeros((4, 4), dtype=bool)
    assert ps.sample_weighted_points(region, None, 3).shape == (0, 2)
    region[1, 1:3] = True
    zero = np.zeros((4, 4))
    points = ps.sample_weighted_points(region, zero, 2, generator=gen(1))
    assert sorted(map(tuple, points)) == [(1, 1), (1, 2)]  # uniform over the region
    few = np.zeros((4, 4))
    few[1, 2] = 0.5
    limited = ps.sample_weighted_points(region, few, 5, generator=gen(1))
    assert limited.tolist() == [[1, 2]]
    with pytest.raises(InvalidInputError, match="certainty must have the shape"):
        ps.sample_weighted_points(region, np.ones((3, 3)))
    with pytest.raises(InvalidInputError, match="non-negative"):
        ps.sample_weighted_points(region, -np.ones((4, 4)))


def test_error_click_labels_come_from_the_target():
    target = np.zeros((6, 6), dtype=bool)
    target[1:4, 1:4] = True
    pred = np.zeros_like(target)
    point, label = ps.sample_error_click(pred, target, generator=gen(0))
    assert label == 1 and target[tuple(point)]
    point, label = ps.sample_error_click(np.ones_like(target), target, generator=gen(0))
    assert label == 0 and not target[tuple(point)]
    assert ps.sample_error_click(target, target) is None
    # certainty zero on the false negatives forces a false-positive click
    pred = target.copy()
    pred[1, 1] = False  # one false negative
    pred[5, 5] = True  # one false positive
    certainty = np.ones((6, 6))
    certainty[1, 1] = 0.0
    point, label = ps.sample_error_click(pred, target, certainty, generator=gen(0))
    assert point.tolist() == [5, 5] and label == 0


def test_box_from_mask_inclusive_indices():
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:5, 3:9] = True
    assert ps.box_from_mask(mask).tolist() == [2.0, 3.0, 4.0, 8.0]
    with pytest.raises(InvalidInputError, match="empty"):
        ps.box_from_mask(np.zeros((3, 3)))


def test_jitter_box_translates_within_bounds():
    boxes = np.tile(np.array([[10.0, 20.0, 410.0, 120.0]]), (2000, 1))  # h 400, w 100
    out = ps.jitter_box(boxes, generator=gen(0))
    offsets = out - boxes
    assert np.allclose(offsets[:, :2], offsets[:, 2:])  # same offset on both corners
    assert offsets.min() >= 0.0
    assert offsets[:, 0].max() == pytest.approx(20.0)  # std 40 px: clamped at 20
    assert offsets[:, 1].max() <= 20.0
    assert 0.4 < np.mean(offsets[:, 1] == 0) < 0.6  # negative noise clamped to 0
    small = ps.jitter_box(np.array([0.0, 0.0, 10.0, 10.0]), generator=gen(1))
    assert small.shape == (4,)
    assert np.all(small - [0, 0, 10, 10] < 10.0)  # std 1 px
    whole = np.array([0.0, 0.0, 399.0, 399.0])
    assert ps.jitter_box(whole, generator=gen(2)).max() > 399.0  # this draw leaves the image
    clipped = ps.jitter_box(whole, generator=gen(2), image_shape=(400, 400))
    assert clipped.max() == 399.0
    first = ps.jitter_box(boxes[:3], generator=gen(5))
    assert np.array_equal(first, ps.jitter_box(boxes[:3], generator=gen(5)))


def test_noisy_mask_prompt_only_changes_the_boundary_band():
    masks = torch.zeros(2, 1, 256, 256)
    masks[:, :, 64:192, 64:192] = 1.0
    out = ps.noisy_mask_prompt(masks, generator=gen(0))
    assert out.shape == (2, 1, 256, 256)
    assert set(out.unique().tolist()) <= {0.0, 255.0}
    clean = torch.zeros(256, 256)
    clean[64:192, 64:192] = 255.0
    interior = torch.zeros(256, 256, dtype=torch.bool)
    interior[80:176, 80:176] = True
    exterior = torch.ones(256, 256, dtype=torch.bool)
    exterior[48:208, 48:208] = False
    for b in range(2):
        assert torch.equal(out[b, 0][interior], clean[interior])
        assert torch.equal(out[b, 0][exterior], clean[exterior])
    assert not torch.equal(out[0, 0], clean)  # the band is noisy
    assert torch.equal(out, ps.noisy_mask_prompt(masks[:, 0], generator=gen(0)))


def test_center_click_largest_error_component():
    target = np.zeros((20, 20), dtype=bool)
    target[2:11, 2:11] = True  # 9 x 9 square centred at (6, 6)
    point, label = ps.center_click(np.zeros_like(target), target)
    assert point.tolist() == [6, 6] and label == 1
    pred = target.copy()
    pred[12:20, 12:20] = True  # 8 x 8 false positive, touching the border
    pred[2:4, 2:4] = False  # small false negative
    point, label = ps.center_click(pred, target)
    assert label == 0
    # the image border counts as boundary: centre of the 8 x 8 block is (15 or 16)
    assert point.tolist() == [15, 15]
    assert ps.center_click(target, target) is None
    full = np.ones((5, 5), dtype=bool)
    assert ps.center_click(np.zeros_like(full), full)[0].tolist() == [2, 2]
    with pytest.raises(InvalidInputError, match="same shape"):
        ps.center_click(full, target)
