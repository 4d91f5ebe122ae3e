"""micro-sam's microscopy models in the zoo: registry data, xxh128 downloads, AIS decoders (issue 13).

Downloads come from a local HTTP server on 127.0.0.1 (tests/http_server.py); nothing
reaches the internet. The built-in entries keep their real names, fields and decoder
links and only have their URL (and, where a file is served, hash) pointed at that server.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
import xxhash
import yaml

import reference_models
from http_server import serve_folder
from test_zoo import entry_file, isolated_zoo, run_cli  # noqa: F401  (autouse: private cache, no models file)
from sum_core import load_model, zoo
from sum_core.errors import DownloadError, HashMismatchError, InvalidInputError
from sum_core.modeling import PRESETS

MICRO_SAM_MODELS = {
    # name: (architecture label, purpose)
    "vit_t_lm": ("vit_tiny", "light microscopy"),
    "vit_b_lm": ("vit_b", "light microscopy"),
    "vit_l_lm": ("vit_l", "light microscopy"),
    "vit_t_em_organelles": ("vit_tiny", "EM organelles"),
    "vit_b_em_organelles": ("vit_b", "EM organelles"),
    "vit_l_em_organelles": ("vit_l", "EM organelles"),
    "vit_b_histopathology": ("vit_b", "histopathology"),
    "vit_l_histopathology": ("vit_l", "histopathology"),
    "vit_h_histopathology": ("vit_h", "histopathology"),
    "vit_b_medical_imaging": ("vit_b", "medical imaging"),
}
PURPOSES = {"generic", "light microscopy", "EM organelles", "histopathology", "medical imaging"}
MODEL_BYTES = b"stand-in for a micro-sam checkpoint\n" * 200
DECODER_BYTES = b"stand-in for its AIS decoder\n" * 100


def xxh128(data: bytes) -> str:
    return "xxh128:" + xxhash.xxh128(data).hexdigest()


@pytest.fixture
def served(tmp_path):
    """Serve ``model.pt`` (MODEL_BYTES) and ``decoder.pt`` (DECODER_BYTES); yield the base URL."""
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "model.pt").write_bytes(MODEL_BYTES)
    (folder / "decoder.pt").write_bytes(DECODER_BYTES)
    with serve_folder(folder) as base_url:
        yield base_url


def point_at(monkeypatch, name: str, url: str, known_hash: str) -> zoo.ModelEntry:
    """Make built-in entry ``name`` download from ``url`` with ``known_hash`` (all else unchanged)."""
    patched = dataclasses.replace(zoo.BUILTIN_MODELS[name], url=url, known_hash=known_hash)
    monkeypatch.setitem(zoo.BUILTIN_MODELS, name, patched)
    return patched


def table(output: str) -> dict[str, dict[str, str]]:
    """``sum-hq models list`` rows by name, cells cut at the header's column starts (cells hold spaces)."""
    lines = output.splitlines()
    header = lines[0]
    titles = header.split()
    starts = [header.index(title) for title in titles]
    rows = {}
    for line in lines[1:]:
        if not line.strip():
            break
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None])]
        rows[cells[0]] = dict(zip(titles, cells))
    return rows


# --- the registry data ---------------------------------------------------------


def test_registry_data_records_its_micro_sam_version_and_parses():
    data = yaml.safe_load(zoo.BUILTIN_FILE.read_text(encoding="utf-8"))
    assert data["provenance"]["micro_sam"]["version"] == "1.8.14"
    assert "micro_sam/util.py" in data["provenance"]["micro_sam"]["source"]
    assert [item["name"] for item in data["models"]] == zoo.list_models(decoders=True)
    # One file per entry: no two entries share a cache file name (models/<name>/<file> and the old layout).
    filenames = [entry.filename for entry in zoo.BUILTIN_MODELS.values()]
    assert len(set(filenames)) == len(filenames)


@pytest.mark.parametrize("name", sorted(MICRO_SAM_MODELS))
def test_every_micro_sam_model_has_url_xxh128_purpose_licence_and_decoder(name):
    model_type, purpose = MICRO_SAM_MODELS[name]
    entry = zoo.get_entry(name)
    decoder = zoo.get_entry(f"{name}_decoder")
    assert entry.decoder == decoder.name
    assert decoder.decoder is None
    for item in (entry, decoder):
        assert item.url.startswith("https://")
        assert re.fullmatch(r"xxh128:[0-9a-f]{32}", item.known_hash)
        assert (item.model_type, item.purpose) == (model_type, purpose)
        assert item.licence.startswith("see ") or item.licence.startswith("not stated by micro-sam; see ")
        assert item.filename == f"{item.name}.pt"
    assert entry.licence == decoder.licence
    assert entry.url != decoder.url and entry.known_hash != decoder.known_hash


def test_exact_values_of_micro_sam_registry():
    """Spot checks against micro_sam/util.py models() of micro-sam 1.8.14 (copied by hand once more)."""
    vit_b_lm = zoo.get_entry("vit_b_lm")
    assert vit_b_lm.url == (
        "https://uk1s3.embassy.ebi.ac.uk/public-datasets/bioimage.io/diplomatic-bug/1.2/files/vit_b.pt"
    )
    assert vit_b_lm.known_hash == "xxh128:fe9252a29f3f4ea53c15a06de471e186"
    assert vit_b_lm.licence == "see https://bioimage.io/#/?id=diplomatic-bug"
    decoder = zoo.get_entry("vit_b_lm_decoder")
    assert decoder.url == (
        "https://uk1s3.embassy.ebi.ac.uk/public-datasets/bioimage.io/diplomatic-bug/1.2/files/vit_b_decoder.pt"
    )
    assert decoder.known_hash == "xxh128:708b15ac620e235f90bb38612c4929ba"
    histo = zoo.get_entry("vit_h_histopathology_decoder")
    assert histo.url == "https://owncloud.gwdg.de/index.php/s/1qAKxy5H0jgwZvM/download"
    assert histo.known_hash == "xxh128:3ed9f87e46ad5e16935bd8d722c8dc47"
    assert zoo.get_entry("vit_t_em_organelles").known_hash == "xxh128:253474720c497cce605e57c9b1d18fd9"


def test_list_models_leaves_decoder_files_out_unless_asked():
    models = zoo.list_models()
    everything = zoo.list_models(decoders=True)
    assert [name for name in everything if name not in models] == [
        f"{name}_decoder" for name in MICRO_SAM_MODELS
    ]
    assert set(MICRO_SAM_MODELS) <= set(models)


def test_generic_models_have_no_decoder():
    generic = [entry for entry in zoo.BUILTIN_MODELS.values() if entry.purpose == "generic"]
    assert [entry.name for entry in generic] == zoo.list_models()[:7]
    assert all(entry.decoder is None and entry.licence == "Apache-2.0" for entry in generic)
    assert {entry.purpose for entry in zoo.BUILTIN_MODELS.values()} == PURPOSES
    assert zoo.fetch_decoder("sam_hq_vit_b") is None


# --- xxh128 downloads ------------------------------------------------------------


def test_good_xxh128_download_is_accepted_with_its_decoder(tmp_path, served, monkeypatch):
    point_at(monkeypatch, "vit_b_lm", f"{served}/model.pt", xxh128(MODEL_BYTES))
    point_at(monkeypatch, "vit_b_lm_decoder", f"{served}/decoder.pt", xxh128(DECODER_BYTES))
    model = zoo.locate("vit_b_lm", progress=False)
    assert model == entry_file(tmp_path, "vit_b_lm", "vit_b_lm.pt")
    assert model.read_bytes() == MODEL_BYTES
    decoder = zoo.fetch_decoder("vit_b_lm", progress=False)
    assert decoder == entry_file(tmp_path, "vit_b_lm_decoder", "vit_b_lm_decoder.pt")
    assert decoder.read_bytes() == DECODER_BYTES
    assert zoo.locate("vit_b_lm_decoder", progress=False) == decoder
    # Both downloads are in the record, so a corrupted one would be replaced, not reported.
    record = (tmp_path / "cache" / zoo.RECORD_FILENAME).read_text()
    assert '"models/vit_b_lm/vit_b_lm.pt"' in record and '"models/vit_b_lm_decoder/vit_b_lm_decoder.pt"' in record


def test_wrong_xxh128_is_refused_and_never_loaded(tmp_path, served, monkeypatch):
    wrong = xxh128(MODEL_BYTES + b"x")
    point_at(monkeypatch, "vit_b_lm", f"{served}/model.pt", wrong)
    with pytest.raises(HashMismatchError, match="model 'vit_b_lm'") as info:
        load_model("vit_b_lm", device="cpu")
    assert wrong in str(info.value)
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_cached_file_with_wrong_xxh128_is_replaced_by_a_fresh_download(tmp_path, served, monkeypatch):
    point_at(monkeypatch, "vit_b_lm_decoder", f"{served}/decoder.pt", xxh128(DECODER_BYTES))
    path = zoo.fetch("vit_b_lm_decoder", progress=False)
    path.write_bytes(b"bit rot")
    assert zoo.fetch("vit_b_lm_decoder", progress=False).read_bytes() == DECODER_BYTES


def test_xxh128_without_xxhash_says_what_to_install(served, monkeypatch):
    import pooch.hashes

    point_at(monkeypatch, "vit_b_lm", f"{served}/model.pt", xxh128(MODEL_BYTES))
    available = {k: v for k, v in pooch.hashes.ALGORITHMS_AVAILABLE.items() if not k.startswith("xxh")}
    monkeypatch.setattr(pooch.hashes, "ALGORITHMS_AVAILABLE", available)
    with pytest.raises(DownloadError, match="pip install xxhash"):
        zoo.fetch("vit_b_lm", progress=False)


# --- user entries with a decoder and xxh128 hashes -----------------------------------


def test_user_entry_with_xxh128_and_decoder(tmp_path, served, monkeypatch):
    models_file = tmp_path / "models.yaml"
    models_file.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "my_cells",
                    "url": f"{served}/model.pt",
                    "known_hash": xxh128(MODEL_BYTES).upper().replace("XXH128", "xxh128"),
                    "purpose": "light microscopy",
                    "licence": "CC-BY-4.0",
                    "decoder": "my_cells_decoder",
                },
                {"name": "my_cells_decoder", "url": f"{served}/decoder.pt", "known_hash": xxh128(DECODER_BYTES)},
            ]
        )
    )
    monkeypatch.setenv(zoo.MODELS_FILE_ENV, str(models_file))
    assert zoo.fetch("my_cells", progress=False).read_bytes() == MODEL_BYTES
    assert zoo.fetch_decoder("my_cells", progress=False).read_bytes() == DECODER_BYTES
    entry = zoo.get_entry("my_cells")
    assert (entry.purpose, entry.licence, entry.decoder) == ("light microscopy", "CC-BY-4.0", "my_cells_decoder")


def test_decoder_naming_no_entry_is_refused(tmp_path, served, monkeypatch):
    with pytest.raises(InvalidInputError, match="register_model: model 'mine' has decoder='nope'"):
        zoo.register_model("mine", f"{served}/model.pt", xxh128(MODEL_BYTES), decoder="nope")
    assert "mine" not in zoo.list_models()
    with pytest.raises(InvalidInputError, match="decoder='mine' must be the registry name of another entry"):
        zoo.register_model("mine", f"{served}/model.pt", xxh128(MODEL_BYTES), decoder="mine")
    # A built-in decoder may be reused by a user's fine-tuned encoder.
    entry = zoo.register_model("mine", f"{served}/model.pt", xxh128(MODEL_BYTES), decoder="vit_b_lm_decoder")
    assert entry.decoder == "vit_b_lm_decoder"
    models_file = tmp_path / "models.yaml"
    models_file.write_text(
        yaml.safe_dump([{"name": "other", "url": f"{served}/model.pt", "known_hash": xxh128(MODEL_BYTES),
                         "decoder": "missing_decoder"}])
    )
    monkeypatch.setenv(zoo.MODELS_FILE_ENV, str(models_file))
    with pytest.raises(InvalidInputError, match="models.yaml.*'other' has decoder='missing_decoder'"):
        zoo.list_models()


@pytest.mark.parametrize("known_hash", ["xxh128:" + "0" * 31, "xxh128:" + "g" * 32, "xxh64:" + "0" * 16])
def test_malformed_xxh128_hash_is_refused(known_hash):
    with pytest.raises(InvalidInputError, match="known_hash=.*xxh128sum FILE"):
        zoo.register_model("mine", "https://example.org/m.pt", known_hash)


# --- sum-hq models list / download ---------------------------------------------------


def test_cli_list_shows_purpose_licence_and_ais(tmp_path, capsys):
    assert run_cli("models", "list") == 0
    rows = table(capsys.readouterr().out)
    assert rows["vit_b_lm"] == {
        "NAME": "vit_b_lm",
        "TYPE": "vit_b",
        "PURPOSE": "light microscopy",
        "AIS": "yes",
        "CACHED": "no",
        "DESCRIPTION": "micro-sam LM generalist (ViT-B): cells, nuclei",
        "LICENCE": "see https://bioimage.io/#/?id=diplomatic-bug",
    }
    assert rows["vit_b_lm_decoder"]["AIS"] == "decoder"
    assert rows["vit_l_em_organelles"]["PURPOSE"] == "EM organelles"
    assert rows["vit_h_histopathology"]["LICENCE"] == "not stated by micro-sam; see https://arxiv.org/abs/2502.00408"
    assert rows["vit_b_medical_imaging"]["PURPOSE"] == "medical imaging"
    assert (rows["sam_hq_vit_b"]["PURPOSE"], rows["sam_hq_vit_b"]["AIS"]) == ("generic", "no")
    assert list(rows) == zoo.list_models(decoders=True)


def test_cli_download_fetches_the_decoder_unless_told_not_to(tmp_path, served, monkeypatch, capsys):
    point_at(monkeypatch, "vit_t_lm", f"{served}/model.pt", xxh128(MODEL_BYTES))
    point_at(monkeypatch, "vit_t_lm_decoder", f"{served}/decoder.pt", xxh128(DECODER_BYTES))
    assert run_cli("models", "download", "--no-progress", "--no-decoder", "vit_t_lm") == 0
    assert capsys.readouterr().out.splitlines() == [str(entry_file(tmp_path, "vit_t_lm", "vit_t_lm.pt"))]
    assert not entry_file(tmp_path, "vit_t_lm_decoder", "vit_t_lm_decoder.pt").exists()
    assert run_cli("models", "download", "--no-progress", "vit_t_lm") == 0
    assert capsys.readouterr().out.splitlines() == [
        str(entry_file(tmp_path, "vit_t_lm", "vit_t_lm.pt")),
        str(entry_file(tmp_path, "vit_t_lm_decoder", "vit_t_lm_decoder.pt")),
    ]


def test_cli_download_reports_the_model_when_its_decoder_fails(tmp_path, served, monkeypatch, capsys):
    point_at(monkeypatch, "vit_t_lm", f"{served}/model.pt", xxh128(MODEL_BYTES))
    point_at(monkeypatch, "vit_t_lm_decoder", f"{served}/missing.pt", xxh128(DECODER_BYTES))
    assert run_cli("models", "download", "--no-progress", "vit_t_lm") == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [str(entry_file(tmp_path, "vit_t_lm", "vit_t_lm.pt"))]
    assert "Could not download model 'vit_t_lm_decoder'" in captured.err


# --- vit_t: MobileSAM's layout ---------------------------------------------------------


@pytest.mark.slow
def test_vit_t_lm_in_mobile_sam_layout_loads_as_vit_tiny(tmp_path, monkeypatch):
    """micro-sam builds vit_t with MobileSAM's ``sam_model_registry["vit_t"]`` and loads strictly.

    MobileSAM's vit_t is TinyViT(embed_dims 64/128/160/320, depths 2/2/6/2, heads 2/4/5/10, windows
    7/7/14/7) with SAM's plain prompt encoder and mask decoder; the reference TinyViT (sam-hq's copy of
    MobileSAM's tiny_vit_sam.py, same modules and parameter names) with segment-anything's decoder is
    that model. Its state dict, served through the zoo as ``vit_t_lm``, loads key for key as our
    vit_tiny (numerical equality of the two TinyViTs: tests/test_tiny_vit_reference.py).
    """
    mobile_sam = reference_models.reference_sam(PRESETS["vit_tiny"].replace(hq=False))
    reference_models.randomize_(mobile_sam, seed=3)
    state = mobile_sam.state_dict()
    assert {key for key in state if key.startswith("image_encoder.")} >= {
        "image_encoder.patch_embed.seq.0.c.weight",
        "image_encoder.layers.0.blocks.1.conv3.bn.running_var",
        "image_encoder.layers.2.blocks.5.attn.attention_biases",
        "image_encoder.layers.2.downsample.conv2.c.weight",
        "image_encoder.norm_head.weight",
        "image_encoder.head.weight",
        "image_encoder.neck.3.bias",
    }
    folder = tmp_path / "served"
    folder.mkdir()
    torch.save(state, folder / "vit_t.pt")
    data = (folder / "vit_t.pt").read_bytes()
    with serve_folder(folder) as base_url:
        point_at(monkeypatch, "vit_t_lm", f"{base_url}/vit_t.pt", xxh128(data))
        model = load_model("vit_t_lm", device="cpu")
    assert model.config.model_type == "vit_tiny"
    assert not model.config.hq and not model.config.sum_tokens
    ours = model.state_dict()
    assert set(ours) == set(state)
    assert all(torch.equal(ours[key], state[key]) for key in state)
