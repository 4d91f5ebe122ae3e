"""export_result(to="ome-zarr") / ``sum-hq export RESULT --to ome-zarr OUT``: a result as an NGFF 0.5 label image.

Validated by ome-zarr-models (``ImageLabel``, ``Image``), read back by ome-zarr-py's reader and by this plugin's
napari reader: ids and level shapes exactly, per-object properties equal :func:`object_scores` on the whole
plane (computed on each object's window: the same pixels in the same order, so bit for bit), the uncertainty
within float16 rounding (half a step below 1: 2**-12).
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

pytest.importorskip("ome_zarr_models")
pytest.importorskip("ome_zarr")
from ome_zarr.io import parse_url  # noqa: E402
from ome_zarr.reader import Reader  # noqa: E402
from ome_zarr_models.v05.image import Image  # noqa: E402
from ome_zarr_models.v05.image_label import ImageLabel  # noqa: E402

from napari_sum_hq._reader import get_reader  # noqa: E402
from sum_core.cli import main  # noqa: E402
from sum_core.errors import InvalidInputError  # noqa: E402
from sum_core.results import export_result, objects, open_result  # noqa: E402
from sum_core.results import ome_zarr as ome_zarr_export  # noqa: E402
from test_batch_ngff import snapshot  # noqa: E402
from test_results_export import plane_2048, reference, uncertainty_of  # noqa: E402

FLOAT16 = 2.0 ** -12  # the largest float16 rounding error of a value in [0, 1]


def read_label_image(path):
    """The levels and properties of a label image through ome-zarr-py's reader."""
    (node,) = [n for n in Reader(parse_url(str(path)))() if "properties" in n.metadata]
    return [np.asarray(level) for level in node.data], node.metadata["properties"]


def test_round_trip_2048_through_ome_zarr_and_napari_readers(tmp_path):
    labels = plane_2048()  # holes, corners, an object far from the origin, ids above 2**31
    uncertainty = uncertainty_of(labels)
    expected = reference(labels, uncertainty)
    ids = sorted(expected)
    scores = np.linspace(0.5, 1.0, len(ids))
    scores[3] = np.nan  # unknown: no property
    result = open_result(labels, uncertainty, scale=(0.5, 0.25), units=("micrometer", "micrometer"),
                         table={"label": ids, "score": scores})
    out = export_result(result, tmp_path / "cells.ome.zarr", to="ome-zarr")
    group = zarr.open_group(str(out), mode="r")
    ImageLabel.from_zarr(group)
    Image.from_zarr(group["uncertainty"])
    datasets = group.attrs["ome"]["multiscales"][0]["datasets"]
    assert [d["coordinateTransformations"][0]["scale"] for d in datasets] == [[0.5, 0.25], [1.0, 0.5], [2.0, 1.0]]

    levels, properties = read_label_image(out)
    assert [level.shape for level in levels] == [(2048, 2048), (1024, 1024), (512, 512)]
    np.testing.assert_array_equal(levels[0], labels)
    np.testing.assert_array_equal(levels[1], labels[::2, ::2])  # nearest neighbour: ids never mixed
    np.testing.assert_array_equal(levels[2], labels[::4, ::4])
    assert sorted(properties) == ids
    for k, score in zip(ids, scores):
        area, mean, boundary = expected[k]
        got = properties[k]
        assert (got["area"], got["mean-uncertainty"], got["boundary-uncertainty"]) == (area, mean, boundary)
        assert got.get("predicted-iou", np.nan) == score or np.isnan(score) and "predicted-iou" not in got
    far = properties[4_000_000_000]
    assert far["area"] == int((labels == 4_000_000_000).sum())
    np.testing.assert_allclose(group["uncertainty/0"][...], uncertainty, rtol=0, atol=FLOAT16)
    np.testing.assert_array_equal(group["uncertainty/1"][...], group["uncertainty/0"][::2, ::2])

    reopened = open_result(out)  # the export is a result again, its uncertainty included (CLI export of it too)
    assert reopened.uncertainty is not None and reopened.uncertainty.shape == labels.shape

    (data, meta, kind), (values, _, image_kind) = get_reader(str(out))(str(out))  # napari's reader
    assert (kind, image_kind) == ("labels", "image")
    np.testing.assert_array_equal(np.asarray(data), labels)
    assert meta["scale"] == (0.5, 0.25)
    np.testing.assert_allclose(np.asarray(values), uncertainty, rtol=0, atol=FLOAT16)
    features = meta["features"].set_index("index")
    assert sorted(features.index) == ids
    assert features.loc[4_000_000_000, "area"] == far["area"]


def test_three_slice_stack_through_the_cli(tmp_path, capsys):
    stack = np.zeros((3, 700, 600), np.uint16)
    stack[0, 10:60, 20:90] = 1
    stack[1, 600:690, 500:590] = 2  # far from the origin
    stack[1:3, 300:340, 300:350] = 5  # one id in two slices
    uncertainty = np.random.default_rng(2).random(stack.shape, dtype=np.float32)
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    tifffile.imwrite(tmp_path / "unc.tif", uncertainty)
    out = tmp_path / "stack.ome.zarr"
    assert main(["export", str(tmp_path / "stack.tif"), "--to", "ome-zarr", str(out), "--uncertainty",
                 str(tmp_path / "unc.tif"), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    group = zarr.open_group(str(out), mode="r")
    ImageLabel.from_zarr(group)
    Image.from_zarr(group["uncertainty"])
    assert [a["name"] for a in group.attrs["ome"]["multiscales"][0]["axes"]] == ["z", "y", "x"]
    levels, properties = read_label_image(out)
    assert [level.shape for level in levels] == [(3, 700, 600), (3, 350, 300)]
    np.testing.assert_array_equal(levels[0], stack)
    np.testing.assert_array_equal(levels[1], stack[:, ::2, ::2])
    assert sorted(properties) == [1, 2, 5]
    assert properties[5]["area"] == 2 * 40 * 50
    in5 = stack == 5
    assert properties[5]["mean-uncertainty"] == pytest.approx(uncertainty[in5].astype(np.float64).mean(), rel=1e-12)
    assert "boundary-uncertainty" not in properties[5]  # the planes' bands do not add up
    assert "boundary-uncertainty" in properties[2]
    (data, meta, _), _ = get_reader(str(out))(str(out))
    np.testing.assert_array_equal(np.asarray(data), stack)
    assert sorted(set(meta["features"]["index"])) == [1, 2, 5]


def test_streamed_block_by_block(monkeypatch, tmp_path):
    """No read of the labels comes near the whole plane (a 16k x 16k plane is never loaded whole)."""
    monkeypatch.setattr(objects, "BLOCK", 256)
    monkeypatch.setattr(objects, "MARGIN", 32)
    labels = np.zeros((1024, 1024), np.uint16)
    for k in range(64):
        r, c = divmod(k, 8)
        labels[r * 128 + 10:r * 128 + 100, c * 128 + 20:c * 128 + 90] = k + 1

    class Counted:
        shape, dtype, ndim = labels.shape, labels.dtype, 2
        reads: list[int] = []

        def __getitem__(self, index):
            block = labels[index]
            self.reads.append(block.size)
            return block

    out = export_result(open_result(Counted()), tmp_path / "c.ome.zarr", to="ome-zarr")
    assert max(Counted.reads) <= (256 + 32) ** 2
    np.testing.assert_array_equal(zarr.open_group(str(out), mode="r")["1"][...], labels[::2, ::2])


def test_overwrite_only_an_export_of_ours(monkeypatch, tmp_path):
    labels = np.zeros((64, 64), np.uint8)
    labels[5:20, 5:20] = 1
    out = tmp_path / "a.ome.zarr"
    export_result(open_result(labels), out, to="ome-zarr")
    with pytest.raises(InvalidInputError, match="exists; pass overwrite=True"):
        export_result(open_result(labels), out, to="ome-zarr")
    labels[30:40, 30:40] = 2
    monkeypatch.setattr(ome_zarr_export, "write_ome_zarr", _failing(ome_zarr_export.write_ome_zarr))
    before = snapshot(out)
    with pytest.raises(RuntimeError, match="disk gone"):
        export_result(open_result(labels), out, to="ome-zarr", overwrite=True)
    assert snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["a.ome.zarr"]
    monkeypatch.undo()
    export_result(open_result(labels), out, to="ome-zarr", overwrite=True)
    np.testing.assert_array_equal(zarr.open_group(str(out), mode="r")["0"][...], labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ome.zarr"]
    mine = out / "5" / "notes.txt"  # a folder named like a level the export never wrote (review F6)
    mine.parent.mkdir()
    mine.write_text("keep me")
    with pytest.raises(InvalidInputError):
        export_result(open_result(labels), out, to="ome-zarr", overwrite=True)
    assert mine.read_text() == "keep me"
    foreign = tmp_path / "theirs.ome.zarr"  # another program's label image: never replaced
    theirs = zarr.open_group(str(foreign), mode="w", zarr_format=3)
    theirs.create_array("0", shape=(64, 64), dtype="uint8")
    theirs.attrs["ome"] = {"version": "0.5"}
    before = snapshot(foreign)
    with pytest.raises(InvalidInputError, match="export of sum-hq"):
        export_result(open_result(labels), foreign, to="ome-zarr", overwrite=True)
    assert snapshot(foreign) == before
    with pytest.raises(InvalidInputError, match="must end in .zarr"):
        export_result(open_result(labels), tmp_path / "a.tif", to="ome-zarr")


def _failing(write):
    def failing(result, folder, properties, on_block=None):
        write(result, folder, properties, on_block)
        raise RuntimeError("disk gone")

    return failing
