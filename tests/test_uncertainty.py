"""Tests for sum_core.uncertainty: hand-computed map values and prompt perturbations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sum_core.errors import InvalidInputError
from sum_core.prediction import PredictOptions
from sum_core.uncertainty import bernoulli_entropy, disagreement, ensemble_entropy, perturb_prompts


def h2(p: float) -> float:
    """Binary entropy in bits, for hand-computed expectations."""
    return 0.0 if p in (0.0, 1.0) else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


# --- disagreement --------------------------------------------------------------------------------


def test_disagreement_hand_computed():
    sam = torch.tensor([0.0, 0.0, 100.0, -100.0, math.log(3.0)])
    hq = torch.tensor([0.0, math.log(3.0), -100.0, -100.0, -math.log(3.0)])
    u = disagreement(sam, hq)
    assert u.dtype == torch.float32 and u.shape == (5,)
    # sigmoid(log 3) = 0.75, sigmoid(-log 3) = 0.25
    torch.testing.assert_close(u, torch.tensor([0.0, 0.25, 1.0, 0.0, 0.5]), atol=1e-6, rtol=0)


def test_disagreement_is_symmetric_and_in_range():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 1, 8, 8, generator=g) * 20
    u = disagreement(a, b)
    assert torch.equal(u, disagreement(b, a))
    assert u.shape == (1, 8, 8)
    assert (u >= 0).all() and (u <= 1).all()


def test_disagreement_float64_and_half_inputs_give_float32():
    a = torch.zeros(3, dtype=torch.float64)
    assert disagreement(a, a + 100).dtype == torch.float32
    assert disagreement(a.half(), a.half()).dtype == torch.float32


def test_disagreement_errors():
    with pytest.raises(InvalidInputError, match=r"hq_logits: shape \(1, 4\) differs from sam_logits shape \(1, 3\)"):
        disagreement(torch.zeros(1, 3), torch.zeros(1, 4))
    with pytest.raises(InvalidInputError, match=r"sam_logits: expected a torch.Tensor, got ndarray"):
        disagreement(np.zeros(3), torch.zeros(3))
    with pytest.raises(InvalidInputError, match=r"hq_logits: expected floating-point logits, got dtype torch.int64"):
        disagreement(torch.zeros(3), torch.zeros(3, dtype=torch.long))


# --- bernoulli_entropy ---------------------------------------------------------------------------


def test_entropy_hand_computed():
    s = torch.tensor([0.0, math.log(3.0), -math.log(3.0), 100.0, -100.0, 1e4, -1e4])
    h = bernoulli_entropy(s)
    expected = torch.tensor([1.0, h2(0.75), h2(0.25), 0.0, 0.0, 0.0, 0.0])
    assert h.dtype == torch.float32
    torch.testing.assert_close(h, expected, atol=1e-6, rtol=0)
    assert h[0].item() == 1.0  # exactly 1 at logit 0 (clamped)


def test_entropy_is_finite_and_bounded_everywhere():
    s = torch.linspace(-1000, 1000, 20001)
    h = bernoulli_entropy(s)
    assert torch.isfinite(h).all() and (h >= 0).all() and (h <= 1).all()
    torch.testing.assert_close(h, bernoulli_entropy(-s))  # symmetric in the logit


def test_entropy_matches_direct_formula_in_float64():
    s = torch.linspace(-20, 20, 401, dtype=torch.float64)
    p = torch.sigmoid(s)
    direct = -(p * torch.log(p) + (1 - p) * torch.log1p(-p)) / math.log(2)
    torch.testing.assert_close(bernoulli_entropy(s), direct.float(), atol=1e-6, rtol=1e-5)


def test_entropy_keeps_shape():
    assert bernoulli_entropy(torch.zeros(2, 1, 5, 7)).shape == (2, 1, 5, 7)


def test_entropy_rejects_non_tensor():
    with pytest.raises(InvalidInputError, match=r"logits: expected a torch.Tensor, got list"):
        bernoulli_entropy([0.0])


# --- ensemble_entropy ----------------------------------------------------------------------------


def test_ensemble_entropy_hand_computed():
    stack = torch.tensor(
        [
            [100.0, 100.0, 0.0, math.log(3.0), -100.0],
            [-100.0, 100.0, 0.0, -math.log(3.0), -100.0],
        ]
    )
    h = ensemble_entropy(stack)
    # means: 0.5 (confident members disagree), 1, 0.5, 0.5, 0
    torch.testing.assert_close(h, torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0]), atol=1e-6, rtol=0)
    assert h.dtype == torch.float32 and h.shape == (5,)


def test_ensemble_entropy_of_uneven_mean():
    stack = torch.tensor([[100.0], [100.0], [100.0], [-100.0]])  # mean probability 0.75
    torch.testing.assert_close(ensemble_entropy(stack), torch.tensor([h2(0.75)]), atol=1e-6, rtol=0)


def test_ensemble_of_one_member_equals_bernoulli_entropy():
    s = torch.linspace(-30, 30, 61).reshape(1, 61)
    torch.testing.assert_close(ensemble_entropy(s), bernoulli_entropy(s[0]), atol=2e-6, rtol=0)


def test_ensemble_entropy_is_at_least_mean_member_entropy():
    g = torch.Generator().manual_seed(1)
    stack = torch.randn(5, 4, 16, 16, generator=g) * 4
    h = ensemble_entropy(stack)
    assert h.shape == (4, 16, 16)
    assert (h + 1e-6 >= bernoulli_entropy(stack).mean(0)).all()  # concavity: mutual information >= 0


def test_ensemble_entropy_errors():
    with pytest.raises(InvalidInputError, match=r"logit_stack: expected K×... with K >= 1 members, got shape \(0, 3\)"):
        ensemble_entropy(torch.zeros(0, 3))
    with pytest.raises(InvalidInputError, match=r"logit_stack: expected K×... with K >= 1 members, got shape \(\)"):
        ensemble_entropy(torch.tensor(0.0))


# --- perturb_prompts -----------------------------------------------------------------------------

SHAPE = (200, 300)
POINTS = np.array([[50.0, 60.0], [0.0, 300.0], [199.0, 1.0]])
LABELS = np.array([1, 0, 1])
BOXES = np.array([[20.0, 30.0, 120.0, 230.0], [0.0, 0.0, 200.0, 300.0]])


def test_member_zero_is_the_unperturbed_prompt():
    members = perturb_prompts(POINTS, LABELS, BOXES, 4, 0, image_shape=SHAPE)
    assert len(members) == 4
    pts, lab, bxs = members[0]
    np.testing.assert_array_equal(pts, POINTS)
    np.testing.assert_array_equal(lab, LABELS)
    np.testing.assert_array_equal(bxs, BOXES)
    assert not np.shares_memory(pts, POINTS) and not np.shares_memory(bxs, BOXES)


def test_members_differ_and_keep_shapes_and_labels():
    members = perturb_prompts(POINTS, LABELS, BOXES, 5, 3, image_shape=SHAPE)
    for pts, lab, bxs in members[1:]:
        assert pts.shape == (3, 2) and bxs.shape == (2, 4)
        np.testing.assert_array_equal(lab, LABELS)
        assert not np.array_equal(pts, POINTS) and not np.array_equal(bxs[0], BOXES[0])
    assert not np.array_equal(members[1][0], members[2][0])


def test_same_seed_same_members_and_generator_accepted():
    a = perturb_prompts(POINTS, LABELS, BOXES, 3, 42, image_shape=SHAPE)
    b = perturb_prompts(POINTS, LABELS, BOXES, 3, np.random.default_rng(42), image_shape=SHAPE)
    c = perturb_prompts(POINTS, LABELS, BOXES, 3, 43, image_shape=SHAPE)
    for ma, mb in zip(a, b):
        for x, y in zip(ma, mb):
            np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[1][0], c[1][0])


def test_clicks_move_within_radius_and_stay_in_image():
    members = perturb_prompts(POINTS, LABELS, None, 200, 7, image_shape=SHAPE, click_radius=0.02)
    radius = 0.02 * math.hypot(*SHAPE)
    moved = np.stack([m[0] for m in members[1:]])  # 199 x 3 x 2
    dist = np.linalg.norm(moved - POINTS, axis=-1)
    assert dist.max() <= radius + 1e-9
    assert dist[:, 0].max() > 0.5 * radius  # the disc is actually used
    assert (moved[..., 0] >= 0).all() and (moved[..., 0] <= 200).all()
    assert (moved[..., 1] >= 0).all() and (moved[..., 1] <= 300).all()
    assert members[1][2] is None


def test_box_jitter_size_bounds_and_order():
    members = perturb_prompts(None, None, BOXES, 400, 11, image_shape=SHAPE, box_jitter=0.1)
    boxes = np.stack([m[2] for m in members[1:]])  # 399 x 2 x 4
    assert members[1][0] is None and members[1][1] is None
    delta = boxes[:, 0] - BOXES[0]
    std = np.array([10.0, 20.0, 10.0, 20.0])  # 10 % of height 100 and width 200
    assert (np.abs(delta) <= 2 * std + 1e-9).all()  # truncated at 2 std
    np.testing.assert_allclose(delta.std(axis=0), std, rtol=0.25)  # roughly the requested spread
    assert (boxes[..., 0] <= boxes[..., 2]).all() and (boxes[..., 1] <= boxes[..., 3]).all()
    assert (boxes[..., [0, 2]] >= 0).all() and (boxes[..., [0, 2]] <= 200).all()
    assert (boxes[..., [1, 3]] >= 0).all() and (boxes[..., [1, 3]] <= 300).all()


def test_zero_jitter_and_radius_give_copies():
    members = perturb_prompts(POINTS, LABELS, BOXES, 3, 0, image_shape=SHAPE, box_jitter=0, click_radius=0)
    for pts, _, bxs in members:
        np.testing.assert_array_equal(pts, POINTS)
        np.testing.assert_array_equal(bxs, BOXES)


def test_zero_area_box_does_not_move():
    box = np.array([[50.0, 60.0, 50.0, 60.0]])
    members = perturb_prompts(None, None, box, 3, 0, image_shape=SHAPE)
    np.testing.assert_array_equal(members[2][2], box)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": 0}, r"k \(ensemble members\) must be an integer >= 1, got 0"),
        ({"k": 2.5}, r"k \(ensemble members\) .* got 2.5"),
        ({"k": True}, r"k \(ensemble members\) .* got True"),
        ({"box_jitter": -0.1}, r"box_jitter, click_radius: must be >= 0, got box_jitter=-0.1"),
        ({"click_radius": -1}, r"box_jitter, click_radius: must be >= 0"),
        ({"image_shape": (0, 5)}, r"image_shape: H and W must be positive, got \(0, 5\)"),
        ({"image_shape": 5}, r"image_shape: expected \(H, W\), got 5"),
    ],
)
def test_perturb_prompts_errors(kwargs, message):
    args = {"k": 3, "image_shape": SHAPE} | kwargs
    with pytest.raises(InvalidInputError, match=message):
        perturb_prompts(POINTS, LABELS, BOXES, args.pop("k"), 0, **args)


# --- PredictOptions: the uncertainty method as data -----------------------------------------------


def test_auto_resolves_per_model_kind():
    auto = PredictOptions()
    assert auto.uncertainty == "auto"
    assert auto.uncertainty_for(hq=True) == "disagreement"
    assert auto.uncertainty_for(hq=False) == "entropy"
    for method in ("entropy", "ensemble"):
        assert PredictOptions(uncertainty=method).uncertainty_for(hq=False) == method
    assert PredictOptions(uncertainty="disagreement").uncertainty_for(hq=True) == "disagreement"
    with pytest.raises(InvalidInputError, match="needs an HQ-SAM or SUM model .* use 'auto', 'entropy' or 'ensemble'"):
        PredictOptions(uncertainty="disagreement").uncertainty_for(hq=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"uncertainty": "variance"}, r"uncertainty='variance' is not known; choose one of \['auto', "),
        ({"multimask": 1}, "multimask must be True or False"),
        ({"hq_token_only": "yes"}, "hq_token_only must be True or False"),
        ({"task": 3}, "task=3 is not valid"),
        ({"task": True}, "task=True is not valid"),
        ({"ensemble_size": 1}, "ensemble_size must be an integer >= 2"),
        ({"seed": 1.5}, "seed must be an integer"),
    ],
)
def test_predict_options_are_validated_once(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        PredictOptions(**kwargs)
