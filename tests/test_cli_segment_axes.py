"""`sum-hq segment` on files written by other tools: channel axes anywhere, --channel, --axis by
name in any case, and OME-TIFF output with the input's physical pixel size (issue 15, items 0, 6)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from sum_core import predictor as predictor_module
from sum_core.volume import open_volume
from sum_core.cli import main
from tiled_fakes import use_fake_decoders


@pytest.fixture
def fed(monkeypatch) -> list:
    """The planes the model is fed (images encoded as one window), as read from the source."""
    seen: list = []
    real = predictor_module.prepare_image
    monkeypatch.setattr(predictor_module, "prepare_image", lambda image, n=None: seen.append(image) or real(image, n))
    return seen


def test_rgb_ome_tiff_to_ome_tiff_outputs_keep_the_pixel_size(small_hq_checkpoint, tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (1040, 1392, 3), dtype=np.uint8)
    truth = np.zeros((1040, 1392), bool)
    truth[900:990, 1250:1380] = True  # far from the origin
    image[truth] = 200
    with tifffile.TiffWriter(tmp_path / "in.ome.tif", ome=True) as tif:
        metadata = {"axes": "YXS", "PhysicalSizeX": 0.1625, "PhysicalSizeY": 0.1625}
        tif.write(image, subifds=1, photometric="rgb", tile=(256, 256), metadata=metadata)
        tif.write(image[::2, ::2], subfiletype=1, photometric="rgb", tile=(256, 256))
    use_fake_decoders(monkeypatch, truth)
    out, unc = tmp_path / "m.ome.tif", tmp_path / "u.ome.tiff"
    argv = ["segment", str(tmp_path / "in.ome.tif"), "--point", "940,1300", "--model", small_hq_checkpoint,
            "--device", "cpu", "--out", str(out), "--uncertainty-out", str(unc)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    for path in (out, unc):
        with tifffile.TiffFile(path) as tif:
            assert tif.is_ome and tif.series[0].axes == "YX" and tif.series[0].shape == (1040, 1392)
        volume = open_volume(path)
        assert volume.scale == (0.1625, 0.1625) and volume.units == ("micrometer", "micrometer")
    np.testing.assert_array_equal(tifffile.imread(out), truth)
    assert main([*argv[:-4], "--out", str(tmp_path / "plain.tif")]) == 0
    with tifffile.TiffFile(tmp_path / "plain.tif") as tif:
        assert not tif.is_ome  # only a .ome.tif name asks for OME-TIFF


def test_channel_axis_first_and_channel_choice(small_hq_checkpoint, tmp_path, monkeypatch, fed, capsys):
    data = np.random.default_rng(1).integers(0, 4000, (5, 200, 240), dtype=np.uint16)
    group = zarr.open_group(tmp_path / "cyx.zarr", mode="w")
    group.create_array("0", data=data, chunks=(1, 100, 100))
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1]}]}]}]}  # fmt: skip
    use_fake_decoders(monkeypatch, np.ones((200, 240), bool))
    common = ["--point", "100,120", "--model", small_hq_checkpoint, "--device", "cpu", "--out", str(tmp_path / "m.tif")]
    assert main(["segment", str(tmp_path / "cyx.zarr"), *common]) == 2
    assert "channel axis 'c' (axis 0, 5 channels)" in capsys.readouterr().err and not fed
    assert main(["segment", str(tmp_path / "cyx.zarr"), "--channel", "7", *common]) == 2
    assert "[7] not in the channel axis 'c'" in capsys.readouterr().err and not fed
    assert main(["segment", str(tmp_path / "cyx.zarr"), "--channel", "3", *common, "--overwrite"]) == 0
    np.testing.assert_array_equal(fed.pop(), data[3])
    assert main(["segment", str(tmp_path / "cyx.zarr"), "--channel", "4,0,2", *common, "--overwrite"]) == 0
    np.testing.assert_array_equal(fed.pop(), np.moveaxis(data[[4, 0, 2]], 0, -1))


def test_imagej_hyperstack_slice_by_lower_case_axis_name(small_hq_checkpoint, tmp_path, monkeypatch, fed, capsys):
    zcyx = np.random.default_rng(2).integers(0, 255, (4, 2, 200, 240), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "h.tif", zcyx, imagej=True, resolution=(1 / 0.5, 1 / 0.5),
                     metadata={"axes": "ZCYX", "spacing": 2.0, "unit": "micron"})  # fmt: skip
    use_fake_decoders(monkeypatch, np.ones((200, 240), bool))
    out = tmp_path / "m.ome.tif"
    common = ["--point", "100,120", "--model", small_hq_checkpoint, "--device", "cpu", "--out", str(out)]
    assert main(["segment", str(tmp_path / "h.tif"), "--slice", "2", "--axis", "z", "--channel", "1", *common]) == 0
    np.testing.assert_array_equal(fed.pop(), zcyx[2, 1])
    assert open_volume(out).scale == (0.5, 0.5) and open_volume(out).units == ("micrometer", "micrometer")
    capsys.readouterr()
    assert main(["segment", str(tmp_path / "h.tif"), "--slice", "0", "--axis", "c", "--channel", "1", *common]) == 2
    assert "'C' is the channel axis" in capsys.readouterr().err
