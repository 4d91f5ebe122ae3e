"""sum_core.results: exports of a result read back through the real readers of other tools.

GeoJSON through ``json`` / ``geojson`` / ``shapely`` (validity) and ``skimage.draw.polygon`` (rasterised back:
pixel-corner vertices shifted by -0.5 to skimage's pixel centres), the ImageJ ROI zip through ``roifile``, COCO
through ``pycocotools`` (``COCO`` loads the file, ``mask.decode`` the RLE), the CSV through pandas. Ids and
shapes must come back exactly; per-object values equal what :func:`object_scores` gives on the whole
plane (the exporter computes them on each object's window: the same pixels in the same order, so bit for bit).
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pytest
import shapely.geometry
from skimage.draw import polygon as fill_polygon
from skimage.measure import regionprops
from skimage.segmentation import relabel_sequential

from sum_core.object_scores import object_scores
from sum_core.errors import InvalidInputError
from sum_core.results import export_result, mask_polygons, open_result
from sum_core.results import formats, objects

geojson = pytest.importorskip("geojson")
roifile = pytest.importorskip("roifile")
coco_mask = pytest.importorskip("pycocotools.mask")
from pycocotools.coco import COCO  # noqa: E402


def rings_mask(rings: list, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise (x, y) pixel-corner rings (even-odd) to a mask of ``shape`` at the image origin."""
    mask = np.zeros(shape, bool)
    for ring in rings:
        ring = np.asarray(ring, dtype=float)
        rr, cc = fill_polygon(ring[:, 1] - 0.5, ring[:, 0] - 0.5, shape)
        part = np.zeros(shape, bool)
        part[rr, cc] = True
        mask ^= part
    return mask


def plane_2048() -> np.ndarray:
    """Objects with holes, in diagonal parts, on the border and far from the origin; large uint32 ids."""
    rng = np.random.default_rng(5)
    labels = np.zeros((2048, 2048), np.uint32)
    rows, cols = np.mgrid[:2048, :2048]
    for k, (r, c) in enumerate(rng.integers(40, 2008, size=(40, 2))):
        radius = 8 + k % 25
        labels[(rows - r) ** 2 + (cols - c) ** 2 < radius ** 2] = 3_000_000_000 + 17 * k
    labels[1900:1960, 1900:1960] = 4_000_000_000  # far from the origin, with two holes, one touching the outline
    labels[1910:1920, 1910:1920] = 0
    labels[1950:1959, 1950:1959] = 0
    labels[1959, 1959] = 0  # the second hole touches the outside at one corner
    labels[2040:2048, 1000:1010] = 7  # on the image border
    labels[100, 100] = labels[101, 101] = labels[102, 100] = 9  # pixels touching at corners: 3 parts
    labels[500:503, 500:503] = 11  # a ring of pixels whose centre pixel is a hole
    labels[501, 501] = 0
    return labels


def uncertainty_of(labels: np.ndarray, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random(labels.shape, dtype=np.float32)


def reference(labels: np.ndarray, uncertainty: np.ndarray) -> dict[int, tuple]:
    """id -> (area, mean, boundary uncertainty) from object_scores on the whole plane (compact ids)."""
    compact, forward, inverse = relabel_sequential(labels)
    scores = object_scores(compact, uncertainty)
    return {int(inverse[k]): (a, m, b) for k, a, m, b in
            zip(scores.label, scores.area, scores.mean_uncertainty, scores.boundary_uncertainty)}


@pytest.fixture(scope="module")
def plane():
    labels = plane_2048()
    uncertainty = uncertainty_of(labels)
    return labels, uncertainty, reference(labels, uncertainty)


def test_polygons_are_exact_and_valid_on_random_masks():
    """Random masks (holes, diagonal touches, inverted holes): rasterised back exactly, valid, exteriors positive."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        shape = tuple(int(n) for n in rng.integers(1, 14, 2))
        mask = rng.random(shape) < rng.random()
        offset = (int(rng.integers(0, 3000)), int(rng.integers(0, 3000)))
        polygons = mask_polygons(mask, offset)
        back = rings_mask([ring - [offset[1], offset[0]] for rings in polygons for ring in rings], shape)
        np.testing.assert_array_equal(back, mask)
        if polygons:
            geometry = shapely.geometry.MultiPolygon([shapely.geometry.Polygon(p[0], p[1:]) for p in polygons])
            assert geometry.is_valid, shapely.is_valid_reason(geometry)
            assert geometry.area == mask.sum()
            for rings in polygons:
                assert shapely.geometry.LinearRing(rings[0]).is_ccw  # positive shoelace area in (x, y)
                assert not any(shapely.geometry.LinearRing(h).is_ccw for h in rings[1:])


def test_coco_rle_equals_pycocotools():
    rng = np.random.default_rng(1)
    for _ in range(300):
        height, width = (int(n) for n in rng.integers(1, 16, 2))
        h, w = int(rng.integers(1, height + 1)), int(rng.integers(1, width + 1))
        r0, c0 = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        window = rng.random((h, w)) < rng.random()
        full = np.zeros((height, width), np.uint8)
        full[r0:r0 + h, c0:c0 + w] = window
        expected = coco_mask.encode(np.asfortranarray(full))
        got = formats.coco_rle(window, (r0, c0), (height, width))
        assert got == {"size": [height, width], "counts": expected["counts"].decode()}


def test_geojson_round_trip_2048(tmp_path, plane):
    labels, uncertainty, expected = plane
    out = export_result(open_result(labels, uncertainty), tmp_path / "cells.geojson", to="geojson",
                        classification="Nucleus")
    with open(out) as file:
        collection = geojson.load(file)
    assert collection.is_valid and collection["type"] == "FeatureCollection"
    assert sorted(int(f["properties"]["name"]) for f in collection["features"]) == sorted(expected)
    for feature in collection["features"]:
        label = int(feature["properties"]["name"])
        geometry = shapely.geometry.shape(feature["geometry"])
        assert geometry.is_valid, shapely.is_valid_reason(geometry)
        x0, y0, x1, y1 = (int(v) for v in geometry.bounds)
        polygons = feature["geometry"]["coordinates"]
        if feature["geometry"]["type"] == "Polygon":
            polygons = [polygons]
        rings = [np.asarray(ring) - [x0, y0] for rings in polygons for ring in rings]
        np.testing.assert_array_equal(rings_mask(rings, (y1 - y0, x1 - x0)), labels[y0:y1, x0:x1] == label)
        properties = feature["properties"]
        assert properties["objectType"] == "detection" and properties["classification"] == {"name": "Nucleus"}
        area, mean, band = expected[label]
        assert properties["measurements"]["Area px^2"] == area
        assert properties["measurements"]["Mean uncertainty"] == mean
        assert properties["measurements"]["Boundary uncertainty"] == band
    by_label = {int(f["properties"]["name"]): f for f in collection["features"]}
    assert by_label[9]["geometry"]["type"] == "MultiPolygon" and len(by_label[9]["geometry"]["coordinates"]) == 3
    assert len(by_label[4_000_000_000]["geometry"]["coordinates"]) == 3  # exterior + 2 holes


def test_imagej_rois_round_trip_2048(tmp_path, plane):
    labels, uncertainty, expected = plane
    out = export_result(open_result(labels), tmp_path / "cells.zip", to="imagej-roi")
    rois = roifile.roiread(out)
    assert sorted(int(roi.name) for roi in rois) == sorted(expected)
    with zipfile.ZipFile(out) as archive:
        assert sorted(archive.namelist()) == sorted(f"{k}.roi" for k in expected)
    for roi in rois:
        assert roi.position == 1
        rings = roi.coordinates(multi=True)
        corners = np.concatenate(rings)
        (x0, y0), (x1, y1) = corners.min(axis=0).astype(int), corners.max(axis=0).astype(int)
        assert (roi.left, roi.top, roi.right, roi.bottom) == (x0, y0, x1, y1)
        mask = rings_mask([ring - [x0, y0] for ring in rings], (y1 - y0, x1 - x0))
        np.testing.assert_array_equal(mask, labels[y0:y1, x0:x1] == int(roi.name))
    kinds = {int(roi.name): roi.roitype for roi in rois}
    assert kinds[7] == roifile.ROI_TYPE.TRACED and {kinds[9], kinds[11]} == {roifile.ROI_TYPE.RECT}


def test_coco_round_trip_2048(tmp_path, plane):
    labels, uncertainty, expected = plane
    out = export_result(open_result(labels, uncertainty), tmp_path / "cells.json", to="coco")
    api = COCO(str(out))
    assert [image["id"] for image in api.dataset["images"]] == [1]
    annotations = api.dataset["annotations"]
    assert sorted(a["label"] for a in annotations) == sorted(expected)
    assert sorted(a["id"] for a in annotations) == list(range(1, len(expected) + 1))
    for annotation in annotations:
        mask = api.annToMask(annotation).astype(bool)
        np.testing.assert_array_equal(mask, labels == annotation["label"])
        x, y, w, h = annotation["bbox"]
        assert mask[y:y + h, x:x + w].sum() == mask.sum() == annotation["area"] == expected[annotation["label"]][0]
        assert coco_mask.area(annotation["segmentation"]) == annotation["area"]
        assert (annotation["mean_uncertainty"], annotation["boundary_uncertainty"]) == expected[annotation["label"]][1:]


def test_csv_round_trip_2048(tmp_path, plane):
    labels, uncertainty, expected = plane
    out = export_result(open_result(labels, uncertainty), tmp_path / "cells.csv", to="csv")
    table = pd.read_csv(out)
    assert list(table.columns) == list(formats.CSV_COLUMNS)
    assert table["label"].tolist() == sorted(expected) and (table["slice"] == 0).all()
    compact, _, inverse = relabel_sequential(labels)
    for region in regionprops(compact):
        row = table[table["label"] == int(inverse[region.label])].iloc[0]
        assert tuple(row[["bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1"]]) == region.bbox
        np.testing.assert_allclose(row[["centroid_row", "centroid_col"]].to_numpy(float), region.centroid, rtol=0, atol=1e-9)
        area, mean, band = expected[int(inverse[region.label])]
        assert (row["area"], row["mean_uncertainty"], row["boundary_uncertainty"]) == (area, mean, band)
    assert table["score"].isna().all()  # no recorded scores: empty cells


def test_stack_one_entry_per_slice(tmp_path):
    """A napari-like 3D Labels layer: an id present in two slices gives a row / ROI / annotation / feature in each."""
    labels = np.zeros((4, 96, 128), np.int32)
    labels[0, 10:20, 10:30] = 5
    labels[1, 12:22, 14:30] = 5
    labels[1, 50:90, 60:120] = 6
    labels[3, 0:5, 0:5] = 8
    result = open_result(labels)
    rows = pd.read_csv(export_result(result, tmp_path / "s.csv", to="csv"))
    assert list(zip(rows["label"], rows["slice"])) == [(5, 0), (5, 1), (6, 1), (8, 3)]
    rois = roifile.roiread(export_result(result, tmp_path / "s.zip", to="imagej-roi"))
    assert sorted((roi.position, roi.name) for roi in rois) == [(1, "5"), (2, "5"), (2, "6"), (4, "8")]
    api = COCO(str(export_result(result, tmp_path / "s.json", to="coco")))
    assert [image["id"] for image in api.dataset["images"]] == [1, 2, 3, 4]
    for annotation in api.dataset["annotations"]:
        np.testing.assert_array_equal(api.annToMask(annotation).astype(bool),
                                      labels[annotation["image_id"] - 1] == annotation["label"])
    with open(export_result(result, tmp_path / "s.geojson", to="geojson", object_type="annotation")) as file:
        features = json.load(file)["features"]
    assert sorted((f["geometry"]["plane"]["z"], f["properties"]["name"]) for f in features) == [
        (0, "5"), (1, "5"), (1, "6"), (3, "8")]
    assert {f["properties"]["objectType"] for f in features} == {"annotation"}


def test_reads_only_windows(monkeypatch, tmp_path):
    """The scan reads block by block and each object its window: no read comes near the whole plane."""
    monkeypatch.setattr(objects, "BLOCK", 256)
    monkeypatch.setattr(objects, "MARGIN", 32)
    labels = np.zeros((1024, 1024), np.uint16)
    for k in range(64):
        r, c = divmod(k, 8)
        labels[r * 128 + 10:r * 128 + 100, c * 128 + 20:c * 128 + 90] = k + 1
    labels[600:1000, 100:900] = 99  # larger than a block plus the margin: read on its own

    class Counted:
        shape, dtype, ndim = labels.shape, labels.dtype, 2
        reads: list[int] = []

        def __getitem__(self, index):
            block = labels[index]
            self.reads.append(block.size)
            return block

    export_result(open_result(Counted()), tmp_path / "c.geojson", to="geojson")
    assert max(Counted.reads) == 404 * 804  # the large object's own window (grown by the band width)
    assert sorted(Counted.reads)[-2] <= (256 + 32) ** 2
    assert sum(Counted.reads) < 3 * labels.size


def test_atomic_and_refused(monkeypatch, tmp_path):
    labels = np.zeros((64, 64), np.uint8)
    labels[5:9, 5:9] = 1
    labels[20:30, 20:30] = 2
    out = tmp_path / "o.geojson"
    with pytest.raises(InvalidInputError, match="pass overwrite=True"):
        out.write_text("mine")
        export_result(labels, out, to="geojson")
    assert out.read_text() == "mine"
    calls = []

    def failing(mask, offset=(0, 0)):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk went away")
        return mask_polygons(mask, offset)

    monkeypatch.setattr(formats, "mask_polygons", failing)
    with pytest.raises(OSError, match="disk went away"):
        export_result(labels, out, to="geojson", overwrite=True)
    assert out.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["o.geojson"]
    monkeypatch.undo()
    export_result(labels, out, to="geojson", overwrite=True)
    assert len(json.loads(out.read_text())["features"]) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(to="shapefile"), "to: expected one of"),
        (dict(to="csv", out="x.txt"), r"out: a csv export must end in \.csv"),
        (dict(to="geojson", object_type="cell"), "object_type"),
        (dict(to="csv", band_width=0), "band_width"),
        (dict(to="geojson", classification=""), "classification"),
        (dict(to="coco", out="missing/x.json"), "does not exist"),
    ],
)
def test_bad_arguments_refused_before_reading(tmp_path, kwargs, message):
    class Unread:
        shape, dtype, ndim = (8, 8), np.dtype(np.uint8), 2

        def __getitem__(self, index):
            raise AssertionError("read")

    out = tmp_path / kwargs.pop("out", "x" + {"csv": ".csv", "coco": ".json"}.get(kwargs.get("to"), ".geojson"))
    with pytest.raises(InvalidInputError, match=message):
        export_result(Unread(), out, **kwargs)


def test_open_result_refuses_bad_input(tmp_path):
    with pytest.raises(InvalidInputError, match="integer labels"):
        open_result(np.zeros((4, 4), np.float32))
    with pytest.raises(InvalidInputError, match="integer labels"):
        open_result(np.zeros((2, 2, 4, 4), np.uint8))
    with pytest.raises(InvalidInputError, match="uncertainty: expected a float map"):
        open_result(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.float32))
    with pytest.raises(InvalidInputError, match="slice axis"):
        open_result(np.zeros((4, 4), np.uint8), slice_axis=0)
    with pytest.raises(InvalidInputError, match="scale"):
        open_result(np.zeros((4, 4), np.uint8), scale=(1.0,))
    labels = np.zeros((4, 4), np.int16)
    labels[1, 1] = -3
    with pytest.raises(InvalidInputError, match="negative ids in rows 0:4, cols 0:4"):
        export_result(labels, tmp_path / "unused.csv", to="csv")


def test_roi_export_reads_no_uncertainty(tmp_path):
    """ROIs carry no values: the uncertainty map is never read for them (it is for the other formats)."""
    labels = np.zeros((32, 32), np.uint8)
    labels[4:12, 4:12] = 1

    class Unreadable:
        shape, dtype, ndim = labels.shape, np.dtype(np.float32), 2

        def __getitem__(self, index):
            raise OSError("uncertainty read")

    result = open_result(labels, Unreadable())
    assert len(roifile.roiread(export_result(result, tmp_path / "r.zip", to="imagej-roi"))) == 1
    with pytest.raises(InvalidInputError, match="uncertainty read"):
        export_result(result, tmp_path / "r.csv", to="csv")
