"""``sum-hq batch`` command line (fake decoder)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import tifffile
import zarr
from scipy import ndimage

from sum_core.batch import auto as batch_auto
from sum_core.cli.batch import add_batch_parser
from sum_core.errors import InvalidInputError
from sum_core.modeling import build_from_config
from sum_core.tiling import tile_grid
from small_models import small_vit_config
from test_automatic import (
    BLOCK,
    assert_labels_are_truth,
    block_discs,
    expected_uncertainty,
    install_exact_fake,
    objects_for_grid,
    to_image,
)
from test_batch import Counter, blobs, same_partition, use_fake_decoder, use_model, write_table
from test_tiled_predictor import tiny_model


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sum-hq")
    add_batch_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["batch", *argv])
    return args.func(args)


def test_cli_auto_round_trip_and_resume(tmp_path, monkeypatch, capsys):
    counter = Counter()
    monkeypatch.setattr(batch_auto, "window_records", counter)
    use_model(monkeypatch, tiny_model())
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
    use_model(monkeypatch, tiny_model())  # no download
    use_fake_decoder(monkeypatch)
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


def test_cli_prompts_mode_refuses_automatic_options(tmp_path):
    table = write_table(tmp_path / "p.csv", ["1,,point,5,5,,,1"])
    with pytest.raises(InvalidInputError, match="--min-area, --no-multimask: automatic mode options do not apply"):
        run([str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr"), "--prompts", str(table), "--min-area", "3",
             "--no-multimask"])
    with pytest.raises(InvalidInputError, match=r"pred_iou_thresh must lie in \[0.0, 1.0\], got 2.0"):
        run([str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr"), "--pred-iou-thresh", "2"])
    assert not (tmp_path / "b.zarr").exists()


@pytest.mark.parametrize(
    ("shape", "flags"),
    [((2048, 2048), ["--tile", "1024"]), ((1040, 1392), ["--tile", "1000", "--halo", "64"]),
     pytest.param((2160, 2560), ["--tile", "2048", "--halo", "0"], marks=pytest.mark.slow)],
    ids=["2048x2048 tile 1024", "1040x1392 tile 1000 halo 64", "2160x2560 tile 2048 halo 0"],
)
def test_cli_auto_with_explicit_tiles_on_a_camera_frame(tmp_path, monkeypatch, shape, flags):
    """``sum-hq batch --tile ...`` on a uint16 TIFF: windows larger than the model input are
    encoded as one image each, and every object lands exactly on its pixels."""
    torch_model = build_from_config(small_vit_config())  # input size 1024
    use_model(monkeypatch, torch_model)
    encoded = install_exact_fake(monkeypatch)
    tile = int(flags[1])
    halo = int(flags[3]) if len(flags) > 2 else None
    grid = tile_grid(shape, 1024, tile, halo)
    assert all(r.row0 % BLOCK == 0 and r.col0 % BLOCK == 0 for r in (t.outer for t in grid))
    truth = block_discs(shape, objects_for_grid(grid, points_per_side=4, gap=300))
    tifffile.imwrite(tmp_path / "frame.tif", to_image(truth, np.uint16))
    argv = [str(tmp_path / "frame.tif"), str(tmp_path / "out.zarr"), *flags, "--points-per-side", "4",
            "--max-area-fraction", "0.5", "--no-progress"]
    assert run(argv) == 0
    out = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    assert out.attrs["sum_hq_batch"]["signature"]["tiling"] == {"tile_shape": list(grid.tile_shape),
                                                               "halo": list(grid.halo)}
    busy = [t.outer.shape for t in grid if truth[t.outer.slices].any()]  # constant windows are skipped
    assert sorted(encoded) == sorted(busy)  # one encode per window, whole
    assert max(max(s) for s in encoded) > 1024
    labels = out["labels"][...]
    assert_labels_are_truth(np.unique(labels, return_inverse=True)[1].reshape(shape).astype(np.uint32), truth)
    np.testing.assert_array_equal(out["uncertainty"][...], expected_uncertainty(truth).astype(np.float16))
