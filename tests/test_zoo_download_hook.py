"""zoo.fetch's progress/cancel hook and download_size (through a local HTTP server)."""

from __future__ import annotations

import dataclasses
import hashlib
import threading

import pytest

from http_server import serve_folder, unused_url
from sum_core import zoo
from sum_core.errors import Cancelled, DownloadError

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes: five hook chunks, the last one short
PAYLOAD_SHA256 = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def isolated_zoo(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(zoo.MODELS_FILE_ENV, raising=False)
    monkeypatch.setattr(zoo, "_user_models", {})


@pytest.fixture
def served_entry(tmp_path, monkeypatch):
    """The built-in sam_vit_b pointed at a local server serving PAYLOAD."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "weights.pth").write_bytes(PAYLOAD)
    with serve_folder(served) as base_url:
        entry = dataclasses.replace(
            zoo.BUILTIN_MODELS["sam_vit_b"], url=f"{base_url}/weights.pth", known_hash=PAYLOAD_SHA256
        )
        monkeypatch.setitem(zoo.BUILTIN_MODELS, "sam_vit_b", entry)
        yield entry


def cache_files(tmp_path) -> list[str]:
    folder = tmp_path / "cache"
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_progress_hook_reports_bytes_up_to_the_size(served_entry, tmp_path):
    calls = []
    path = zoo.fetch("sam_vit_b", on_progress=lambda done, total: calls.append((done, total)))
    assert path.read_bytes() == PAYLOAD
    sizes = {total for _, total in calls}
    assert sizes == {len(PAYLOAD)}
    done = [d for d, _ in calls]
    n = len(PAYLOAD)
    chunk = zoo.HOOK_CHUNK_BYTES
    # One report per chunk, then pooch's final reset + update(total).
    assert done == [min((i + 1) * chunk, n) for i in range(-(-n // chunk))] + [n]


def test_cancel_stops_the_download_and_leaves_no_file(served_entry, tmp_path):
    cancel = threading.Event()
    seen = []

    def on_progress(done, total):
        seen.append(done)
        if done >= 2 * zoo.HOOK_CHUNK_BYTES:
            cancel.set()

    with pytest.raises(Cancelled):
        zoo.fetch("sam_vit_b", on_progress=on_progress, cancel=cancel)
    assert seen == [zoo.HOOK_CHUNK_BYTES, 2 * zoo.HOOK_CHUNK_BYTES]
    assert cache_files(tmp_path) == []  # no partial file, no record entry
    assert not zoo.is_cached("sam_vit_b")
    # A set event stops a download before it starts; a fresh one completes.
    with pytest.raises(Cancelled):
        zoo.fetch("sam_vit_b", cancel=cancel)
    assert zoo.fetch("sam_vit_b", cancel=threading.Event()).read_bytes() == PAYLOAD


def test_download_size_from_the_server(served_entry, monkeypatch):
    assert zoo.download_size("sam_vit_b") == len(PAYLOAD)
    down = dataclasses.replace(served_entry, url=unused_url("weights.pth"))
    monkeypatch.setitem(zoo.BUILTIN_MODELS, "sam_vit_b", down)
    assert zoo.download_size("sam_vit_b") is None
    with pytest.raises(DownloadError, match="not in the registry"):
        zoo.download_size("nope")
