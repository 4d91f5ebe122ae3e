"""pseudolabel -> refine -> finetune -> evaluate, chained through their ``main(argv)``."""

from __future__ import annotations

import csv
import shutil

import torch

from test_training_finetune import make_dataset, save_tiny_model
from training import evaluate, finetune, pseudolabel, pseudo_store, refine


def test_pipeline_runs_end_to_end(tmp_path):
    base = save_tiny_model(tmp_path / "base.pth")
    data = make_dataset(tmp_path / "data", count=1)
    make_dataset(tmp_path / "raw", count=1, seed=5)
    shutil.move(tmp_path / "raw" / "images", data / "unlabeled")
    pseudo = tmp_path / "pseudo"

    assert pseudolabel.main([
        "--model", str(base), "--images", str(data), "--out", str(pseudo), "--points-per-side", "2",
        "--pred-iou-thresh", "0", "--stability-thresh", "0", "--device", "cpu", "--no-progress",
    ]) == 0
    folders = pseudo_store.image_folders(pseudo)
    assert [f.name for f in folders] == ["im0"]
    rows = pseudo_store.read_masks_csv(folders[0])
    assert rows

    assert refine.main([
        "--model", str(base), "--data", str(data), "--pseudo", str(pseudo), "--out", str(tmp_path / "refiner"),
        "--epochs", "1", "--min-iou", "0", "--pred-iou-thresh", "0", "--stability-thresh", "0",
        "--max-area-fraction", "1", "--device", "cpu", "--no-progress",
    ]) == 0
    assert pseudo_store.uncertainty_path(folders[0], rows[0].index).is_file()

    run = tmp_path / "run"
    assert finetune.main([
        "--checkpoint", str(base), "--data", str(data), "--pseudo", str(pseudo), "--output", str(run),
        "--epochs", "1", "--batch-size", "1", "--max-instances", "1", "--max-pseudo-masks", "2",
        "--pseudo-ratio", "1", "--no-augment", "--device", "cpu", "--no-progress",
    ]) == 0
    with (run / "metrics.csv").open() as handle:
        kinds = [row["kind"] for row in csv.DictReader(handle)]
    assert kinds == ["human", "pseudo"]
    final = torch.load(run / "final.pth")
    assert "mask_decoder.task_prompt_tokens.0.weight" in final

    # Human steps per pseudo step count over the whole run, not within an epoch: with one human batch per
    # epoch and --pseudo-ratio 2, every second epoch has a pseudo step (counted per epoch, none ever ran).
    ratio_run = tmp_path / "ratio_run"
    assert finetune.main([
        "--checkpoint", str(base), "--data", str(data), "--pseudo", str(pseudo), "--output", str(ratio_run),
        "--epochs", "4", "--batch-size", "1", "--max-instances", "1", "--max-pseudo-masks", "2",
        "--pseudo-ratio", "2", "--no-augment", "--device", "cpu", "--no-progress",
    ]) == 0
    with (ratio_run / "metrics.csv").open() as handle:
        kinds = [row["kind"] for row in csv.DictReader(handle)]
    assert kinds == ["human", "human", "pseudo"] * 2

    out = tmp_path / "eval.csv"
    assert evaluate.main([
        "--checkpoints", str(base), str(run / "final.pth"), "--data", str(data), "--clicks", "1",
        "--output", str(out), "--device", "cpu", "--no-progress",
    ]) == 0
    with out.open() as handle:
        table = list(csv.DictReader(handle))
    assert [r["dataset"] for r in table] == ["data", "overall"] * 2
    assert all(0.0 <= float(r["box mIoU"]) <= 1.0 for r in table)
