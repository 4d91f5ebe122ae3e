"""The full predictor path against the reference SamPredictor on the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import reference_impl
from reference_models import randomize_, reference_with_weights
from small_models import small_vit_config
from sum_core.errors import InvalidInputError
from sum_core.modeling import build_from_config
from sum_core.predictor import Predictor


def rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.linalg.norm(ours - ref) / max(np.linalg.norm(ref), 1e-12))


def textured_image(shape, seed=0) -> np.ndarray:
    """A smooth RGB uint8 image with a bright disc (not pure noise)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    disc = ((rows - shape[0] * 0.4) ** 2 + (cols - shape[1] * 0.55) ** 2) < (min(shape) * 0.2) ** 2
    base = 60 + 120 * disc[..., None] + rng.normal(0, 20, (*shape, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def hq_pair():
    torch.manual_seed(0)
    model = randomize_(build_from_config(small_vit_config(hq=True)), seed=1)
    return model, reference_with_weights(model)


@pytest.fixture(scope="module")
def sam_pair():
    torch.manual_seed(0)
    model = randomize_(build_from_config(small_vit_config(hq=False)), seed=2)
    return model, reference_with_weights(model)


@pytest.fixture(scope="module")
def hq_predictors(hq_pair):
    model, reference = hq_pair
    image = textured_image((1024, 1024))
    ours = Predictor(model, device="cpu")
    ours.set_image(image)
    ref = reference_impl.sam_hq().SamPredictor(reference)
    ref.set_image(image)
    return ours, ref


def test_embedding_matches_reference(hq_predictors):
    ours, ref = hq_predictors
    embedding = ours.get_embedding()
    assert rel_err(embedding.embedding, ref.features.numpy()) < 1e-4
    assert rel_err(embedding.early, ref.interm_features[0].numpy()) < 1e-4


PROMPTS = {
    "point": dict(points=[[400, 560]], labels=[1]),
    "two points": dict(points=[[400, 560], [900, 100]], labels=[1, 0]),
    "box": dict(box=[250, 350, 620, 780]),
    "point+box": dict(points=[[400, 560]], labels=[1], box=[250, 350, 620, 780]),
}


def _reference_args(prompt):
    args = {}
    if "points" in prompt:
        args["point_coords"] = np.asarray(prompt["points"], dtype=float)[:, ::-1]
        args["point_labels"] = np.asarray(prompt["labels"])
    if "box" in prompt:
        args["box"] = np.asarray(prompt["box"], dtype=float)[[1, 0, 3, 2]]
    return args


@pytest.mark.parametrize("name", sorted(PROMPTS))
@pytest.mark.parametrize("multimask", [False, True])
@pytest.mark.parametrize("hq_token_only", [False, True])
def test_hq_prompts_match_reference(hq_predictors, name, multimask, hq_token_only):
    ours, ref = hq_predictors
    prompt = PROMPTS[name]
    pred = ours.predict(**prompt, multimask=multimask, hq_token_only=hq_token_only)
    ref_logits, ref_iou, ref_low = ref.predict(
        **_reference_args(prompt), multimask_output=multimask, hq_token_only=hq_token_only, return_logits=True
    )
    assert rel_err(pred.low_res_logits, ref_low) < 1e-4
    assert rel_err(pred.logits, ref_logits[0]) < 1e-4
    assert pred.score == pytest.approx(float(ref_iou[0]), rel=1e-4, abs=1e-5)
    decided = np.abs(ref_logits[0]) > 1e-3
    np.testing.assert_array_equal(pred.mask[decided], ref_logits[0][decided] > 0)


def test_mask_prompt_matches_reference(hq_predictors):
    ours, ref = hq_predictors
    first = ours.predict(points=[[400, 560]], labels=[1])
    pred = ours.predict(points=[[400, 560]], labels=[1], mask_input=first.low_res_logits)
    _, ref_iou, ref_low = ref.predict(
        point_coords=np.array([[560.0, 400.0]]), point_labels=np.array([1]),
        mask_input=first.low_res_logits, multimask_output=False, return_logits=True,
    )
    assert rel_err(pred.low_res_logits, ref_low) < 1e-4
    assert pred.score == pytest.approx(float(ref_iou[0]), rel=1e-4, abs=1e-5)


def test_several_boxes_give_several_masks(hq_predictors):
    ours, ref = hq_predictors
    boxes = np.array([[250, 350, 620, 780], [10, 20, 300, 200], [500, 500, 1000, 1000]], dtype=float)
    pred = ours.predict(box=boxes)
    assert pred.mask.shape == (3, 1024, 1024)
    assert pred.uncertainty.shape == (3, 1024, 1024)
    xyxy = torch.as_tensor(boxes[:, [1, 0, 3, 2]])
    transformed = ref.transform.apply_boxes_torch(xyxy, ref.original_size)
    _, ref_iou, ref_low = ref.predict_torch(None, None, boxes=transformed, multimask_output=False)
    assert rel_err(pred.low_res_logits, ref_low.numpy()) < 1e-4
    np.testing.assert_allclose(pred.score, ref_iou[:, 0].numpy(), rtol=1e-4, atol=1e-5)


def test_non_square_image_matches_reference(hq_pair):
    model, reference = hq_pair
    image = textured_image((600, 800), seed=3)
    ours = Predictor(model, device="cpu")
    ours.set_image(image)
    ref = reference_impl.sam_hq().SamPredictor(reference)
    ref.set_image(image)
    prompt = dict(points=[[250.5, 430.25]], labels=[1], box=[100, 200, 420, 640])
    pred = ours.predict(**prompt)
    ref_logits, ref_iou, ref_low = ref.predict(**_reference_args(prompt), multimask_output=False, return_logits=True)
    assert pred.mask.shape == (600, 800)
    assert rel_err(pred.low_res_logits, ref_low) < 1e-4
    assert rel_err(pred.logits, ref_logits[0]) < 1e-4


@pytest.mark.parametrize("multimask", [False, True])
def test_plain_sam_matches_reference(sam_pair, multimask):
    model, reference = sam_pair
    image = textured_image((512, 700), seed=4)
    ours = Predictor(model, device="cpu")
    ours.set_image(image)
    ref = reference_impl.sam().SamPredictor(reference)
    ref.set_image(image)
    prompt = PROMPTS["two points"] | {"points": [[200, 300], [400, 100]]}
    pred = ours.predict(**prompt, multimask=multimask, uncertainty="entropy")
    ref_logits, ref_iou, ref_low = ref.predict(**_reference_args(prompt), multimask_output=multimask, return_logits=True)
    best = int(np.argmax(ref_iou))
    assert rel_err(pred.logits, ref_logits[best]) < 1e-4
    assert rel_err(pred.low_res_logits, ref_low[best : best + 1]) < 1e-4
    assert pred.score == pytest.approx(float(ref_iou[best]), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("method", ["disagreement", "entropy", "ensemble"])
def test_uncertainty_maps(hq_predictors, method):
    ours, _ = hq_predictors
    pred = ours.predict(points=[[400, 560]], labels=[1], uncertainty=method)
    assert pred.uncertainty.shape == (1024, 1024)
    assert pred.uncertainty.dtype == np.float32
    assert 0.0 <= pred.uncertainty.min() and pred.uncertainty.max() <= 1.0
    assert pred.uncertainty.max() > 0.0


def test_disagreement_is_sam_vs_hq_token(hq_predictors):
    ours, _ = hq_predictors
    prompt = PROMPTS["point"]
    both = ours.predict(**prompt, uncertainty="disagreement")
    hq = ours.predict(**prompt, hq_token_only=True)
    summed_minus_hq = both.logits - hq.logits  # = SAM-token logit
    expected = np.abs(1 / (1 + np.exp(-summed_minus_hq)) - 1 / (1 + np.exp(-hq.logits)))
    np.testing.assert_allclose(both.uncertainty, expected, atol=1e-4)


def test_embedding_round_trip(hq_pair, hq_predictors):
    ours, _ = hq_predictors
    restored = Predictor(hq_pair[0], device="cpu")
    restored.set_embedding(ours.get_embedding())
    a = ours.predict(**PROMPTS["point+box"])
    b = restored.predict(**PROMPTS["point+box"])
    np.testing.assert_array_equal(a.logits, b.logits)


def test_errors(hq_pair, sam_pair, hq_predictors):
    with pytest.raises(InvalidInputError, match="set_image"):
        Predictor(hq_pair[0], device="cpu").predict(points=[[1, 1]], labels=[1])
    ours, _ = hq_predictors
    with pytest.raises(InvalidInputError, match="uncertainty"):
        ours.predict(points=[[1, 1]], labels=[1], uncertainty="magic")
    with pytest.raises(InvalidInputError, match="task"):
        ours.predict(points=[[1, 1]], labels=[1], task=7)
    plain = Predictor(sam_pair[0], device="cpu")
    plain.set_image(textured_image((64, 64)))
    with pytest.raises(InvalidInputError, match="disagreement"):
        plain.predict(points=[[1, 1]], labels=[1], uncertainty="disagreement")
    with pytest.raises(InvalidInputError, match="SamModel"):
        Predictor("vit_b")
