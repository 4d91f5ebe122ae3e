"""sum_core.segment and the `sum-hq segment` command, end to end on a small checkpoint."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

import sum_core
from sum_core import api
from sum_core.cli import main
from sum_core.errors import InvalidInputError


@pytest.fixture
def blob_image() -> np.ndarray:
    rows, cols = np.mgrid[:96, :128]
    image = 40.0 + 150.0 * (((rows - 40) ** 2 + (cols - 70) ** 2) < 20**2)
    return (image + np.random.default_rng(0).normal(0, 5, image.shape)).astype(np.uint16)


def test_segment_loads_a_path_once_and_defaults_labels_to_positive(small_hq_checkpoint, blob_image, monkeypatch):
    calls = []
    real_load = api.load_model
    monkeypatch.setattr(api, "load_model", lambda *a, **k: calls.append(a) or real_load(*a, **k))
    monkeypatch.setattr(api, "_MODELS", type(api._MODELS)())
    first = sum_core.segment(blob_image, points=[[40, 70]], model=small_hq_checkpoint, device="cpu")
    second = sum_core.segment(blob_image, points=[[40, 70]], labels=[1], model=small_hq_checkpoint, device="cpu")
    assert len(calls) == 1
    assert first.mask.shape == blob_image.shape and first.mask.dtype == bool
    assert first.uncertainty.shape == blob_image.shape and first.uncertainty.dtype == np.float32
    np.testing.assert_array_equal(first.logits, second.logits)


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
    assert set(np.unique(mask)) <= {0, 1}
    assert uncertainty.dtype == np.float32 and 0 <= uncertainty.min() and uncertainty.max() <= 1
    assert "wrote" in capsys.readouterr().out


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
    monkeypatch.setattr(api, "_MODELS", type(api._MODELS)())
    with serve_folder(served) as url:
        entry = dataclasses.replace(
            zoo.BUILTIN_MODELS[zoo.DEFAULT_MODEL], url=f"{url}/sam_hq_vit_b.pth", known_hash=f"sha256:{digest}"
        )
        monkeypatch.setitem(zoo.BUILTIN_MODELS, zoo.DEFAULT_MODEL, entry)
        out, unc = tmp_path / "mask.tif", tmp_path / "uncertainty.tif"
        code = main(["segment", "sample", "--point", "88,203", "--device", "cpu",
                     "--out", str(out), "--uncertainty-out", str(unc)])
    assert code == 0
    assert (tmp_path / "cache" / zoo.BUILTIN_MODELS[zoo.DEFAULT_MODEL].filename).exists()
    assert tifffile.imread(out).shape == tifffile.imread(unc).shape == (512, 512)
