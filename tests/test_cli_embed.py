"""``sum-hq embed SOURCE CACHE``: the embedding cache it writes is what TiledPredictor reads (small random model)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
import zarr

from sum_core import tiled_embedding
from sum_core.cli import main
from sum_core.tiled_embedding import TiledEmbeddings
from sum_core.tiled_predictor import TiledPredictor
from test_batch import blobs
from test_tiled_predictor import tiny_model

TILING = ["--tile", "96,128", "--halo", "16", "--no-progress"]


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("embed") / "tiny.pth"
    torch.save(model.state_dict(), path)
    return path


def test_embed_then_predict_reads_the_cache_without_encoding(tmp_path, checkpoint, model, capsys, monkeypatch):
    image = blobs((200, 250), seed=3)
    tifffile.imwrite(tmp_path / "img.tif", image)
    cache = tmp_path / "cache.zarr"
    stops = []
    encode = TiledEmbeddings._encode

    def stop_at_third(self, batch):  # Ctrl+C while the third tile is being encoded
        stops.append(batch)
        if len(stops) == 3:
            raise KeyboardInterrupt
        encode(self, batch)

    monkeypatch.setattr(TiledEmbeddings, "_encode", stop_at_third)
    argv = ["embed", str(tmp_path / "img.tif"), str(cache), "--model", str(checkpoint), *TILING]
    assert main(argv) == 130
    assert "interrupted; rerun the same command to resume" in capsys.readouterr().err
    monkeypatch.setattr(TiledEmbeddings, "_encode", encode)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "6 tile embedding(s) of 1 slice(s)" in out and "4 encoded now, 2 already in the cache" in out
    assert main(argv) == 0 and "0 encoded now, 6 already in the cache" in capsys.readouterr().out

    predictor = TiledPredictor(model, cache=cache, tile_shape=(96, 128), halo=16, device="cpu")
    predictor.set_image(tmp_path / "img.tif")
    assert predictor.embeddings.missing() == []
    prediction = predictor.predict(points=[[100, 120]], follow=True)
    assert predictor.tiles_encoded == 0 and prediction.mask.any()
    fresh = TiledPredictor(model, tile_shape=(96, 128), halo=16, device="cpu")
    fresh.set_image(tmp_path / "img.tif")
    again = fresh.predict(points=[[100, 120]], follow=True)
    assert fresh.tiles_encoded > 0  # the same prediction without the cache encodes, and agrees
    np.testing.assert_array_equal(again.mask, prediction.mask)
    np.testing.assert_allclose(again.logits, prediction.logits, atol=1e-5)  # float32 cache: same as encoded


def test_embed_every_slice_of_a_stack_by_axis_name(tmp_path, checkpoint, model, capsys):
    stack = np.stack([blobs((90, 120), seed=s) for s in range(3)], axis=1)  # (y, z, x)
    root = zarr.open_group(str(tmp_path / "in.zarr"), mode="w")
    root.create_array("raw", data=stack, dimension_names=("y", "Z", "x"))
    argv = ["embed", str(tmp_path / "in.zarr"), str(tmp_path / "cache"), "--key", "raw", "--axis", "z",
            "--model", str(checkpoint), *TILING]
    assert main(argv) == 0
    assert "3 slice(s) along axis 1 (Z)" in capsys.readouterr().out
    tiled = TiledEmbeddings(model, zarr.open_array(str(tmp_path / "in.zarr" / "raw"), mode="r"), (96, 128), 16,
                            tmp_path / "cache", stack_axis=1)
    assert tiled.missing() == [] and tiled.n_slices == 3


def test_embed_refuses_a_foreign_folder_and_a_cache_of_other_settings(tmp_path, checkpoint, capsys):
    tifffile.imwrite(tmp_path / "img.tif", blobs((100, 120), seed=1))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("keep me")
    base = ["embed", str(tmp_path / "img.tif")]
    for extra in ([], ["--overwrite"]):
        assert main([*base, str(tmp_path / "mine"), "--model", str(checkpoint), *TILING, *extra]) == 2
        assert "not a sum-hq embedding cache" in capsys.readouterr().err
        assert [p.name for p in (tmp_path / "mine").iterdir()] == ["thesis.txt"]
        assert (tmp_path / "mine" / "thesis.txt").read_text() == "keep me"
    cache = str(tmp_path / "cache")
    assert main([*base, cache, "--model", str(checkpoint), *TILING]) == 0
    assert main([*base, cache, "--model", str(checkpoint), "--tile", "64", "--no-progress"]) == 2
    assert "made for something else" in capsys.readouterr().err
    assert main([*base, cache, "--model", str(checkpoint), *TILING]) == 0
    assert "0 encoded now" in capsys.readouterr().out  # the refused run left the cache as it was
    assert main(["embed", str(tmp_path / "img.tif"), cache, "--axis", "t", "--no-progress"]) == 2
    assert "no axis named 't'" in capsys.readouterr().err
