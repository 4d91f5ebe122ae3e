"""training follows SUM's released recipe (issue 12): each test fails on the code before the fix.

Loss values are checked against the losses written out by hand here (SUM's Eq. 1-2 with the
focal loss of torchvision, alpha 0.25, gamma 2), in float64, so a tolerance of 1e-6 only absorbs
summation order.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from test_training_finetune import tiny_config
from sum_core.errors import InvalidInputError
from sum_core.image import resize_longest_side
from sum_core.imageio import write_image
from sum_core.modeling import DecodedMasks, build_from_config
from training import checkpointing as ckpt
from training import pseudo_store as store
from training import finetune, refine, trainer
from training.augment import large_scale_jitter
from training.config import FinetuneConfig, load_config
from training.losses import uncertainty_aware_dice_loss
from training.schemes import set_trainable

IMAGE_REGION = (683, 1024)  # a 683 x 1024 image fills the top of the 1024 x 1024 frame
PADDING_LOGIT = 20.0


def hand_loss(logits, targets, uncertainty=None, threshold=0.5):
    """``20 mean(c focal) + 1 Dice(w p, w y)`` with ``w = 1[c > threshold]`` (all 1 without u)."""
    x, y = logits.double().flatten(), targets.double().flatten()
    c = torch.ones_like(x) if uncertainty is None else 1 - uncertainty.double().flatten()
    p = torch.sigmoid(x)
    ce = -(y * F.logsigmoid(x) + (1 - y) * F.logsigmoid(-x))
    p_t = p * y + (1 - p) * (1 - y)
    focal = (c * (0.25 * y + 0.75 * (1 - y)) * (1 - p_t) ** 2 * ce).mean()
    w = (c > threshold).double() if uncertainty is not None else torch.ones_like(x)
    dice = 1 - (2 * (w * p * w * y).sum() + 1) / ((w * p).sum() + (w * y).sum() + 1)
    return float(20 * focal + dice)


def frame_logits_and_labels(padding_logit: float):
    """Low-res logits (+-3 inside the 683-row image, ``padding_logit`` below it), a 1024 label
    frame with a rectangle in the image and an uncertainty map (random inside, 0 in the padding)."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 1, 256, 256, generator=generator, dtype=torch.float64) * 3
    logits[..., 171:, :] = padding_logit  # rows 171+ of the low-res frame are padding only
    targets = torch.zeros(1, 1, 1024, 1024, dtype=torch.float64)
    targets[..., 200:500, 300:800] = 1
    unc = torch.zeros(1, 1, 1024, 1024, dtype=torch.float64)
    unc[..., :683, :] = torch.rand(1, 1, 683, 1024, generator=generator, dtype=torch.float64)
    return logits, targets, unc


def ramp(h: int, w: int) -> np.ndarray:
    """A non-constant uint8 image (constant images are refused)."""
    return np.broadcast_to((np.arange(w) % 200).astype(np.uint8), (h, w)).copy()


def make_step(**settings) -> trainer.TrainStep:
    torch.manual_seed(0)
    model = build_from_config(tiny_config(sum_tokens=True))
    config = FinetuneConfig(checkpoint="x", data=["d"], **settings).resolved()
    set_trainable(model, config.scheme)
    return trainer.TrainStep(model, config, trainer.PromptSampler(config, torch.Generator().manual_seed(0)))


def write_pseudo(root: Path, image: np.ndarray, masks: list[np.ndarray], uncertainty: float | None = None) -> Path:
    """A pseudo-label folder for one image ``im``: one row per mask (area = its pixel count),
    probability 255 inside, and an uncertainty map of constant ``uncertainty`` for every mask."""
    images = root / "images"
    images.mkdir(parents=True)
    write_image(images / "im.png", image)
    pseudo = root / "pseudo"
    pseudo.mkdir()
    store.write_manifest(pseudo, {"image_dir": str(images), "images": {"im": "im.png"}})
    rows = [
        store.PseudoMask(i, 0.95, 0.97, int(m.sum()), tuple(np.argwhere(m)[0].astype(float)), (0, 0, 1, 1))
        for i, m in enumerate(masks)
    ]
    folder = store.write_image_folder(pseudo, "im", rows, [m.astype(np.uint8) * 255 for m in masks])
    if uncertainty is not None:
        for row in rows:
            write_image(store.uncertainty_path(folder, row.index), store.probability_to_uint8(
                np.full(image.shape[:2], uncertainty)
            ))
    return pseudo


# --- bug 1: the pseudo-label loss covers the image's region only ------------------------------


def test_pseudo_loss_equals_the_hand_loss_on_the_image_region():
    step = make_step(scheme="decoder")
    expected = None
    for padding_logit in (PADDING_LOGIT, -PADDING_LOGIT):
        logits, targets, unc = frame_logits_and_labels(padding_logit)
        loss = float(step._loss(logits, None, targets, unc, IMAGE_REGION)["loss"])
        up = F.interpolate(logits, (1024, 1024), mode="bilinear", align_corners=False)
        expected = hand_loss(up[..., :683, :], targets[..., :683, :], unc[..., :683, :])
        assert loss == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_pseudo_step_loss_ignores_large_padding_logits(monkeypatch):
    """The whole step on a pseudo batch of a 683 x 1024 image whose decoder answers +-20 in the
    padding: the loss is the hand loss of the image region (float32 logits in the step: 1e-6)."""
    step = make_step(scheme="decoder", prompt_kinds=["box"], iou_weight=0.0)
    for padding_logit in (PADDING_LOGIT, -PADDING_LOGIT):
        logits, targets, unc = frame_logits_and_labels(padding_logit)
        logits = logits.float()
        answer = DecodedMasks(logits, torch.zeros(1, 1), logits, logits)
        monkeypatch.setattr(step.model, "decode", lambda *args, answer=answer, **kwargs: answer)
        batch = {
            "image": torch.zeros(1, 3, 1024, 1024, dtype=torch.uint8),
            "masks": [targets[:, 0] > 0.5],
            "uncertainty": [unc[:, 0].float()],
            "task": [0],
            "input_size": [IMAGE_REGION],
        }
        loss = float(step(batch, pseudo=True)["loss"])
        up = F.interpolate(logits.double(), (1024, 1024), mode="bilinear", align_corners=False)
        expected = hand_loss(up[..., :683, :], targets[..., :683, :], unc[..., :683, :].float())
        assert loss == pytest.approx(expected, rel=1e-6)


def test_pseudo_items_carry_their_region_to_the_encoder_and_the_loss(tmp_path, monkeypatch):
    image = np.full((683, 1024), 30, np.uint8)
    mask = np.zeros((683, 1024), bool)
    mask[100:400, 200:700] = True
    image[mask] = 200
    dataset = trainer.PseudoDataset(write_pseudo(tmp_path, image, [mask], 0.2))
    item = dataset[0]
    assert item["input_size"] == IMAGE_REGION
    step = make_step(scheme="hq", prompt_kinds=["box"])
    seen = {}
    encode = trainer.encode

    def recording_encode(model, pixels, sizes, *args, **kwargs):
        seen["pixels"] = [tuple(p.shape) for p in pixels]
        return encode(model, pixels, sizes, *args, **kwargs)

    def recording_loss(logits, iou, targets, unc, region):
        seen["region"] = region
        return {"loss": logits.sum() * 0}

    monkeypatch.setattr(trainer, "encode", recording_encode)
    monkeypatch.setattr(step, "_loss", recording_loss)
    step(trainer.collate([item]), pseudo=True)
    assert seen == {"pixels": [(3, 683, 1024)], "region": IMAGE_REGION}


def test_refiner_loss_ignores_the_padding_of_a_non_square_image():
    targets = torch.zeros(1, 1, 256, 256)
    targets[..., 50:120, 60:200] = 1
    weight = torch.zeros((), requires_grad=True)
    losses = []
    for padding_logit in (PADDING_LOGIT, -PADDING_LOGIT):
        logits = torch.randn(1, 1, 256, 256, generator=torch.Generator().manual_seed(1)) * 3
        logits[..., 171:, :] = padding_logit

        class FakeRefiner:
            config = SimpleNamespace(image_size=1024, low_res_size=256)

            def train(self):
                return self

            def __call__(self, encoded, prompts):
                return logits + weight

        optimizer = torch.optim.SGD([weight], lr=0.0)
        encoded = SimpleNamespace(input_size=IMAGE_REGION)
        losses.append(refine.train_step(FakeRefiner(), optimizer, (encoded, None, targets)))
    expected = hand_loss(logits[..., :171, :], targets[..., :171, :])
    assert losses == pytest.approx([expected, expected], rel=1e-5)  # float32 model outputs


# --- bug 2: filter by area, then sample ---------------------------------------------------------


def test_pseudo_masks_are_filtered_by_area_before_sampling(tmp_path):
    """10 large (16 x 16 px = 4096 px in the 1024 frame) and 50 tiny (2 x 2 = 64 px < 100) masks
    on a 256 x 256 image: the reference keeps the 10 large ones, every time."""
    image = ramp(256, 256)
    masks = []
    for i in range(10):
        m = np.zeros((256, 256), bool)
        m[20 * i : 20 * i + 16, 0:16] = True
        masks.append(m)
    for i in range(50):
        m = np.zeros((256, 256), bool)
        m[4 * i : 4 * i + 2, 100:102] = True
        masks.append(m)
    pseudo = write_pseudo(tmp_path, image, masks)
    for seed in range(5):
        item = trainer.PseudoDataset(pseudo, max_masks=40, min_area=100, seed=seed)[0]
        assert item["instance_ids"].tolist() == list(range(10))
        assert item["masks"].shape == (10, 1024, 1024)


# --- bug 3: the task prompt in every interactive round -----------------------------------------


@pytest.mark.parametrize(
    "option, expected", [({}, [1, 1, 1]), ({"task_prompt_every_round": False}, [1, None, None])]
)
def test_interactive_rounds_apply_the_task_prompt(option, expected, monkeypatch):
    """By default as the predictor (every click); the paper's first-round-only is an option."""
    step = make_step(scheme="decoder", interactive=True, interactive_rounds=3, **option)
    tasks = []
    decode = step.model.decode

    def recording_decode(image, points, boxes, masks, task=None, **kwargs):
        tasks.append(task)
        return decode(image, points, boxes, masks, task, **kwargs)

    monkeypatch.setattr(step.model, "decode", recording_decode)
    masks = torch.zeros(1, 1024, 1024, dtype=torch.bool)
    masks[0, 300:600, 200:500] = True
    image = torch.full((1, 3, 1024, 1024), 60, dtype=torch.uint8)
    step({"image": image, "masks": [masks], "task": [1], "uncertainty": [None]}, pseudo=False)
    assert tasks == expected


# --- bug 4: large-scale jitter reaches the last crop offset ------------------------------------


def test_large_scale_jitter_offsets_cover_zero_to_margin_inclusive():
    """An 18 x 18 image at scale 18/16 into a 16 frame: no resize, margin 2 per axis; the label
    at the crop's corner tells the offset.  300 seeded draws hit 0, 1 and 2 on both axes."""
    labels = np.arange(1, 18 * 18 + 1, dtype=np.int32).reshape(18, 18)
    image = np.zeros((18, 18, 3), np.uint8)
    rng = np.random.default_rng(0)
    tops, lefts = set(), set()
    for _ in range(300):
        _, out = large_scale_jitter(image, labels, rng, output_size=16, scale_range=(18 / 16, 18 / 16))
        top, left = divmod(int(out[0, 0]) - 1, 18)
        assert np.array_equal(out, labels[top : top + 16, left : left + 16])
        tops.add(top)
        lefts.add(left)
    assert tops == lefts == {0, 1, 2}


# --- deviations 5-9 -----------------------------------------------------------------------------


def test_hq_scheme_trains_with_tight_boxes_other_schemes_jitter():
    assert FinetuneConfig(checkpoint="x", data=["d"], scheme="hq").resolved().box_jitter is False
    assert FinetuneConfig(checkpoint="x", data=["d"], scheme="full").resolved().box_jitter is True
    assert FinetuneConfig(checkpoint="x", data=["d"], scheme="hq", box_jitter=True).resolved().box_jitter is True
    step = make_step(scheme="hq")
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 10:30, 5:50] = True
    masks[1, 40:41, 7:9] = True
    boxes = step.sampler.boxes(masks, (64, 64))
    assert boxes.tolist() == [[10, 5, 29, 49], [40, 7, 40, 8]]


def test_box_jitter_flag_and_a_previous_versions_config(tmp_path):
    """``--box-jitter`` overrides the scheme default; a config.yaml of the previous version (no new
    keys, ``box_jitter: true`` and ``ua_threshold: 0.6`` spelled out) loads with its own values."""
    args = finetune.build_parser().parse_args(["--checkpoint", "x", "--data", "d", "--box-jitter"])
    assert finetune.resolve_config(args).box_jitter is True
    old = tmp_path / "config.yaml"
    old.write_text("checkpoint: x\ndata: [d]\nscheme: hq\nbox_jitter: true\nua_threshold: 0.6\n")
    config = load_config(old).resolved()
    assert (config.box_jitter, config.ua_threshold, config.min_uncertainty_area) == (True, 0.6, 10_000)


def test_hq_scheme_keeps_the_dense_task_embeddings_at_zero():
    model = build_from_config(tiny_config(sum_tokens=True))
    with torch.no_grad():  # a base whose dense embeddings were trained (e.g. a 'decoder' scheme run)
        model.mask_decoder.task_prompt_embeddings[1].weight.fill_(0.5)
    with pytest.warns(UserWarning, match="dense task embeddings .* set to zero"):
        names = set(set_trainable(model, "hq"))
    assert all(float(t.weight.abs().max()) == 0 for t in model.mask_decoder.task_prompt_embeddings)
    assert not any(n.startswith("mask_decoder.task_prompt_embeddings") for n in names)
    assert {"mask_decoder.task_prompt_tokens.1.weight", "mask_decoder.hf_type_tokens.1.weight"} <= names
    assert "mask_decoder.task_prompt_embeddings.1.weight" in set(set_trainable(model, "decoder"))


def test_resuming_a_run_with_other_trainable_tables_is_refused(tmp_path):
    config = FinetuneConfig(checkpoint="x", data=["d"], output=str(tmp_path), device="cpu").resolved()
    run = trainer.Trainer(config, progress=False)
    run.model = build_from_config(tiny_config(sum_tokens=True))
    names = set_trainable(run.model, "hq")
    old = names + ["mask_decoder.task_prompt_embeddings.1.weight"]  # what the previous version trained
    ckpt.save_training_state({"world_size": 1, "trainable": {n: torch.zeros(1) for n in old}}, tmp_path)
    with pytest.raises(InvalidInputError, match="task_prompt_embeddings.1.weight.*new run"):
        run._load_state()


def test_uncertainty_aware_dice_threshold_defaults_to_the_released_code():
    """Two pixels, p = 0.5, target 1, certainty 0.55 and 0.3: theta 0.5 keeps the first only:
    1 - (2 * 0.5 + 1) / (0.5 + 1 + 1) = 0.2 (theta 0.6 would keep none: loss 0)."""
    logits, targets = torch.zeros(1, 1, 2), torch.ones(1, 1, 2)
    unc = torch.tensor([[[0.45, 0.7]]])
    assert float(uncertainty_aware_dice_loss(logits, targets, unc)) == pytest.approx(0.2, abs=1e-7)
    assert FinetuneConfig().ua_threshold == 0.5


def test_uncertainty_maps_only_for_masks_of_at_least_10000_px(tmp_path):
    """64 x 64 image (x 256 in area): a 5 x 5 mask is 6,400 px (certain), an 8 x 8 one 16,384 px."""
    small, large = np.zeros((64, 64), bool), np.zeros((64, 64), bool)
    small[2:7, 2:7] = True
    large[30:38, 30:38] = True
    pseudo = write_pseudo(tmp_path, ramp(64, 64), [small, large], uncertainty=0.4)
    item = trainer.PseudoDataset(pseudo)[0]
    assert float(item["uncertainty"][0].abs().max()) == 0.0
    assert torch.allclose(item["uncertainty"][1], torch.full((1024, 1024), 102 / 255))  # round(255 * 0.4)
    everything = trainer.PseudoDataset(pseudo, min_uncertainty_area=0)[0]
    assert torch.allclose(everything["uncertainty"][0], torch.full((1024, 1024), 102 / 255))
    assert FinetuneConfig().min_uncertainty_area == 10_000


def test_pseudo_images_are_resized_with_antialiasing(tmp_path):
    """Columns 255, 0, 0, 0 repeated, 4096 px wide -> 1024: PIL's antialiased bilinear filter
    spans 8 source columns with weights 1/8 .. 7/8; the two bright ones weigh 5/8 + 3/8 of 4,
    so each inner output column is 255 / 4 = 63.75 -> 64 (+-1 for rounding).  Without
    antialiasing every output pixel is interpolated between two dark columns: 0."""
    image = np.zeros((8, 4096), np.uint8)
    image[:, ::4] = 255
    mask = np.zeros((8, 4096), bool)
    mask[:, :2048] = True
    item = trainer.PseudoDataset(write_pseudo(tmp_path, image, [mask]))[0]
    region = item["image"][:, :2, :].numpy().transpose(1, 2, 0)
    assert np.abs(region[:, 1:-1].astype(int) - 64).max() <= 1
    assert np.array_equal(region, resize_longest_side(np.repeat(image[..., None], 3, axis=2), 1024))
    assert item["input_size"] == (2, 1024)
