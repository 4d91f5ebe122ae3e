"""training.refine (pairs, refiner training, uncertainty maps) and training.refinement_module."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from small_models import small_vit_config
from sum_core.encoding import encode_image
from sum_core.errors import CheckpointError, InvalidInputError
from sum_core.image import prepare_image
from sum_core.imageio import read_image, write_image
from sum_core.modeling import build_from_config
from training import pseudo_store as store
from training.dataset import scan_dataset
from training.pseudolabel import main as pseudolabel_main
from training.refine import (
    PairFilters,
    TrainSettings,
    batch_inputs,
    build_pairs,
    main,
    make_optimizer,
    pair_batches,
    train_step,
)
from training.refinement_module import (
    RefinementModule,
    load_refiner,
    mask_prompt_from_probability,
    refiner_prompts,
)

RELAXED_AMG = [
    "--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-thresh", "0",
    "--max-area-fraction", "1", "--box-nms-thresh", "1", "--device", "cpu", "--no-progress",
]
RELAXED_PAIRS = [
    "--pred-iou-thresh", "0", "--stability-thresh", "0", "--max-area-fraction", "1", "--min-iou", "0",
    "--device", "cpu", "--no-progress",
]
NO_FILTER = PairFilters(0.0, 0.0, 1.0, 1.0, 0.0)


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return build_from_config(small_vit_config().replace(image_size=256, decoder_depth=1))


def blobs(i: int) -> tuple[np.ndarray, np.ndarray]:
    img = np.full((48, 64), 15, np.uint8)
    labels = np.zeros((48, 64), np.uint8)
    labels[6 + 2 * i : 22, 6:26] = 1
    labels[26:44, 30 + 3 * i : 58] = 2
    img[labels > 0] = 220
    return img, labels


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("refine")
    model = tiny_model()
    torch.save(model.state_dict(), root / "model.pt")
    for sub in ("data/images", "data/masks", "unlabeled"):
        (root / sub).mkdir(parents=True)
    for i in range(2):
        img, labels = blobs(i)
        write_image(root / "data" / "images" / f"a{i}.png", img)
        write_image(root / "data" / "masks" / f"a{i}.png", labels)
    write_image(root / "unlabeled" / "u0.png", blobs(1)[0][::-1].copy())
    pseudolabel_main(
        [str(a) for a in ["--model", root / "model.pt", "--images", root / "unlabeled"]]
        + ["--out", str(root / "pseudo")]
        + RELAXED_AMG
    )
    return root, model


def test_build_pairs_and_filters(setup):
    root, model = setup
    samples = scan_dataset(root / "data", val_fraction=0.0).train
    pairs = build_pairs(model, samples, NO_FILTER, seed=1, progress=False)
    assert pairs.tried == 4 and pairs.passed_filters == 4 and len(pairs.pairs) == 4
    assert len(pairs.features) == 2 and pairs.features[0].embedding.dtype == torch.float16
    for pair in pairs.pairs:
        _, labels = blobs(pair.image)
        row, col = pair.point.astype(int)
        assert labels[row, col] > 0
        assert pair.mask_input.shape == (1, 64, 64) and pair.target.shape == (1, 64, 64)
        assert 0.0 <= pair.target.min() and pair.target.max() <= 1.0 and pair.target.max() > 0.9
        assert 0 <= pair.box[0] <= pair.box[2] < 48 and 0 <= pair.box[1] <= pair.box[3] < 64
    with pytest.raises(InvalidInputError, match=r"4 SAM answer\(s\) tried, 4 passed"):
        build_pairs(model, samples, PairFilters(0.0, 0.0, 1.0, 1.0, 1.01), progress=False)
    with pytest.raises(InvalidInputError, match=r"4 SAM answer\(s\) tried, 0 passed"):
        build_pairs(model, samples, PairFilters(1.0, 0.0, 1.0, 1.0, 0.0), progress=False)


def test_training_loss_falls_on_fixed_batch(setup):
    root, model = setup
    samples = scan_dataset(root / "data", val_fraction=0.0).train[:1]
    pairs = build_pairs(model, samples, NO_FILTER, progress=False)
    settings = TrainSettings(lr=1e-3)
    refiner = RefinementModule(model)
    assert all(p.requires_grad for p in refiner.parameters())
    optimizer = make_optimizer(refiner, settings)
    batch = batch_inputs(pairs, pair_batches(pairs, 2)[0], "cpu")
    losses = [train_step(refiner, optimizer, batch, settings) for _ in range(4)]
    assert losses[-1] < losses[0]
    # the frozen SAM is untouched
    fresh = tiny_model()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))


def test_refine_cli_writes_maps(setup, tmp_path):
    root, model = setup
    out = tmp_path / "refiner"
    argv = ["--model", root / "model.pt", "--data", root / "data", "--pseudo", root / "pseudo", "--out", out,
            "--epochs", "1", "--batch-size", "4"]
    assert main([str(a) for a in argv] + RELAXED_PAIRS) == 0
    record = json.loads((out / "refiner.json").read_text())
    assert record["pairs_used"] == 4 and len(record["loss_per_epoch"]) == 1

    folder = root / "pseudo" / "u0"
    masks = store.read_masks_csv(folder)
    assert len(masks) > 1
    maps = [read_image(store.uncertainty_path(folder, m.index)) for m in masks]
    assert all(u.dtype == np.uint8 and u.shape == (48, 64) for u in maps)

    # Independent computation for one mask.
    mask = masks[1]
    refiner = load_refiner(model, out / "refiner.pt")
    image = prepare_image(read_image(root / "unlabeled" / "u0.png"))
    encoded = encode_image(model, image)
    prob = read_image(store.prob_path(folder, mask.index))
    mask_input = mask_prompt_from_probability(prob, encoded.input_size, 256, 64)
    prompts = refiner_prompts([mask.point], [mask.box], [mask_input], encoded)
    with torch.no_grad():
        low = refiner(encoded, prompts)
        p_ref = torch.sigmoid(model.postprocess_masks(low, encoded.input_size, (48, 64)))[0, 0].numpy()
    expected = np.rint(255 * np.abs(prob / 255.0 - p_ref))
    assert np.abs(maps[1].astype(int) - expected).max() <= 1
    assert (maps[1].astype(int) == expected).mean() > 0.99
    assert expected.max() > 0

    # --skip-train rewrites the same maps from the saved refiner.
    for m in masks:
        store.uncertainty_path(folder, m.index).unlink()
    skip = ["--model", root / "model.pt", "--pseudo", root / "pseudo", "--skip-train", "--refiner", out,
            "--device", "cpu", "--no-progress"]
    assert main([str(a) for a in skip]) == 0
    again = [read_image(store.uncertainty_path(folder, m.index)) for m in masks]
    assert all(np.abs(a.astype(int) - b).max() <= 1 for a, b in zip(again, maps))


def test_refine_cli_errors(setup, tmp_path):
    root, _ = setup
    base = ["--model", root / "model.pt", "--pseudo", root / "pseudo", "--device", "cpu", "--no-progress"]
    with pytest.raises(SystemExit, match="--refiner: required with --skip-train"):
        main([str(a) for a in base + ["--skip-train"]])
    with pytest.raises(SystemExit, match="--data and --out: required"):
        main([str(a) for a in base])
    with pytest.raises(SystemExit, match="--batch-size: must be >= 1, got 0"):
        main([str(a) for a in base + ["--skip-train", "--refiner", tmp_path, "--batch-size", "0"]])
    with pytest.raises(SystemExit, match=r"no training pair survived: 4 SAM answer\(s\) tried"):
        main([str(a) for a in base + ["--data", root / "data", "--out", tmp_path / "r", "--min-iou", "1.01",
                                      "--pred-iou-thresh", "0", "--stability-thresh", "0"]])
    other = tmp_path / "other.pt"
    torch.save(tiny_model(seed=5).state_dict(), other)
    with pytest.raises(SystemExit, match="the uncertainty maps need the SAM that made the pseudo-labels"):
        main([str(a) for a in ["--model", other] + base[2:] + ["--skip-train", "--refiner", tmp_path]])
    with pytest.raises(SystemExit, match="not a folder written by training.pseudolabel"):
        main([str(a) for a in base[:2] + ["--pseudo", tmp_path, "--skip-train", "--refiner", tmp_path]])
    bad = tmp_path / "bad.pt"
    torch.save({"mask_decoder.nothing": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match="missing"):
        load_refiner(tiny_model(), bad)
