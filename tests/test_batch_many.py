"""sum_core.batch.segment_many / ``sum-hq batch FOLDER OUT_DIR``: many files in one job (fake decoder)."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from sum_core import loading
from sum_core.batch import auto as batch_auto
from sum_core.batch import segment_many, segment_zarr
from sum_core.batch.many import SUMMARY, list_sources, output_names
from sum_core.cli import main
from sum_core.errors import InvalidInputError
from test_batch import blobs, fake_records, use_model
from test_tiled_predictor import tiny_model

TILING = {"tile_shape": (32, 40), "halo": 8}  # 4 tiles per 64 x 80 plane: a file can stop between its tiles


class Calls:
    """The fake SAM generator of test_batch, counting calls and raising ``error`` on call ``fail_at``."""

    def __init__(self, fail_at: int | None = None, error: type[BaseException] = KeyboardInterrupt) -> None:
        self.calls, self.fail_at, self.error = 0, fail_at, error

    def __call__(self, window, model, device, options, cancel=None):
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.error("stopped by the test")
        return fake_records(window, model, device, options)


@pytest.fixture
def calls(monkeypatch):
    counter = Calls()
    monkeypatch.setattr(batch_auto, "window_records", counter)
    use_model(monkeypatch, tiny_model())
    return counter


def mixed_folder(folder):
    """Ten small images in four formats (one a 2-slice stack), plus files that are not images."""
    folder.mkdir()
    images = {}
    for i in range(3):
        images[f"plain{i}.tif"] = blobs((64, 80), seed=i)
        tifffile.imwrite(folder / f"plain{i}.tif", images[f"plain{i}.tif"])
    for i in range(2):
        images[f"ome{i}.ome.tif"] = blobs((64, 80), seed=10 + i)
        tifffile.imwrite(folder / f"ome{i}.ome.tif", images[f"ome{i}.ome.tif"], ome=True, metadata={"axes": "YX"})
    for i in range(3):
        data = blobs((64, 80), seed=20 + i) if i else np.stack([blobs((64, 80), seed=30 + s) for s in range(2)])
        root = zarr.open_group(str(folder / f"store{i}.zarr"), mode="w")
        root.create_array("img", data=data, dimension_names=("z", "y", "x")[-data.ndim:])
        images[f"store{i}.zarr"] = data
    for i in range(2):
        image = (blobs((64, 80), seed=40 + i) // 12).astype(np.uint8)
        Image.fromarray(image).save(folder / f"photo{i}.png")
        images[f"photo{i}.png"] = image
    (folder / "notes.txt").write_text("not an image\n")
    (folder / ".DS_Store").write_bytes(b"\0\1")
    return images


def outputs(out_dir):
    """Every output's labels and uncertainty, by output name."""
    found = {}
    for path in sorted(out_dir.glob("*.zarr")):
        group = zarr.open_group(str(path), mode="r")
        found[path.name] = (group["labels"][...], group["uncertainty"][...])
    return found


def summary(out_dir):
    with open(out_dir / SUMMARY, newline="") as handle:
        return list(csv.DictReader(handle))


def test_mixed_folder_interrupted_mid_file_resumes_to_the_uninterrupted_result(tmp_path, calls, monkeypatch):
    images = mixed_folder(tmp_path / "images")
    reference = segment_many(tmp_path / "images", tmp_path / "ref", progress=False, **TILING)
    assert [r.status for r in reference] == ["done"] * 10
    full = calls.calls
    expected = outputs(tmp_path / "ref")
    assert sorted(expected) == sorted(name.split(".")[0] + ".zarr" for name in images)
    for name, image in images.items():
        labels = expected[name.split(".")[0] + ".zarr"][0]
        assert labels.shape == image.shape and labels.max() > 0

    stopping = Calls(fail_at=full // 2 + 1)  # inside the sixth file, between its tiles
    monkeypatch.setattr(batch_auto, "window_records", stopping)
    with pytest.raises(KeyboardInterrupt):
        segment_many(tmp_path / "images", tmp_path / "out", progress=False, scheduler="synchronous", **TILING)
    rows = summary(tmp_path / "out")
    statuses = [row["status"] for row in rows]
    stopped = statuses.index("interrupted")
    assert statuses == ["done"] * stopped + ["interrupted"] + ["pending"] * (9 - stopped) and 0 < stopped < 9
    assert rows[stopped]["error"] == "KeyboardInterrupt: stopped by the test; rerun to resume"

    resumed = Calls()
    monkeypatch.setattr(batch_auto, "window_records", resumed)
    results = segment_many(tmp_path / "images", tmp_path / "out", progress=False, **TILING)
    assert [r.status for r in results] == ["done"] * 10
    # finished files not recomputed, the interrupted one resumed at its unfinished tiles
    assert resumed.calls == full - (stopping.calls - 1)
    got = outputs(tmp_path / "out")
    assert sorted(got) == sorted(expected)
    for name, (labels, uncertainty) in expected.items():
        np.testing.assert_array_equal(got[name][0], labels)
        np.testing.assert_array_equal(got[name][1], uncertainty)
    rows = summary(tmp_path / "out")
    ref_rows = summary(tmp_path / "ref")
    for row, ref in zip(rows, ref_rows):
        assert (row["output"], row["objects"], row["slices"]) == (ref["output"], ref["objects"], ref["slices"])
    stack = next(r for r in rows if r["output"] == "store0.zarr")
    assert stack["slices"] == "2" and int(stack["objects"]) == int(expected["store0.zarr"][0].max())

    again = Calls()
    monkeypatch.setattr(batch_auto, "window_records", again)
    segment_many(tmp_path / "images", tmp_path / "out", progress=False, **TILING)
    assert again.calls == 0  # a finished job is not recomputed


def test_a_failed_file_is_recorded_and_the_others_go_on_cli_exit_code(tmp_path, calls, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", blobs((64, 80), seed=1))
    (folder / "broken.tif").write_bytes(b"II*\0 this is not a TIFF")
    tifffile.imwrite(folder / "c.tif", blobs((64, 80), seed=2))
    code = main(["batch", str(folder / "*.tif"), str(tmp_path / "out"), "--tile", "32,40", "--halo", "8",
                 "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "failed: " + str((folder / "broken.tif").resolve()) in err and "1 file(s) failed" in err
    rows = {row["output"]: row for row in summary(tmp_path / "out")}
    assert [rows[n]["status"] for n in ("a.zarr", "broken.zarr", "c.zarr")] == ["done", "failed", "done"]
    assert "broken.tif" in rows["broken.zarr"]["error"] and rows["broken.zarr"]["objects"] == ""
    np.testing.assert_array_equal(
        zarr.open_group(str(tmp_path / "out" / "c.zarr"), mode="r")["labels"][...],
        segment_zarr(folder / "c.tif", tmp_path / "single.zarr", progress=False, tile_shape=(32, 40), halo=8)["labels"][...],
    )
    calls_before = calls.calls
    tifffile.imwrite(folder / "broken.tif", blobs((64, 80), seed=3))  # fixed by the user
    assert main(["batch", str(folder), str(tmp_path / "out"), "--tile", "32,40", "--halo", "8", "--no-progress"]) == 0
    assert calls.calls - calls_before == 4  # only the fixed file's four tiles
    assert [row["status"] for row in summary(tmp_path / "out")] == ["done"] * 3


def test_list_file_glob_and_name_collisions(tmp_path):
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        tifffile.imwrite(tmp_path / folder / "cells.tif", np.zeros((8, 8), np.uint8))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "x" / "cells.png")
    listing = tmp_path / "files.txt"
    listing.write_text("# my images\nx/cells.tif\n\ny/cells.tif\nx/cells.png\nx/cells.tif\n")
    sources = list_sources(listing)
    assert sources == [(tmp_path / p).resolve() for p in ("x/cells.tif", "y/cells.tif", "x/cells.png")]
    assert output_names(sources) == ["cells.zarr", "cells-2.zarr", "cells-3.zarr"]
    # a name given by an earlier run is kept when a new source sorts before it
    assert output_names(sources, {sources[2]: "cells.zarr"}) == ["cells-2.zarr", "cells-3.zarr", "cells.zarr"]
    assert list_sources(str(tmp_path / "*" / "cells.tif")) == sources[:2]
    listing.write_text("x/cells.tif\nx/missing.tif\n")
    with pytest.raises(InvalidInputError, match="line 2.*missing.tif does not exist"):
        list_sources(listing)
    with pytest.raises(InvalidInputError, match="matches no image"):
        list_sources(str(tmp_path / "*.tif"))


def test_refused_before_any_work(tmp_path, calls):
    folder = tmp_path / "images"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", blobs((64, 80), seed=1))
    with pytest.raises(InvalidInputError, match="is the source folder"):
        segment_many(folder, folder, progress=False)
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / SUMMARY).write_text("name,value\nx,1\n")
    with pytest.raises(InvalidInputError, match="not a summary of sum-hq batch"):
        segment_many(folder, tmp_path / "theirs", progress=False)
    assert (tmp_path / "theirs" / SUMMARY).read_text() == "name,value\nx,1\n"
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="holds no image"):
        segment_many(tmp_path / "empty", tmp_path / "out", progress=False)
    with pytest.raises(InvalidInputError, match="prompt table belongs to one image"):
        segment_many(folder, tmp_path / "out", mode="prompts", prompts=tmp_path / "p.csv", progress=False)
    assert calls.calls == 0 and not (tmp_path / "out").exists()


def test_model_file_loaded_once_for_all_files(tmp_path, small_hq_checkpoint, monkeypatch):
    monkeypatch.setattr(batch_auto, "window_records", Calls())
    checkpoint = tmp_path / "model.pth"
    shutil.copy(small_hq_checkpoint, checkpoint)  # a path no earlier test loaded
    loads = []
    real = loading._load
    monkeypatch.setattr(loading, "_load", lambda *a, **k: loads.append(a) or real(*a, **k))
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        tifffile.imwrite(folder / f"{i}.tif", blobs((64, 80), seed=i))
    progress = []
    results = segment_many(folder, tmp_path / "out", model=checkpoint, progress=False, mode="amg",
                           on_progress=lambda *values: progress.append(values), **TILING)
    assert [r.status for r in results] == ["done"] * 3
    assert len(loads) == 1
    assert progress[0] == (0, 3, 0.0, 0) and progress[-1] == (3, 3, 0.0, 0)
    for index in range(3):  # each file's tasks counted up to their total while it runs
        assert any(f == index and d == t > 0 for f, n, d, t in progress)



def test_a_later_run_never_takes_the_output_of_a_file_it_does_not_list(tmp_path, calls):
    """Review finding: a/x.tif, then b/x.tif, then c/x.tif into one folder gave c the output of a (and with
    overwrite=True would have cleared a's results)."""
    names = []
    for seed, folder in enumerate(("a", "b", "c")):
        (tmp_path / folder).mkdir()
        tifffile.imwrite(tmp_path / folder / "x.tif", blobs((64, 80), seed=seed))
        result, = segment_many([tmp_path / folder / "x.tif"], tmp_path / "out", progress=False, **TILING)
        names.append(result.output)
    assert names == ["x.zarr", "x-2.zarr", "x-3.zarr"]
    assert len(summary(tmp_path / "out")) == 3  # every file's row is kept
