"""Sources written by other tools (tifffile OME-TIFF / ImageJ, ome-zarr-py): channel axes are
channels wherever they are, ``channel=`` picks the channels fed to the model, axis names match in
any case, and the physical pixel size and units are read (issue 15, item 0)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from sum_core.volume import open_volume
from sum_core.errors import InvalidInputError
from sum_core.sources import Planes
from sum_core.tiling import Region

# where the windows are read: far from the origin, across tile borders of the TIFF
FAR = Region(1500, 1700, 1700, 1964)


@pytest.fixture(scope="module")
def rgb_ome_tiff(tmp_path_factory) -> tuple:
    """A 2048 x 2048 pyramidal RGB OME-TIFF as tifffile writes it (axes Y, X, S; 0.25 x 0.5 µm pixels)."""
    image = np.random.default_rng(0).integers(0, 256, (2048, 2048, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("ome") / "slide.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        metadata = {"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.25, "PhysicalSizeYUnit": "µm"}
        tif.write(image, subifds=1, photometric="rgb", tile=(256, 256), metadata=metadata)
        tif.write(image[::2, ::2], subfiletype=1, photometric="rgb", tile=(256, 256))
    return path, image


def test_pyramidal_rgb_ome_tiff_is_one_rgb_plane_with_its_pixel_size(rgb_ome_tiff):
    path, image = rgb_ome_tiff
    volume = open_volume(path)
    assert volume.names == ("Y", "X", "S") and volume.channel_axis == 2 and volume.slice_axis is None
    assert volume.n_slices == 1 and volume.plane_shape == (2048, 2048) and volume.out_shape == (2048, 2048)
    assert volume.out_names == ("Y", "X") and volume.out_chunks((512, 512)) == (512, 512)
    np.testing.assert_array_equal(volume.read(0, FAR), image[FAR.slices])
    assert volume.scale == (0.25, 0.5) and volume.units == ("micrometer", "micrometer")
    red = open_volume(path, channel=0)
    np.testing.assert_array_equal(red.read(0, FAR), image[FAR.slices][..., 0])
    bgr = open_volume(path, channel=(2, 1, 0))
    np.testing.assert_array_equal(bgr.read(0, FAR), image[FAR.slices][..., ::-1])


def _ome_zarr(path, data: np.ndarray, axes: str, scale: dict, levels: int = 2) -> None:
    from ome_zarr.writer import write_image

    units = {a: "micrometer" for a in scale}
    root = zarr.open_group(path, mode="w")
    scale = {"c": 1.0, **scale}
    write_image(data, root, axes=axes, scale_factors=(2,) * (levels - 1), scale=scale, axes_units=units)


def test_ome_zarr_channel_axis_first_is_channels_not_slices(tmp_path):
    data = np.random.default_rng(1).integers(0, 4000, (5, 2048, 2048), dtype=np.uint16)
    _ome_zarr(tmp_path / "cyx.zarr", data, "cyx", {"y": 0.5, "x": 0.25})
    with pytest.raises(InvalidInputError, match=r"channel axis 'c' \(axis 0, 5 channels\).*--channel"):
        open_volume(tmp_path / "cyx.zarr")
    volume = open_volume(tmp_path / "cyx.zarr", channel=3)
    assert volume.slice_axis is None and volume.channel_axis == 0 and volume.n_slices == 1
    assert volume.out_shape == (2048, 2048) and volume.out_names == ("y", "x")
    assert volume.scale == (0.5, 0.25) and volume.units == ("micrometer", "micrometer")
    np.testing.assert_array_equal(volume.read(0, FAR), data[(3, *FAR.slices)])
    rgb = open_volume(tmp_path / "cyx.zarr", channel=[4, 0, 2])
    np.testing.assert_array_equal(rgb.read(0, FAR), np.moveaxis(data[(slice(None), *FAR.slices)][[4, 0, 2]], 0, -1))
    three = np.ascontiguousarray(data[:3, :256, :300])
    _ome_zarr(tmp_path / "rgb.zarr", three, "cyx", {"y": 1.0, "x": 1.0}, levels=1)
    np.testing.assert_array_equal(open_volume(tmp_path / "rgb.zarr").read(0, Region(0, 0, 256, 300)),
                                  np.moveaxis(three, 0, -1))  # fmt: skip
    with pytest.raises(InvalidInputError, match=r"channel: \[7\] not in the channel axis 'c'.*0\.\.4"):
        open_volume(tmp_path / "cyx.zarr", channel=7)
    with pytest.raises(InvalidInputError, match="'c' is the channel axis"):
        open_volume(tmp_path / "cyx.zarr", axis="C", channel=0)


def test_ome_zarr_czyx_level_scale_and_output_layout(tmp_path):
    data = np.random.default_rng(2).integers(0, 255, (2, 4, 64, 96), dtype=np.uint8)
    _ome_zarr(tmp_path / "czyx.zarr", data, "czyx", {"z": 2.0, "y": 0.5, "x": 0.5})
    group = zarr.open_group(tmp_path / "czyx.zarr", mode="r+")
    attrs = group.attrs.asdict()
    attrs["ome"]["multiscales"][0]["coordinateTransformations"] = [{"type": "scale", "scale": [1, 1.5, 2, 2]}]
    group.attrs.put(attrs)  # a multiscale-level scale multiplies the level's own
    volume = open_volume(tmp_path / "czyx.zarr", channel=1)
    assert volume.slice_axis == 1 and volume.out_slice_axis == 0 and volume.n_slices == 4
    assert volume.out_shape == (4, 64, 96) and volume.out_names == ("z", "y", "x")
    assert volume.out_chunks((32, 32)) == (1, 32, 32)
    region = Region(10, 20, 40, 90)
    assert volume.out_index(3, region) == (3, slice(10, 40), slice(20, 90))
    np.testing.assert_array_equal(volume.read(3, region), data[1, 3, 10:40, 20:90])
    assert volume.scale == (3.0, 1.0, 1.0) and volume.units == ("micrometer",) * 3
    level = open_volume(tmp_path / "czyx.zarr", key="s1", channel=0)
    assert level.out_shape == (4, 32, 48) and level.scale == (3.0, 2.0, 2.0)


@pytest.mark.parametrize("axes", ["ZCYX", "CZYX"])
def test_ome_tiff_stack_with_channels(tmp_path, axes):
    zcyx = np.random.default_rng(3).integers(0, 4096, (3, 2, 1040, 1392), dtype=np.uint16)
    data = zcyx if axes == "ZCYX" else np.ascontiguousarray(zcyx.transpose(1, 0, 2, 3))
    metadata = {"axes": axes, "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65, "PhysicalSizeZ": 2.0}
    tifffile.imwrite(tmp_path / "s.ome.tif", data, ome=True, photometric="minisblack", metadata=metadata)
    with pytest.raises(InvalidInputError, match=r"'C' \(axis \d, 2 channels\).*--channel"):
        open_volume(tmp_path / "s.ome.tif")
    volume = open_volume(tmp_path / "s.ome.tif", axis="z", channel=1)
    assert volume.names == tuple(axes) and volume.n_slices == 3 and volume.plane_shape == (1040, 1392)
    assert volume.out_names == ("Z", "Y", "X") and volume.out_shape == (3, 1040, 1392)
    assert volume.scale == (2.0, 0.65, 0.65) and volume.units == ("micrometer",) * 3
    region = Region(900, 1300, 1040, 1392)
    np.testing.assert_array_equal(volume.read(2, region), zcyx[2, 1, 900:, 1300:])


def test_imagej_hyperstack_axes_any_case_and_calibration(tmp_path):
    zcyx = np.random.default_rng(4).integers(0, 255, (4, 3, 96, 128), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "h.tif", zcyx, imagej=True, resolution=(1 / 0.2, 1 / 0.3),
                     metadata={"axes": "ZCYX", "spacing": 1.5, "unit": "micron"})  # fmt: skip
    volume = open_volume(tmp_path / "h.tif", axis="z")
    assert volume.names == ("Z", "C", "Y", "X") and volume.channel_axis == 1 and volume.slice_axis == 0
    np.testing.assert_array_equal(volume.read(1, Region(5, 6, 50, 70)), np.moveaxis(zcyx[1, :, 5:50, 6:70], 0, -1))
    assert volume.scale == (1.5, 0.3, 0.2) and volume.units == ("micrometer",) * 3
    tifffile.imwrite(tmp_path / "zyx.tif", zcyx[:, 0], imagej=True, metadata={"axes": "ZYX"})
    assert open_volume(tmp_path / "zyx.tif", axis="z").slice_axis == 0  # --axis z for axes Z, Y, X


def test_ngff_axis_of_type_channel_is_channels_whatever_its_name(tmp_path):
    data = np.random.default_rng(6).integers(0, 255, (2, 40, 50), dtype=np.uint8)
    group = zarr.open_group(tmp_path / "w.zarr", mode="w")
    group.create_array("0", data=data)
    axes = [{"name": "wavelength", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    group.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": [{"path": "0"}]}]
    volume = open_volume(tmp_path / "w.zarr", channel=1)
    assert volume.channel_axis == 0 and volume.out_names == ("y", "x") and volume.slice_axis is None
    np.testing.assert_array_equal(volume.read(0, Region(0, 0, 40, 50)), data[1])


def test_axis_names_differing_only_by_case_are_ambiguous():
    array = zarr.create_array(store={}, shape=(2, 8, 8), dtype="u1", dimension_names=["Z", "z", "x"])
    with pytest.raises(InvalidInputError, match="'z' is ambiguous"):
        open_volume(array, axis="z")
    assert open_volume(array, axis=0).slice_axis == 0


def test_arrays_without_axis_names_read_as_before():
    stack = np.random.default_rng(5).integers(0, 255, (4, 32, 40, 3), dtype=np.uint8)
    volume = open_volume(stack)
    assert volume.slice_axis == 0 and volume.channel_axis == 3 and volume.scale == (1.0, 1.0, 1.0)
    assert volume.units == (None, None, None)
    np.testing.assert_array_equal(volume.read(2, Region(1, 2, 30, 33)), stack[2, 1:30, 2:33])
    planes = Planes(stack[0])
    assert planes.ndim_plane == 3 and planes.channel_axis == 2
    with pytest.raises(InvalidInputError, match="no channel axis"):
        open_volume(stack[0, ..., 0], channel=0)
    with pytest.raises(InvalidInputError, match="expected one channel index or three"):
        open_volume(stack, channel=(0, 1))
