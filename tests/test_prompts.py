"""Tests for sum_core.prompts: validation and the (row, col) -> SAM (x, y) conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sum_core.errors import InvalidInputError
from sum_core.image import preprocess_shape
from sum_core.prompts import (
    MASK_PROMPT_LOGIT,
    Prompts,
    mask_logits,
    to_low_res_frame,
    to_model_frame,
    validate_prompts,
)

from tiled_fakes import points_from_model_frame

SHAPE = (300, 500)  # H, W: non-square on purpose


def check(**kwargs) -> Prompts:
    kwargs.setdefault("image_shape", SHAPE)
    return validate_prompts(**kwargs)


# --- validate_prompts: accepted inputs -----------------------------------------------------------


def test_points_and_labels_are_normalised():
    p = check(points=[[10, 20], [30.5, 40]], labels=[1, 0])
    assert p.points.dtype == np.float64 and p.points.shape == (2, 2)
    np.testing.assert_array_equal(p.points, [[10, 20], [30.5, 40]])
    assert p.labels.dtype == np.int64 and p.labels.tolist() == [1, 0]
    assert p.boxes is None and p.mask_input is None and p.image_shape == SHAPE and p.num_masks == 1


def test_bool_and_float_labels_are_accepted():
    assert check(points=[[1, 1], [2, 2]], labels=np.array([True, False])).labels.tolist() == [1, 0]
    assert check(points=[[1, 1]], labels=[1.0]).labels.tolist() == [1]


def test_default_positive_fills_labels():
    p = check(points=[[1, 2], [3, 4], [5, 6]], default_positive=True)
    assert p.labels.tolist() == [1, 1, 1]


def test_single_box_becomes_k1_and_k_boxes_give_k_masks():
    p = check(box=(1, 2, 30, 40))
    assert p.boxes.shape == (1, 4) and p.num_masks == 1
    p = check(box=[[1, 2, 30, 40], [0, 0, 300, 500], [5, 5, 5, 5]])
    assert p.boxes.shape == (3, 4) and p.num_masks == 3


def test_far_edge_and_zero_area_boxes_are_allowed():
    p = check(points=[[300, 500], [0, 0]], labels=[1, 0], box=[0, 0, 300, 500])
    np.testing.assert_array_equal(p.points[0], [300, 500])
    assert check(box=[10, 10, 10, 20]).boxes.tolist() == [[10, 10, 10, 20]]


def test_mask_input_is_one_objects_low_res_logits():
    m = check(mask_input=np.zeros((1, 256, 256), np.float64))  # a previous low_res_logits[k]
    assert m.mask_input.shape == (1, 256, 256) and m.mask_input.dtype == np.float32


def test_mask_input_low_res_size():
    assert check(mask_input=np.zeros((1, 64, 64)), low_res_size=64).mask_input.shape == (1, 64, 64)


def test_empty_points_count_as_none():
    p = check(points=np.zeros((0, 2)), labels=[], box=[0, 0, 5, 5])
    assert p.points is None and p.labels is None
    p = check(points=np.zeros((0, 2)), box=[0, 0, 5, 5])
    assert p.points is None and p.labels is None
    p = check(points=[], labels=[], box=[0, 0, 5, 5])
    assert p.points is None and p.labels is None


def test_prompts_are_copies():
    pts = np.array([[1.0, 2.0]])
    p = check(points=pts, labels=[1])
    pts[0, 0] = 99
    assert p.points[0, 0] == 1.0


# --- validate_prompts: errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, r"prompts: give at least one of points, box or mask_input"),
        ({"points": np.zeros((0, 2))}, r"give at least one of points, box or mask_input"),
        ({"points": [1, 2], "labels": [1]}, r"points: expected shape \(N, 2\) of \(row, col\), got \(2,\); for one point use \[\[row, col\]\]"),
        ({"points": [[1, 2, 3]], "labels": [1]}, r"points: expected shape \(N, 2\).*got \(1, 3\)"),
        ({"points": [["a", "b"]], "labels": [1]}, r"points: must be numeric"),
        ({"points": [[1, 2], [3]], "labels": [1, 1]}, r"points: must be numeric, got list"),
        ({"points": [[1, 2]], "labels": ["x"]}, r"labels: must be numeric, got list"),
        ({"points": [[1, 2], [np.nan, 3]], "labels": [1, 1]}, r"points: point 1 is not finite: \[nan, 3.0\]"),
        ({"points": [[1, 2], [np.inf, 3]], "labels": [1, 1]}, r"points: point 1 is not finite"),
        ({"points": [[1, 2], [301, 3]], "labels": [1, 1]}, r"points: point 1 \(row, col\) = \[301.0, 3.0\] is outside the image of shape \(300, 500\); rows must be in \[0, 300\] and columns in \[0, 500\]"),
        ({"points": [[-0.5, 2]], "labels": [1]}, r"points: point 0 .* is outside the image"),
        ({"points": [[5, 500.01]], "labels": [1]}, r"points: point 0 .* is outside the image"),
        ({"points": [[1, 2]], "labels": [2]}, r"labels: must be 1 \(positive\) or 0 \(negative\), label 0 is 2$"),
        ({"points": [[1, 2], [3, 4]], "labels": [1, -1]}, r"labels: .* label 1 is -1$"),
        ({"points": [[1, 2]], "labels": [0.5]}, r"labels: .* label 0 is 0.5"),
        ({"points": [[1, 2], [3, 4]], "labels": [1]}, r"labels: expected shape \(2,\) to match 2 point\(s\), got \(1,\)"),
        ({"points": [[1, 2]], "labels": [[1]]}, r"labels: expected shape \(1,\) to match 1 point\(s\), got \(1, 1\)"),
        ({"labels": [1], "box": [0, 0, 5, 5]}, r"labels: given without points"),
        ({"points": [[1, 2]]}, r"labels: required with points \(1 point\(s\)\); use 1 for positive, 0 for negative"),
        ({"box": [1, 2, 3]}, r"box: expected shape \(4,\) or \(K, 4\) of \(row0, col0, row1, col1\), got \(3,\)"),
        ({"box": np.zeros((0, 4))}, r"box: expected shape \(4,\) or \(K, 4\).*got \(0, 4\)"),
        ({"box": np.zeros((2, 2, 4))}, r"box: expected shape .*got \(2, 2, 4\)"),
        ({"box": [[0, 0, 5, 5], [10, 0, 5, 5]]}, r"box: box 1 \(row0, col0, row1, col1\) = \[10.0, 0.0, 5.0, 5.0\] is inverted; it needs row0 <= row1 and col0 <= col1"),
        ({"box": [0, 10, 5, 5]}, r"box: box 0 .* is inverted"),
        ({"box": [0, 0, np.nan, 5]}, r"box: box 0 .* is not finite"),
        ({"box": [0, 0, 301, 5]}, r"box: box 0 .* is outside the image of shape \(300, 500\)"),
        ({"box": [-1, 0, 30, 5]}, r"box: box 0 .* is outside the image"),
        ({"box": [0, 0, 30, 501]}, r"box: box 0 .* is outside the image"),
        ({"mask_input": np.zeros((1, 1, 256, 256))}, r"mask_input: expected low-resolution logits of shape \(1, 256, 256\) \(a previous prediction's low_res_logits\[k\]\), got \(1, 1, 256, 256\)"),
        ({"mask_input": np.zeros((256, 256))}, r"mask_input: expected low-resolution logits .*got \(256, 256\)"),
        ({"mask_input": np.zeros((1, 128, 128))}, r"mask_input: expected low-resolution logits .*got \(1, 128, 128\)"),
        ({"mask_input": np.full((1, 256, 256), np.nan)}, r"mask_input: contains 65536 non-finite value\(s\)"),
        ({"box": [0, 0, 5, 5], "image_shape": (0, 5)}, r"image_shape: H and W must be positive, got \(0, 5\)"),
        ({"box": [0, 0, 5, 5], "image_shape": (5, 5, 3)}, r"image_shape: expected \(H, W\), got \(5, 5, 3\)"),
    ],
)
def test_validate_prompts_rejects(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        check(**kwargs)


def test_labels_without_points_is_an_error_even_with_default_positive():
    with pytest.raises(InvalidInputError, match=r"labels: given without points"):
        check(labels=[1, 0], box=[0, 0, 5, 5], default_positive=True)


def test_errors_are_value_errors():
    with pytest.raises(ValueError):
        check()


# --- to_model_frame --------------------------------------------------------------------------------


def model_frame(prompts: Prompts):
    h, w = prompts.image_shape
    return to_model_frame(prompts, (h, w), preprocess_shape(h, w, 1024))


def test_points_become_xy_scaled_per_axis():
    p = check(points=[[30, 50], [300, 500]], labels=[1, 0])
    mp = model_frame(p)  # 300 x 500 -> 614 x 1024
    assert mp.point_coords.shape == (1, 2, 2) and mp.point_coords.dtype == torch.float32
    expected = np.array([[50 * 1024 / 500, 30 * 614 / 300], [1024, 614]], dtype=np.float32)
    np.testing.assert_array_equal(mp.point_coords[0].numpy(), expected)
    assert mp.point_labels.dtype == torch.int32 and mp.point_labels.tolist() == [[1, 0]]
    assert mp.boxes is None and mp.mask_input is None


def test_box_becomes_xyxy():
    p = check(box=[30, 50, 150, 400])
    mp = model_frame(p)
    sx, sy = 1024 / 500, 614 / 300
    expected = np.array([[50 * sx, 30 * sy, 400 * sx, 150 * sy]], dtype=np.float32)
    assert mp.boxes.shape == (1, 4) and mp.boxes.dtype == torch.float32
    np.testing.assert_array_equal(mp.boxes.numpy(), expected)
    assert mp.point_coords is None and mp.point_labels is None


def test_points_are_repeated_per_box():
    p = check(points=[[1, 2], [3, 4], [5, 6]], labels=[1, 0, 1], box=[[0, 0, 10, 10], [5, 5, 50, 50]])
    mp = model_frame(p)
    assert mp.point_coords.shape == (2, 3, 2) and mp.point_labels.shape == (2, 3) and mp.boxes.shape == (2, 4)
    assert torch.equal(mp.point_coords[0], mp.point_coords[1])
    assert mp.point_labels.tolist() == [[1, 0, 1], [1, 0, 1]]


def test_mask_input_shape():
    mp = model_frame(check(mask_input=np.ones((1, 256, 256))))
    assert mp.mask_input.shape == (1, 1, 256, 256) and mp.mask_input.dtype == torch.float32
    assert mp.point_coords is None and mp.boxes is None


def test_device_argument():
    p = check(points=[[1, 2]], labels=[1], box=[0, 0, 5, 5], mask_input=np.zeros((1, 256, 256)))
    mp = to_model_frame(p, SHAPE, (614, 1024), device="cpu")
    assert all(t.device.type == "cpu" for t in mp)


@pytest.mark.parametrize("shape", [(300, 500), (777, 131), (1024, 1024), (2000, 1500), (17, 23)])
def test_matches_sam_apply_coords_and_boxes_bitwise(shape):
    sam = pytest.importorskip("reference_impl").sam()
    h, w = shape
    rng = np.random.default_rng(h * w)
    pts = rng.uniform(0, 1, (6, 2)) * [h, w]
    r = np.sort(rng.uniform(0, h, (3, 2)), axis=1)
    c = np.sort(rng.uniform(0, w, (3, 2)), axis=1)
    boxes = np.stack([r[:, 0], c[:, 0], r[:, 1], c[:, 1]], axis=1)
    p = validate_prompts(pts, np.ones(6), boxes, image_shape=shape)
    mp = to_model_frame(p, shape, preprocess_shape(h, w))
    t = sam.utils.transforms.ResizeLongestSide(1024)
    ref_pts = torch.as_tensor(t.apply_coords(pts[:, ::-1].copy(), shape), dtype=torch.float)
    ref_boxes = torch.as_tensor(t.apply_boxes(boxes[:, [1, 0, 3, 2]].copy(), shape), dtype=torch.float)
    for k in range(3):
        assert torch.equal(mp.point_coords[k], ref_pts)
    assert torch.equal(mp.boxes, ref_boxes)


@pytest.mark.parametrize("shape", [(300, 500), (777, 131), (2000, 1500)])
def test_point_round_trip_on_non_square_images(shape):
    h, w = shape
    pts = np.array([[0, 0], [h, w], [h / 3, w / 7], [h - 1, 1]], dtype=np.float64)
    p = check(points=pts, labels=[1, 1, 0, 0], image_shape=shape)
    size = preprocess_shape(h, w)
    mp = to_model_frame(p, shape, size)
    back = points_from_model_frame(mp.point_coords[0], shape, size)
    assert back.shape == (4, 2) and back.dtype == np.float64
    np.testing.assert_allclose(back, pts, rtol=1e-6, atol=1e-3)  # float32 model-frame precision
    exact = points_from_model_frame(pts[:, ::-1] * [size[1] / w, size[0] / h], shape, size)
    np.testing.assert_allclose(exact, pts, rtol=1e-12, atol=1e-9)


def test_row_maps_to_y_and_col_to_x():
    p = check(points=[[10, 0]], labels=[1], image_shape=(100, 100))
    mp = to_model_frame(p, (100, 100), (1024, 1024))
    assert mp.point_coords[0, 0].tolist() == [0.0, 102.4000015258789]  # x = 0, y = row * 10.24


# --- full-size mask prompts ----------------------------------------------------------------------


def test_mask_logits_of_bool_masks_and_logits():
    mask = np.zeros((3, 4), bool)
    mask[1, 2] = True
    logits = mask_logits(mask)
    assert logits.dtype == np.float32 and logits[1, 2] == np.float32(MASK_PROMPT_LOGIT)
    assert (logits[~mask] == np.float32(-MASK_PROMPT_LOGIT)).all()
    assert MASK_PROMPT_LOGIT == pytest.approx(np.log(999))  # probability 0.999
    values = np.array([[-3.5, 2.0]], np.float64)
    np.testing.assert_array_equal(mask_logits(values), values.astype(np.float32))
    with pytest.raises(InvalidInputError, match=r"mask_input: contains 1 non-finite value\(s\)"):
        mask_logits(np.array([[np.inf, 0.0]]))


def test_to_low_res_frame_resizes_into_the_padded_model_frame():
    """A (300, 500) map: resized to the (154, 256) input, padded to 256, reduced to 64."""
    values = np.full(SHAPE, 5.0, np.float32)
    frame = to_low_res_frame(values, preprocess_shape(*SHAPE, 256), 256, 64, pad_value=-20.0)
    assert frame.shape == (1, 64, 64) and frame.dtype == torch.float32
    # rows of the image (154 / 4 = 38.5), the padding below, and a blend at the boundary
    torch.testing.assert_close(frame[0, :37], torch.full((37, 64), 5.0), rtol=0, atol=1e-5)
    torch.testing.assert_close(frame[0, 40:], torch.full((24, 64), -20.0), rtol=0, atol=1e-5)
    assert -20.0 < float(frame[0, 38, 0]) < 5.0
    ramp = np.tile(np.linspace(-8, 8, 500, dtype=np.float32), (300, 1))
    row = to_low_res_frame(ramp, preprocess_shape(*SHAPE, 256), 256, 64, pad_value=0.0)[0, 10]
    assert torch.all(torch.diff(row) > 0)  # the column order is kept (cols map to x)
