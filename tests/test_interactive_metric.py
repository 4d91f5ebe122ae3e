"""training.interactive_metric: the simulated users and the clicks-to-IoU metric on hand-made models."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from sum_core.errors import InvalidInputError
from sum_core.loading import load_model
from sum_core.prediction import Prediction
from sum_core.predictor import Predictor
from training.interactive_metric import (
    RandomUser,
    SuggestedUser,
    centre_user,
    clicks_to_reach,
    iou_per_click,
    make_user,
    markdown_table,
    score_dataset,
    summarise,
)

SHAPE = (60, 80)


def _target() -> np.ndarray:
    target = np.zeros(SHAPE, bool)
    target[10:40, 20:50] = True
    return target


class _ScriptedPredictor:
    """Returns ``answers[n]`` (mask, uncertainty) for its n-th call and records the clicks it got."""

    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def predict(self, points, labels, mask_input=None, **options):
        self.calls.append((points.tolist(), labels.tolist(), mask_input is not None, options))
        mask, uncertainty = self.answers[min(len(self.calls), len(self.answers)) - 1]
        logits = np.where(mask, 10.0, -10.0).astype(np.float32)
        return Prediction(mask[None], np.ones(1, np.float32), logits[None], uncertainty[None].astype(np.float32),
                          None)


@pytest.mark.parametrize("name", ["suggested", "centre", "random"])
def test_a_perfect_model_needs_one_click_for_every_user(name):
    target = _target()
    predictor = _ScriptedPredictor([(target, np.zeros(SHAPE))])
    ious = iou_per_click(predictor, target, make_user(name), max_clicks=10, stop_at=0.9, task=1)
    assert ious == [1.0]
    point, label = predictor.calls[0][0][0], predictor.calls[0][1][0]
    assert label == 1 and target[tuple(point)]
    assert predictor.calls[0][2:] == (False, {"task": 1})  # no mask prompt before the first segmentation


def test_suggested_user_clicks_the_uncertain_missed_part_with_the_truths_label():
    target = _target()
    first = target.copy()
    first[30:40, 20:30] = False  # a 10 x 10 corner missed ...
    u = np.zeros(SHAPE)
    u[30:40, 20:30] = 0.9  # ... where the model is unsure
    predictor = _ScriptedPredictor([(first, u), (target, np.zeros(SHAPE))])
    user = SuggestedUser()
    ious = iou_per_click(predictor, target, user, max_clicks=10, stop_at=0.9)
    assert ious == [pytest.approx(800 / 900), 1.0]
    # first click: the object's centre (standard); second: the uncertain corner's centre, positive
    assert predictor.calls[1][0] == [[24, 34], [34, 24]] and predictor.calls[1][1] == [1, 1]
    assert predictor.calls[1][2] is True  # the previous logits fed back
    assert (user.suggested, user.agreed, user.none) == (1, 1, 0)
    assert clicks_to_reach(ious, 0.85) == 1 and clicks_to_reach(ious, 0.9) == 2


def test_a_suggestion_with_the_wrong_label_is_answered_from_the_truth():
    target = _target()
    first = target.copy()
    first[30:40, 20:30] = False
    u = np.zeros(SHAPE)
    u[12:25, 22:35] = 0.9  # unsure inside the mask, where it is right: the user answers positive
    predictor = _ScriptedPredictor([(first, u), (first, u)])
    user = SuggestedUser()
    ious = iou_per_click(predictor, target, user, max_clicks=3, stop_at=0.9)
    assert len(ious) == 3 and predictor.calls[1][1] == [1, 1] and predictor.calls[1][0][1] == [18, 28]
    assert (user.suggested, user.agreed, user.none) == (2, 0, 0)


def test_nothing_uncertain_stops_the_suggested_user():
    target = _target()
    first = target.copy()
    first[10:40, 40:50] = False
    predictor = _ScriptedPredictor([(first, np.zeros(SHAPE))])
    user = SuggestedUser()
    ious = iou_per_click(predictor, target, user, max_clicks=10, stop_at=0.9)
    assert ious == [pytest.approx(600 / 900)] and len(predictor.calls) == 1 and user.none == 1
    assert clicks_to_reach(ious, 0.85) is None


def test_centre_user_fixes_the_largest_error_and_random_user_stays_in_the_error_region():
    target = _target()
    first = target.copy()
    first[10:40, 40:50] = False  # 300 px missed
    first[45:50, 60:70] = True  # 50 px extra
    predictor = _ScriptedPredictor([(first, np.zeros(SHAPE)), (target, np.zeros(SHAPE))])
    assert iou_per_click(predictor, target, centre_user, 5, 0.9) == [pytest.approx(600 / 950), 1.0]
    # the 30 x 10 missed strip: column 44 is 5 from its border on rows 14..35; the first wins
    assert predictor.calls[1][0][1] == [14, 44] and predictor.calls[1][1] == [1, 1]

    clicks = []
    for seed in (0, 0, 1):
        predictor = _ScriptedPredictor([(first, np.zeros(SHAPE))])
        iou_per_click(predictor, target, RandomUser(seed), 4, 0.9)
        points, labels = predictor.calls[-1][:2]
        assert all(first[p[0], p[1]] != target[p[0], p[1]] for p in points[1:])
        assert [int(target[p[0], p[1]]) for p in points] == labels
        clicks.append(points)
    assert clicks[0] == clicks[1] and clicks[0] != clicks[2]  # reproducible from the seed


def test_summary_counts_objects_that_never_reach_as_max_clicks():
    rows = [
        {"model": "m", "user": "centre", "ious": [0.5, 0.86, 0.95]},
        {"model": "m", "user": "centre", "ious": [0.2, 0.4]},
        {"model": "m", "user": "suggested", "ious": []},
    ]
    table = summarise(rows, (0.85, 0.9), max_clicks=10)
    assert table[0] == {"model": "m", "user": "centre", "objects": 2, "NoC@85": 6.0, "reached 85": 0.5,
                        "NoC@90": 6.5, "reached 90": 0.5, "IoU 1st click": pytest.approx(0.35),
                        "best IoU": pytest.approx(0.675)}
    assert table[1]["NoC@85"] == 10.0 and table[1]["IoU 1st click"] == table[1]["best IoU"] == 0.0
    line = markdown_table(table, (0.85, 0.9)).splitlines()[2]
    assert line == "| m | centre | 2 | 6.00 | 50 | 6.50 | 50 | 0.350 | 0.675 |"


def test_bad_arguments_are_clear_errors():
    with pytest.raises(InvalidInputError, match="user='nobody'"):
        make_user("nobody")
    with pytest.raises(InvalidInputError, match="max_clicks"):
        iou_per_click(_ScriptedPredictor([]), _target(), centre_user, max_clicks=0)


def test_score_dataset_runs_a_real_model_click_by_click(small_hq_checkpoint, tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    image = np.full((64, 64), 20, np.uint8)
    labels = np.zeros((64, 64), np.uint16)
    image[10:30, 10:30], labels[10:30, 10:30] = 220, 3
    tifffile.imwrite(tmp_path / "images" / "a.tif", image)
    tifffile.imwrite(tmp_path / "masks" / "a.tif", labels)
    predictor = Predictor(load_model(small_hq_checkpoint, device="cpu"), device="cpu")
    users = {"centre": centre_user, "random": RandomUser(0), "suggested": SuggestedUser(threshold=0.0)}
    rows = score_dataset(predictor, tmp_path, users, max_clicks=2, stop_at=1.0, uncertainty="entropy")
    assert [(r["image"], r["instance"], r["user"]) for r in rows] == [
        ("a.tif", 3, "centre"), ("a.tif", 3, "random"), ("a.tif", 3, "suggested")
    ]
    assert all(len(r["ious"]) == 2 and all(0.0 <= v <= 1.0 for v in r["ious"]) for r in rows)


def test_the_benchmark_runs_quick(tmp_path, monkeypatch, capsys):
    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_suggested_click.py"
    monkeypatch.setattr(sys, "argv", [str(bench), "--quick", "--workdir", str(tmp_path)])
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts examples/ on it
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(bench), run_name="__main__")
    assert done.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    head = "| model | user | objects | NoC@85 | reached 85 % | NoC@90 | reached 90 % | IoU 1st click | best IoU |"
    start = lines.index(head)
    users = [line.split(" | ")[1] for line in lines[start + 2 : start + 10]]
    assert users == ["suggested (disagreement)", "centre", "random", "suggested (entropy)"] * 2
    assert (tmp_path / "run" / "final.pth").is_file()
