"""Tests for sum_core.image: validation, dtype rescaling, SAM-identical resize."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sum_core.encoding import to_pixels
from sum_core.errors import InvalidInputError
from sum_core.image import (
    Normalization,
    prepare_image,
    preprocess_shape,
    resize_longest_side,
)

RNG = np.random.default_rng(0)


# --- prepare_image: accepted inputs -------------------------------------------------------------


def test_uint8_rgb_is_used_as_is_and_copied():
    img = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = prepare_image(img)
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, img)
    assert not np.shares_memory(out, img)


def test_uint8_gray_2d_and_hw1_repeat_to_three_channels():
    gray = RNG.integers(0, 256, (4, 6), dtype=np.uint8)
    for img in (gray, gray[:, :, None]):
        out = prepare_image(img)
        assert out.shape == (4, 6, 3)
        for c in range(3):
            np.testing.assert_array_equal(out[:, :, c], gray)


def test_rgba_drops_alpha():
    img = RNG.integers(0, 256, (3, 4, 4), dtype=np.uint8)
    np.testing.assert_array_equal(prepare_image(img), img[:, :, :3])


def test_nested_lists_are_accepted():
    out = prepare_image([[0, 1], [2, 3]])
    np.testing.assert_array_equal(out[:, :, 0], [[0, 85], [170, 255]])


def test_bool_maps_to_0_and_255():
    img = np.array([[True, False], [False, False]])
    out = prepare_image(img)
    np.testing.assert_array_equal(out[:, :, 1], [[255, 0], [0, 0]])


def test_float_min_max_window_when_percentiles_are_0_and_100():
    img = np.array([[0.0, 0.5], [1.0, 0.25]])
    out = prepare_image(img, Normalization(low=0, high=100))
    np.testing.assert_array_equal(out[:, :, 0], [[0, 128], [255, 64]])


def test_uint16_hot_pixels_are_clipped_by_default_percentiles():
    img = np.tile(np.arange(1000, 2000, dtype=np.uint16), (100, 1))  # 100 x 1000, values 1000..1999
    img[0, :5] = 65535  # 5 hot pixels of 100000 (0.005 %)
    out = prepare_image(img)[:, :, 0]
    lo, hi = np.percentile(img.astype(float), [0.5, 99.5])
    assert hi < 2000  # the hot pixels do not stretch the window
    expected = np.rint(np.clip((img.astype(float) - lo) * 255 / (hi - lo), 0, 255)).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
    assert out[0, 0] == 255 and out[50, 0] == 0
    # the useful range still spans (almost) the whole 8-bit range
    assert out[50, 500] in range(120, 136)


def test_fixed_limits_override_percentiles():
    img = np.array([[0, 2048], [4095, 5000]], dtype=np.uint16)
    out = prepare_image(img, Normalization(limits=(0, 4095)))[:, :, 0]
    np.testing.assert_array_equal(out, [[0, 128], [255, 255]])


def test_explicit_normalization_applies_to_uint8():
    img = np.array([[10, 20], [30, 40]], dtype=np.uint8)
    np.testing.assert_array_equal(prepare_image(img)[:, :, 0], img)
    out = prepare_image(img, Normalization(low=0, high=100))[:, :, 0]
    np.testing.assert_array_equal(out, [[0, 85], [170, 255]])


def test_sparse_bright_spots_fall_back_to_min_max():
    img = np.zeros((100, 100), dtype=np.uint16)
    img[5, 5] = img[50, 60] = 1000  # 0.02 % of pixels: both percentiles are 0
    out = prepare_image(img)[:, :, 0]
    assert out[5, 5] == 255 and out[50, 60] == 255 and out.sum() == 2 * 255


def test_rgb_uint16_uses_one_window_for_all_channels():
    img = np.zeros((2, 2, 3), dtype=np.uint16)
    img[..., 0] = 100
    img[..., 1] = 300
    img[0, 0, 2] = 400
    out = prepare_image(img, Normalization(low=0, high=100))  # window 0..400 shared by R, G, B
    assert out[1, 1].tolist() == [64, 191, 0] and out[0, 0].tolist() == [64, 191, 255]


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint32, np.int64, np.float16, np.float32, np.float64])
def test_any_real_dtype_gives_full_range_uint8(dtype):
    start = 0 if np.dtype(dtype).kind == "u" else -8
    img = np.arange(start, start + 16).reshape(4, 4).astype(dtype)
    out = prepare_image(img, Normalization(low=0, high=100))
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert (np.diff(out[:, :, 0].ravel().astype(int)) > 0).all()


# --- Normalization validation --------------------------------------------------------------------


@pytest.mark.parametrize("low, high", [(-1, 50), (50, 50), (60, 40), (0, 101)])
def test_normalization_rejects_bad_percentiles(low, high):
    with pytest.raises(InvalidInputError, match=r"normalization: percentiles must satisfy 0 <= low < high <= 100"):
        Normalization(low=low, high=high)


@pytest.mark.parametrize("limits", [(5, 5), (10, 0), (0, float("inf")), (float("nan"), 1)])
def test_normalization_rejects_bad_limits(limits):
    with pytest.raises(InvalidInputError, match=r"normalization: limits must be finite with vmin < vmax"):
        Normalization(limits=limits)


def test_normalization_must_be_a_normalization():
    with pytest.raises(InvalidInputError, match="normalization must be a sum_core.Normalization, got tuple"):
        prepare_image(np.arange(12, dtype=np.uint16).reshape(3, 4), (0, 4095))


def test_normalization_rejects_limits_of_wrong_length():
    with pytest.raises(InvalidInputError, match=r"normalization: limits must be \(vmin, vmax\)"):
        Normalization(limits=(0, 1, 2))


# --- prepare_image: errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((0, 5)), r"image: is empty \(shape \(0, 5\)\)"),
        (np.zeros((5, 0, 3), np.uint8), r"image: is empty"),
        (np.arange(5), r"image: has 1 dimension\(s\) \(shape \(5,\)\)"),
        (np.array(3.0), r"image: has 0 dimension\(s\)"),
        (np.zeros((2, 3, 4, 5)), r"image: has 4 dimensions \(shape \(2, 3, 4, 5\)\); pick one plane"),
        (np.zeros((2, 2, 3, 4, 5)), r"image: has 5 dimensions"),
        (np.zeros((10, 32, 32)), r"image: shape \(10, 32, 32\) looks like a stack of 10 planes; pass one plane"),
        (np.zeros((2, 8, 8), np.uint8), r"stack of 2 planes"),
        (np.zeros((3, 8, 8)), r"stack of 3 planes.*channels come first, use np.moveaxis\(image, 0, -1\)"),
        (np.zeros((4, 4), np.complex64), r"image: complex dtype complex64 is not supported"),
        (np.array([[1, "a"], [2, 3]], dtype=object), r"image: object dtype is not supported"),
        (np.array([["a", "b"], ["c", "d"]]), r"image: dtype <U1 is not a real numeric type"),
    ],
)
def test_prepare_image_rejects(image, message):
    with pytest.raises(InvalidInputError, match=message):
        prepare_image(image)


def test_non_finite_values_are_counted():
    img = RNG.random((6, 6))
    img[0, 0] = img[1, 1] = np.nan
    img[2, 2] = np.inf
    img[3, 3] = -np.inf
    img[4, 4] = np.nan
    with pytest.raises(InvalidInputError, match=r"image: contains 3 NaN and 2 infinite value\(s\)"):
        prepare_image(img)


def test_rgba_with_nan_only_in_alpha_is_accepted():
    img = RNG.random((4, 4, 4))
    img[..., 3] = np.nan
    assert prepare_image(img).shape == (4, 4, 3)


@pytest.mark.parametrize(
    "image",
    [
        np.full((4, 4), 7, np.uint8),
        np.full((4, 4), 1000, np.uint16),
        np.zeros((3, 3)),
        np.zeros((3, 3), bool),
        np.ones((2, 2, 1), np.float32),
        np.tile(np.array([10, 20, 30], np.uint8), (5, 5, 1)),
    ],
)
def test_constant_image_is_an_error(image):
    with pytest.raises(InvalidInputError, match=r"image: all pixels are equal .*a constant image cannot be segmented"):
        prepare_image(image)


def test_constant_rgb_with_varying_alpha_is_an_error():
    img = np.zeros((3, 3, 4), np.uint8)
    img[..., 3] = RNG.integers(0, 256, (3, 3))
    with pytest.raises(InvalidInputError, match=r"all pixels are equal \(\[0, 0, 0\]\)"):
        prepare_image(img)


# --- preprocess_shape / resize / tensor ----------------------------------------------------------


@pytest.mark.parametrize(
    "h, w, expected",
    [
        (1024, 1024, (1024, 1024)),
        (480, 640, (768, 1024)),
        (1000, 3, (1024, 3)),
        (3, 1000, (3, 1024)),
        (2, 2047, (1, 1024)),
        (500, 1001, (511, 1024)),
        (500, 999, (513, 1024)),
    ],
)
def test_preprocess_shape(h, w, expected):
    assert preprocess_shape(h, w) == expected


def test_preprocess_shape_matches_sam_rounding():
    sam = pytest.importorskip("reference_impl").sam()
    for h, w in [(1, 1), (7, 13), (333, 1999), (2048, 1537), (1023, 1025)]:
        for target in (1024, 256, 100):
            assert preprocess_shape(h, w, target) == sam.utils.transforms.ResizeLongestSide.get_preprocess_shape(
                h, w, target
            )


def test_preprocess_shape_rejects_non_positive():
    with pytest.raises(InvalidInputError, match=r"preprocess_shape: sizes must be positive, got h=0, w=5"):
        preprocess_shape(0, 5)


@pytest.mark.parametrize("shape", [(300, 200, 3), (50, 70, 3), (1024, 1024, 3), (1200, 97, 3)])
def test_resize_is_byte_identical_to_pil_bilinear(shape):
    img = RNG.integers(0, 256, shape, dtype=np.uint8)
    out = resize_longest_side(img, 1024)
    newh, neww = preprocess_shape(shape[0], shape[1], 1024)
    expected = np.asarray(Image.fromarray(img).resize((neww, newh), Image.BILINEAR))
    assert out.shape == (newh, neww, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_resize_matches_sam_apply_image():
    sam = pytest.importorskip("reference_impl").sam()
    img = RNG.integers(0, 256, (333, 517, 3), dtype=np.uint8)
    expected = sam.utils.transforms.ResizeLongestSide(1024).apply_image(img)
    np.testing.assert_array_equal(resize_longest_side(img), expected)


def test_resize_accepts_non_contiguous_input():
    img = RNG.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    view = img[:, ::-1]
    np.testing.assert_array_equal(resize_longest_side(view, 30), resize_longest_side(view.copy(), 30))


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 4), np.uint8), [[1, 2]]]
)
def test_resize_and_tensor_reject_non_rgb_uint8(bad):
    for fn in (resize_longest_side, lambda image: to_pixels(image, 30)):
        with pytest.raises(InvalidInputError, match=r"image: expected an \(H, W, 3\) uint8 array \(see prepare_image\)"):
            fn(bad)


def test_to_pixels_layout_and_values():
    img = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    t = to_pixels(img, 7)  # long side already 7: no resize
    assert t.shape == (1, 3, 5, 7) and t.dtype == torch.uint8 and t.is_contiguous()
    assert t[0, 2, 4, 6].item() == img[4, 6, 2]
    np.testing.assert_array_equal(t[0].permute(1, 2, 0).numpy(), img)
