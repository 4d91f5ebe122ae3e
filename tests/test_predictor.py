"""The full predictor path against the reference SamPredictor on the same weights."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import reference_impl
from reference_models import randomize_, reference_with_weights
from small_models import small_vit_config
from sum_core.errors import InvalidInputError
from sum_core.modeling import ImageEmbedding, build_from_config
from sum_core.predictor import Predictor
from sum_core.prompts import MASK_PROMPT_LOGIT, to_low_res_frame


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
    assert first.low_res_logits.shape == (1, 1, 256, 256)
    pred = ours.predict(points=[[400, 560]], labels=[1], mask_input=first.low_res_logits[0])
    _, ref_iou, ref_low = ref.predict(
        point_coords=np.array([[560.0, 400.0]]), point_labels=np.array([1]),
        mask_input=first.low_res_logits[0], multimask_output=False, return_logits=True,
    )
    assert rel_err(pred.low_res_logits[0], ref_low) < 1e-4
    assert pred.score == pytest.approx(float(ref_iou[0]), rel=1e-4, abs=1e-5)


def test_full_size_mask_prompt_goes_through_the_low_res_frame(hq_predictors):
    """A full-size mask prompt (a previous ``logits[k]``) reaches the decoder as SAM's low-res
    frame of it (``to_low_res_frame``): the same as passing that frame directly."""
    ours, _ = hq_predictors
    first = ours.predict(points=[[400, 560]])
    config = ours.model.config
    frame = to_low_res_frame(
        first.logits[0], (1024, 1024), config.image_size, config.low_res_size, -MASK_PROMPT_LOGIT
    ).numpy()
    full = ours.predict(points=[[400, 560]], mask_input=first.logits[0])
    low = ours.predict(points=[[400, 560]], mask_input=frame)
    np.testing.assert_array_equal(full.logits, low.logits)
    as_bool = ours.predict(points=[[400, 560]], mask_input=first.masks[0])
    assert as_bool.logits.shape == (1, 1024, 1024)
    with pytest.raises(InvalidInputError, match=r"mask_input: expected full-size \(1024, 1024\)"):
        ours.predict(points=[[400, 560]], mask_input=np.zeros((512, 512), bool))


def test_several_boxes_give_several_masks(hq_predictors):
    ours, ref = hq_predictors
    boxes = np.array([[250, 350, 620, 780], [10, 20, 300, 200], [500, 500, 1000, 1000]], dtype=float)
    pred = ours.predict(box=boxes)
    assert len(pred) == 3
    assert pred.masks.shape == pred.logits.shape == pred.uncertainties.shape == (3, 1024, 1024)
    assert pred.low_res_logits.shape == (3, 1, 256, 256) and pred.scores.shape == (3,)
    xyxy = torch.as_tensor(boxes[:, [1, 0, 3, 2]])
    transformed = ref.transform.apply_boxes_torch(xyxy, ref.original_size)
    _, ref_iou, ref_low = ref.predict_torch(None, None, boxes=transformed, multimask_output=False)
    assert rel_err(pred.low_res_logits, ref_low.numpy()) < 1e-4
    np.testing.assert_allclose(pred.scores, ref_iou[:, 0].numpy(), rtol=1e-4, atol=1e-5)
    for name in ("mask", "score", "uncertainty"):  # the single-object views need K == 1
        with pytest.raises(InvalidInputError, match=f"Prediction.{name} is the single-object view"):
            getattr(pred, name)
    one = ours.predict(box=boxes[1])  # alone: the same object (a batch of 1 rounds differently)
    np.testing.assert_allclose(one.logits[0], pred.logits[1], rtol=1e-5, atol=1e-5)


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
    assert pred.mask.shape == (600, 800) and pred.masks.shape == (1, 600, 800)
    assert rel_err(pred.low_res_logits[0], ref_low) < 1e-4
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
    assert rel_err(pred.low_res_logits[0], ref_low[best : best + 1]) < 1e-4
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
    np.testing.assert_allclose(both.uncertainties, expected, atol=1e-4)


def test_auto_uncertainty_is_disagreement_for_hq_and_entropy_for_plain_sam(hq_predictors, sam_pair):
    ours, _ = hq_predictors
    prompt = PROMPTS["point+box"]
    auto = ours.predict(**prompt)  # the default
    np.testing.assert_array_equal(auto.uncertainties, ours.predict(**prompt, uncertainty="disagreement").uncertainties)
    plain = Predictor(sam_pair[0], device="cpu")
    plain.set_image(textured_image((300, 400), seed=5))
    default = plain.predict(points=[[150, 200]])  # no error on plain SAM: entropy
    entropy = plain.predict(points=[[150, 200]], uncertainty="entropy")
    np.testing.assert_array_equal(default.uncertainties, entropy.uncertainties)
    assert default.uncertainty.max() > 0


def test_two_threads_on_one_predictor_give_the_sequential_results(hq_predictors):
    ours, _ = hq_predictors
    prompts = [dict(points=[[100 + 80 * i, 900 - 70 * i]]) for i in range(6)]
    expected = [ours.predict(**p).logits for p in prompts]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(indices):
        try:
            for i in indices:
                results[i] = ours.predict(**prompts[i]).logits
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(range(k, 6, 2),)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for i in range(6):
        np.testing.assert_array_equal(results[i], expected[i])


def test_embedding_round_trip(hq_pair, hq_predictors):
    ours, _ = hq_predictors
    restored = Predictor(hq_pair[0], device="cpu")
    restored.set_embedding(ours.get_embedding())
    a = ours.predict(**PROMPTS["point+box"])
    b = restored.predict(**PROMPTS["point+box"])
    np.testing.assert_array_equal(a.logits, b.logits)
    without_hq = ours.get_embedding()
    without_hq = ImageEmbedding(without_hq.embedding, without_hq.early, None, without_hq.input_size, without_hq.original_size)
    restored.set_embedding(without_hq)  # HQ features recomputed from the early features
    np.testing.assert_allclose(restored.predict(**PROMPTS["point+box"]).logits, a.logits, rtol=1e-5, atol=1e-5)


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


def test_mask_prompt_is_sams_low_res_logits_for_one_window_and_full_size_when_tiled():
    torch.manual_seed(0)
    model = build_from_config(small_vit_config().replace(image_size=256))
    predictor = Predictor(model, device="cpu")
    rng = np.random.default_rng(0)
    predictor.set_image(rng.integers(0, 255, (200, 240), dtype=np.uint8))
    pred = predictor.predict(box=[[10, 10, 60, 60], [100, 100, 150, 200]])
    np.testing.assert_array_equal(pred.mask_prompt(1), pred.low_res_logits[1])
    assert predictor.predict(points=[[30, 30]], mask_input=pred.mask_prompt(0)).masks.shape == (1, 200, 240)
    predictor.set_image(rng.integers(0, 255, (300, 500), dtype=np.uint8))  # tiled: 256-px windows
    tiled = predictor.predict(points=[[150, 250]])
    np.testing.assert_array_equal(tiled.mask_prompt(), tiled.logits[0])
    with pytest.raises(InvalidInputError, match=r"k must be an integer in \[0, 1\)"):
        tiled.mask_prompt(1)
