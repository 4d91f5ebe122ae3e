"""Tests for sum_core.imageio: read/write round trips, zarr layouts, atomic writes."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from sum_core import imageio
from sum_core.errors import InvalidInputError
from sum_core.imageio import read_image, write_image

RNG = np.random.default_rng(0)


def files_in(folder) -> list[str]:
    return sorted(os.listdir(folder))


# --- TIFF / PNG / JPEG ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [
        RNG.integers(0, 65536, (13, 17), dtype=np.uint16),
        RNG.random((5, 9, 3)).astype(np.float32),
        RNG.integers(-5, 5, (4, 6, 7), dtype=np.int32),
        RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8),
        np.eye(5, dtype=bool),
    ],
)
@pytest.mark.parametrize("ext", [".tif", ".tiff", ".TIF"])
def test_tiff_round_trip(tmp_path, array, ext):
    path = tmp_path / f"img{ext}"
    write_image(path, array)
    out = read_image(path)
    assert out.dtype == array.dtype and out.shape == array.shape
    np.testing.assert_array_equal(out, array)
    assert files_in(tmp_path) == [path.name]


def test_tiff_is_zlib_compressed(tmp_path):
    path = tmp_path / "a.tif"
    write_image(path, np.zeros((64, 64), np.uint16) + np.arange(64, dtype=np.uint16))
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE


@pytest.mark.parametrize(
    "array",
    [
        RNG.integers(0, 256, (6, 7), dtype=np.uint8),
        RNG.integers(0, 256, (6, 7, 3), dtype=np.uint8),
        RNG.integers(0, 256, (6, 7, 4), dtype=np.uint8),
        RNG.integers(0, 65536, (6, 7), dtype=np.uint16),
        RNG.random((6, 7)) > 0.5,
    ],
)
def test_png_round_trip(tmp_path, array):
    path = tmp_path / "img.png"
    write_image(path, array)
    out = read_image(path)
    assert out.dtype == array.dtype and out.shape == array.shape
    np.testing.assert_array_equal(out, array)


def test_overwrite_replaces_existing_file(tmp_path):
    path = tmp_path / "a.png"
    write_image(path, np.zeros((3, 3), np.uint8))
    write_image(path, np.full((4, 4), 9, np.uint8))
    np.testing.assert_array_equal(read_image(path), np.full((4, 4), 9, np.uint8))
    assert files_in(tmp_path) == ["a.png"]


def test_written_file_honours_umask(tmp_path):
    path = tmp_path / "a.tif"
    write_image(path, np.zeros((3, 3), np.uint8))
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


def test_read_jpeg_and_palette_png(tmp_path):
    ramp = np.arange(0, 256, 16, dtype=np.uint8)
    rgb = np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], np.uint8(128)), axis=-1)  # smooth 16 x 16
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    out = read_image(tmp_path / "a.jpg")
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).max() < 12  # lossy, but the same picture

    pal = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), mode="P")
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    assert out.shape == (2, 2, 3)
    assert out[0, 0].tolist() == [255, 0, 0] and out[0, 1].tolist() == [0, 0, 255]


def test_read_gray_alpha_png_drops_alpha(tmp_path):
    Image.fromarray(np.dstack([np.full((3, 3), 40, np.uint8), np.full((3, 3), 255, np.uint8)]), mode="LA").save(
        tmp_path / "la.png"
    )
    out = read_image(tmp_path / "la.png")
    assert out.shape == (3, 3) and (out == 40).all()


# --- zarr ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_array_round_trip(tmp_path, zarr_format):
    data = RNG.integers(0, 4096, (20, 30), dtype=np.uint16)
    arr = zarr.create_array(tmp_path / "a.zarr", shape=data.shape, dtype=data.dtype, chunks=(8, 8), zarr_format=zarr_format)
    arr[...] = data
    out = read_image(tmp_path / "a.zarr")
    assert isinstance(out, np.ndarray) and out.dtype == np.uint16
    np.testing.assert_array_equal(out, data)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_folder_without_zarr_suffix_is_detected(tmp_path, zarr_format):
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    zarr.create_array(tmp_path / "store", data=data, zarr_format=zarr_format)
    np.testing.assert_array_equal(read_image(tmp_path / "store"), data)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_group_key_and_first_array(tmp_path, zarr_format):
    g = zarr.open_group(tmp_path / "g.zarr", mode="w", zarr_format=zarr_format)
    g.create_array("b", data=np.full((2, 2), 2, np.uint8))
    g.create_array("a", data=np.full((2, 2), 1, np.uint8))
    sub = g.create_group("sub")
    sub.create_array("c", data=np.full((2, 2), 3, np.uint8))
    assert (read_image(tmp_path / "g.zarr") == 1).all()  # first by name
    assert (read_image(tmp_path / "g.zarr", key="b") == 2).all()
    assert (read_image(tmp_path / "g.zarr", key="sub/c") == 3).all()
    with pytest.raises(InvalidInputError, match=r"key: 'nope' not found in zarr group .*g.zarr; its arrays are \['a', 'b'\]"):
        read_image(tmp_path / "g.zarr", key="nope")
    with pytest.raises(InvalidInputError, match=r"key: 'sub' in .* is a group, not an array"):
        read_image(tmp_path / "g.zarr", key="sub")


def _multiscales(paths: list[str]) -> list[dict]:
    return [{"version": "0.4", "axes": [{"name": "y"}, {"name": "x"}], "datasets": [{"path": p} for p in paths]}]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_ome_zarr_reads_level_zero(tmp_path, zarr_format):
    g = zarr.open_group(tmp_path / "ome.zarr", mode="w", zarr_format=zarr_format)
    full = RNG.integers(0, 100, (16, 16), dtype=np.uint16)
    # names chosen so that "first by name" would pick the wrong level
    g.create_array("s1", data=full[::2, ::2])
    g.create_array("s0", data=full)
    g.create_array("a_labels", data=np.zeros((2, 2), np.uint8))
    ms = _multiscales(["s0", "s1"])
    if zarr_format == 3:
        g.attrs["ome"] = {"version": "0.5", "multiscales": ms}
    else:
        g.attrs["multiscales"] = ms
    np.testing.assert_array_equal(read_image(tmp_path / "ome.zarr"), full)
    np.testing.assert_array_equal(read_image(tmp_path / "ome.zarr", key="s1"), full[::2, ::2])


def test_zarr_errors(tmp_path):
    zarr.open_group(tmp_path / "empty.zarr", mode="w", zarr_format=3)
    with pytest.raises(InvalidInputError, match=r"zarr group .*empty.zarr holds no arrays at its top level; pass key="):
        read_image(tmp_path / "empty.zarr")
    zarr.create_array(tmp_path / "a.zarr", data=np.arange(4), zarr_format=3)
    with pytest.raises(InvalidInputError, match=r"key.*a.zarr is a single zarr array"):
        read_image(tmp_path / "a.zarr", key="x")


# --- read errors ---------------------------------------------------------------------------------


def test_read_missing_file(tmp_path):
    with pytest.raises(InvalidInputError, match=r"path: .*missing.tif does not exist"):
        read_image(tmp_path / "missing.tif")


def test_read_unknown_format(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InvalidInputError, match=r"path: unknown image format '.txt' for .*notes.txt; supported: .tif, .tiff, .png"):
        read_image(tmp_path / "notes.txt")
    (tmp_path / "noext").write_text("hello")
    with pytest.raises(InvalidInputError, match=r"unknown image format '\(no extension\)'"):
        read_image(tmp_path / "noext")


def test_read_corrupt_files(tmp_path):
    (tmp_path / "bad.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(InvalidInputError, match=r"path: could not read .*bad.tif: "):
        read_image(tmp_path / "bad.tif")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(InvalidInputError, match=r"path: could not read .*bad.png: UnidentifiedImageError"):
        read_image(tmp_path / "bad.png")


def test_key_only_for_zarr(tmp_path):
    write_image(tmp_path / "a.tif", np.zeros((2, 2), np.uint8))
    with pytest.raises(InvalidInputError, match=r"key: only used for zarr stores, but .*a.tif is not one"):
        read_image(tmp_path / "a.tif", key="0")


# --- write errors and atomicity ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, array, message",
    [
        ("a.jpg", np.zeros((2, 2), np.uint8), r"path: cannot write '.jpg' files \(.*a.jpg\); use one of .tif, .tiff, .png"),
        ("a", np.zeros((2, 2), np.uint8), r"path: cannot write '\(no extension\)' files"),
        ("a.png", np.zeros((2, 2), np.float32), r"array: PNG holds bool or uint8 .* got shape \(2, 2\) and dtype float32; write a .tif instead"),
        ("a.png", np.zeros((2, 2, 3), np.uint16), r"array: PNG holds .* got shape \(2, 2, 3\) and dtype uint16"),
        ("a.png", np.zeros((2, 2, 2), np.uint8), r"array: PNG holds .* got shape \(2, 2, 2\)"),
        ("a.png", np.zeros((2, 2, 2, 3), np.uint8), r"array: PNG holds .* got shape \(2, 2, 2, 3\)"),
        ("a.tif", np.zeros((0, 3), np.uint8), r"array: expected a non-empty numeric array, got shape \(0, 3\)"),
        ("a.tif", np.array([["x"]]), r"array: expected a non-empty numeric array, got shape \(1, 1\) dtype <U1"),
    ],
)
def test_write_rejects_before_creating_anything(tmp_path, name, array, message):
    with pytest.raises(InvalidInputError, match=message):
        write_image(tmp_path / name, array)
    assert files_in(tmp_path) == []


def test_write_into_missing_folder(tmp_path):
    with pytest.raises(InvalidInputError, match=r"path: folder .*nowhere does not exist"):
        write_image(tmp_path / "nowhere" / "a.tif", np.zeros((2, 2), np.uint8))


@pytest.mark.parametrize("name, writer", [("a.tif", "tifffile"), ("a.png", "Image")])
def test_failed_write_leaves_no_temp_file_and_keeps_old_file(tmp_path, monkeypatch, name, writer):
    path = tmp_path / name
    old = np.full((3, 3), 7, np.uint8)
    write_image(path, old)

    def half_write(target, *args, **kwargs):
        with open(target, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    if writer == "tifffile":
        monkeypatch.setattr(imageio.tifffile, "imwrite", half_write)
    else:
        monkeypatch.setattr(imageio.Image.Image, "save", lambda self, target, *a, **k: half_write(target))
    with pytest.raises(OSError, match="disk full"):
        write_image(path, np.zeros((5, 5), np.uint8))
    assert files_in(tmp_path) == [name]
    np.testing.assert_array_equal(read_image(path), old)


def test_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    def boom(target, *args, **kwargs):
        with open(target, "wb") as fh:
            fh.write(b"II*\x00partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(imageio.tifffile, "imwrite", boom)
    with pytest.raises(KeyboardInterrupt):
        write_image(tmp_path / "new.tif", np.zeros((5, 5), np.uint8))
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("failing", ["b.png", "b.tif"])
def test_write_images_is_all_or_nothing(tmp_path, monkeypatch, failing):
    """The second file fails to write: the first keeps its old content, no temporary file is left."""
    old = np.full((3, 3), 7, np.uint8)
    write_image(tmp_path / "a.tif", old)
    real_tiff, real_save = imageio.tifffile.imwrite, imageio.Image.Image.save

    def fail_for_b(real):
        def write(first, second, *args, **kwargs):
            target = second if real is real_save else first
            if Path(target).name.startswith(".b."):
                raise OSError(28, "No space left on device")
            return real(first, second, *args, **kwargs)

        return write

    monkeypatch.setattr(imageio.tifffile, "imwrite", fail_for_b(real_tiff))
    monkeypatch.setattr(imageio.Image.Image, "save", fail_for_b(real_save))
    with pytest.raises(OSError, match="No space left"):
        imageio.write_images(
            [(tmp_path / "a.tif", np.zeros((5, 5), np.uint8)), (tmp_path / failing, np.ones((5, 5), np.uint8))]
        )
    assert files_in(tmp_path) == ["a.tif"]
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif"), old)
    with pytest.raises(InvalidInputError, match=r"array: PNG holds .* dtype float32"):  # checked before writing
        imageio.write_images([(tmp_path / "c.tif", old), (tmp_path / "d.png", np.zeros((5, 5), np.float32))])
    assert files_in(tmp_path) == ["a.tif"]


def test_check_image_target_refuses_before_any_data(tmp_path):
    (tmp_path / "folder.tif").mkdir()
    with pytest.raises(InvalidInputError, match=r"--out: .*folder.tif is a folder"):
        imageio.check_image_target(tmp_path / "folder.tif", (5, 5), np.uint8, name="--out")
    with pytest.raises(InvalidInputError, match=r"--out: PNG holds .* dtype uint32"):
        imageio.check_image_target(tmp_path / "m.png", (5, 5), np.uint32, name="--out")
    assert imageio.check_image_target(str(tmp_path / "m.png"), (5, 5), np.uint16) == tmp_path / "m.png"
    assert files_in(tmp_path) == ["folder.tif"]


# --- photometric and OME-TIFF output (issue 15) -----------------------------------------------


@pytest.mark.parametrize(
    "array, axes",
    [
        (RNG.random((3, 40, 50)).astype(np.float32), "QYX"),  # a 3-slice stack: pages, not RGB planes
        (RNG.integers(0, 9, (4, 40, 50), dtype=np.int32), "QYX"),
        (RNG.random((40, 50, 3)).astype(np.float32), "YXS"),  # (H, W, 3|4): RGB(A) as before
        (RNG.integers(0, 256, (40, 50, 4), dtype=np.uint8), "YXS"),
        (np.eye(6, dtype=bool), "YX"),
    ],
)
def test_tiff_written_without_tifffile_warnings_and_stacks_stay_grayscale(tmp_path, array, axes):
    path = tmp_path / "a.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tifffile's DeprecationWarning when photometric= is missing
        write_image(path, array)
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].axes == axes
        np.testing.assert_array_equal(tif.asarray(), array)


def test_ome_tiff_output_carries_the_physical_pixel_size(tmp_path):
    from sum_core.volume import open_volume

    labels = np.zeros((1040, 1392), np.uint16)
    labels[900:1000, 1300:1390] = 7
    uncertainty = RNG.random((1040, 1392)).astype(np.float32)
    size = [(0.325, "µm"), (0.65, "µm")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        imageio.write_images([(tmp_path / "m.ome.tif", labels), (tmp_path / "u.OME.TIFF", uncertainty)], size)
    for name, array in (("m.ome.tif", labels), ("u.OME.TIFF", uncertainty)):
        with tifffile.TiffFile(tmp_path / name) as tif:
            assert tif.is_ome and tif.series[0].axes == "YX"
            np.testing.assert_array_equal(tif.asarray(), array)
        volume = open_volume(tmp_path / name)
        assert volume.scale == (0.325, 0.65) and volume.units == ("micrometer", "micrometer")
    stack = RNG.integers(0, 3, (5, 30, 40), dtype=np.uint8)
    write_image(tmp_path / "s.ome.tiff", stack, [(2.0, "µm"), (0.5, "nm"), (0.5, None)])
    volume = open_volume(tmp_path / "s.ome.tiff")
    assert volume.names == ("Z", "Y", "X") and volume.slice_axis == 0
    assert volume.scale == (2.0, 0.5, 1.0) and volume.units == ("micrometer", "nanometer", None)
    write_image(tmp_path / "plain.tif", stack[0], [(2.0, "µm"), (0.5, "µm")])  # ignored by plain TIFF
    with tifffile.TiffFile(tmp_path / "plain.tif") as tif:
        assert not tif.is_ome
    with pytest.raises(InvalidInputError, match=r"OME-TIFF is written as \(Y, X\) or \(Z, Y, X\)"):
        write_image(tmp_path / "x.ome.tif", np.zeros((2, 3, 4, 5), np.uint8))
    with pytest.raises(InvalidInputError, match="physical_size: 2 values"):
        write_image(tmp_path / "x.ome.tif", stack, size)
    assert not (tmp_path / "x.ome.tif").exists()
