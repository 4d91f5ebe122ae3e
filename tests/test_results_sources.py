"""sum_core.results.open_result on every kind of result, and ``sum-hq export RESULT --to ...``.

A real AIS batch target (``segment_zarr`` with the exact window-local fake decoder of ``test_ais_auto``): its
object table's values are exported as recorded; an OME-Zarr 0.5 label image written per the NGFF spec (scale,
units, ``image-label`` properties); labels and uncertainty TIFFs through the command line.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr

from sum_core.object_scores import object_scores
from sum_core.batch import object_table, segment_zarr
from sum_core.cli import main as cli_main
from sum_core.errors import InvalidInputError
from sum_core.results import export_result, open_result
from test_ais_auto import ais_model  # noqa: F401
from test_batch_ais import KW, exact, random_discs  # noqa: F401

pytest.importorskip("roifile")


def test_batch_target_table_values_are_exported(tmp_path, exact, ais_model):
    stack = np.stack([random_discs((200, 260), 14, seed=s) for s in range(2)])
    target = tmp_path / "cells.zarr"
    segment_zarr(stack, target, mode="ais", model=ais_model, tile_shape=128, halo=24, **KW)
    result = open_result(target)
    assert result.slice_axis == 0 and result.uncertainty is not None and result.name == "cells.zarr"
    table = object_table(target)
    assert cli_main(["export", str(target), "--to", "csv", "--no-progress"]) == 0
    rows = pd.read_csv(tmp_path / "cells_objects.csv")
    assert rows["label"].tolist() == table["label"].tolist() and rows["slice"].tolist() == table["slice"].tolist()
    assert rows["area"].tolist() == table["area"].tolist()
    assert rows["mean_uncertainty"].tolist() == table["mean_uncertainty"].tolist()  # as recorded (float32 map)
    assert rows["boundary_uncertainty"].tolist() == table["boundary_uncertainty"].tolist()
    # The same definition on the stored float16 map agrees to its rounding.
    labels, uncertainty = zarr.open_group(target, mode="r")["labels"][...], zarr.open_group(target)["uncertainty"][...]
    for s in range(2):
        scores = object_scores(labels[s], uncertainty[s].astype(np.float32))
        mine = rows[rows["slice"] == s]
        np.testing.assert_allclose(mine["mean_uncertainty"], scores.mean_uncertainty, atol=1e-3)
    assert cli_main(["export", str(target), "--to", "csv", "--no-progress"]) == 2  # exists: refused
    assert cli_main(["export", str(target), "--to", "csv", "--overwrite", "--no-progress"]) == 0


def test_incomplete_batch_target_refused(tmp_path):
    group = zarr.open_group(tmp_path / "t.zarr", mode="w", zarr_format=3)
    group.create_array("labels", shape=(8, 8), dtype="uint32")
    group.attrs["sum_hq_batch"] = {"complete": False, "signature": {}}
    with pytest.raises(InvalidInputError, match="not complete"):
        open_result(tmp_path / "t.zarr")


def ngff_labels(path, labels: np.ndarray) -> None:
    """An OME-Zarr 0.5 image with one label image ``labels/cells`` (two levels), per the NGFF spec."""
    root = zarr.open_group(path, mode="w", zarr_format=3)
    axes = [{"name": "z", "type": "space", "unit": "micrometer"}, {"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"}]
    root.create_array("0", data=np.zeros(labels.shape, np.uint8))
    root.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [2.0, 0.5, 0.25]}]}]}]}
    group = root.create_group("labels")
    group.attrs["ome"] = {"version": "0.5", "labels": ["cells"]}
    cells = group.create_group("cells")
    cells.create_array("s0", data=labels)
    cells.create_array("s1", data=labels[:, ::2, ::2])
    ids = [int(k) for k in np.unique(labels) if k]
    cells.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [{"axes": axes, "datasets": [
            {"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [2.0, 0.5, 0.25]}]},
            {"path": "s1", "coordinateTransformations": [{"type": "scale", "scale": [2.0, 1.0, 0.5]}]}]}],
        "image-label": {"version": "0.5", "source": {"image": "../../"},
                        "colors": [{"label-value": k, "rgba": [255, 0, 0, 255]} for k in ids],
                        "properties": [{"label-value": k, "predicted_iou": 0.5 + k / 100, "mean_uncertainty": k / 50}
                                       for k in ids]},
    }


def test_ngff_label_image(tmp_path):
    labels = np.zeros((3, 64, 80), np.uint16)
    labels[0, 10:20, 10:30] = 4
    labels[2, 30:60, 40:80] = 9
    ngff_labels(tmp_path / "img.ome.zarr", labels)
    for source in (tmp_path / "img.ome.zarr", tmp_path / "img.ome.zarr" / "labels" / "cells"):
        result = open_result(source)
        assert result.slice_axis == 0 and result.scale == (2.0, 0.5, 0.25) and result.units == ("micrometer",) * 3
        np.testing.assert_array_equal(result.labels[...], labels)
    out = export_result(open_result(tmp_path / "img.ome.zarr"), tmp_path / "o.csv", to="csv")
    rows = pd.read_csv(out)
    assert rows["label"].tolist() == [4, 9] and rows["slice"].tolist() == [0, 2]
    assert rows["score"].tolist() == [0.54, 0.59] and rows["mean_uncertainty"].tolist() == [0.08, 0.18]
    assert rows["boundary_uncertainty"].isna().all()
    assert rows["area_micrometer^2"].tolist() == [200 * 0.125, 1200 * 0.125]
    assert rows["centroid_x_micrometer"].tolist() == [19.5 * 0.25, 59.5 * 0.25]
    features = json.loads(export_result(open_result(tmp_path / "img.ome.zarr"), tmp_path / "o.geojson",
                                        to="geojson").read_text())["features"]
    assert features[0]["properties"]["measurements"]["Area micrometer^2"] == 25.0
    assert features[0]["properties"]["measurements"]["Score"] == 0.54
    inside = sorted(p.name for p in (tmp_path / "img.ome.zarr" / "labels").iterdir())
    assert cli_main(["export", str(tmp_path / "img.ome.zarr" / "labels" / "cells"), "--to", "coco", "--no-progress"]) == 0
    assert (tmp_path / "img_cells_coco.json").is_file()  # the default output lies beside the store, not inside
    assert sorted(p.name for p in (tmp_path / "img.ome.zarr" / "labels").iterdir()) == inside


def test_tiff_labels_and_uncertainty_on_the_command_line(tmp_path, capsys):
    labels = np.zeros((128, 160), np.uint16)  # ImageJ TIFFs hold 8 / 16-bit integers
    labels[10:40, 20:60] = 2
    labels[90:128, 100:160] = 5
    uncertainty = np.random.default_rng(0).random(labels.shape, dtype=np.float32)
    tifffile.imwrite(tmp_path / "seg.tif", labels, imagej=True, resolution=(2.0, 4.0), metadata={"unit": "um"})
    tifffile.imwrite(tmp_path / "unc.tif", uncertainty)
    out = tmp_path / "seg.geojson"
    assert cli_main(["export", str(tmp_path / "seg.tif"), "--uncertainty", str(tmp_path / "unc.tif"), "--to", "geojson",
                     "-o", str(out), "--classification", "Cell", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    features = json.loads(out.read_text())["features"]
    expected = object_scores(labels, uncertainty)
    assert [f["properties"]["measurements"]["Mean uncertainty"] for f in features] == expected.mean_uncertainty.tolist()
    assert cli_main(["export", str(tmp_path / "seg.tif"), "--to", "csv", "-o", str(tmp_path / "x.txt")]) == 2
    assert "must end in .csv" in capsys.readouterr().err
    assert cli_main(["export", str(tmp_path / "missing.tif"), "--to", "csv"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(["export", str(tmp_path / "seg.tif"), "--to", "imagej-roi", "--no-progress"]) == 0
    assert (tmp_path / "seg_rois.zip").is_file()
    assert cli_main(["export", str(tmp_path / "seg.tif"), "--to", "csv", "--no-progress"]) == 0
    rows = pd.read_csv(tmp_path / "seg_objects.csv")  # ImageJ resolution: 4 px/um in y, 2 px/um in x
    assert rows["area_micrometer^2"].tolist() == [1200 * 0.125, 2280 * 0.125]
    assert rows["centroid_y_micrometer"].tolist() == [24.5 * 0.25, 108.5 * 0.25]


def test_help_explains_both_forms(capsys):
    with pytest.raises(SystemExit):
        cli_main(["export", "--help"])
    text = capsys.readouterr().out
    assert "RESULT --to {geojson,imagej-roi,coco,csv,ome-zarr} [OUT | -o OUT]" in text and "onnx MODEL OUT" in text
    assert "bioimageio" in text
    with pytest.raises(SystemExit):
        cli_main(["export", "cells.zarr", "--help"])
    assert "--classification" in capsys.readouterr().out


def test_ngff_batch_target_inside_an_ome_zarr_image(tmp_path, monkeypatch, ais_model):
    """segment_zarr(format="ome-zarr") writes labels/cells into the user's image: it opens as a batch target (its
    uncertainty image, its table, the parent's micrometre pixel size), and the default output lies beside it."""
    pytest.importorskip("ome_zarr_models")
    pytest.importorskip("ome_zarr")
    from sum_core import ais
    from test_batch_ais import finite_exact_maps
    from test_batch_ngff import ome_image

    monkeypatch.setattr(ais, "window_maps", finite_exact_maps())
    stack = np.stack([random_discs((160, 200), 10, seed=s) for s in range(2)])
    source = ome_image(tmp_path / "img.ome.zarr", stack)
    target = source / "labels" / "cells"
    segment_zarr(source, target, mode="ais", model=ais_model, format="ome-zarr", tile_shape=128, halo=24, **KW)
    result = open_result(target)
    assert result.slice_axis == 0 and result.scale == (2.0, 0.5, 0.5) and result.units == ("micrometer",) * 3
    np.testing.assert_array_equal(result.uncertainty[...], zarr.open_group(target, mode="r")["uncertainty/0"][...])
    with pytest.raises(InvalidInputError, match=r"label images \['nuclei', 'cells'\]"):
        open_result(source)
    assert cli_main(["export", str(target), "--to", "csv", "--no-progress"]) == 0
    rows = pd.read_csv(tmp_path / "img_cells_objects.csv")
    table = object_table(target)
    assert rows["label"].tolist() == table["label"].tolist() and rows["area"].tolist() == table["area"].tolist()
    assert rows["boundary_uncertainty"].tolist() == table["boundary_uncertainty"].tolist()
    assert rows["area_micrometer^2"].tolist() == (table["area"] * 0.25).tolist()
