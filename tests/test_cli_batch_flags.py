"""``sum-hq batch --channel``: the channel fed to the model, for one source and for a folder (fake decoder)."""

from __future__ import annotations

import numpy as np
import zarr
from scipy import ndimage

from sum_core.batch import auto as batch_auto
from sum_core.cli import main
from test_batch import Counter, blobs, same_partition, use_model
from test_tiled_predictor import tiny_model

TILING = ["--tile", "48,50", "--halo", "24", "--no-progress"]  # halo > a disc: none lost at seams


def two_channels(path, seed):
    """(c, y, x): channel 0 dark noise, channel 1 bright discs."""
    data = np.stack([np.zeros((64, 80), np.uint16) + 7, blobs((64, 80), seed=seed)])
    zarr.open_group(str(path), mode="w").create_array("img", data=data, dimension_names=("c", "y", "x"))
    return data


def test_channel_flag_one_source_and_a_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(batch_auto, "window_records", Counter())
    use_model(monkeypatch, tiny_model())
    data = two_channels(tmp_path / "one.zarr", seed=0)
    assert main(["batch", str(tmp_path / "one.zarr"), str(tmp_path / "refused.zarr"), *TILING]) == 2
    assert "--channel" in capsys.readouterr().err  # two channels: the model's input must be chosen
    assert main(["batch", str(tmp_path / "one.zarr"), str(tmp_path / "out.zarr"), "--channel", "1", *TILING]) == 0
    labels = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["labels"][...]
    assert labels.shape == (64, 80) and same_partition(labels, ndimage.label(data[1] > 1000)[0])

    folder = tmp_path / "images"
    folder.mkdir()
    stacks = [two_channels(folder / f"{name}.zarr", seed) for seed, name in enumerate("ab", start=5)]
    assert main(["batch", str(folder), str(tmp_path / "many"), "--channel", "1", *TILING]) == 0
    for name, stack in zip("ab", stacks):
        labels = zarr.open_group(str(tmp_path / "many" / f"{name}.zarr"), mode="r")["labels"][...]
        assert same_partition(labels, ndimage.label(stack[1] > 1000)[0])
    assert main(["batch", str(folder), str(tmp_path / "dark"), "--channel", "0", *TILING]) == 0
    assert zarr.open_group(str(tmp_path / "dark" / "a.zarr"), mode="r")["labels"][...].max() == 0


def test_format_ome_zarr_flag_one_source_and_a_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(batch_auto, "window_records", Counter())
    use_model(monkeypatch, tiny_model())
    folder = tmp_path / "images"
    folder.mkdir()
    images = {name: blobs((64, 80), seed=seed) for seed, name in enumerate("ab")}
    for name, image in images.items():
        zarr.open_group(str(folder / f"{name}.zarr"), mode="w").create_array("img", data=image)
    assert main(["batch", str(folder / "a.zarr"), str(tmp_path / "one.ome.zarr"), "--format", "ome-zarr", *TILING]) == 0
    assert main(["batch", str(folder), str(tmp_path / "many"), "--format", "ome-zarr", *TILING]) == 0
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["a.ome.zarr", "b.ome.zarr", "summary.csv"]
    for path, name in ((tmp_path / "one.ome.zarr", "a"), (tmp_path / "many" / "a.ome.zarr", "a"),
                       (tmp_path / "many" / "b.ome.zarr", "b")):
        group = zarr.open_group(str(path), mode="r")
        assert "multiscales" in group.attrs["ome"]  # an NGFF image, with its label image
        label_name = group["labels"].attrs["ome"]["labels"][0]
        labels = group[f"labels/{label_name}/0"][...]
        assert same_partition(labels, ndimage.label(images[name] > 1000)[0])
