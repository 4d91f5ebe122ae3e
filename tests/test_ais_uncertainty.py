"""sum_core.ais_uncertainty: the per-pixel AIS uncertainty and the per-object table, on values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from sum_core.ais_postprocess import instances_from_distance_maps
from sum_core.ais_uncertainty import ais_pixel_uncertainty
from sum_core.object_scores import ObjectScores, object_scores
from sum_core.errors import InvalidInputError
from test_ais_postprocess import touching_cells

# H(p) / log 2 by hand: H(0.25) = 0.5 + 0.75 log2(4/3) = 0.811278; H(0.9) = 0.9 log2(1/0.9) + 0.1 log2(10) = 0.468996
H_025 = 0.8112781244591328
H_090 = 0.4689955935892812


def test_pixel_uncertainty_by_hand():
    p = np.array([[0.0, 0.25, 0.5, 0.9, 0.9, 1.0, 1.0]], np.float32)
    b = np.array([[1.0, 1.0, 0.2, 0.8, 0.1, 0.9, 0.3]], np.float32)
    # max(H(p), p * r(b)) with r(b) = clip((b - 0.5) / 0.5, 0, 1): background / uncertain foreground (H wins) /
    # undecided / fairly sure foreground beyond the seed threshold (r = 0.6, p * r = 0.54 wins) / the same
    # inside the seed threshold (r = 0) / sure foreground near an outline (r = 0.8) / sure foreground inside
    expected = [0.0, H_025, 1.0, 0.9 * 0.6, H_090, 0.8, 0.0]
    u = ais_pixel_uncertainty(p, b)
    assert u.dtype == np.float32 and u.shape == (1, 7)
    # float32 result of float64 arithmetic: within 2 float32 ulps of values <= 1
    np.testing.assert_allclose(u[0], expected, rtol=0, atol=2.5e-7)
    assert u[0, 0] == 0.0 and u[0, 6] == 0.0 and u[0, 2] == 1.0


def test_pixel_uncertainty_stays_in_unit_interval():
    rng = np.random.default_rng(0)
    p = rng.random((64, 64)).astype(np.float32)
    p[::7] = 0.0
    p[3::7] = 1.0
    b = rng.random((64, 64)).astype(np.float32)
    u = ais_pixel_uncertainty(p, b)
    assert np.isfinite(u).all() and u.min() >= 0.0 and u.max() <= 1.0
    assert (u >= p * np.clip(2 * b - 1, 0, 1) - 1e-6).all()


def test_pixel_uncertainty_follows_the_seed_threshold():
    p = np.ones((1, 3), np.float32)
    b = np.array([[0.6, 0.8, 1.0]], np.float32)
    # t = 0.6: r = 0, 0.5, 1; t = 0: r = b
    np.testing.assert_allclose(ais_pixel_uncertainty(p, b, boundary_distance_threshold=0.6)[0], [0, 0.5, 1], atol=3e-7)
    np.testing.assert_allclose(ais_pixel_uncertainty(p, b, boundary_distance_threshold=0.0)[0], b[0], atol=3e-7)
    with pytest.raises(InvalidInputError, match="boundary_distance_threshold"):
        ais_pixel_uncertainty(p, b, boundary_distance_threshold=1.0)


@pytest.mark.parametrize(
    "p, b, name",
    [
        (np.full((4, 4), 1.5, np.float32), np.zeros((4, 4), np.float32), "foreground"),
        (np.zeros((4, 4), np.float32), np.full((4, 4), np.nan, np.float32), "boundary_distances"),
        (np.zeros((4, 4), np.float32), np.zeros((4, 5), np.float32), "boundary_distances"),
        (np.zeros((2, 4, 4), np.float32), np.zeros((2, 4, 4), np.float32), "foreground"),
    ],
)
def test_pixel_uncertainty_refuses_bad_maps(p, b, name):
    with pytest.raises(InvalidInputError, match=name):
        ais_pixel_uncertainty(p, b)


def test_object_scores_by_hand():
    labels = np.zeros((6, 8), np.int32)
    labels[1:3, 1:4] = 3  # 2x3 object
    labels[3:6, 5:8] = 5  # 3x3 object in the bottom-right corner, cut by the image border
    u = np.full((6, 8), 0.2, np.float32)
    u[0, :] = 0.6
    u[1, 1] = 1.0  # in object 3
    u[5, 7] = 1.0  # in object 5, in its corner at the image border: not in its band
    u[2, 4] = 0.8  # between the objects: in both bands
    table = object_scores(labels, u, band_width=1)
    assert isinstance(table, ObjectScores) and len(table) == 2
    assert table.label.dtype == np.uint32 and table.label.tolist() == [3, 5]
    assert table.area.tolist() == [6, 9]
    # object 3: (1.0 + 5 * 0.2) / 6; its band is rows 0-3 x columns 0-4 (20 pixels, no core left by the erosion):
    #   5 * 0.6 (row 0) + 1.0 + 0.8 + 13 * 0.2 = 7.4
    # object 5: (8 * 0.2 + 1.0) / 9; its band is rows 2-5 x columns 4-7 (16) minus the core rows 4-5 x columns 6-7
    #   that the image border does not erode (4): 0.8 + 11 * 0.2 = 3.0 over 12
    np.testing.assert_allclose(table.mean_uncertainty, [2.0 / 6, 2.6 / 9], rtol=0, atol=1e-7)
    np.testing.assert_allclose(table.boundary_uncertainty, [7.4 / 20, 3.0 / 12], rtol=0, atol=1e-7)


def test_object_band_width_two():
    labels = np.zeros((9, 9), np.uint16)
    labels[2:7, 2:7] = 1  # 5x5 square in the middle
    u = np.zeros((9, 9), np.float32)
    u[4, 4] = 1.0  # the centre: its 5x5 neighbourhood is all object, so the w=2 erosion keeps it: not in the band
    u[0, 0] = 0.5  # the image corner: chessboard distance 2 from the object, in the band
    table = object_scores(labels, u, band_width=2)
    # band = 9x9 dilation (81, clipped to the image) minus the 1-pixel core (4, 4): 80 pixels
    assert table.boundary_uncertainty.tolist() == pytest.approx([0.5 / 80], abs=1e-12)
    assert table.mean_uncertainty.tolist() == pytest.approx([1.0 / 25], abs=1e-12)


def test_empty_label_image_gives_an_empty_table():
    table = object_scores(np.zeros((5, 5), np.uint32), np.zeros((5, 5), np.float32))
    assert len(table) == 0 and table.label.dtype == np.uint32 and table.boundary_uncertainty.shape == (0,)


@pytest.mark.parametrize(
    "labels, u, kwargs, name",
    [
        (np.zeros((4, 4), np.float32), np.zeros((4, 4), np.float32), {}, "labels"),
        (np.full((4, 4), -1, np.int32), np.zeros((4, 4), np.float32), {}, "labels"),
        (np.zeros((4, 4), np.int32), np.zeros((4, 3), np.float32), {}, "uncertainty"),
        (np.zeros((4, 4), np.int32), np.full((4, 4), 2.0, np.float32), {}, "uncertainty"),
        (np.zeros((4, 4), np.int32), np.zeros((4, 4), np.float32), {"band_width": 0}, "band_width"),
    ],
)
def test_object_scores_refuse_bad_arguments(labels, u, kwargs, name):
    with pytest.raises(InvalidInputError, match=name):
        object_scores(labels, u, **kwargs)


def test_touching_cells_are_least_certain_at_their_outlines():
    foreground, center, boundary = touching_cells()
    labels = instances_from_distance_maps(foreground, center, boundary)
    table = object_scores(labels, ais_pixel_uncertainty(foreground, boundary))
    assert table.label.tolist() == list(range(1, int(labels.max()) + 1))
    assert table.area.tolist() == np.bincount(labels.ravel())[1:].tolist()
    assert (table.boundary_uncertainty > table.mean_uncertainty).all()


def test_object_scores_carry_the_segmenters_values_per_label():
    labels = np.zeros((6, 6), np.uint16)
    labels[0:2, 0:2], labels[3:6, 3:6] = 2, 5
    table = object_scores(labels, np.zeros((6, 6), np.float32), predicted_iou={5: 0.75, 2: 0.5}, stability={2: 1.0})
    assert table.label.tolist() == [2, 5]
    assert table.predicted_iou.tolist() == [0.5, 0.75]
    assert table.stability[0] == 1.0 and np.isnan(table.stability[1])
    assert list(table.columns()) == ["label", "area", "predicted_iou", "stability", "mean_uncertainty",
                                     "boundary_uncertainty"]
    with pytest.raises(InvalidInputError, match="predicted_iou"):
        object_scores(labels, np.zeros((6, 6), np.float32), predicted_iou=[0.5, 0.75])


def test_object_scores_of_ids_in_the_billions_take_no_per_id_memory():
    labels = np.zeros((6, 6), np.int64)
    labels[1:3, 1:3], labels[4:6, 4:6], labels[0, 5] = 3_758_096_385, 2**32 + 7, 5
    u = np.zeros((6, 6), np.float32)
    u[1:3, 1:3] = 0.5
    table = object_scores(labels, u, predicted_iou={2**32 + 7: 0.25})  # find_objects on these ids: ~30 GB
    assert table.label.dtype == np.uint64 and table.label.tolist() == [5, 3_758_096_385, 2**32 + 7]
    assert table.area.tolist() == [1, 4, 4] and table.mean_uncertainty.tolist() == [0.0, 0.5, 0.0]
    assert table.predicted_iou[2] == 0.25
