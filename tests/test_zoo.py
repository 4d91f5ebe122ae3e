"""Model registry, cache and downloads (through a local HTTP server)."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from http_server import serve_folder, unused_url
from sum_core import zoo
from sum_core.cli.models import add_models_parser
from sum_core.errors import DownloadError, HashMismatchError, InvalidInputError

PAYLOAD = b"not really weights, but bytes with a known hash\n" * 100
PAYLOAD_SHA256 = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()
PAYLOAD_MD5 = "md5:" + hashlib.md5(PAYLOAD).hexdigest()
WRONG_SHA256 = "sha256:" + "0" * 64


@pytest.fixture(autouse=True)
def isolated_zoo(tmp_path, monkeypatch):
    """Private cache folder, no models file, no user entries from other tests."""
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(zoo.MODELS_FILE_ENV, raising=False)
    monkeypatch.setattr(zoo, "_user_models", {})


@pytest.fixture
def server(tmp_path):
    """Serve a folder holding ``weights.pth`` (PAYLOAD); yield the base URL."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "weights.pth").write_bytes(PAYLOAD)
    with serve_folder(served) as base_url:
        yield base_url


def cache_files(tmp_path: Path) -> list[str]:
    """Every file below the cache folder, as relative POSIX paths."""
    folder = tmp_path / "cache"
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def entry_file(tmp_path: Path, name: str, filename: str) -> Path:
    """Where the cache keeps the file of entry ``name``."""
    return tmp_path / "cache" / "models" / name / filename


def point_builtin_at(monkeypatch, name: str, url: str, known_hash: str) -> zoo.ModelEntry:
    """Make the built-in entry ``name`` download from ``url`` with ``known_hash``."""
    patched = dataclasses.replace(zoo.BUILTIN_MODELS[name], url=url, known_hash=known_hash)
    monkeypatch.setitem(zoo.BUILTIN_MODELS, name, patched)
    return patched


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="sum-hq")
    add_models_parser(parser.add_subparsers())
    args = parser.parse_args(list(argv))
    return args.func(args)


# --- built-in registry -------------------------------------------------------


def test_builtin_registry_has_official_checkpoints():
    names = zoo.list_models()
    assert names[:7] == [
        "sam_vit_b",
        "sam_vit_l",
        "sam_vit_h",
        "sam_hq_vit_b",
        "sam_hq_vit_l",
        "sam_hq_vit_h",
        "sam_hq_vit_tiny",
    ]
    assert len(names) == 7 + 10  # micro-sam's models (and their decoders): tests/test_zoo_microscopy.py
    assert zoo.DEFAULT_MODEL == "sam_hq_vit_b"
    sam_b = zoo.get_entry("sam_vit_b")
    assert sam_b.url == "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"
    assert sam_b.known_hash == "sha256:ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"
    hq_tiny = zoo.get_entry("sam_hq_vit_tiny")
    assert hq_tiny.url == (
        "https://huggingface.co/lkeab/hq-sam/resolve/"
        "a3a77cd0a2e5e50eaa76faccf61b964732d9b35f/sam_hq_vit_tiny.pth"
    )
    assert hq_tiny.known_hash == "md5:3a661ab92d4088ccd6232fa542998a65"
    hq_h = zoo.get_entry("sam_hq_vit_h")
    assert "67ab82412bc794d5ce2e9799b8b6a3c0a8cfe1d2/sam_hq_vit_h.pth" in hq_h.url
    assert hq_h.model_type == "vit_h"


def test_unknown_name_lists_known_models():
    with pytest.raises(DownloadError, match="'sam_vit_x' is not in the registry") as info:
        zoo.fetch("sam_vit_x")
    assert "sam_hq_vit_b" in str(info.value)
    assert "sam_vit_h" in str(info.value)


def test_cache_folder_from_env_and_default(tmp_path, monkeypatch):
    assert zoo.cache_dir() == tmp_path / "cache"
    assert zoo.cached_path("sam_hq_vit_b") == entry_file(tmp_path, "sam_hq_vit_b", "sam_hq_vit_b.pth")
    monkeypatch.delenv(zoo.CACHE_ENV)
    assert zoo.cache_dir().name == "napari-sum-hq"


# --- downloads ---------------------------------------------------------------


def test_fetch_downloads_into_cache_and_verifies(tmp_path, server, monkeypatch):
    point_builtin_at(monkeypatch, "sam_hq_vit_b", f"{server}/weights.pth", PAYLOAD_SHA256)
    path = zoo.fetch("sam_hq_vit_b", progress=False)
    assert path == entry_file(tmp_path, "sam_hq_vit_b", "sam_hq_vit_b.pth")
    assert path.read_bytes() == PAYLOAD
    assert zoo.is_cached("sam_hq_vit_b")
    # Second call: served from the cache (works with the server gone).
    point_builtin_at(monkeypatch, "sam_hq_vit_b", unused_url("weights.pth"), PAYLOAD_SHA256)
    assert zoo.fetch("sam_hq_vit_b", progress=False) == path


def test_wrong_hash_raises_and_keeps_nothing(tmp_path, server, monkeypatch):
    point_builtin_at(monkeypatch, "sam_vit_b", f"{server}/weights.pth", WRONG_SHA256)
    with pytest.raises(HashMismatchError, match="does not have the registered hash") as info:
        zoo.fetch("sam_vit_b", progress=False)
    assert WRONG_SHA256 in str(info.value)
    assert cache_files(tmp_path) == []


def test_server_down_names_file_folder_and_command(tmp_path, monkeypatch):
    url = unused_url("sam_hq_vit_l.pth")
    point_builtin_at(monkeypatch, "sam_hq_vit_l", url, PAYLOAD_MD5)
    with pytest.raises(DownloadError) as info:
        zoo.fetch("sam_hq_vit_l", progress=False)
    assert not isinstance(info.value, HashMismatchError)
    message = str(info.value)
    assert "sam_hq_vit_l.pth" in message
    assert url in message
    assert str(entry_file(tmp_path, "sam_hq_vit_l", "sam_hq_vit_l.pth")) in message
    assert "sum-hq models download sam_hq_vit_l" in message
    assert cache_files(tmp_path) == []


def test_missing_file_on_server_is_download_error(tmp_path, server, monkeypatch):
    point_builtin_at(monkeypatch, "sam_vit_l", f"{server}/absent.pth", PAYLOAD_SHA256)
    with pytest.raises(DownloadError, match="404"):
        zoo.fetch("sam_vit_l", progress=False)
    assert cache_files(tmp_path) == []


def test_corrupted_cache_is_replaced_by_fresh_download(tmp_path, server, monkeypatch):
    point_builtin_at(monkeypatch, "sam_hq_vit_b", f"{server}/weights.pth", PAYLOAD_MD5)
    cached = zoo.fetch("sam_hq_vit_b", progress=False)
    cached.write_bytes(PAYLOAD[:-10] + b"corrupted!")
    assert zoo.fetch("sam_hq_vit_b", progress=False) == cached
    assert cached.read_bytes() == PAYLOAD


def test_corrupted_cache_offline_is_removed_not_loaded(tmp_path, server, monkeypatch):
    point_builtin_at(monkeypatch, "sam_hq_vit_b", f"{server}/weights.pth", PAYLOAD_MD5)
    cached = zoo.fetch("sam_hq_vit_b", progress=False)
    cached.write_bytes(PAYLOAD[: len(PAYLOAD) // 2])
    point_builtin_at(monkeypatch, "sam_hq_vit_b", unused_url("weights.pth"), PAYLOAD_MD5)
    with pytest.raises(HashMismatchError, match="was corrupted") as info:
        zoo.fetch("sam_hq_vit_b", progress=False)
    assert "has been removed" in str(info.value)
    assert "sum-hq models download sam_hq_vit_b" in str(info.value)
    assert not cached.exists()
    assert json.loads((tmp_path / "cache" / zoo.RECORD_FILENAME).read_text())["files"] == {}


# --- user entries ------------------------------------------------------------


def test_register_model_and_fetch(tmp_path, server):
    entry = zoo.register_model(
        "my_sum", f"{server}/weights.pth", PAYLOAD_SHA256.upper().replace("SHA256", "sha256"),
        model_type="vit_b", description="fine-tuned",
    )
    assert entry.filename == "weights.pth"
    assert entry.known_hash == PAYLOAD_SHA256
    assert "my_sum" in zoo.list_models()
    path = zoo.fetch("my_sum", progress=False)
    assert path == entry_file(tmp_path, "my_sum", "weights.pth")
    assert path.read_bytes() == PAYLOAD


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"known_hash": ""}, "known_hash='' must be a non-empty string"),
        ({"known_hash": "abc123"}, "must be '<algorithm>:<hex digest>'"),
        ({"known_hash": "sha256:" + "0" * 32}, "digest of the right length"),
        ({"name": "sam_vit_b"}, "built-in model and cannot be replaced"),
        ({"name": "my model"}, "may only contain"),
        ({"url": "/local/file.pth"}, "must be an http"),
        ({"url": "https://example.org/"}, "filename=''"),
    ],
)
def test_register_model_rejects_bad_entries(kwargs, message):
    arguments = {"name": "mine", "url": "https://example.org/mine.pth", "known_hash": PAYLOAD_SHA256}
    arguments.update(kwargs)
    with pytest.raises(InvalidInputError, match=message):
        zoo.register_model(**arguments)
    assert "mine" not in zoo.list_models()


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_models_file_adds_entries(tmp_path, server, monkeypatch, suffix):
    entries = [
        {"name": "sum_b", "url": f"{server}/weights.pth", "known_hash": PAYLOAD_MD5,
         "filename": "sum_b.pth", "model_type": "vit_b", "description": "SUM ViT-B"},
        {"name": "sum_l", "url": "https://example.org/sum_l.pth", "known_hash": PAYLOAD_SHA256},
    ]
    models_file = tmp_path / f"models{suffix}"
    if suffix == ".json":
        models_file.write_text(json.dumps(entries))
    else:
        models_file.write_text(
            "".join(
                "- " + "\n  ".join(f"{key}: {value}" for key, value in entry.items()) + "\n"
                for entry in entries
            )
        )
    monkeypatch.setenv(zoo.MODELS_FILE_ENV, str(models_file))
    assert zoo.list_models()[-2:] == ["sum_b", "sum_l"]
    assert zoo.get_entry("sum_l").filename == "sum_l.pth"
    assert zoo.get_entry("sum_b").description == "SUM ViT-B"
    assert zoo.fetch("sum_b", progress=False).read_bytes() == PAYLOAD


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: [unclosed", "not valid YAML/JSON"),
        ("name: x\nurl: y\n", "must contain a list of entries"),
        ("- just a string\n", "entry 0: expected a mapping"),
        ("- {name: a, url: 'https://e.org/a.pth'}\n", r"missing fields \['known_hash'\]"),
        (f"- {{name: a, url: 'https://e.org/a.pth', known_hash: '{PAYLOAD_MD5}', size: 3}}\n",
         r"unknown fields \['size'\]"),
        (f"- {{name: a, url: 'https://e.org/a.pth', known_hash: '{PAYLOAD_MD5}'}}\n"
         f"- {{name: a, url: 'https://e.org/b.pth', known_hash: '{PAYLOAD_MD5}'}}\n",
         r"duplicate model names \['a'\]"),
        (f"- {{name: a, url: 'https://e.org/a.pth', known_hash: 'md5:xyz'}}\n",
         "entry 0: known_hash='md5:xyz'"),
    ],
)
def test_bad_models_file_errors(tmp_path, monkeypatch, content, message):
    models_file = tmp_path / "models.yaml"
    models_file.write_text(content)
    monkeypatch.setenv(zoo.MODELS_FILE_ENV, str(models_file))
    with pytest.raises(InvalidInputError, match=message) as info:
        zoo.list_models()
    assert "SUM_HQ_MODELS" in str(info.value)
    assert str(models_file) in str(info.value)


def test_missing_models_file(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.MODELS_FILE_ENV, str(tmp_path / "nope.yaml"))
    with pytest.raises(InvalidInputError, match="nope.yaml.*does not exist"):
        zoo.fetch("sam_vit_b")


# --- CLI ---------------------------------------------------------------------


def test_cli_list_shows_cached_state(tmp_path, capsys):
    cached = tmp_path / "cache" / "sam_vit_h_4b8939.pth"  # the layout of earlier versions still counts
    cached.parent.mkdir()
    cached.write_bytes(b"x")
    assert run_cli("models", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "PURPOSE", "AIS", "CACHED", "DESCRIPTION", "LICENCE"]
    rows = {line.split()[0]: line.split() for line in lines[1:8]}
    assert rows["sam_vit_h"][1:5] == ["vit_h", "generic", "no", "yes"]
    assert rows["sam_hq_vit_tiny"][1:5] == ["vit_tiny", "generic", "no", "no"]
    assert "2.56 GB" in " ".join(rows["sam_vit_h"])
    assert rows["sam_vit_h"][-1] == "Apache-2.0"
    assert lines[-1] == f"cache folder: {tmp_path / 'cache'}"


def test_cli_path(tmp_path, capsys):
    assert run_cli("models", "path", "sam_hq_vit_tiny") == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(entry_file(tmp_path, "sam_hq_vit_tiny", "sam_hq_vit_tiny.pth"))
    assert "sum-hq models download sam_hq_vit_tiny" in captured.err
    assert run_cli("models", "path", "nonexistent") == 1
    assert "'nonexistent' is not in the registry" in capsys.readouterr().err


def test_cli_download(tmp_path, server, monkeypatch, capsys):
    point_builtin_at(monkeypatch, "sam_vit_b", f"{server}/weights.pth", PAYLOAD_SHA256)
    assert run_cli("models", "download", "--no-progress", "sam_vit_b") == 0
    cached = entry_file(tmp_path, "sam_vit_b", "sam_vit_b_01ec64.pth")
    assert capsys.readouterr().out.strip() == str(cached)
    assert cached.read_bytes() == PAYLOAD
    # One failure among several: the good one is still fetched, exit code 1.
    assert run_cli("models", "download", "--no-progress", "bogus", "sam_vit_b") == 1
    captured = capsys.readouterr()
    assert "'bogus' is not in the registry" in captured.err
    assert captured.out.strip() == str(cached)


def test_cli_models_without_command_prints_help(capsys):
    assert run_cli("models") == 2
    assert "download" in capsys.readouterr().err
