"""The example scripts run and produce their outputs (small random-weight model)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_segment_sample_example_saves_a_figure(small_hq_checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "figure.png"
    monkeypatch.setattr(sys, "argv", ["segment_sample.py", "--model", small_hq_checkpoint, "--device", "cpu",
                                      "--out", str(out)])
    runpy.run_path(str(EXAMPLES / "segment_sample.py"), run_name="__main__")
    figure = np.asarray(Image.open(out))
    assert figure.shape[0] > 300 and figure.shape[1] > 900
    assert figure[..., :3].std() > 10  # not a blank canvas
