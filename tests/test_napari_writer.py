"""The npe2 writers (napari_sum_hq._writer) through napari's own dispatch in a shown viewer:
``viewer.layers.save(path, selected=True, plugin="napari-sum-hq")`` (what File → Save Selected Layers
runs), read back with ``json`` / ``shapely`` (GeoJSON) and ``roifile`` (ImageJ ROI zip).

Before the writers, napari had no writer of this plugin for a Labels layer (``save`` raised)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely.geometry
import zarr

from sum_core.object_scores import object_scores
from sum_core.errors import SumError
from test_ais_auto import ais_model  # noqa: F401 - fixture
from test_napari_reader import PLUGIN, plane_target, stack_target  # noqa: F401 - fixtures

roifile = pytest.importorskip("roifile")
pytestmark = pytest.mark.gui


def _features_by_id(layer) -> dict[int, dict]:
    return {int(row["index"]): row for _, row in layer.features.iterrows()}


def test_geojson_of_an_opened_result(make_napari_viewer, plane_target, tmp_path):  # noqa: F811
    viewer = make_napari_viewer(show=True)
    labels, uncertainty = viewer.open(str(plane_target), plugin=PLUGIN)
    viewer.layers.selection = {labels, uncertainty}
    out = tmp_path / "cells.geojson"
    assert viewer.layers.save(str(out), selected=True, plugin=PLUGIN) == [str(out)]
    collection = json.loads(out.read_text())
    expected = _features_by_id(labels)
    assert sorted(int(f["properties"]["name"]) for f in collection["features"]) == sorted(expected)
    plane = np.asarray(labels.data)
    for feature in collection["features"]:
        row = expected[int(feature["properties"]["name"])]
        measurements = feature["properties"]["measurements"]
        assert measurements["Area px^2"] == row["area"]
        assert measurements["Mean uncertainty"] == row["mean_uncertainty"]  # the recorded values, exactly
        assert measurements["Boundary uncertainty"] == row["boundary_uncertainty"]
        shape = shapely.geometry.shape(feature["geometry"])
        assert shape.is_valid and shape.area == row["area"]
        # x = column, y = row, pixel corners: the bounds are the bounding box (objects far from the origin too)
        assert shape.bounds == (row["bbox_col0"], row["bbox_row0"], row["bbox_col1"], row["bbox_row1"])
        assert plane[int(row["bbox_row0"]):int(row["bbox_row1"]), int(row["bbox_col0"]):int(row["bbox_col1"])].max()


def test_imagej_roi_zip_of_a_stack(make_napari_viewer, stack_target, tmp_path):  # noqa: F811
    viewer = make_napari_viewer(show=True)
    labels, _ = viewer.open(str(stack_target), plugin=PLUGIN)
    viewer.layers.selection = {labels}
    out = tmp_path / "stack_rois.zip"
    assert viewer.layers.save(str(out), selected=True, plugin=PLUGIN) == [str(out)]
    rois = roifile.roiread(out)
    got = sorted((int(roi.name), roi.position - 1) for roi in rois)
    assert got == sorted(zip(labels.features["index"].astype(int), labels.features["slice"].astype(int)))
    for roi in rois:  # each outline lies on its own plane's object
        plane = np.asarray(labels.data[roi.position - 1])
        inside = plane[roi.top:roi.bottom, roi.left:roi.right]
        assert (inside == int(roi.name)).sum() == _features_by_id(labels)[int(roi.name)]["area"]


def test_painted_layer_with_scale_and_uncertainty(make_napari_viewer, tmp_path):
    """A Labels layer made in napari (no features) with a pixel size, saved with its uncertainty layer: the
    per-object values are computed from the uncertainty layer, areas in physical units."""
    labels = np.zeros((300, 400), np.uint32)
    labels[250:290, 330:390] = 7
    labels[10:30, 10:20] = 3
    values = np.random.default_rng(2).random(labels.shape, dtype=np.float32)
    viewer = make_napari_viewer(show=True)
    layer = viewer.add_labels(labels, name="painted", scale=(0.5, 0.25), units=("micrometer", "micrometer"))
    image = viewer.add_image(values, name="painted uncertainty", scale=(0.5, 0.25))
    viewer.layers.selection = {layer, image}
    out = tmp_path / "painted.geojson"
    viewer.layers.save(str(out), selected=True, plugin=PLUGIN)
    measurements = {int(f["properties"]["name"]): f["properties"]["measurements"]
                    for f in json.loads(out.read_text())["features"]}
    scores = object_scores(np.searchsorted([0, 3, 7], labels), values)
    for k, label in enumerate((3, 7)):
        assert measurements[label]["Area px^2"] == scores.area[k]
        assert measurements[label]["Area micrometer^2"] == pytest.approx(scores.area[k] * 0.125, rel=1e-12)
        assert measurements[label]["Mean uncertainty"] == scores.mean_uncertainty[k]
        assert measurements[label]["Boundary uncertainty"] == scores.boundary_uncertainty[k]


def test_ome_zarr_of_an_opened_result_reads_back(make_napari_viewer, plane_target, tmp_path):  # noqa: F811
    """An opened AIS result (2048 x 2048, an object far from the origin) saved as an OME-Zarr label image:
    valid NGFF, the same ids and recorded per-object values, its uncertainty layer as ``uncertainty/``."""
    from ome_zarr_models.v05.image_label import ImageLabel

    viewer = make_napari_viewer(show=True)
    labels, uncertainty = viewer.open(str(plane_target), plugin=PLUGIN)
    viewer.layers.selection = {labels, uncertainty}
    out = tmp_path / "cells.ome.zarr"
    assert viewer.layers.save(str(out), selected=True, plugin=PLUGIN) == [str(out)]
    ImageLabel.from_zarr(zarr.open_group(str(out), mode="r"))
    back, back_uncertainty = viewer.open(str(out), plugin=PLUGIN)
    np.testing.assert_array_equal(np.asarray(back.data), np.asarray(labels.data))
    np.testing.assert_allclose(np.asarray(back_uncertainty.data), np.asarray(uncertainty.data), rtol=0,
                               atol=2.0 ** -12)  # float16 rounding
    expected, got = _features_by_id(labels), _features_by_id(back)
    assert sorted(got) == sorted(expected) and max(expected) > 60
    for k, row in expected.items():
        assert got[k]["area"] == row["area"]
        assert got[k]["mean_uncertainty"] == row["mean_uncertainty"]  # the recorded values, exactly
        assert got[k]["boundary_uncertainty"] == row["boundary_uncertainty"]


def test_ome_zarr_of_a_painted_stack(make_napari_viewer, tmp_path):
    stack = np.zeros((3, 200, 300), np.uint32)
    stack[0, 10:40, 20:60] = 4
    stack[2, 150:190, 250:290] = 9
    viewer = make_napari_viewer(show=True)
    layer = viewer.add_labels(stack, name="painted", scale=(2.0, 0.5, 0.5))
    viewer.layers.selection = {layer}
    out = tmp_path / "painted.ome.zarr"
    assert viewer.layers.save(str(out), selected=True, plugin=PLUGIN) == [str(out)]
    group = zarr.open_group(str(out), mode="r")
    assert "uncertainty" not in group
    properties = {p["label-value"]: p for p in group.attrs["ome"]["image-label"]["properties"]}
    assert properties == {4: {"label-value": 4, "area": 1200}, 9: {"label-value": 9, "area": 1600}}
    assert group.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [
        2.0, 0.5, 0.5]
    (back,) = viewer.open(str(out), plugin=PLUGIN)
    np.testing.assert_array_equal(np.asarray(back.data), stack)


def test_refused_layers_name_the_problem(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer(show=True)
    first = viewer.add_labels(np.ones((8, 8), np.uint8), name="a")
    second = viewer.add_labels(np.ones((8, 8), np.uint8), name="b")
    viewer.layers.selection = {first, second}
    with pytest.warns(UserWarning, match="not a valid writer"):  # napari matches our layer types first
        assert viewer.layers.save(str(tmp_path / "two.geojson"), selected=True, plugin=PLUGIN) == []
    wrong = viewer.add_image(np.zeros((8, 9), np.float32), name="a uncertainty")
    viewer.layers.selection = {first, wrong}
    with pytest.raises(SumError, match="uncertainty: expected a float map of the labels' shape"):
        viewer.layers.save(str(tmp_path / "bad.zip"), selected=True, plugin=PLUGIN)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_layers_result_refuses_what_napari_would_pass():
    from napari_sum_hq._writer import layers_result
    from sum_core.errors import InvalidInputError

    labels = (np.ones((8, 8), np.uint8), {"name": "a"}, "labels")
    with pytest.raises(InvalidInputError, match="select one Labels layer.*'a' \\(labels\\), 'a' \\(labels\\)"):
        layers_result([labels, labels])
    with pytest.raises(InvalidInputError, match="select one Labels layer"):
        layers_result([labels, (np.ones((8, 8), np.float32), {"name": "p"}, "points")])


def test_manifest_validates_and_declares_reader_and_writers():
    from importlib.resources import files

    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(files("napari_sum_hq") / "napari.yaml")
    (reader,) = manifest.contributions.readers
    assert reader.accepts_directories and "*.tif" not in reader.filename_patterns
    writers = {tuple(w.filename_extensions): w.layer_types for w in manifest.contributions.writers}
    assert writers == {(".geojson",): ["labels", "image?"], (".zip",): ["labels", "image?"],
                       (".ome.zarr",): ["labels", "image?"]}
