"""training.pseudolabel (AMG over a folder) and training.pseudo_store (folder layout)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from small_models import small_vit_config
from sum_core.auto_options import AutoOptions
from sum_core.automatic import generate_masks
from sum_core.encoding import encode_image, weights_hash
from sum_core.errors import InvalidInputError
from sum_core.image import prepare_image
from sum_core.imageio import read_image, write_image
from sum_core.modeling import build_from_config
from training import pseudo_store as store
from training.pseudolabel import main

RELAXED = [
    "--points-per-side", "3", "--pred-iou-thresh", "0", "--stability-thresh", "0",
    "--max-area-fraction", "1", "--box-nms-thresh", "1", "--device", "cpu", "--no-progress",
]


def tiny_model():
    """Random small HQ model with a 256-pixel input (fast on CPU)."""
    torch.manual_seed(0)
    return build_from_config(small_vit_config().replace(image_size=256, decoder_depth=1))


def blob_image(i: int) -> np.ndarray:
    img = np.full((64, 48), 20, np.uint8)
    img[8 + 6 * i : 30 + 6 * i, 10:36] = 230
    return img


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pl")
    model = tiny_model()
    torch.save(model.state_dict(), root / "model.pt")
    images = root / "images"
    images.mkdir()
    for i in range(2):
        write_image(images / f"im{i}.png", blob_image(i))
    return root, model


def run(argv):
    return main([str(a) for a in argv])


def test_writes_layout_matching_generate_masks(setup, tmp_path):
    root, model = setup
    out = tmp_path / "pseudo"
    assert run(["--model", root / "model.pt", "--images", root / "images", "--out", out] + RELAXED) == 0

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["weights_hash"] == weights_hash(model) and manifest["format"] == 2
    assert manifest["filters"]["points_per_side"] == 3 and manifest["filters"]["pred_iou_thresh"] == 0
    assert manifest["images"] == {"im0": "im0.png", "im1": "im1.png"}
    assert manifest["model"] == str(root / "model.pt")
    assert sorted(p.name for p in out.iterdir()) == ["im0", "im1", "manifest.json"]

    # Same AMG run done here directly: the folder must hold exactly its records.
    options = AutoOptions(
        points_per_side=3, pred_iou_thresh=0.0, stability_thresh=0.0, box_nms_thresh=1.0, max_area_fraction=1.0
    )
    assert manifest["filters"] == options.to_dict()
    records = generate_masks(model, encode_image(model, prepare_image(blob_image(1))), options)
    assert len(records) > 1
    folder = out / "im1"
    with open(folder / "masks.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(store.CSV_COLUMNS)
    assert len(rows) == len(records)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["masks.csv"] + [f"prob_{i}.png" for i in range(len(records))]
    )
    for i, (row, rec) in enumerate(zip(rows, records)):
        assert int(row["index"]) == i
        assert float(row["score"]) == pytest.approx(rec.score, abs=1e-6)
        assert float(row["stability"]) == pytest.approx(rec.stability, abs=1e-6)
        assert int(row["area"]) == rec.area
        assert (float(row["point_row"]), float(row["point_col"])) == pytest.approx(rec.point)
        assert [float(row[k]) for k in store.CSV_COLUMNS[6:]] == list(rec.box)
        prob = read_image(folder / f"prob_{i}.png")
        assert prob.dtype == np.uint8 and prob.shape == (64, 48)
        expected = np.rint(255 / (1 + np.exp(-rec.logits.astype(np.float64)))).astype(np.uint8)
        assert np.abs(prob.astype(int) - expected).max() <= 1
        assert ((prob > 127) == rec.mask).mean() > 0.99
    assert [m.index for m in store.read_masks_csv(folder)] == list(range(len(records)))


def test_resume_skips_finished_images_and_removes_partial_folders(setup, tmp_path):
    root, _ = setup
    out = tmp_path / "pseudo"
    argv = ["--model", root / "model.pt", "--images", root / "images", "--out", out] + RELAXED
    run(argv)
    kept = (out / "im0" / "masks.csv").stat().st_mtime_ns
    redo = sorted(p.name for p in (out / "im1").iterdir())
    for p in (out / "im1").iterdir():
        p.unlink()
    (out / "im1").rmdir()
    partial = out / f".im1{store.PARTIAL_MARKER}abc"
    partial.mkdir()
    (partial / "prob_0.png").write_bytes(b"half")

    run(argv)
    assert (out / "im0" / "masks.csv").stat().st_mtime_ns == kept
    assert sorted(p.name for p in (out / "im1").iterdir()) == redo
    assert not partial.exists()

    with pytest.raises(SystemExit, match="another filters"):
        run(argv + ["--pred-iou-thresh", "0.5"])


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing_write(path, array):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        write_image(path, array)

    monkeypatch.setattr(store, "write_image", failing_write)
    rows = [store.PseudoMask(i, 0.9, 0.96, 4, (1.0, 1.0), (0.0, 0.0, 1.0, 1.0)) for i in range(2)]
    probs = [np.full((4, 4), 200, np.uint8)] * 2
    with pytest.raises(OSError, match="disk full"):
        store.write_image_folder(tmp_path, "img", rows, probs)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    store.write_image_folder(tmp_path, "img", rows, probs)
    assert store.is_complete(tmp_path, "img")
    assert store.read_masks_csv(tmp_path / "img") == rows


def test_probability_encoding():
    logits = np.array([-50.0, -1.0, 0.0, 1.0, 50.0])
    expected = [0, round(255 / (1 + np.e)), 128, round(255 / (1 + np.exp(-1))), 255]
    assert store.logits_to_uint8(logits).tolist() == expected


def test_errors_empty_folder_unreadable_image(setup, tmp_path):
    root, _ = setup
    empty = tmp_path / "empty"
    empty.mkdir()
    base = ["--model", root / "model.pt", "--out", tmp_path / "out"] + RELAXED
    with pytest.raises(SystemExit, match="has no image"):
        run(base + ["--images", empty])
    with pytest.raises(SystemExit, match="does not exist"):
        run(base + ["--images", tmp_path / "missing"])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"not a png")
    with pytest.raises(SystemExit, match=r"broken\.png cannot be used"):
        run(base + ["--images", bad])
    assert not (tmp_path / "out" / "broken").exists()
    with pytest.raises(InvalidInputError, match="pseudo: .* has no manifest.json"):
        store.read_manifest(empty)
