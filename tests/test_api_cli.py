"""sum_core.segment and the `sum-hq segment` command, end to end on a small checkpoint."""

from __future__ import annotations

import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

import sum_core
from sum_core import loading
from sum_core import predictor as predictor_module
from sum_core.cli import main
from sum_core.errors import InvalidInputError
from sum_core.image import Normalization
from sum_core.modeling import build_from_config
from sum_core.prediction import Prediction
from sum_core.tiled_predictor import TiledPredictor
from small_models import small_vit_config
from tiled_fakes import fake_window_decoder, use_fake_decoders


@pytest.fixture
def blob_image() -> np.ndarray:
    rows, cols = np.mgrid[:96, :128]
    image = 40.0 + 150.0 * (((rows - 40) ** 2 + (cols - 70) ** 2) < 20**2)
    return (image + np.random.default_rng(0).normal(0, 5, image.shape)).astype(np.uint16)


@pytest.fixture
def loads(monkeypatch) -> list:
    """An empty model cache; returns the list of checkpoint files loaded."""
    calls: list = []
    real = loading.load_checkpoint
    monkeypatch.setattr(loading, "load_checkpoint", lambda path, **k: calls.append(path) or real(path, **k))
    monkeypatch.setattr(loading, "_RESOLVED", OrderedDict())
    return calls


def test_segment_loads_a_path_once_and_defaults_labels_to_positive(small_hq_checkpoint, blob_image, loads):
    first = sum_core.segment(blob_image, points=[[40, 70]], model=small_hq_checkpoint, device="cpu")
    second = sum_core.segment(blob_image, points=[[40, 70]], labels=[1], model=small_hq_checkpoint, device="cpu")
    assert len(loads) == 1
    assert type(first) is Prediction and len(first) == 1
    assert first.mask.shape == blob_image.shape and first.mask.dtype == bool
    assert first.uncertainty.shape == blob_image.shape and first.uncertainty.dtype == np.float32
    np.testing.assert_array_equal(first.logits, second.logits)


def test_segment_options_reach_the_predictor(small_hq_checkpoint, blob_image, loads):
    """normalization=, tile_shape= / halo= and a mask prompt alone, through the one-call API."""
    base = sum_core.segment(blob_image, points=[[40, 70]], model=small_hq_checkpoint, device="cpu")
    limits = sum_core.segment(blob_image, points=[[40, 70]], model=small_hq_checkpoint, device="cpu",
                              normalization=Normalization(limits=(0, 4095)))  # fmt: skip
    assert not np.array_equal(limits.logits, base.logits)  # a darker image: other logits
    tiled = sum_core.segment(blob_image, points=[[40, 70]], model=small_hq_checkpoint, device="cpu",
                             tile_shape=(48, 64), halo=8)  # fmt: skip
    assert tiled.masks.shape == (1, *blob_image.shape) and tiled.low_res_logits is None
    refined = sum_core.segment(blob_image, mask_input=base.logits[0], model=small_hq_checkpoint, device="cpu")
    assert refined.masks.shape == (1, *blob_image.shape)
    boxes = sum_core.segment(blob_image, box=[[15, 45, 65, 95], [0, 0, 30, 30]], model=small_hq_checkpoint, device="cpu")
    assert boxes.masks.shape == (2, *blob_image.shape) and boxes.scores.shape == (2,)
    with pytest.raises(InvalidInputError, match="normalization"):
        sum_core.segment(blob_image, points=[[40, 70]], model=small_hq_checkpoint, normalization=(0, 1))


def test_segment_default_uncertainty_works_on_plain_sam(blob_image):
    plain = build_from_config(small_vit_config(hq=False).replace(image_size=256))
    pred = sum_core.segment(blob_image, points=[[40, 70]], model=plain, device="cpu")  # "auto": entropy
    entropy = sum_core.segment(blob_image, points=[[40, 70]], model=plain, device="cpu", uncertainty="entropy")
    np.testing.assert_array_equal(pred.uncertainty, entropy.uncertainty)
    with pytest.raises(InvalidInputError, match="needs an HQ-SAM or SUM model"):
        sum_core.segment(blob_image, points=[[40, 70]], model=plain, device="cpu", uncertainty="disagreement")


def test_segment_needs_a_prompt(small_hq_checkpoint, blob_image):
    with pytest.raises(InvalidInputError, match="prompt"):
        sum_core.segment(blob_image, model=small_hq_checkpoint, device="cpu")
    with pytest.raises(InvalidInputError, match="model"):
        sum_core.segment(blob_image, points=[[1, 1]], model=3)


@pytest.mark.parametrize("fmt", ["tif", "png", "zarr"])
def test_cli_segment_writes_mask_and_uncertainty(small_hq_checkpoint, blob_image, tmp_path, fmt, capsys):
    source = tmp_path / f"input.{fmt}"
    if fmt == "tif":
        tifffile.imwrite(source, blob_image)
    elif fmt == "png":
        Image.fromarray((blob_image // 2).astype(np.uint8)).save(source)
    else:
        zarr.create_array(source, data=blob_image, chunks=(32, 32))
    out, unc = tmp_path / "mask.tif", tmp_path / "unc.tif"
    code = main(["segment", str(source), "--point", "40,70", "--negative", "5,5", "--box", "15,45,65,95",
                 "--model", small_hq_checkpoint, "--device", "cpu", "--out", str(out), "--uncertainty-out", str(unc)])
    assert code == 0
    mask, uncertainty = tifffile.imread(out), tifffile.imread(unc)
    assert mask.shape == uncertainty.shape == blob_image.shape
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert uncertainty.dtype == np.float32 and 0 <= uncertainty.min() and uncertainty.max() <= 1
    assert "wrote" in capsys.readouterr().out


def big_scene(shape=(1500, 1500)):
    """The issue's reproduction (1500x1500: an object at rows 1300-1399, cols 1200-1319, placed
    relative to the far corner at other sizes) plus a second object near the origin.
    Returns the image, both objects and the far one."""
    h, w = shape
    far = np.zeros(shape, bool)
    far[h - 200 : h - 100, w - 300 : w - 180] = True
    truth = far.copy()
    truth[100:160, 80:150] = True
    image = (np.random.default_rng(1).normal(300, 20, shape) + 2000 * truth).astype(np.uint16)
    return image, truth, far


def test_cli_segment_large_image_writes_full_size_labels_one_per_box(small_hq_checkpoint, tmp_path, monkeypatch, capsys):
    image, truth, _ = big_scene()
    use_fake_decoders(monkeypatch, truth)
    tifffile.imwrite(tmp_path / "big.tif", image)
    out, unc = tmp_path / "labels.tif", tmp_path / "unc.tif"
    code = main(["segment", str(tmp_path / "big.tif"), "--box", "1290,1190,1410,1330", "--box", "90,70,170,160",
                 "--model", small_hq_checkpoint, "--device", "cpu", "--out", str(out), "--uncertainty-out", str(unc)])
    assert code == 0
    labels, uncertainty = tifffile.imread(out), tifffile.imread(unc)
    assert labels.shape == uncertainty.shape == (1500, 1500) and labels.dtype == np.uint8
    expected = np.zeros((1500, 1500), np.uint8)
    expected[1300:1400, 1200:1320] = 1
    expected[100:160, 80:150] = 2
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(uncertainty, truth * np.float32(0.25))  # the max over the objects
    assert "1500x1500, 2 object(s)" in capsys.readouterr().out
    code = main(["segment", str(tmp_path / "big.tif"), "--point", "1350,1250", "--model", small_hq_checkpoint,
                 "--device", "cpu", "--out", str(out), "--overwrite"])
    assert code == 0
    np.testing.assert_array_equal(tifffile.imread(out), expected == 1)


def test_cli_segment_tiling_options(small_hq_checkpoint, tmp_path, monkeypatch):
    image, truth, far = big_scene((1100, 1200))
    tifffile.imwrite(tmp_path / "big.tif", image)
    grids = []
    predictor_init = TiledPredictor.__init__

    def record(self, model, cache=None, tile_shape=None, halo=None, *args, **kwargs):
        grids.append((tile_shape, halo))
        predictor_init(self, model, cache, tile_shape, halo, *args, **kwargs)

    monkeypatch.setattr(TiledPredictor, "__init__", record)
    use_fake_decoders(monkeypatch, truth)
    common = ["--point", "130,110", "--model", small_hq_checkpoint, "--device", "cpu", "--out", str(tmp_path / "m.tif"),
              "--overwrite"]  # fmt: skip
    assert main(["segment", str(tmp_path / "big.tif"), "--tile", "600,700", "--halo", "32", *common]) == 0
    assert grids == [((600, 700), 32)]
    assert main(["segment", str(tmp_path / "big.tif"), "--tile", "512", *common]) == 0
    assert grids[-1] == ((512, 512), None)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "m.tif"), truth & ~far)
    windows = []
    whole = fake_window_decoder(truth)

    def record_window(model, image, prompts, options):
        windows.append(image.original_size)
        return whole(model, image, prompts, options)

    monkeypatch.setattr(predictor_module, "decode_window", record_window)
    assert main(["segment", str(tmp_path / "big.tif"), "--no-tiling", *common]) == 0
    assert windows == [(1100, 1200)] and len(grids) == 2  # one window of the whole image, not tiled
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "m.tif"), truth & ~far)
    assert main(["segment", str(tmp_path / "big.tif"), "--no-tiling", "--halo", "8", *common]) == 2


def test_cli_segment_slice_of_a_stack_and_intensity_window(small_hq_checkpoint, tmp_path, monkeypatch, capsys):
    stack = np.zeros((3, 200, 240), np.uint16)
    stack[1, 150:190, 200:230] = 4000  # the object only in slice 1
    stack += np.random.default_rng(2).integers(0, 50, stack.shape, dtype=np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    seen = []
    window = predictor_module.decode_window

    def record(model, image, prompts, options):
        seen.append(image.original_size)
        return fake_window_decoder(stack[1] > 1000)(model, image, prompts, options)

    monkeypatch.setattr(predictor_module, "decode_window", record)
    out = tmp_path / "m.tif"
    common = ["--point", "170,215", "--model", small_hq_checkpoint, "--device", "cpu", "--out", str(out), "--overwrite"]
    assert main(["segment", str(tmp_path / "stack.tif"), "--slice", "1", *common]) == 0
    np.testing.assert_array_equal(tifffile.imread(out), stack[1] > 1000)
    moved = np.moveaxis(stack, 0, 2)  # (200, 240, 3) reads as RGB: the axis must be named
    zarr.create_array(tmp_path / "zyx.zarr", data=np.ascontiguousarray(np.moveaxis(stack, 0, 1)), chunks=(50, 1, 50))
    assert main(["segment", str(tmp_path / "zyx.zarr"), "--slice", "1", "--axis", "1", *common]) == 0
    np.testing.assert_array_equal(tifffile.imread(out), stack[1] > 1000)
    for options in (["--limits", "0,65535"], ["--percentiles", "1,99"]):
        assert main(["segment", str(tmp_path / "stack.tif"), "--slice", "1", *options, *common]) == 0
    assert seen == [(200, 240)] * 4
    monkeypatch.setattr(predictor_module, "decode_window", window)
    capsys.readouterr()
    assert main(["segment", str(tmp_path / "stack.tif"), *common]) == 2
    assert "a stack; choose one plane with --slice N" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "stack.tif"), "--slice", "3", *common]) == 2
    assert "--slice 3: the stack has 3 slices along axis 0" in capsys.readouterr().err
    tifffile.imwrite(tmp_path / "rgb.tif", moved.astype(np.uint8))
    assert main(["segment", str(tmp_path / "rgb.tif"), "--slice", "0", *common]) == 2
    assert "one plane, not a stack" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "stack.tif"), "--axis", "1", *common]) == 2
    assert "give --slice N with it" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "stack.tif"), "--slice", "1", "--percentiles", "50,10", *common]) == 2
    assert "percentiles must satisfy" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["segment", str(tmp_path / "stack.tif"), "--tile", "0", *common])
    with pytest.raises(SystemExit):
        main(["segment", str(tmp_path / "stack.tif"), "--tile", "64", "--no-tiling", *common])


def test_cli_errors_are_one_clear_line(small_hq_checkpoint, tmp_path, capsys):
    image = tmp_path / "img.tif"
    tifffile.imwrite(image, np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    assert main(["segment", str(image), "--model", small_hq_checkpoint, "--out", str(tmp_path / "m.tif")]) == 2
    assert "at least one prompt" in capsys.readouterr().err
    assert main(["segment", str(image), "--point", "500,5", "--model", small_hq_checkpoint, "--device", "cpu",
                 "--out", str(tmp_path / "m.tif")]) == 2
    err = capsys.readouterr().err
    assert "points" in err and "Traceback" not in err
    assert not (tmp_path / "m.tif").exists()
    with pytest.raises(SystemExit):
        main(["segment", str(image), "--point", "1;2", "--out", "x.tif"])


def test_help_does_not_import_torch():
    code = "import sys; from sum_core.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_readme_main_job_downloads_the_default_model_and_segments_the_sample(
    small_hq_checkpoint, tmp_path, monkeypatch, capsys
):
    """`sum-hq segment sample --point ...` with the default registry model, served from 127.0.0.1."""
    import dataclasses
    import hashlib
    import shutil

    from http_server import serve_folder
    from sum_core import zoo

    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(small_hq_checkpoint, served / "sam_hq_vit_b.pth")
    digest = hashlib.sha256((served / "sam_hq_vit_b.pth").read_bytes()).hexdigest()
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(loading, "_RESOLVED", OrderedDict())
    with serve_folder(served) as url:
        entry = dataclasses.replace(
            zoo.BUILTIN_MODELS[zoo.DEFAULT_MODEL], url=f"{url}/sam_hq_vit_b.pth", known_hash=f"sha256:{digest}"
        )
        monkeypatch.setitem(zoo.BUILTIN_MODELS, zoo.DEFAULT_MODEL, entry)
        out, unc = tmp_path / "mask.tif", tmp_path / "uncertainty.tif"
        code = main(["segment", "sample", "--point", "88,203", "--device", "cpu",
                     "--out", str(out), "--uncertainty-out", str(unc)])
    assert code == 0
    assert (tmp_path / "cache" / zoo.MODELS_FOLDER / zoo.DEFAULT_MODEL / "sam_hq_vit_b.pth").is_file()
    assert tifffile.imread(out).shape == tifffile.imread(unc).shape == (512, 512)


def test_segment_refuses_a_bad_mask_prompt_before_loading_the_model(monkeypatch):
    monkeypatch.setattr(sum_core.api, "resolve_model", lambda *a, **k: pytest.fail("the model was loaded"))
    image = np.random.default_rng(0).integers(0, 255, (300, 400), dtype=np.uint8)
    with pytest.raises(InvalidInputError, match=r"mask_input: expected full-size \(300, 400\)"):
        sum_core.segment(image, points=[[10, 10]], mask_input=np.zeros((300, 300), bool))
    with pytest.raises(InvalidInputError, match="non-finite"):
        sum_core.segment(image, points=[[10, 10]], mask_input=np.full((300, 400), np.nan))


def test_plain_sam_with_hq_token_only_is_refused_and_auto_uncertainty_is_entropy():
    """Plain SAM has no HQ token: hq_token_only=True is refused by name (it used to be ignored);
    'auto' uncertainty is entropy on the SAM token."""
    sam_model = build_from_config(small_vit_config(hq=False))
    image = np.random.default_rng(0).integers(0, 255, (64, 80), dtype=np.uint8)
    with pytest.raises(InvalidInputError, match="hq_token_only=True needs an HQ-SAM or SUM model"):
        sum_core.segment(image, points=[[30, 40]], model=sam_model, hq_token_only=True, device="cpu")
    pred = sum_core.segment(image, points=[[30, 40]], model=sam_model, device="cpu")
    assert pred.uncertainty.shape == (64, 80) and np.isfinite(pred.uncertainty).all()
