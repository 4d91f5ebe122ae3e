"""The npe2 reader of results (napari_sum_hq._reader) through napari's own dispatch in a shown viewer.

Results are real ``sum-hq batch`` AIS targets (``segment_zarr`` with the exact window-local fake of
``test_ais_auto``: a 2048 x 2048 plane with objects far from the origin and across tile borders, and a
3-slice stack) and an NGFF 0.5 label image written by ``ome-zarr-py``. Before the reader, napari's File →
Open raised on these targets (its builtin reader takes the ``checksums`` group) and
``viewer.open(path, plugin="napari-sum-hq")`` found no reader.
"""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from skimage.measure import regionprops

from napari_sum_hq import _reader
from napari_sum_hq._uncertainty_style import UNCERTAINTY_STYLE
from sum_core import ais
from sum_core.object_scores import object_scores
from sum_core.batch import object_table, segment_zarr
from test_ais_auto import ais_model, synthetic_image  # noqa: F401 - fixture
from test_batch_ais import finite_exact_maps

pytestmark = pytest.mark.gui
PLUGIN = "napari-sum-hq"


def _target(path, image, model):
    """A real AIS batch target of ``image`` (fake window maps: no network, seconds)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ais, "window_maps", finite_exact_maps())
        segment_zarr(image, path, mode="ais", model=model, progress=False, device="cpu")
    return path


@pytest.fixture(scope="module")
def plane_target(tmp_path_factory, ais_model):  # noqa: F811
    """2048 x 2048, 68 objects (tile borders, (2000, 1950) far from the origin)."""
    return _target(tmp_path_factory.mktemp("plane") / "cells.zarr", synthetic_image(touching=False), ais_model)


@pytest.fixture(scope="module")
def stack_target(tmp_path_factory, ais_model):  # noqa: F811
    image = synthetic_image(touching=False)
    stack = np.stack([image[:512, :512], image[1536:, 1536:], image[:512, 1536:]])
    return _target(tmp_path_factory.mktemp("stack") / "stack.zarr", stack, ais_model)


def ngff_labels(path, labels: np.ndarray, properties: list[dict]) -> None:
    """An OME-Zarr (NGFF 0.5) image with one label image ``cells`` (pixel size 0.5 x 0.25 micrometer),
    as ome-zarr-py writes them."""
    from ome_zarr.writer import write_image, write_labels

    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    physical = {"scale": {"y": 0.5, "x": 0.25}, "axes_units": {"y": "micrometer", "x": "micrometer"}}
    levels = {"axes": "yx", "scale_factors": (2, 4), "storage_options": {"chunks": (256, 256)}}
    write_image((labels > 0).astype(np.uint8) * 200, root, **levels, **physical)
    write_labels(labels, root, "cells", scaler=None, label_metadata={"properties": properties}, **levels, **physical)


@pytest.fixture(scope="module")
def ngff(tmp_path_factory):
    labels = np.zeros((600, 800), np.uint32)
    rows, cols = np.mgrid[:600, :800]
    for k, (r, c) in enumerate([(40, 60), (300, 400), (560, 760), (590, 20)]):
        labels[(rows - r) ** 2 + (cols - c) ** 2 < (10 + 5 * k) ** 2] = 11 * (k + 1)
    properties = [{"label-value": 11 * (k + 1), "predicted IoU": 0.5 + k / 10} for k in range(4)]
    path = tmp_path_factory.mktemp("ngff") / "img.ome.zarr"
    ngff_labels(path, labels, properties)
    return path, labels, properties


def expected_features(labels: np.ndarray, uncertainty: np.ndarray, slice_index: int = 0) -> dict:
    """id -> (slice, area, mean, boundary uncertainty), the whole-plane reference (compact ids)."""
    ids = np.unique(labels[labels > 0])
    compact = np.searchsorted(ids, labels) + 1
    compact[labels == 0] = 0
    scores = object_scores(compact, uncertainty)
    return {int(ids[k - 1]): (slice_index, int(a), m, b) for k, a, m, b in
            zip(scores.label, scores.area, scores.mean_uncertainty, scores.boundary_uncertainty)}


def test_plane_result_opens_lazily_with_features(make_napari_viewer, plane_target):
    viewer = make_napari_viewer(show=True)
    layers = viewer.open(str(plane_target), plugin=PLUGIN)
    group = zarr.open_group(str(plane_target), mode="r")
    labels_layer, uncertainty_layer = layers
    assert [layer.name for layer in viewer.layers] == ["cells labels", "cells uncertainty"]
    assert type(labels_layer).__name__ == "Labels" and type(uncertainty_layer).__name__ == "Image"
    assert type(labels_layer.data).__name__ == "Array"  # dask over the zarr chunks, never read whole
    np.testing.assert_array_equal(np.asarray(labels_layer.data), group["labels"][...])
    values = np.asarray(uncertainty_layer.data)
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, group["uncertainty"][...].astype(np.float32))
    assert uncertainty_layer.colormap.name == UNCERTAINTY_STYLE["colormap"]
    assert tuple(uncertainty_layer.contrast_limits) == UNCERTAINTY_STYLE["contrast_limits"]
    assert uncertainty_layer.blending == UNCERTAINTY_STYLE["blending"]
    assert not uncertainty_layer.visible

    features = labels_layer.features
    table = object_table(group)
    assert len(features) == len(table["label"]) == 68
    np.testing.assert_array_equal(features["index"], table["label"])
    np.testing.assert_array_equal(features["area"], table["area"])
    np.testing.assert_array_equal(features["mean_uncertainty"], table["mean_uncertainty"])
    np.testing.assert_array_equal(features["boundary_uncertainty"], table["boundary_uncertainty"])
    plane = group["labels"][...]
    for region in regionprops(plane):  # boxes and centroids in plane pixels, (2000, 1950) far from the origin too
        row = features[features["index"] == region.label].iloc[0]
        assert tuple(row[["bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1"]]) == region.bbox
        np.testing.assert_allclose(row[["centroid_row", "centroid_col"]].to_numpy(float), region.centroid, rtol=0,
                                   atol=1e-9)
    assert plane[2000, 1950] in set(features["index"])
    first = int(features["index"].iloc[0])
    row, col = (int(v) for v in np.argwhere(group["labels"][...] == first)[0])
    assert labels_layer.get_value((row, col)) == first


def test_stack_result_opens_as_3d(make_napari_viewer, stack_target):
    viewer = make_napari_viewer(show=True)
    labels_layer, uncertainty_layer = viewer.open(str(stack_target), plugin=PLUGIN)
    group = zarr.open_group(str(stack_target), mode="r")
    assert labels_layer.ndim == 3 and labels_layer.data.shape == (3, 512, 512)
    assert uncertainty_layer.data.shape == (3, 512, 512)
    np.testing.assert_array_equal(np.asarray(labels_layer.data), group["labels"][...])
    table = object_table(group)
    features = labels_layer.features
    np.testing.assert_array_equal(features["index"], table["label"])
    np.testing.assert_array_equal(features["slice"], table["slice"])
    assert set(features["slice"]) == {0, 1, 2}
    for s in range(3):  # every row's values are those of its own plane
        plane = group["labels"][s]
        expected = expected_features(plane, group["uncertainty"][s].astype(np.float32), s)
        rows = features[features["slice"] == s]
        assert sorted(expected) == sorted(int(k) for k in rows["index"])
        for _, row in rows.iterrows():
            assert row["area"] == expected[int(row["index"])][1]
    viewer.dims.set_current_step(0, 2)
    assert viewer.dims.current_step[0] == 2


def test_ngff_labels_open_with_scale_units_and_properties(make_napari_viewer, ngff):
    path, labels, properties = ngff
    viewer = make_napari_viewer(show=True)
    for where in (path, path / "labels" / "cells"):  # the image holding labels/, or the label image itself
        viewer.layers.clear()
        layers = viewer.open(str(where), plugin=PLUGIN)
        assert len(layers) == 1  # a label image has no uncertainty map
        layer = layers[0]
        np.testing.assert_array_equal(np.asarray(layer.data), labels)
        np.testing.assert_allclose(layer.scale, [0.5, 0.25])
        assert [str(u) for u in layer.units] == ["micrometer", "micrometer"]
        assert list(layer.features["index"]) == [p["label-value"] for p in properties]
        np.testing.assert_array_equal(layer.features["score"], [p["predicted IoU"] for p in properties])
        np.testing.assert_array_equal(layer.features["area"], [int((labels == p["label-value"]).sum())
                                                               for p in properties])


@pytest.mark.parametrize("form", ["zarr", "ome-zarr"])
def test_target_of_an_ome_zarr_source_carries_its_pixel_size(make_napari_viewer, tmp_path, monkeypatch, form):
    """An AMG job (no object table) on an OME-Zarr (c, z, y, x) source with a pixel size, written as our zarr
    group or as an NGFF label image inside the source (``format="ome-zarr"``, opened as the image or as its
    label image): the layers get the source's scale and units; the objects are scanned (a small result)."""
    from sum_core.batch import auto as batch_auto
    from test_batch import blobs, fake_records, use_model
    from test_batch_scale import ome_zarr_czyx
    from test_tiled_predictor import tiny_model

    use_model(monkeypatch, tiny_model())
    monkeypatch.setattr(batch_auto, "window_records", fake_records)
    source = tmp_path / "img.ome.zarr"
    ome_zarr_czyx(source, np.stack([np.stack([blobs((96, 120), seed=10 * c + s, n=4) for s in range(2)])
                                    for c in range(2)]))
    out = tmp_path / "amg.zarr" if form == "zarr" else source / "labels" / "cells"
    target = segment_zarr(source, out, channel=1, axis="z", tile_shape=(48, 64), halo=16, progress=False,
                          format=form)
    plane = target["labels" if form == "zarr" else "0"][1]
    viewer = make_napari_viewer(show=True)
    for where in [out] + ([source] if form == "ome-zarr" else []):
        viewer.layers.clear()
        labels_layer, uncertainty_layer = viewer.open(str(where), plugin=PLUGIN)
        for layer in (labels_layer, uncertainty_layer):
            np.testing.assert_array_equal(layer.scale, [2.0, 0.5, 0.25])
            assert [str(u) for u in layer.units] == ["micrometer"] * 3
        np.testing.assert_array_equal(np.asarray(labels_layer.data[1]), plane)
        rows = labels_layer.features[labels_layer.features["slice"] == 1]
        assert sorted(rows["index"]) == sorted(int(k) for k in np.unique(plane[plane > 0]))
        assert not np.isnan(rows["mean_uncertainty"]).any()  # computed from the uncertainty map


def test_file_open_offers_the_reader_and_others_are_not_taken(make_napari_viewer, tmp_path, plane_target, ngff):
    """File → Open finds our reader for results (napari asks which one); other paths get no reader from it."""
    from napari.errors import MultipleReaderError
    from npe2 import PluginManager

    viewer = make_napari_viewer(show=True)
    with pytest.raises(MultipleReaderError) as found:
        viewer._open_or_raise_error([str(plane_target)])  # what File → Open calls, then shows the choice
    assert PLUGIN in found.value.available_plugins

    plain = tmp_path / "plain.zarr"
    zarr.create_array(str(plain), shape=(8, 8), dtype="uint16", fill_value=0)
    image_only = tmp_path / "image.ome.zarr"
    from ome_zarr.writer import write_image

    write_image(np.zeros((64, 64), np.uint8), zarr.open_group(str(image_only), mode="w"), axes="yx")
    tiff = tmp_path / "labels.tif"
    import tifffile

    tifffile.imwrite(tiff, np.zeros((8, 8), np.uint16))
    for path in (plain, image_only, tmp_path, tiff):
        assert _reader.get_reader(str(path)) is None, path
    offered = {reader.plugin_name for reader in PluginManager.instance().iter_compatible_readers([str(tiff)])}
    assert PLUGIN not in offered  # files are never offered to it
    assert _reader.get_reader([str(plane_target), str(plane_target)]) is None
    assert _reader.get_reader(str(plane_target)) is not None
    assert _reader.get_reader(str(ngff[0])) is not None


def test_unfinished_target_names_what_to_do(make_napari_viewer, tmp_path, plane_target):
    import shutil

    unfinished = tmp_path / "unfinished.zarr"
    shutil.copytree(plane_target, unfinished)
    group = zarr.open_group(str(unfinished), mode="r+")
    info = group.attrs["sum_hq_batch"]
    group.attrs["sum_hq_batch"] = {**info, "complete": False}
    viewer = make_napari_viewer(show=True)
    with pytest.raises(Exception, match="not complete; rerun it to finish"):
        viewer.open(str(unfinished), plugin=PLUGIN)


def test_large_plane_is_a_pyramid():
    """A plane wider than PYRAMID_FROM becomes strided dask levels down to one within it; nothing is computed."""
    import dask.array as da

    from sum_core.results import open_result

    big = da.zeros((3, 9000, 700), dtype=np.uint32, chunks=(1, 1024, 700))  # more than SCAN_PIXELS
    layers = _reader.result_layer_data(open_result(big, da.zeros(big.shape, np.float16, chunks=big.chunks),
                                                   table={"label": [1]}), "big")
    data, meta, _ = layers[0]
    assert meta["multiscale"] and [level.shape for level in data] == [(3, 9000, 700), (3, 4500, 350), (3, 2250, 175)]
    assert layers[1][0][1].dtype == np.float32 and layers[1][1]["multiscale"]
    assert list(meta["features"]["index"]) == [1]  # too large to scan: the recorded table
