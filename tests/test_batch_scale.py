"""segment_zarr(channel=): the channels fed to the model, signed; the source's scale and units on the outputs."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from sum_core.batch import auto as batch_auto
from sum_core.batch import segment_zarr
from sum_core.errors import InvalidInputError
from test_batch import blobs, fake_records, same_partition, use_model

KW = dict(tile_shape=(48, 64), halo=16, progress=False)


@pytest.fixture
def fake(monkeypatch):
    from test_tiled_predictor import tiny_model

    use_model(monkeypatch, tiny_model())
    monkeypatch.setattr(batch_auto, "window_records", fake_records)


def ome_zarr_czyx(path, data: np.ndarray) -> None:
    """An NGFF 0.5 image (c, z, y, x) with a physical pixel size, as ome-zarr-py writes it."""
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    root.create_array("0", data=data, chunks=(1, 1, *data.shape[2:]), dimension_names=("c", "z", "y", "x"))
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": n, "type": "space", "unit": "micrometer"} for n in ("z", "y", "x")
    ]
    transforms = [{"type": "scale", "scale": [1.0, 2.0, 0.5, 0.25]}]
    root.attrs["ome"] = {"version": "0.5", "multiscales": [
        {"axes": axes, "datasets": [{"path": "0", "coordinateTransformations": transforms}]}
    ]}


def test_channel_chooses_what_the_model_sees_and_outputs_carry_scale_and_units(tmp_path, fake):
    first, second = (np.stack([blobs((96, 120), seed=10 * c + s, n=4) for s in range(3)]) for c in (1, 2))
    source = tmp_path / "img.ome.zarr"
    ome_zarr_czyx(source, np.stack([first, second]))
    group = segment_zarr(source, tmp_path / "c1.zarr", channel=1, axis="z", **KW)
    labels = group["labels"]
    assert labels.shape == (3, 96, 120) and labels.metadata.dimension_names == ("z", "y", "x")
    assert labels.attrs["scale"] == [2.0, 0.5, 0.25] and labels.attrs["units"] == ["micrometer"] * 3
    assert group["uncertainty"].attrs["scale"] == [2.0, 0.5, 0.25]
    assert group.attrs["sum_hq_batch"]["signature"]["channel"] == [1]
    for s in range(3):  # channel 1 only, never the channels as slices
        assert same_partition(labels[s], segment_zarr(second[s], tmp_path / f"p{s}.zarr", **KW)["labels"][...])
    with pytest.raises(InvalidInputError, match=r"different job \(differs in channel\)"):
        segment_zarr(source, tmp_path / "c1.zarr", channel=0, axis="z", **KW)


def test_a_source_without_scale_gets_unit_scale_and_no_units(tmp_path, fake):
    group = segment_zarr(blobs((96, 120), seed=0), tmp_path / "out.zarr", **KW)
    assert group["labels"].attrs["scale"] == [1.0, 1.0] and group["labels"].attrs["units"] == [None, None]
    assert "channel" not in group.attrs["sum_hq_batch"]["signature"]  # signatures of jobs before channel=
