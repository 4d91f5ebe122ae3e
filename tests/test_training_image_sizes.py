"""training at real camera sizes: pseudolabel, evaluate and a training step on images above 1024 px.

The model is a tiny random one with the real 1024 input. Where a known object is needed the
decoder is replaced by an exact fake: for automatic segmentation ``SamModel.decode`` returns
the low-resolution logits of the truth's part under each click; for prompted segmentation
the tiled predictor's decoder is ``tiled_fakes.fake_decoder``. Encoders, resizing, tiling,
pasting, the stores and the metrics all run for real.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from test_training_finetune import save_tiny_model
from tiled_fakes import FAKE_UNCERTAINTY, EncoderCounter, fake_decoder, points_from_model_frame
from sum_core.imageio import read_image, write_image
from sum_core.modeling import DecodedMasks
from sum_core.prompts import to_low_res_frame
from sum_core.tiled_predictor import TiledPredictor
from training import evaluate, finetune, pseudo_store
from training.checkpointing import load_base_model
from training.dataset import InstanceDataset, scan_dataset
from training.pseudolabel import PSEUDO_OPTIONS, pseudolabel_folder

SIZES = [(1100, 1100), (2048, 2048), (1040, 1392)]
FAKE_LOGIT = 8.0


def corner_object(shape: tuple[int, int]) -> tuple[slice, slice]:
    """A 192 x 256 px rectangle 40 px from the bottom-right corner (far from the origin)."""
    h, w = shape
    return slice(h - 232, h - 40), slice(w - 296, w - 40)


def corner_image(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """uint8 image (object 220 on 20) and its bool object mask."""
    truth = np.zeros(shape, bool)
    truth[corner_object(shape)] = True
    return np.where(truth, 220, 20).astype(np.uint8), truth


def fake_amg_decode(model, truth: np.ndarray):
    """A ``SamModel.decode`` for single clicks: the low-resolution logits (+-8) of the part of
    ``truth`` under each click (all -8 on background), predicted IoU 0.95."""
    parts, _ = ndimage.label(truth)
    config = model.config
    cache: dict[tuple[int, tuple[int, int]], torch.Tensor] = {}

    def low_res(part: int, input_size: tuple[int, int]) -> torch.Tensor:
        key = (part, input_size)
        if key not in cache:
            values = np.where(parts == part, FAKE_LOGIT, -FAKE_LOGIT) if part else np.full(truth.shape, -FAKE_LOGIT)
            cache[key] = to_low_res_frame(
                values.astype(np.float32), input_size, config.image_size, config.low_res_size, -FAKE_LOGIT
            )
        return cache[key]

    def decode(image, points=None, boxes=None, masks=None, task=None, multimask=False, hq_token_only=False):
        assert tuple(image.original_size) == truth.shape and boxes is None and masks is None
        rows_cols = points_from_model_frame(points[0][:, 0], image.original_size, image.input_size)
        h, w = truth.shape
        logits = torch.stack(
            [low_res(int(parts[min(int(r), h - 1), min(int(c), w - 1)]), image.input_size) for r, c in rows_cols]
        ).to(image.device)
        iou = torch.full((len(logits), 1), 0.95, device=image.device)
        return DecodedMasks(logits, iou, logits, torch.zeros_like(logits))

    return decode


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("sizes") / "base.pth")


def write_pair(root, stem: str, image: np.ndarray, labels: np.ndarray) -> None:
    for sub, array in (("images", image), ("masks", labels)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        write_image(root / sub / f"{stem}.tif", array)


def pseudolabel_corner(base, shape, folder, monkeypatch):
    """Pseudo-labels of one corner-object image with the fake decoder; returns (out, truth, counter)."""
    image, truth = corner_image(shape)
    (folder / "unlabeled").mkdir(parents=True)
    write_image(folder / "unlabeled" / "big.tif", image)
    model = load_base_model(base)
    monkeypatch.setattr(model, "decode", fake_amg_decode(model, truth))
    counter = EncoderCounter(model, monkeypatch)
    out = folder / "pseudo"
    counts = pseudolabel_folder(
        model, folder / "unlabeled", out, PSEUDO_OPTIONS.replace(points_per_side=8), device="cpu", progress=False
    )
    assert counts == {"big": 1}
    return out, truth, counter


@pytest.mark.parametrize("shape", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_pseudolabel_writes_full_size_labels(base, shape, tmp_path, monkeypatch):
    out, truth, counter = pseudolabel_corner(base, shape, tmp_path, monkeypatch)
    assert counter.images == 1  # the whole image as one window resized to the encoder, at every size
    folder = out / "big"
    (row,) = pseudo_store.read_masks_csv(folder)  # the grid's clicks in the object: one mask after NMS
    prob = read_image(pseudo_store.prob_path(folder, row.index))
    assert prob.dtype == np.uint8 and prob.shape == shape
    mask = prob > 127
    # The mask went through the encoder's frame (long side 1024) and the decoder's 256 x 256 one:
    # its edges may move by one low-resolution pixel, max(H, W) / 256 image pixels.
    tol = math.ceil(max(shape) / 256)
    rows, cols = corner_object(shape)
    expected_box = (rows.start, cols.start, rows.stop - 1, cols.stop - 1)
    assert np.abs(np.array(row.box) - expected_box).max() <= tol
    assert row.area == int(mask.sum())
    grown = ndimage.binary_dilation(truth, iterations=tol)
    assert not (mask & ~grown).any() and (truth & mask).sum() / (truth | mask).sum() > 0.97
    assert truth[int(row.point[0]), int(row.point[1])]


@pytest.mark.parametrize("shape", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_evaluate_scores_a_corner_object(base, shape, tmp_path, monkeypatch):
    image, target = corner_image(shape)
    rows, cols = corner_object(shape)
    predicted = target.copy()  # the fake decoder's object: the target and a 40 px blob on its left
    predicted[rows, cols.start - 40 : cols.start] = True
    data = tmp_path / "data"
    write_pair(data, "big", image, target.astype(np.uint8) * 7)
    calls: list = []
    fake = fake_decoder(predicted, calls)

    def positive_clicks(self, window, embedding, points, labels, box, mask, options):
        # This test checks the scores at each size, not the click protocol: the correcting
        # (negative) clicks on the blob count as positive, so the fake's object stays the same.
        labels = None if labels is None else np.ones_like(labels)
        return fake(self, window, embedding, points, labels, box, mask, options)

    monkeypatch.setattr(TiledPredictor, "_decode", positive_clicks)
    out = tmp_path / "eval.csv"
    argv = ["--checkpoints", str(base), "--data", str(data), "--clicks", "1", "3", "--output", str(out),
            "--device", "cpu", "--no-progress"]
    assert evaluate.main(argv) == 0
    assert calls and all(w.row1 <= shape[0] and w.col1 <= shape[1] for w, _ in calls)  # tiled at full size
    with (tmp_path / "eval_instances.csv").open() as handle:
        (scores,) = list(csv.DictReader(handle))
    assert (scores["image"], scores["instance"]) == ("big.tif", "7")
    iou = target.sum() / predicted.sum()
    for column in ("box mIoU", "1pt mIoU", "3pt mIoU"):
        assert float(scores[column]) == pytest.approx(iou, rel=1e-12)
    # Uncertainty FAKE_UNCERTAINTY on the predicted mask, 0 elsewhere: the errors (the blob) tie
    # with the target's pixels and rank above the background (Mann-Whitney with half ties).
    n_target, n_background = int(target.sum()), target.size - int(predicted.sum())
    auroc = (n_background + 0.5 * n_target) / (n_background + n_target)
    assert float(scores["AUROC"]) == pytest.approx(auroc, rel=1e-12)
    assert 1 - FAKE_UNCERTAINTY > 0.6  # every pixel is "certain" at the default threshold
    assert float(scores["acc certain"]) == pytest.approx(1 - (predicted & ~target).sum() / target.size, rel=1e-12)
    assert scores["acc uncertain"] == "nan"
    with out.open() as handle:
        assert [r["dataset"] for r in csv.DictReader(handle)] == ["data", "overall"]


def test_training_step_on_a_2048_image_and_its_pseudo_labels(base, tmp_path, monkeypatch):
    shape = (2048, 2048)
    pseudo, truth, _ = pseudolabel_corner(base, shape, tmp_path / "unlabeled_set", monkeypatch)
    data = tmp_path / "data"
    image, _ = corner_image(shape)
    write_pair(data, "big", image, truth.astype(np.uint8))
    # The sample is resized to the 1024 training frame, as SAM training does: exactly half size here.
    item = InstanceDataset(scan_dataset(data, val_fraction=0.0).train, train=False)[0]
    assert item["image"].shape == (3, 1024, 1024) and item["masks"].shape == (1, 1024, 1024)
    assert np.array_equal(item["masks"][0].numpy(), truth[::2, ::2])

    run = tmp_path / "run"
    assert finetune.main([
        "--checkpoint", str(base), "--data", str(data), "--pseudo", str(pseudo), "--output", str(run),
        "--epochs", "1", "--batch-size", "1", "--pseudo-ratio", "1", "--max-steps", "1", "--device", "cpu",
        "--no-progress",
    ]) == 0
    with (run / "metrics.csv").open() as handle:
        records = list(csv.DictReader(handle))
    assert [r["kind"] for r in records] == ["human", "pseudo"]
    assert all(math.isfinite(float(r["loss"])) and float(r["loss"]) > 0 for r in records)
