"""The ais scheme's targets and loss equal torch-em's (the reference micro-sam trains with).

Targets: ``PerObjectDistanceTransform`` with micro-sam's arguments (``default_sam_dataset``:
``distances=True, boundary_distances=True, directed_distances=False, foreground=True``,
``min_size=25``; ``instances`` only prepends the label image, which the loss drops).
torch-em computes in float32 (its distance transforms return float32) and so do we, with
the same operations in the same order; the tolerance 1e-6 (a few float32 ulps of values in
[0, 1]) covers a last-bit difference of the square roots (measured: 0, bit for bit).

Loss: ``DiceBasedDistanceLoss(mask_distances_in_bg=True)``, relative error < 1e-5 (float32
sums in another order).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import reference_impl
from training.ais_targets import AIS_MIN_SIZE, ais_targets
from training.losses import distance_dice_loss

TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def torch_em():
    try:
        return reference_impl.torch_em()
    except ModuleNotFoundError:
        pytest.skip("torch-em (test-only reference) is not installed")


def reference_targets(torch_em, labels: np.ndarray) -> np.ndarray:
    from torch_em.transform.label import PerObjectDistanceTransform

    transform = PerObjectDistanceTransform(
        distances=True, boundary_distances=True, directed_distances=False, foreground=True,
        instances=False, min_size=AIS_MIN_SIZE,
    )
    return transform(labels)


def discs(shape, count, radius, seed) -> np.ndarray:
    """Random discs and squares (later ones overwrite earlier ones: touching, cut objects)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint16)
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    for k in range(count):
        r, c, size = rng.integers(0, shape[0]), rng.integers(0, shape[1]), rng.integers(2, radius)
        if k % 2:
            labels[(yy - r) ** 2 + (xx - c) ** 2 <= size**2] = k + 1
        else:
            labels[max(r - size, 0) : r + size, max(c - size, 0) : c + size] = k + 1
    return labels


def hand_made() -> dict[str, np.ndarray]:
    touching = np.zeros((40, 60), np.int32)
    touching[5:25, 5:30], touching[5:25, 30:55], touching[25:38, 10:50] = 1, 2, 3
    border = np.zeros((50, 50), np.uint8)
    border[:20, :20], border[30:, 10:40], border[10:30, 44:] = 4, 5, 6  # at three image edges
    tiny = np.zeros((30, 30), np.uint16)
    tiny[2:6, 2:6], tiny[10:26, 10:26], tiny[28, 28] = 1, 2, 3  # 16 px and 1 px are < min_size
    ring = np.zeros((60, 60), np.int64)
    ring[5:55, 5:15] = ring[5:15, 5:55] = ring[45:55, 5:55] = 7  # centroid outside the object
    ring[30:33, 40:43] = 9
    ring[33:36, 43:46] = 9  # touching diagonally only: one 8-connected object
    split = np.zeros((40, 40), np.uint8)
    split[5:15, 5:15] = split[25:35, 25:35] = 1  # one label, two pieces: two objects
    far = np.zeros((1040, 1392), np.uint32)
    far[990:1040, 1330:1392] = 17  # far from the origin, at the corner
    far[1000:1030, 1290:1330] = 3
    whole = np.ones((20, 30), np.uint8)  # one object, no boundary at all
    return {
        "touching": touching, "border": border, "tiny": tiny, "ring": ring, "split": split,
        "far": far, "whole": whole, "bool": touching > 0,
    }


@pytest.mark.parametrize("name", list(hand_made()))
def test_targets_equal_torch_em_on_hand_made_labels(torch_em, name):
    labels = hand_made()[name]
    ours = ais_targets(labels)
    reference = reference_targets(torch_em, labels)
    assert ours.shape == (3, *labels.shape) and ours.dtype == np.float32
    assert np.abs(ours - reference).max() <= TOLERANCE


def test_targets_equal_torch_em_on_random_and_camera_sized_labels(torch_em):
    rng = np.random.default_rng(0)
    for seed in range(12):
        shape = tuple(int(s) for s in rng.integers(20, 160, 2))
        labels = discs(shape, int(rng.integers(1, 25)), 20, seed)
        assert np.abs(ais_targets(labels) - reference_targets(torch_em, labels)).max() <= TOLERANCE
    camera = discs((1040, 1392), 150, 40, 99)
    ours = ais_targets(camera)
    assert np.abs(ours - reference_targets(torch_em, camera)).max() <= TOLERANCE
    assert ours[0].sum() > 0.1 * camera.size  # a real test: many objects, many of them touching


def test_targets_by_definition():
    labels = np.zeros((9, 9), np.uint8)
    labels[2:7, 2:7] = 3
    labels[0, 0] = 1  # below min_size: background
    fg, centre, boundary = ais_targets(labels)
    assert fg.sum() == 25 and fg[0, 0] == 0
    assert centre[4, 4] == 0 and boundary[4, 4] == 0  # the centre
    assert centre[2, 2] == pytest.approx(1, abs=1e-6) and boundary[2, 4] == pytest.approx(1, abs=1e-6)
    assert (centre[fg == 0] == 1).all() and (boundary[fg == 0] == 1).all()  # torch-em's fill value
    assert ais_targets(labels, min_size=0)[0, 0, 0] == 1


def test_bad_labels_are_refused():
    with pytest.raises(ValueError, match="2D integer label image"):
        ais_targets(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="2D integer label image"):
        ais_targets(np.zeros((2, 4, 4), np.uint8))


def test_loss_equals_dice_based_distance_loss(torch_em):
    from torch_em.loss import DiceBasedDistanceLoss

    reference = DiceBasedDistanceLoss(mask_distances_in_bg=True)
    generator = torch.Generator().manual_seed(0)
    labels = discs((256, 256), 12, 30, 1)
    targets = torch.from_numpy(np.stack([ais_targets(labels), ais_targets(labels[::-1].copy())]))
    for targets_, maps in (
        (targets, torch.rand(2, 3, 256, 256, generator=generator)),
        (targets[:1], targets[:1].clone()),  # perfect prediction: 0
        (targets[:1], 1 - targets[:1]),
        (torch.zeros(1, 3, 32, 32), torch.rand(1, 3, 32, 32, generator=generator)),  # empty foreground
    ):
        maps = maps.clone().requires_grad_(True)
        ours = distance_dice_loss(maps, targets_)
        expected = reference(maps, targets_)
        assert torch.allclose(ours["loss"], expected, rtol=1e-5, atol=1e-7)
        assert torch.allclose(ours["loss"], ours["foreground"] + ours["center"] + ours["boundary"])
        ours["loss"].backward()
        ours_grad = maps.grad.clone()
        maps.grad = None
        expected.backward()
        assert torch.allclose(ours_grad, maps.grad, rtol=1e-4, atol=1e-9)
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        distance_dice_loss(torch.rand(1, 2, 8, 8), torch.rand(1, 2, 8, 8))
