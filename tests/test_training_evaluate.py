"""training.evaluate: protocols, tables and CSVs on known (monkeypatched) predictions."""

from __future__ import annotations

import csv
import math
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile

from sum_core.prediction import Prediction
from training import evaluate
from training.metrics import boundary_iou

SQUARE = (slice(10, 30), slice(10, 30))


def _truth() -> np.ndarray:
    mask = np.zeros((64, 64), bool)
    mask[SQUARE] = True
    return mask


def _half() -> np.ndarray:
    mask = np.zeros((64, 64), bool)
    mask[10:30, 10:20] = True
    return mask



def _prediction(mask, uncertainty, logits) -> Prediction:
    """One object as the predictor returns it for a tiled image (full-size mask prompts)."""
    return Prediction(masks=mask[None], scores=np.ones(1, np.float32), logits=logits[None],
                      uncertainties=uncertainty[None], low_res_logits=None)

class FakePredictor:
    """Box prompt: the left half of the square ("half") or the square ("good"); clicks: the square."""

    calls: list[dict] = []

    def __init__(self, model, device=None):
        self.model = model

    def set_image(self, image):
        assert image.shape == (64, 64, 3)

    def predict(self, points=None, labels=None, box=None, mask_input=None, task=1, **options):
        FakePredictor.calls.append({"points": points, "labels": labels, "box": box, "mask_input": mask_input,
                                    "task": task, **options})
        truth = _truth()
        mask = _half() if box is not None and self.model.name == "half" else truth
        return _prediction(mask, (mask != truth).astype(np.float32), np.where(mask, 7.0, -7.0).astype(np.float32))


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    image = np.zeros((64, 64), np.uint8)
    image[SQUARE] = 200
    tifffile.imwrite(root / "images" / "a.tif", image)
    tifffile.imwrite(root / "masks" / "a.tif", _truth().astype(np.uint8) * 3)
    return root


def test_known_predictions_give_expected_tables(tmp_path, dataset, monkeypatch, capsys):
    FakePredictor.calls = []
    monkeypatch.setattr(evaluate, "Predictor", FakePredictor)
    monkeypatch.setattr(
        evaluate, "load_model",
        lambda name, device=None, base=None: SimpleNamespace(name=name, config=SimpleNamespace(hq=True)),
    )
    out = tmp_path / "res.csv"
    code = evaluate.main(["--checkpoints", "half", "good", "--data", str(dataset), "--output", str(out),
                          "--no-progress", "--task", "2"])
    assert code == 0
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["checkpoint"], r["dataset"]) for r in rows] == [
        ("half", "ds"), ("half", "overall"), ("good", "ds"), ("good", "overall")
    ]
    half = rows[0]
    assert float(half["box mIoU"]) == pytest.approx(0.5)
    assert float(half["box mBIoU"]) == pytest.approx(boundary_iou(_half(), _truth()))
    assert float(half["box mBIoU"]) < 1
    for n in (1, 3, 5):
        assert float(half[f"{n}pt mIoU"]) == 1.0
    assert float(half["AUROC"]) == 1.0 and float(half["AUPRC"]) == 1.0
    assert float(half["acc certain"]) == 1.0 and float(half["acc uncertain"]) == 0.0
    good = rows[2]
    assert float(good["box mIoU"]) == 1.0
    assert math.isnan(float(good["AUROC"]))  # no error pixel: undefined
    assert rows[1]["instances"] == "1"

    # One box prediction per checkpoint, then a single click: the prediction is perfect, so
    # no further click is placed; the first click is the square's centre, positive, no mask input.
    clicks = [c for c in FakePredictor.calls if c["points"] is not None]
    assert len(clicks) == 2 and len(FakePredictor.calls) == 4
    first = clicks[0]
    assert first["labels"].tolist() == [1] and first["mask_input"] is None
    assert 18 <= first["points"][0][0] <= 21 and 18 <= first["points"][0][1] <= 21
    # the predictor's default uncertainty ("auto": disagreement for HQ / SUM, entropy for SAM)
    assert all(c["task"] == 2 and "uncertainty" not in c for c in FakePredictor.calls)
    box = [c["box"] for c in FakePredictor.calls if c["box"] is not None][0]
    assert box.tolist() == [10, 10, 29, 29]

    printed = capsys.readouterr().out
    assert "| half | ds | 1 | 50.0 |" in printed
    assert "| good | overall | 1 | 100.0 | 100.0 |" in printed
    assert (tmp_path / "res_instances.csv").read_text().count("\n") == 3


def test_click_protocol_feeds_previous_logits():
    class Stepper:
        model = SimpleNamespace(config=SimpleNamespace(hq=False))
        inputs: list = []

        def predict(self, points=None, labels=None, box=None, mask_input=None, task=1):
            Stepper.inputs.append(mask_input)
            truth = _truth()
            mask = _half() if points is None or len(points) < 3 else truth
            return _prediction(mask, np.zeros((64, 64), np.float32), np.full((64, 64), len(Stepper.inputs), np.float32))

    scores = evaluate.score_instance(Stepper(), _truth(), [1, 3, 5], task=1, threshold=0.6)
    assert scores["1pt mIoU"] == pytest.approx(0.5)
    assert scores["3pt mIoU"] == 1.0 and scores["5pt mIoU"] == 1.0
    # box call, then clicks 1..3 (click 4 is not needed); click k gets the full-size logits of click k-1
    assert Stepper.inputs[1] is None
    assert Stepper.inputs[2].shape == (64, 64) and Stepper.inputs[2][0, 0] == 2 and Stepper.inputs[3][0, 0] == 3
    assert len(Stepper.inputs) == 4


def test_bad_click_count_is_an_error(dataset, capsys):
    assert evaluate.main(["--checkpoints", "x", "--data", str(dataset), "--clicks", "0"]) == 2
    assert "--clicks must be >= 1" in capsys.readouterr().err
