"""Export of a registry model (issue 17): ``export_onnx("vit_b_lm")`` fetches the AIS decoder the entry
names (hash-checked by sum_core.zoo) and exports it too. Downloads come from a local HTTP server on
127.0.0.1 (tests/http_server.py) serving small random-weight stand-ins under the real entries' names."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import xxhash

from http_server import serve_folder
from small_models import small_vit_config
from test_zoo import isolated_zoo  # noqa: F401  (autouse: private cache, no models file)
from sum_core import zoo
from sum_core.modeling import AISDecoder, AISDecoderConfig, ImageEmbedding, build_from_config, decode_ais_maps
from sum_core.modeling.ais_decoder import AIS_PREFIX

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
from sum_core.export import export_onnx  # noqa: E402
from sum_core.export.onnx import load_for_export  # noqa: E402


def xxh128(data: bytes) -> str:
    return "xxh128:" + xxhash.xxh128(data).hexdigest()


def test_export_onnx_of_a_registry_name_exports_its_ais_decoder(tmp_path, monkeypatch):
    torch.manual_seed(19)
    sam = build_from_config(small_vit_config(hq=False))
    decoder = AISDecoder(AISDecoderConfig(initial_features=8))
    served = tmp_path / "served"
    served.mkdir()
    torch.save(sam.state_dict(), served / "model.pt")
    torch.save(decoder.state_dict(), served / "decoder.pt")  # micro-sam's *_decoder.pt: the decoder's keys
    with serve_folder(served) as base_url:
        for name, file in (("vit_b_lm", "model.pt"), ("vit_b_lm_decoder", "decoder.pt")):
            entry = dataclasses.replace(
                zoo.BUILTIN_MODELS[name], url=f"{base_url}/{file}", known_hash=xxh128((served / file).read_bytes())
            )
            monkeypatch.setitem(zoo.BUILTIN_MODELS, name, entry)
        export = export_onnx("vit_b_lm", tmp_path / "onnx")
        loaded = load_for_export("vit_b_lm")  # from the cache now
    assert export.ais_decoder is not None and export.ais_decoder.is_file()
    assert sorted(p.name for p in export.folder.iterdir()) == [
        "ais_decoder.onnx", "decoder.onnx", "encoder.onnx", "sum_hq_onnx.json",
    ]  # fmt: skip
    for key, value in decoder.state_dict().items():  # the served decoder, not a fresh one
        assert torch.equal(loaded.state_dict()[AIS_PREFIX + key], value), key
    embedding = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(0))
    expected = decode_ais_maps(loaded, ImageEmbedding(embedding, None, None, (1024, 1024), (1024, 1024)))
    session = ort.InferenceSession(str(export.ais_decoder), providers=["CPUExecutionProvider"])
    feeds = {"image_embeddings": embedding.numpy(), "orig_im_size": np.array([1024.0, 1024.0], np.float32)}
    (maps,) = session.run(None, feeds)
    assert np.abs(maps[0] - expected).max() <= 1e-4 * np.abs(expected).max()
