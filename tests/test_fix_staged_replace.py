"""``sum_core.export.target.staged`` replaces an existing export without ever losing both copies.

Review finding: the folder case deleted the old export's files (``zarr.json`` first) and then
renamed the new copy; a failure while deleting removed the new copy too and left a folder with no
manifest (every later save refused), and a user's file in the old folder cost the old export.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sum_core.errors import InvalidInputError
from sum_core.export.target import recover, staged

OURS = ("zarr.json", "labels", "notes.txt")


def _export(folder: Path, text: str) -> None:
    (folder / "labels").mkdir()
    (folder / "labels" / "c0").write_text(text)
    (folder / "zarr.json").write_text(text)


def _contents(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir())


@pytest.fixture
def old(tmp_path) -> Path:
    target = tmp_path / "a.zarr"
    target.mkdir()
    _export(target, "old")
    return target


def test_replace_folder(old):
    with staged(old, folder=True, ours=OURS) as temp:
        assert temp.parent == old.parent and temp.name.startswith(".a.zarr.partial-")
        _export(temp, "new")
    assert _contents(old) == {"labels/c0": "new", "zarr.json": "new"}
    assert _siblings(old) == ["a.zarr"]


def test_removal_failure_keeps_the_new_export(old, monkeypatch):
    real = shutil.rmtree

    def failing(path, *args, **kwargs):  # e.g. a locked chunk folder in the old export
        if ".partial-" not in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", failing)
    with pytest.warns(UserWarning, match="previous version .* could not be deleted"):
        with staged(old, folder=True, ours=OURS) as temp:
            _export(temp, "new")
    assert _contents(old) == {"labels/c0": "new", "zarr.json": "new"}


@pytest.mark.parametrize("step", [1, 2])
def test_rename_failure_restores_the_old_export(old, monkeypatch, step):
    """Step 1: moving the old export away fails; step 2: moving the new one in fails (after the old one moved)."""
    real = Path.rename
    calls = []

    def failing(self, other):
        calls.append(self)
        if len(calls) == step:
            raise OSError(5, "Input/output error", str(self))
        return real(self, other)

    monkeypatch.setattr(Path, "rename", failing)
    with pytest.raises(OSError, match="Input/output error"):
        with staged(old, folder=True, ours=OURS) as temp:
            _export(temp, "new")
    monkeypatch.setattr(Path, "rename", real)
    assert _contents(old) == {"labels/c0": "old", "zarr.json": "old"}
    assert _siblings(old) == ["a.zarr"]


def test_user_file_refused_before_anything_is_touched(old):
    (old / "mine.txt").write_text("user data")
    with pytest.raises(InvalidInputError, match="mine.txt"):
        with staged(old, folder=True, ours=OURS) as temp:
            _export(temp, "new")
    assert _contents(old) == {"labels/c0": "old", "mine.txt": "user data", "zarr.json": "old"}
    assert _siblings(old) == ["a.zarr"]


def test_hard_kill_between_the_renames_is_recovered(old):
    script = f"""
import os
from pathlib import Path
from sum_core.export.target import staged
real = Path.rename
def killed(self, other):  # the process dies as the new export is moved in
    if ".partial-" in self.name:
        os._exit(9)
    return real(self, other)
Path.rename = killed
with staged(Path({str(old)!r}), folder=True, ours={OURS!r}) as temp:
    (temp / "zarr.json").write_text("new")
"""
    assert subprocess.run([sys.executable, "-c", script], timeout=120).returncode == 9
    assert not old.exists()
    assert recover(old) is True
    assert _contents(old) == {"labels/c0": "old", "zarr.json": "old"}
    assert [name for name in _siblings(old) if ".replaced-" in name] == []
    assert recover(old) is False  # the target exists: nothing to do


def test_recover_leaves_ambiguous_backups(tmp_path):
    target = tmp_path / "a.zarr"
    for n in range(2):
        (tmp_path / f".a.zarr.replaced-{n}" / "a.zarr").mkdir(parents=True)
    assert recover(target) is False and not target.exists()


def test_file_target_uses_a_unique_private_name(tmp_path):
    target = tmp_path / "model.zip"
    target.write_bytes(b"old")
    with staged(target, folder=False) as first, staged(target, folder=False) as second:
        assert first != second and first.name == second.name == "model.zip"
        first.write_bytes(b"one")
        second.write_bytes(b"two")
    assert target.read_bytes() == b"one"  # the outer block ends last
    assert sorted(os.listdir(tmp_path)) == ["model.zip"]


def test_file_target_error_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.zip"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with staged(target, folder=False) as temp:
            temp.write_bytes(b"half")
            raise RuntimeError("export failed")
    assert target.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["model.zip"]
