"""``sum-hq batch`` command line (fake decoder)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import tifffile
import zarr
from scipy import ndimage

from sum_core.batch import auto as batch_auto
from sum_core.batch import prompted as batch_prompted
from sum_core.cli.batch import add_batch_parser
from sum_core.errors import InvalidInputError
from sum_core.tiled_predictor import TiledPredictor
from test_batch import Counter, blobs, fake_decode, same_partition, write_table
from test_tiled_predictor import tiny_model


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sum-hq")
    add_batch_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["batch", *argv])
    return args.func(args)


def test_cli_auto_round_trip_and_resume(tmp_path, monkeypatch, capsys):
    counter = Counter()
    monkeypatch.setattr(batch_auto, "window_records", counter)
    stack = np.stack([blobs((90, 100), seed=s) for s in range(2)])
    root = zarr.open_group(str(tmp_path / "in.zarr"), mode="w")
    root.create_array("img", data=stack, dimension_names=("t", "y", "x"))
    argv = [str(tmp_path / "in.zarr"), str(tmp_path / "out.zarr"), "--key", "img", "--axis", "t",
            "--tile", "48,50", "--halo", "24", "--min-area", "3", "--no-progress"]
    assert run(argv) == 0
    assert "wrote" in capsys.readouterr().out
    out = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    labels = out["labels"][...]
    assert labels.shape == (2, 90, 100) and out["labels"].chunks == (1, 48, 50)
    assert out.attrs["sum_hq_batch"]["signature"]["options"]["min_area"] == 3
    for s in range(2):
        assert same_partition(labels[s], ndimage.label(stack[s] > 1000)[0])
    assert len(np.intersect1d(np.unique(labels[0])[1:], np.unique(labels[1])[1:])) == 0
    calls = counter.calls
    assert run(argv) == 0 and counter.calls == calls  # nothing redone
    with pytest.raises(InvalidInputError, match="different job"):
        run([*argv[:-1], "--points-per-side", "8"])
    assert run([*argv, "--points-per-side", "8", "--overwrite"]) == 0
    assert counter.calls == 2 * calls


def test_cli_prompts_on_tiff(tmp_path, monkeypatch):
    tiny = tiny_model()
    monkeypatch.setattr(batch_prompted, "_resolve_model", lambda model, device: tiny)  # no download
    monkeypatch.setattr(TiledPredictor, "_decode", fake_decode)
    image = np.zeros((60, 70), dtype=np.uint8)
    image[30:40, 20:35] = 255
    tifffile.imwrite(tmp_path / "img.tif", image)
    table = write_table(tmp_path / "p.csv", ["12,,point,35,25,,,1"])
    assert run([str(tmp_path / "img.tif"), str(tmp_path / "out.zarr"), "--prompts", str(table), "--no-progress"]) == 0
    labels = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["labels"][...]
    np.testing.assert_array_equal(np.argwhere(labels == 12).min(0), [30, 20])
    assert (labels == 12).sum() == 150 and set(np.unique(labels)) == {0, 12}


def test_cli_bad_tile_argument(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run([str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr"), "--tile", "4,x"])
    assert "expected R,C or N" in capsys.readouterr().err
