"""Review findings on the napari annotation file and its saver (Qt-free: no viewer, no event loop).

* two images of one stem (``cell.tif``, ``cell.png``) get files of their own, and a file stores
  its image's identity: a save or a load for another image is refused, nothing written;
* every read failure of a load is an InvalidInputError naming the file;
* the saver coalesces saves (one in flight + the latest snapshot per file, in order) and its
  shutdown writes the last one.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import zarr
from qtpy.QtCore import Qt
from sum_core.errors import InvalidInputError

from napari_sum_hq import _annotation_saver
from napari_sum_hq._annotation_file import (
    CommitPrompts,
    ImageIdentity,
    default_path,
    load_annotations,
    save_annotations,
)

SHAPE = (40, 48)


def labels_with(value: int, where: tuple[slice, slice]) -> np.ndarray:
    labels = np.zeros(SHAPE, np.uint32)
    labels[where] = value
    return labels


def identity(folder: Path, name: str, dtype: str = "uint8") -> ImageIdentity:
    return ImageIdentity(Path(name).stem, str(folder / name), SHAPE, dtype)


def test_images_of_one_stem_get_their_own_default_files(tmp_path):
    tif = default_path(SimpleNamespace(source=SimpleNamespace(path=str(tmp_path / "cell.tif"))))
    png = default_path(SimpleNamespace(source=SimpleNamespace(path=str(tmp_path / "cell.png"))))
    assert tif == tmp_path / "cell.tif.sum-annotations.zarr"
    assert png == tmp_path / "cell.png.sum-annotations.zarr"
    assert default_path(SimpleNamespace(source=SimpleNamespace(path=None))) is None


def test_a_save_for_another_image_is_refused_and_nothing_is_written(tmp_path):
    target = tmp_path / "cell.tif.sum-annotations.zarr"
    mine = labels_with(1, np.s_[:10, :10])
    save_annotations(target, mine, CommitPrompts(2, commits=[[1]]), identity(tmp_path, "cell.tif"))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    with pytest.raises(InvalidInputError) as error:
        save_annotations(target, labels_with(7, np.s_[20:, 20:]), CommitPrompts(2), identity(tmp_path, "cell.png"))
    assert str(target) in str(error.value)
    assert str(tmp_path / "cell.tif") in str(error.value) and str(tmp_path / "cell.png") in str(error.value)
    with pytest.raises(InvalidInputError, match="dtype uint16"):  # same file, another dtype
        save_annotations(target, mine, CommitPrompts(2), identity(tmp_path, "cell.tif", "uint16"))

    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # no temporary either
    labels, prompts = load_annotations(target, SHAPE, identity(tmp_path, "cell.tif"))
    np.testing.assert_array_equal(labels, mine)
    assert prompts.commits == [[1]]
    save_annotations(target, mine * 2, CommitPrompts(2), identity(tmp_path, "cell.tif"))  # its own image: saved
    np.testing.assert_array_equal(load_annotations(target, SHAPE)[0], mine * 2)


def test_a_load_into_another_image_is_refused(tmp_path):
    target = tmp_path / "cell.tif.sum-annotations.zarr"
    save_annotations(target, labels_with(3, np.s_[5:9, 30:]), CommitPrompts(2), identity(tmp_path, "cell.tif"))
    with pytest.raises(InvalidInputError) as error:
        load_annotations(target, SHAPE, identity(tmp_path, "cell.png"))
    assert "cell.tif" in str(error.value) and "cell.png" in str(error.value) and "not loaded" in str(error.value)


def test_a_bare_image_name_stores_the_shape_and_is_checked_by_it(tmp_path):
    target = tmp_path / "a.sum-annotations.zarr"
    save_annotations(target, labels_with(2, np.s_[:3, :3]), CommitPrompts(2), "a")
    stored = zarr.open_group(target, mode="r").attrs.asdict()
    assert ImageIdentity.from_attrs(stored) == ImageIdentity("a", None, SHAPE, None)
    load_annotations(target, SHAPE, identity(tmp_path, "a.tif"))  # unknown fields never conflict
    with pytest.raises(InvalidInputError, match="shape"):
        save_annotations(target, np.zeros((8, 8), np.uint32), CommitPrompts(2), "a")


@pytest.mark.parametrize("damage", ["labels", "prompts", "labels/zarr.json"])
def test_every_read_failure_is_an_invalid_input_error_naming_the_file(tmp_path, damage):
    target = tmp_path / "cell.tif.sum-annotations.zarr"
    save_annotations(target, labels_with(1, np.s_[:4, :4]), CommitPrompts(2), identity(tmp_path, "cell.tif"))
    part = target / damage
    shutil.rmtree(part) if part.is_dir() else part.unlink()  # as a concurrent writer or a crash leaves it
    with pytest.raises(InvalidInputError, match="could not be read") as error:
        load_annotations(target, SHAPE)
    assert str(target) in str(error.value)


class BlockingSave:
    """Stands in for save_annotations: records each save; the first one waits for ``release``."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.written: list[tuple[str, int]] = []

    def __call__(self, path, labels, prompts, image, *_objects) -> None:
        self.started.set()
        self.release.wait(30)
        self.written.append((str(path), int(labels.max())))


def test_the_saver_coalesces_pending_saves_in_order(monkeypatch):
    fake = BlockingSave()
    monkeypatch.setattr(_annotation_saver, "save_annotations", fake)
    saver = _annotation_saver.AnnotationSaver()
    messages: list[tuple[str, bool]] = []
    saver.done.connect(lambda message, error: messages.append((message, error)), Qt.DirectConnection)
    snapshot = CommitPrompts(2)
    saver.submit("a", np.full(SHAPE, 1, np.uint32), snapshot, "a")
    assert fake.started.wait(30)  # the first save is in flight
    for value in (2, 3, 4):
        saver.submit("a", np.full(SHAPE, value, np.uint32), snapshot, "a")
    saver.submit("b", np.full(SHAPE, 10, np.uint32), snapshot, "b")
    saver.submit("a", np.full(SHAPE, 5, np.uint32), snapshot, "a")
    assert len(saver._pending) == 2  # one snapshot waiting per file, not one per commit
    fake.release.set()
    saver.flush()
    assert fake.written == [("a", 1), ("b", 10), ("a", 5)]  # every file ends with its last snapshot
    assert messages == [("Saved to a.", False), ("Saved to b.", False), ("Saved to a.", False)]

    fake.release.clear()
    saver.submit("a", np.full(SHAPE, 6, np.uint32), snapshot, "a")
    saver.submit("a", np.full(SHAPE, 7, np.uint32), snapshot, "a")
    threading.Timer(0.2, fake.release.set).start()
    saver.shutdown()  # closing waits for the last save
    assert fake.written[-1] == ("a", 7)


def test_a_save_killed_between_its_renames_is_recovered_before_a_load(tmp_path):
    target = tmp_path / "cell.tif.sum-annotations.zarr"
    mine = labels_with(4, np.s_[30:, 40:])
    save_annotations(target, mine, CommitPrompts(2, commits=[[4]]), identity(tmp_path, "cell.tif"))
    backup = tmp_path / ".cell.tif.sum-annotations.zarr.replaced-kill0001"  # what staged() leaves at a kill
    backup.mkdir()
    target.rename(backup / target.name)
    labels, prompts = load_annotations(target, SHAPE, identity(tmp_path, "cell.tif"))
    np.testing.assert_array_equal(labels, mine)
    assert prompts.commits == [[4]]
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]
