"""AutoOptions (the automatic-segmentation options as data) and the shared validators."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from sum_core.auto_options import AutoOptions
from sum_core.errors import InvalidInputError
from sum_core.validation import check_bool, check_int, check_range, check_task


def test_defaults_are_sams_and_json_ready():
    opts = AutoOptions()
    assert opts.to_dict() == {
        "points_per_side": 32,
        "points_per_batch": 64,
        "pred_iou_thresh": 0.88,
        "stability_thresh": 0.95,
        "stability_offset": 1.0,
        "box_nms_thresh": 0.7,
        "min_area": 0,
        "max_area_fraction": 1.0,
        "multimask": True,
        "hq_token_only": False,
        "task": None,
    }
    assert json.loads(json.dumps(opts.to_dict())) == opts.to_dict()
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.min_area = 3  # type: ignore[misc]


def test_numpy_values_become_plain_python():
    opts = AutoOptions(points_per_side=np.int64(8), pred_iou_thresh=np.float32(0.5), multimask=np.bool_(False))
    assert type(opts.points_per_side) is int and opts.points_per_side == 8
    assert type(opts.pred_iou_thresh) is float and opts.pred_iou_thresh == 0.5
    assert opts.multimask is False
    assert AutoOptions(points_per_side=8) == AutoOptions(points_per_side=np.int64(8))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("points_per_side", 0, "points_per_side must be an integer >= 1, got 0"),
        ("points_per_side", 4.0, "points_per_side must be an integer >= 1"),
        ("points_per_batch", 0, "points_per_batch must be an integer >= 1"),
        ("pred_iou_thresh", 1.5, r"pred_iou_thresh must lie in \[0.0, 1.0\], got 1.5"),
        ("pred_iou_thresh", float("nan"), r"pred_iou_thresh must lie in \[0.0, 1.0\]"),
        ("stability_thresh", -0.1, "stability_thresh must lie"),
        ("stability_offset", -1.0, r"stability_offset must lie in \[0.0, inf\]"),
        ("box_nms_thresh", "high", "box_nms_thresh must be a number, got 'high'"),
        ("min_area", -1, "min_area must be an integer >= 0"),
        ("min_area", True, "min_area must be an integer >= 0, got True"),
        ("max_area_fraction", 0.0, "max_area_fraction must be > 0"),
        ("multimask", 1, "multimask must be True or False, got 1"),
        ("hq_token_only", "yes", "hq_token_only must be True or False"),
        ("task", 3, r"task=3 is not valid; choose one of \[None, 0, 1, 2\]"),
        ("task", True, "task=True is not valid"),
    ],
)
def test_bad_values_are_refused(name, value, message):
    with pytest.raises(InvalidInputError, match=message):
        AutoOptions(**{name: value})
    with pytest.raises(InvalidInputError, match=message):
        AutoOptions().replace(**{name: value})


def test_from_dict_and_replace():
    opts = AutoOptions.from_dict({"points_per_side": 8, "min_area": 20})
    assert (opts.points_per_side, opts.min_area, opts.pred_iou_thresh) == (8, 20, 0.88)
    assert opts.replace(task=2) == AutoOptions(points_per_side=8, min_area=20, task=2)
    assert AutoOptions.from_dict(opts.to_dict()) == opts
    with pytest.raises(InvalidInputError, match=r"unknown option\(s\) \['points'\]; automatic options are"):
        AutoOptions.from_dict({"points": 8})
    with pytest.raises(InvalidInputError, match=r"unknown option\(s\) \['tile_shape'\]"):
        opts.replace(tile_shape=512)
    assert AutoOptions.names()[0] == "points_per_side" and len(AutoOptions.names()) == 11
    assert all(f.metadata["help"] for f in dataclasses.fields(AutoOptions))


def test_validators():
    assert check_range(np.float32(0.25), "x", 0, 1) == 0.25
    assert check_int(np.int32(3), "n", 1) == 3
    assert check_bool(np.bool_(True), "flag") is True
    assert check_task(None, allow_none=True) is None and check_task(np.int64(2)) == 2
    with pytest.raises(InvalidInputError, match=r"task=None is not valid; choose one of \[0, 1, 2\]"):
        check_task(None)
    with pytest.raises(InvalidInputError, match="x must be a number, got True"):
        check_range(True, "x", 0, 1)


def test_importing_the_options_does_not_import_torch():
    code = "import sys, sum_core.auto_options, sum_core.validation; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
