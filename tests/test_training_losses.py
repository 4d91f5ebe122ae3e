"""Losses of training/losses.py against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from sum_core.errors import InvalidInputError
from training import losses

LN2 = math.log(2.0)


def t(values, shape=None):
    out = torch.tensor(values, dtype=torch.float32)
    return out.reshape(shape) if shape is not None else out


def test_sigmoid_focal_loss_hand_values():
    # logit 0 -> p = 0.5, ce = ln 2, (1 - p_t)^2 = 0.25; alpha_t = 0.25 (y=1) / 0.75 (y=0)
    loss = losses.sigmoid_focal_loss(t([0.0, 0.0]), t([1.0, 0.0]))
    assert torch.allclose(loss, t([0.0625 * LN2, 0.1875 * LN2]))
    # confident and right -> almost nothing; confident and wrong -> alpha_t * ce
    loss = losses.sigmoid_focal_loss(t([10.0, 10.0]), t([1.0, 0.0]))
    assert loss[0] < 1e-9
    assert loss[1] == pytest.approx(0.75 * (10 + math.log1p(math.exp(-10))), rel=1e-4)


def test_focal_loss_per_sample_mean_and_layouts():
    logits = t([0.0, 0.0, 0.0, 0.0], (1, 1, 2, 2))
    targets = t([1.0, 0.0, 0.0, 0.0], (1, 1, 2, 2))
    expected = (0.0625 + 3 * 0.1875) * LN2 / 4
    assert losses.focal_loss(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    assert losses.focal_loss(logits[:, 0], targets[:, 0]).item() == pytest.approx(expected, rel=1e-6)


def test_dice_loss_hand_value_and_empty_masks():
    logits = torch.zeros(1, 2, 2)  # p = 0.5 everywhere
    targets = t([[1.0, 0.0], [0.0, 0.0]], (1, 2, 2))
    # 1 - (2*0.5 + 1) / (2 + 1 + 1) = 0.5
    assert losses.dice_loss(logits, targets).item() == pytest.approx(0.5)
    assert losses.dice_loss(logits.unsqueeze(1), targets.unsqueeze(1)).item() == pytest.approx(0.5)
    empty_logits = torch.full((2, 1, 3, 3), -30.0)
    empty = torch.zeros(2, 1, 3, 3)
    assert torch.allclose(losses.dice_loss(empty_logits, empty), torch.zeros(2), atol=1e-6)
    assert torch.allclose(losses.focal_loss(empty_logits, empty), torch.zeros(2), atol=1e-9)
    # predicting foreground everywhere on an empty target: 1 - 1 / (9 + 1)
    assert losses.dice_loss(-empty_logits, empty)[0].item() == pytest.approx(0.9, abs=1e-6)


def test_uncertainty_aware_focal_weights_pixels_by_certainty():
    logits = t([0.0, 0.0], (1, 1, 2))
    targets = t([1.0, 0.0], (1, 1, 2))
    u = t([0.0, 1.0], (1, 1, 2))
    # (1 * 0.0625 ln2 + 0 * 0.1875 ln2) / 2
    value = losses.uncertainty_aware_focal_loss(logits, targets, u)
    assert value.shape == (1,)
    assert value.item() == pytest.approx(0.03125 * LN2, rel=1e-6)
    half = losses.uncertainty_aware_focal_loss(logits, targets, torch.full_like(u, 0.5))
    assert half.item() == pytest.approx(0.5 * losses.focal_loss(logits, targets).item(), rel=1e-6)


def test_uncertainty_aware_dice_hard_threshold_and_soft_mode():
    logits = torch.zeros(1, 1, 2, 2)
    targets = t([[1.0, 0.0], [0.0, 0.0]], (1, 1, 2, 2))
    u = t([[0.0, 0.5], [0.3, 1.0]], (1, 1, 2, 2))  # c = [[1, .5], [.7, 0]]
    # theta 0.6 keeps (0,0) and (1,0): I = 0.5, S = 1 + 1 -> 1 - 2/3
    hard = losses.uncertainty_aware_dice_loss(logits, targets, u)
    assert hard.item() == pytest.approx(1 / 3, rel=1e-6)
    # theta 0.4 also keeps (0,1): S = 1.5 + 1 -> 1 - 2/3.5
    lower = losses.uncertainty_aware_dice_loss(logits, targets, u, threshold=0.4)
    assert lower.item() == pytest.approx(3 / 7, rel=1e-6)
    # soft: w = c; sum(wp wq) = 0.5, sum(wp) = 1.1, sum(wq) = 1 -> 1 - 2/3.1
    soft = losses.uncertainty_aware_dice_loss(logits, targets, u, mode="soft")
    assert soft.item() == pytest.approx(1 - 2 / 3.1, rel=1e-6)
    with pytest.raises(InvalidInputError, match="mode"):
        losses.uncertainty_aware_dice_loss(logits, targets, u, mode="fuzzy")


def test_all_uncertain_maps_give_zero_loss_and_zero_gradient():
    logits = torch.randn(2, 1, 4, 4, requires_grad=True)
    targets = (torch.rand(2, 1, 4, 4) > 0.5).float()
    u = torch.ones(2, 1, 4, 4)
    focal = losses.uncertainty_aware_focal_loss(logits, targets, u)
    dice = losses.uncertainty_aware_dice_loss(logits, targets, u)
    assert torch.equal(focal, torch.zeros(2))
    assert torch.equal(dice, torch.zeros(2))
    (focal.sum() + dice.sum()).backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_fully_certain_maps_reduce_to_plain_losses():
    logits = torch.randn(3, 5, 5)
    targets = (torch.rand(3, 5, 5) > 0.5).float()
    u = torch.zeros(3, 5, 5)
    assert torch.allclose(
        losses.uncertainty_aware_focal_loss(logits, targets, u), losses.focal_loss(logits, targets)
    )
    assert torch.allclose(
        losses.uncertainty_aware_dice_loss(logits, targets, u), losses.dice_loss(logits, targets)
    )


def test_iou_head_loss_and_sam_loss_combination():
    logits = t([[1.0, -1.0], [1.0, -1.0]], (1, 1, 2, 2))  # predicted: left column
    targets = t([[1.0, 1.0], [0.0, 0.0]], (1, 1, 2, 2))  # target: top row -> IoU 1/3
    iou = losses.iou_head_loss(t([0.5]), logits, targets)
    assert iou.item() == pytest.approx((0.5 - 1 / 3) ** 2, rel=1e-6)
    # two empty masks agree perfectly
    empty = losses.iou_head_loss(t([[1.0]]), -logits.abs(), torch.zeros_like(targets))
    assert empty.item() == pytest.approx(0.0)
    terms = losses.sam_loss(logits, targets, t([0.5]))
    expected = (
        20 * losses.focal_loss(logits, targets) + losses.dice_loss(logits, targets) + iou
    ).item()
    assert terms["loss"].item() == pytest.approx(expected, rel=1e-6)
    assert terms["iou"].item() == pytest.approx(iou.item())
    no_iou = losses.sam_loss(logits, targets)
    assert no_iou["iou"].item() == 0.0
    assert no_iou["loss"].item() == pytest.approx(expected - iou.item(), rel=1e-6)
    with pytest.raises(InvalidInputError, match="iou_pred"):
        losses.iou_head_loss(t([0.5, 0.5]), logits, targets)


def test_uncertainty_aware_loss_combination():
    logits = torch.randn(2, 1, 6, 6)
    targets = (torch.rand(2, 1, 6, 6) > 0.5).float()
    u = torch.rand(2, 1, 6, 6)
    terms = losses.uncertainty_aware_loss(logits, targets, u, threshold=0.5)
    focal = losses.uncertainty_aware_focal_loss(logits, targets, u).mean()
    dice = losses.uncertainty_aware_dice_loss(logits, targets, u, threshold=0.5).mean()
    assert terms["loss"].item() == pytest.approx((20 * focal + dice).item(), rel=1e-6)


def test_shape_mismatch_is_rejected():
    with pytest.raises(InvalidInputError, match="uncertainty must have the shape"):
        losses.uncertainty_aware_focal_loss(
            torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4)
        )
    with pytest.raises(InvalidInputError, match="B x 1 x H x W"):
        losses.dice_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))


def test_point_sample_bilinear_at_normalised_row_col():
    image = t([[0.0, 1.0], [2.0, 3.0]], (1, 1, 2, 2))
    coords = t([[0.25, 0.75], [0.75, 0.25], [0.5, 0.5], [0.25, 0.5]], (1, 4, 2))
    values = losses.point_sample(image, coords)
    assert values.shape == (1, 1, 4)
    assert torch.allclose(values[0, 0], t([1.0, 2.0, 1.5, 0.5]))


def test_sample_uncertain_points_prefers_low_confidence_and_is_seeded():
    logits = torch.full((1, 1, 16, 16), 50.0)
    logits[..., :8, :] = 0.0  # top half maximally uncertain
    gen = torch.Generator().manual_seed(0)
    coords = losses.sample_uncertain_points(logits, num_points=100, generator=gen)
    assert coords.shape == (1, 100, 2)
    assert coords.min() >= 0 and coords.max() <= 1
    assert (coords[0, :75, 0] < 0.5).all()
    again = losses.sample_uncertain_points(
        logits, num_points=100, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(coords, again)


def test_point_sampled_mask_loss_hand_value_and_num_masks():
    logits = torch.zeros(2, 1, 8, 8)  # p = 0.5 everywhere
    # other resolution, all background (grid_sample's zero padding cannot change it)
    targets = torch.zeros(2, 1, 32, 32)
    p = 400
    gen = torch.Generator().manual_seed(1)
    terms = losses.point_sampled_mask_loss(logits, targets, num_points=p, generator=gen)
    dice = 1 - 1 / (0.5 * p + 1)
    assert terms["bce"].item() == pytest.approx(LN2, rel=1e-5)
    assert terms["dice"].item() == pytest.approx(dice, rel=1e-5)
    assert terms["loss"].item() == pytest.approx(LN2 + dice, rel=1e-5)
    halved = losses.point_sampled_mask_loss(logits[:, 0], targets[:, 0], num_masks=4, num_points=p)
    assert halved["loss"].item() == pytest.approx((LN2 + dice) / 2, rel=1e-5)
    with pytest.raises(InvalidInputError, match="num_masks"):
        losses.point_sampled_mask_loss(logits, targets, num_masks=0, num_points=p)


def test_point_sampled_mask_loss_gradient_flows_to_logits():
    logits = torch.zeros(1, 1, 8, 8, requires_grad=True)
    targets = torch.zeros(1, 1, 8, 8)
    targets[..., 2:6, 2:6] = 1
    losses.point_sampled_mask_loss(logits, targets, num_points=64)["loss"].backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
