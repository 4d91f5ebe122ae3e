"""sum_core.sources: lazy opening (numpy/zarr v2/v3/TIFF/OME-Zarr), planes, one intensity window."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from sum_core.errors import InvalidInputError
from sum_core.image import Normalization, prepare_image
from sum_core.image import to_uint8_rgb
from sum_core.sources import Planes, fixed_normalization, open_image
from sum_core.tiling import Region


class CountingArray:
    """Array wrapper that counts how many elements were read."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.shape, self.dtype, self.read = array, array.shape, array.dtype, 0

    def __getitem__(self, index):
        out = np.asarray(self.array[index])
        self.read += out.size
        return out


def _image(shape=(300, 400), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4096, shape).astype(np.uint16)


def test_numpy_and_array_likes_are_returned_as_they_are():
    img = _image()
    assert open_image(img) is img
    counting = CountingArray(img)
    assert open_image(counting) is counting and counting.read == 0


@pytest.mark.parametrize("fmt", [2, 3])
def test_zarr_array_is_opened_lazily(tmp_path, fmt):
    img = _image()
    path = tmp_path / "a.zarr"
    z = zarr.create_array(str(path), shape=img.shape, dtype=img.dtype, chunks=(64, 64), zarr_format=fmt)
    z[...] = img
    arr = open_image(path)
    assert isinstance(arr, zarr.Array)
    np.testing.assert_array_equal(arr[10:20, 30:50], img[10:20, 30:50])


def test_zarr_group_key_and_missing_key(tmp_path):
    img = _image()
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("raw", shape=img.shape, dtype=img.dtype)[...] = img
    np.testing.assert_array_equal(open_image(tmp_path / "g.zarr", key="raw")[...], img)
    np.testing.assert_array_equal(open_image(group, key="raw")[...], img)
    with pytest.raises(InvalidInputError, match="key: 'nope' not found"):
        open_image(tmp_path / "g.zarr", key="nope")


def test_ome_zarr_levels(tmp_path):
    img = _image((64, 80))
    group = zarr.open_group(str(tmp_path / "ome.zarr"), mode="w")
    for name, data in (("s0", img), ("s1", img[::2, ::2])):
        group.create_array(name, shape=data.shape, dtype=data.dtype)[...] = data
    group.attrs["ome"] = {"multiscales": [{"datasets": [{"path": "s0"}, {"path": "s1"}]}]}
    assert open_image(tmp_path / "ome.zarr").shape == (64, 80)
    np.testing.assert_array_equal(open_image(tmp_path / "ome.zarr", level=1)[...], img[::2, ::2])
    with pytest.raises(InvalidInputError, match=r"level: .* has 2 level\(s\)"):
        open_image(tmp_path / "ome.zarr", level=2)


def test_tiff_is_opened_through_its_zarr_store(tmp_path):
    img = _image((512, 768))
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, img, tile=(256, 256))
    arr = open_image(path)
    assert isinstance(arr, zarr.Array) and arr.chunks == (256, 256)
    np.testing.assert_array_equal(arr[300:310, 500:520], img[300:310, 500:520])
    with pytest.raises(InvalidInputError, match="level: .* not a pyramidal TIFF"):
        open_image(path, level=1)


def test_bad_sources():
    with pytest.raises(InvalidInputError, match="does not exist"):
        open_image("/no/such/file.tif")
    with pytest.raises(InvalidInputError, match="expected an array"):
        open_image(42)
    with pytest.raises(InvalidInputError, match="level must be an integer >= 0"):
        open_image(_image(), level=-1)


def test_planes_read_only_the_window():
    stack = np.random.default_rng(0).random((5, 40, 50, 3))
    counting = CountingArray(stack)
    planes = Planes(counting, stack_axis=0)
    assert (planes.n_slices, planes.plane_shape) == (5, (40, 50))
    window = planes.read(2, Region(5, 10, 15, 30))
    np.testing.assert_array_equal(window, stack[2, 5:15, 10:30])
    assert counting.read == 10 * 20 * 3
    middle = Planes(np.moveaxis(stack, 0, 1), stack_axis=1)
    np.testing.assert_array_equal(middle.read(4), stack[4])


@pytest.mark.parametrize(
    ("shape", "axis", "message"),
    [
        ((5, 40, 50), None, "pass stack_axis="),
        ((2, 5, 40, 50), None, "pass stack_axis="),
        ((2, 5, 40, 50), 0, "leaves planes of shape"),
        ((5, 40, 50), 3, "out of range"),
        ((5, 40, 50, 3), 3, "leaves planes of shape"),
    ],
)
def test_planes_errors(shape, axis, message):
    with pytest.raises(InvalidInputError, match=message):
        Planes(np.zeros(shape, np.uint8), stack_axis=axis)


def test_small_images_get_exactly_prepare_images_window():
    img = np.random.default_rng(1).normal(100, 20, (120, 90)).astype(np.float32)
    norm = fixed_normalization(Planes(img))
    np.testing.assert_array_equal(to_uint8_rgb(img, norm), prepare_image(img))


def test_one_window_for_all_tiles_and_constant_tiles_are_accepted():
    img = _image((200, 300))
    img[:, :100] = 7  # a constant region, like the background of a slide
    norm = fixed_normalization(Planes(img))
    whole = to_uint8_rgb(img, norm)
    np.testing.assert_array_equal(to_uint8_rgb(img[50:150, 120:260], norm), whole[50:150, 120:260])
    constant = to_uint8_rgb(img[:, :100], norm)
    assert constant.shape == (200, 100, 3) and np.unique(constant).size == 1


def test_large_lazy_images_are_sampled_not_read_whole():
    img = CountingArray(_image((3000, 3000)))
    norm = fixed_normalization(Planes(img))
    assert img.read <= 8 * 8 * 64 * 64 < img.array.size // 10
    lo, hi = norm.limits
    assert 0 <= lo < 100 and 4000 < hi <= 4095


def test_uint8_needs_no_window_but_explicit_normalization_is_kept():
    img = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert fixed_normalization(Planes(img)) is None
    fixed = Normalization(limits=(0, 10))
    assert fixed_normalization(Planes(img), fixed) is fixed
    assert to_uint8_rgb(img, fixed)[0, 5, 0] == 128


def test_dask_arrays_are_read_window_by_window():
    da = pytest.importorskip("dask.array")
    stack = np.random.default_rng(3).random((3, 60, 70)).astype(np.float32)
    lazy = da.from_array(stack, chunks=(1, 32, 32))
    planes = Planes(open_image(lazy), stack_axis=0)
    window = planes.read(1, Region(10, 20, 40, 60))
    assert isinstance(window, np.ndarray)
    np.testing.assert_array_equal(window, stack[1, 10:40, 20:60])
    assert fixed_normalization(planes) == fixed_normalization(Planes(stack, stack_axis=0))


def test_numpy_images_are_normalised_exactly_as_prepare_image_does_at_camera_sizes():
    """One intensity window per image whatever the entry point: tiled paths (fixed_normalization)
    and one-window paths (prepare_image) agree on a 2160 x 2560 uint16 camera image (> 4 Mpixel)."""
    from sum_core.image import Normalization, prepare_image, to_uint8_rgb

    rng = np.random.default_rng(0)
    image = rng.normal(500, 40, (2160, 2560)).clip(0).astype(np.uint16)
    image[rng.random(image.shape) < 0.002] = 4000  # sparse bright cells: sampling would miss them
    window = fixed_normalization(Planes(image))
    exact = Normalization().window(image.astype(np.float64))
    assert window.limits == pytest.approx(exact, rel=0, abs=0)
    np.testing.assert_array_equal(to_uint8_rgb(image, window), prepare_image(image))
    rgba = rng.integers(0, 4000, (300, 400, 4), dtype=np.uint16)
    np.testing.assert_array_equal(to_uint8_rgb(rgba, fixed_normalization(Planes(rgba))), prepare_image(rgba))
