"""Reliability of the model cache: it never deletes a file it did not download (issue 11, data loss 2).

Downloads come from a local HTTP server on 127.0.0.1 (tests/http_server.py); nothing
reaches the internet. Each entry's file lives under a name derived from the entry
name, and the cache keeps a record of the files it downloaded: only those are ever
replaced when their hash is wrong.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from http_server import serve_folder, unused_url
from test_zoo import isolated_zoo  # noqa: F401  (autouse: private cache, no models file)
from sum_core import zoo
from sum_core.errors import HashMismatchError, InvalidInputError

PAYLOAD_A = b"checkpoint A: not really weights\n" * 300
PAYLOAD_B = b"checkpoint B: other weights\n" * 200
NOTES = b"my lab notes, not a checkpoint\n"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def cache(tmp_path) -> Path:
    folder = tmp_path / "cache"
    folder.mkdir()
    return folder


@pytest.fixture
def server(tmp_path):
    """Serve ``a/model.pth`` (PAYLOAD_A) and ``b/model.pth`` (PAYLOAD_B); yield the base URL."""
    served = tmp_path / "served"
    for sub, payload in (("a", PAYLOAD_A), ("b", PAYLOAD_B)):
        (served / sub).mkdir(parents=True)
        (served / sub / "model.pth").write_bytes(payload)
    with serve_folder(served) as base_url:
        yield base_url


def point_builtin_at(monkeypatch, name: str, url: str, known_hash: str) -> None:
    """Make the built-in entry ``name`` download from ``url`` with ``known_hash``."""
    entry = zoo.BUILTIN_MODELS[name]
    patched = zoo.ModelEntry(entry.name, url, known_hash, entry.filename, entry.model_type, entry.description)
    monkeypatch.setitem(zoo.BUILTIN_MODELS, name, patched)


def files_under(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (relative POSIX path -> bytes), the download record left out."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != zoo.RECORD_FILENAME
    }


# --- the three reported losses -----------------------------------------------


def test_entry_filename_equal_to_a_user_file_never_deletes_it(cache, server):
    (cache / "my_notes.txt").write_bytes(NOTES)
    zoo.register_model("notes", f"{server}/a/model.pth", sha256(PAYLOAD_A), filename="my_notes.txt")
    path = zoo.fetch("notes", progress=False)
    assert path.read_bytes() == PAYLOAD_A
    assert path != cache / "my_notes.txt"
    assert (cache / "my_notes.txt").read_bytes() == NOTES


def test_user_entry_named_like_a_builtin_file_keeps_the_builtin_checkpoint(cache, server, monkeypatch):
    point_builtin_at(monkeypatch, "sam_hq_vit_b", f"{server}/a/model.pth", sha256(PAYLOAD_A))
    builtin_path = zoo.fetch("sam_hq_vit_b", progress=False)
    zoo.register_model("mine", f"{server}/b/model.pth", sha256(PAYLOAD_B), filename="sam_hq_vit_b.pth")
    mine_path = zoo.fetch("mine", progress=False)
    assert mine_path != builtin_path
    assert mine_path.read_bytes() == PAYLOAD_B
    # The built-in checkpoint is still there: served from the cache with the server gone.
    point_builtin_at(monkeypatch, "sam_hq_vit_b", unused_url("model.pth"), sha256(PAYLOAD_A))
    assert zoo.fetch("sam_hq_vit_b", progress=False) == builtin_path
    assert builtin_path.read_bytes() == PAYLOAD_A


def test_user_entry_named_like_a_builtin_file_keeps_an_old_layout_checkpoint(cache, server, monkeypatch):
    """The reported case for a user of an earlier version: cache/sam_hq_vit_b.pth is the built-in's file."""
    (cache / "sam_hq_vit_b.pth").write_bytes(PAYLOAD_A)
    zoo.register_model("mine", f"{server}/b/model.pth", sha256(PAYLOAD_B), filename="sam_hq_vit_b.pth")
    assert zoo.fetch("mine", progress=False).read_bytes() == PAYLOAD_B
    assert (cache / "sam_hq_vit_b.pth").read_bytes() == PAYLOAD_A
    point_builtin_at(monkeypatch, "sam_hq_vit_b", unused_url("sam_hq_vit_b.pth"), sha256(PAYLOAD_A))
    assert zoo.fetch("sam_hq_vit_b", progress=False) == cache / "sam_hq_vit_b.pth"


def test_two_entries_whose_urls_end_alike_do_not_evict_each_other(server):
    zoo.register_model("one", f"{server}/a/model.pth", sha256(PAYLOAD_A))
    zoo.register_model("two", f"{server}/b/model.pth", sha256(PAYLOAD_B))
    assert zoo.get_entry("one").filename == zoo.get_entry("two").filename == "model.pth"
    path_one = zoo.fetch("one", progress=False)
    path_two = zoo.fetch("two", progress=False)
    assert path_one != path_two
    # Both stay cached: fetched again with the server gone.
    zoo.register_model("one", unused_url("model.pth"), sha256(PAYLOAD_A))
    zoo.register_model("two", unused_url("model.pth"), sha256(PAYLOAD_B))
    assert zoo.fetch("one", progress=False).read_bytes() == PAYLOAD_A
    assert zoo.fetch("two", progress=False).read_bytes() == PAYLOAD_B
    assert zoo.is_cached("one") and zoo.is_cached("two")


# --- files the cache did not write ---------------------------------------------


def test_foreign_file_with_wrong_hash_at_the_entry_path_is_refused_not_deleted(cache, server):
    zoo.register_model("mine", f"{server}/a/model.pth", sha256(PAYLOAD_A))
    target = zoo.cached_path("mine")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(NOTES)
    with pytest.raises(HashMismatchError) as info:
        zoo.fetch("mine", progress=False)
    message = str(info.value)
    assert str(target) in message
    assert "was not downloaded by" in message
    assert "move it away" in message
    assert "sum-hq models download mine" in message
    assert target.read_bytes() == NOTES


def test_old_cache_location_is_reused_when_its_hash_matches(cache, monkeypatch):
    """A checkpoint downloaded by an earlier version (cache/sam_hq_vit_b.pth) still works offline."""
    (cache / "sam_hq_vit_b.pth").write_bytes(PAYLOAD_A)
    point_builtin_at(monkeypatch, "sam_hq_vit_b", unused_url("sam_hq_vit_b.pth"), sha256(PAYLOAD_A))
    assert zoo.is_cached("sam_hq_vit_b")
    path = zoo.fetch("sam_hq_vit_b", progress=False)
    assert path.read_bytes() == PAYLOAD_A
    assert files_under(cache) == {path.relative_to(cache).as_posix(): PAYLOAD_A}


def test_old_cache_location_with_another_hash_is_left_alone(cache, server, monkeypatch):
    (cache / "sam_hq_vit_b.pth").write_bytes(PAYLOAD_B)
    point_builtin_at(monkeypatch, "sam_hq_vit_b", f"{server}/a/model.pth", sha256(PAYLOAD_A))
    path = zoo.fetch("sam_hq_vit_b", progress=False)
    assert path.read_bytes() == PAYLOAD_A
    assert (cache / "sam_hq_vit_b.pth").read_bytes() == PAYLOAD_B
    assert path == zoo.cached_path("sam_hq_vit_b")


# --- files the cache did write ------------------------------------------------


def test_download_is_recorded_and_a_corrupted_download_is_replaced(cache, server):
    zoo.register_model("mine", f"{server}/a/model.pth", sha256(PAYLOAD_A))
    path = zoo.fetch("mine", progress=False)
    record = json.loads((cache / zoo.RECORD_FILENAME).read_text())
    key = path.relative_to(cache).as_posix()
    assert record["files"][key]["model"] == "mine"
    assert record["files"][key]["known_hash"] == sha256(PAYLOAD_A)
    path.write_bytes(PAYLOAD_A[:-5] + b"flip!")
    assert zoo.fetch("mine", progress=False) == path
    assert path.read_bytes() == PAYLOAD_A


def test_new_version_of_an_entry_replaces_its_own_download(server):
    zoo.register_model("mine", f"{server}/a/model.pth", sha256(PAYLOAD_A))
    zoo.fetch("mine", progress=False)
    zoo.register_model("mine", f"{server}/b/model.pth", sha256(PAYLOAD_B), filename="model.pth")
    assert zoo.fetch("mine", progress=False).read_bytes() == PAYLOAD_B


def test_record_of_another_entry_does_not_make_a_file_deletable(cache, server):
    zoo.register_model("one", f"{server}/a/model.pth", sha256(PAYLOAD_A))
    zoo.fetch("one", progress=False)
    record_path = cache / zoo.RECORD_FILENAME
    record = json.loads(record_path.read_text())
    zoo.register_model("two", f"{server}/b/model.pth", sha256(PAYLOAD_B))
    target = zoo.cached_path("two")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(NOTES)
    (entry,) = record["files"].values()
    record["files"][target.relative_to(cache).as_posix()] = entry  # says: written for "one"
    record_path.write_text(json.dumps(record))
    with pytest.raises(HashMismatchError, match="was not downloaded by"):
        zoo.fetch("two", progress=False)
    assert target.read_bytes() == NOTES


def test_a_foreign_file_where_the_record_goes_is_not_overwritten(cache, server):
    (cache / zoo.RECORD_FILENAME).write_bytes(NOTES)
    zoo.register_model("mine", f"{server}/a/model.pth", sha256(PAYLOAD_A))
    with pytest.raises(InvalidInputError, match="not a napari-sum-hq download record") as info:
        zoo.fetch("mine", progress=False)
    assert str(cache / zoo.RECORD_FILENAME) in str(info.value)
    assert (cache / zoo.RECORD_FILENAME).read_bytes() == NOTES
    assert not zoo.cached_path("mine").exists()


# --- path safety --------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"filename": ".."}, "filename='..'"),
        ({"filename": "."}, "filename='.'"),
        ({"filename": "../escape.pth"}, "filename='../escape.pth'"),
        ({"filename": "sub/model.pth"}, "filename='sub/model.pth'"),
        ({"filename": "/etc/passwd"}, "filename='/etc/passwd'"),
        ({"filename": "..\\escape.pth"}, r"filename='\.\.\\\\escape\.pth'"),
        ({"filename": "model\x00.pth"}, r"filename='model\\x00\.pth'"),
        ({"url": "https://example.org/models/.."}, "filename='..'"),
        ({"name": ".."}, "name='..'"),
        ({"name": "."}, "name='.'"),
    ],
)
def test_unsafe_names_are_refused_at_registration(cache, fields, message):
    arguments = {"name": "mine", "url": "https://example.org/mine.pth", "known_hash": sha256(PAYLOAD_A)}
    arguments.update(fields)
    with pytest.raises(InvalidInputError, match=message):
        zoo.register_model(**arguments)
    assert arguments["name"] not in zoo.list_models()


def test_unsafe_filename_in_models_file_is_refused(tmp_path, monkeypatch):
    models_file = tmp_path / "models.json"
    models_file.write_text(json.dumps([
        {"name": "evil", "url": "https://example.org/x.pth", "known_hash": sha256(PAYLOAD_A),
         "filename": ".."},
    ]))
    monkeypatch.setenv(zoo.MODELS_FILE_ENV, str(models_file))
    with pytest.raises(InvalidInputError, match=r"SUM_HQ_MODELS.*entry 0: filename='\.\.'"):
        zoo.list_models()


# --- malformed models files: clear errors, and a local path still loads -------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (f"- {{1: x, name: a, url: 'https://e.org/a.pth', known_hash: '{sha256(PAYLOAD_A)}'}}\n".encode(),
         r"unknown fields \[1\]"),
        (f"- {{1: x, size: 3, name: a, url: 'https://e.org/a.pth', known_hash: '{sha256(PAYLOAD_A)}'}}\n".encode(),
         r"unknown fields \[1, 'size'\]"),
        (b"- {name: caf\xe9, url: 'https://e.org/a.pth'}\n", "not UTF-8 text"),
    ],
    ids=["int-key", "int-and-str-keys", "latin-1"],
)
def test_malformed_models_file_is_a_clear_error(tmp_path, monkeypatch, content, message):
    models_file = tmp_path / "models.yaml"
    models_file.write_bytes(content)
    monkeypatch.setenv(zoo.MODELS_FILE_ENV, str(models_file))
    with pytest.raises(InvalidInputError, match=message) as info:
        zoo.list_models()
    assert str(models_file) in str(info.value)


def test_malformed_models_file_does_not_break_a_local_path(tmp_path, monkeypatch):
    models_file = tmp_path / "models.yaml"
    models_file.write_text("name: [unclosed")
    monkeypatch.setenv(zoo.MODELS_FILE_ENV, str(models_file))
    checkpoint = tmp_path / "model.pth"
    checkpoint.write_bytes(PAYLOAD_A)
    assert zoo.locate(checkpoint) == checkpoint
    assert zoo.locate(str(checkpoint)) == checkpoint
    with pytest.raises(InvalidInputError, match="not valid YAML/JSON"):
        zoo.locate("sam_hq_vit_b")  # a name needs the registry: the models file's error
    with pytest.raises(InvalidInputError, match="not valid YAML/JSON"):
        zoo.locate(tmp_path / "absent.pth")
