"""Integrity of batch jobs (issue 11): early refusals, damaged targets, checksums, repair, full disk.

- What no job may write (bad ``overwrite`` / ``progress`` / ``repair`` / ``scheduler``, a file, a
  folder that cannot be created, a foreign or read-only target) is refused before the model loads.
- A damaged target (garbage or truncated ``done`` / ``work`` chunks, missing array or group
  metadata, output chunks deleted or altered) raises a :class:`DamagedTargetError` naming what is
  damaged and how to proceed, never a raw ``KeyError`` / ``RuntimeError``; ``repair=True`` redoes
  only the damaged slices (automatic mode: whole planes) and the result is byte-identical.
- A full disk raises a :class:`SumError`; after freeing space the rerun ends identical.
- Fault injection: interrupted at random write points, with a random output chunk corrupted, a
  job ends byte-identical to an uninterrupted one after a rerun (or a repair), never different;
  so does a repair interrupted at any of its writes.
- Only a target of ours is ever cleared: a folder holding other data, a zarr array, a folder whose
  group metadata is corrupt and that holds a foreign file are refused also with ``overwrite``,
  which starts a damaged target of the same job again. After an error no task writes the target.

The automatic mode uses the fake generator of ``test_batch`` (one record per bright component),
the prompts mode its fake decoder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr
import zarr.storage

from sum_core.batch import DamagedTargetError, segment_zarr, verify_target
from sum_core.batch import auto as batch_auto
from sum_core.batch import job as batch_job
from sum_core.batch.writer import ATTR, Target
from sum_core.cli import main
from sum_core.errors import InvalidInputError, SumError
from test_batch import Counter, blobs, use_fake_decoder, write_table
from test_reliability_batch import resolved  # noqa: F401 - fixture: model resolutions, fake generator

KW = dict(tile_shape=(48, 64), halo=16, progress=False, scheduler="synchronous")  # 96 x 128: 2 x 2 tiles
N_SLICES, N_TILES = 3, 4


def stack(n: int = N_SLICES) -> np.ndarray:
    """``n`` planes of 96 x 128 with separate discs (radius 8 < halo: none is cut at a seam)."""
    return np.stack([blobs((96, 128), seed=s, n=6, radius=8) for s in range(n)])


def prompt_stack() -> tuple[np.ndarray, list[str]]:
    """Three planes with one bright square each, and a prompt table row per plane."""
    image = np.zeros((N_SLICES, 96, 128), dtype=np.uint8)
    for s in range(N_SLICES):
        image[s, 20 + 10 * s : 50 + 10 * s, 30 + 20 * s : 70 + 20 * s] = 255
    return image, [f"{s + 1},{s},point,{30 + 10 * s},{40 + 20 * s},,,1" for s in range(N_SLICES)]


def assert_identical(group: zarr.Group, reference: zarr.Group) -> None:
    """Both output arrays equal bit for bit (float16 compared as bits: NaN would not hide)."""
    np.testing.assert_array_equal(group["labels"][...], reference["labels"][...])
    np.testing.assert_array_equal(group["uncertainty"][...].view(np.uint16),
                                  reference["uncertainty"][...].view(np.uint16))


def chunk_file(target: Path, name: str, coords: tuple[int, ...]) -> Path:
    return target.joinpath(name, "c", *(str(c) for c in coords))


def generator_calls() -> int:
    return batch_auto.window_records.calls


# --- 1. refused before the model loads ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argument, value, message",
    [
        ("overwrite", "no", "overwrite must be True or False, got 'no'"),
        ("progress", 1, "progress must be True or False, got 1"),
        ("repair", "yes", "repair must be True or False, got 'yes'"),
        ("scheduler", "bogus", r"scheduler: 'bogus' is not usable \(Expected one of .*threads.*\); give a dask"),
        ("scheduler", "distributed", r"scheduler: 'distributed' is not usable \(.*no Client active"),
    ],
)
def test_bad_arguments_are_refused_before_the_model_loads(tmp_path, resolved, argument, value, message):
    with pytest.raises(InvalidInputError, match=message):
        segment_zarr(stack(1)[0], tmp_path / "out.zarr", **{**KW, argument: value})
    assert resolved == [] and generator_calls() == 0 and not (tmp_path / "out.zarr").exists()


def _file(tmp_path: Path) -> Path:
    (tmp_path / "out.zarr").write_text("results")
    return tmp_path / "out.zarr"


def _under_file(tmp_path: Path) -> Path:
    (tmp_path / "notes.txt").write_text("notes")
    return tmp_path / "notes.txt" / "out.zarr"


def _foreign_group(tmp_path: Path) -> Path:
    zarr.open_group(str(tmp_path / "out.zarr"), mode="w").create_array("raw", data=np.ones((4, 4), np.uint8))
    return tmp_path / "out.zarr"


def _foreign_folder(tmp_path: Path) -> Path:
    (tmp_path / "out.zarr").mkdir()
    (tmp_path / "out.zarr" / "thesis.txt").write_text("keep me")
    return tmp_path / "out.zarr"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp_path: Path("/proc/sum-hq-batch-test/out.zarr"),
         r"target: /proc/sum-hq-batch-test(/out\.zarr)? (\(No such file|is read-only)|cannot create the folder"),
        (_file, r"target: .*out\.zarr is a file; give a folder path"),
        (_under_file, r"target: cannot create .*notes\.txt/out\.zarr: .*notes\.txt is a file"),
        (_foreign_group,
         r"target: .*out\.zarr holds data that was not written by a sum-hq batch job; .*overwrite=True"),
        (_foreign_folder, r"target: .*out\.zarr is a non-empty folder that is not a zarr v3 group"),
        (lambda tmp_path: zarr.storage.LocalStore(str(tmp_path / "ro.zarr"), read_only=True),
         r"target: the store .* is read-only"),
    ],
    ids=["under /proc", "a file", "under a file", "a foreign zarr group", "a foreign folder", "a read-only store"],
)
def test_unusable_targets_are_refused_before_the_model_loads(tmp_path, resolved, make, message):
    target = make(tmp_path)
    with pytest.raises(InvalidInputError, match=message):
        segment_zarr(stack(1)[0], target, **KW)
    assert resolved == [] and generator_calls() == 0
    assert not Path("/proc/sum-hq-batch-test").exists()


def test_a_prompt_table_that_is_not_utf8_is_refused_naming_it(tmp_path, resolved):
    table = tmp_path / "prompts.csv"
    table.write_bytes("object_id,slice,kind,row,col\n1,0,point,3,4 # cellule \u00e9\n".encode("latin-1"))
    with pytest.raises(InvalidInputError, match=rf"prompts: {table} is not UTF-8 text .*save the table as UTF-8"):
        segment_zarr(stack(1)[0], tmp_path / "out.zarr", mode="prompts", prompts=table, **KW)
    assert resolved == []


# --- 2. damaged output chunks: found, named, repaired ------------------------------------------------------------


def _damage(target: Path, kind: str, coords: tuple[int, ...]) -> str:
    """Damage one output chunk of ``target``; returns the array damaged."""
    name = "uncertainty" if kind == "NaN" else "labels"
    path = chunk_file(target, name, coords)
    if kind == "deleted":
        path.unlink()
    elif kind == "zero bytes":
        path.write_bytes(bytes(len(path.read_bytes())))
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif kind == "another chunk's bytes":
        path.write_bytes(chunk_file(target, name, (0, 0, 0)).read_bytes())
    elif kind == "NaN":
        region = Target(zarr.open_group(str(target))).chunk_selection(coords)
        zarr.open_group(str(target))[name][region] = np.nan
    return name


@pytest.mark.parametrize("kind", ["deleted", "zero bytes", "truncated", "another chunk's bytes", "NaN"])
def test_a_damaged_output_chunk_is_named_and_repair_redoes_only_its_plane(tmp_path, resolved, kind):
    image = stack()
    reference = segment_zarr(image, tmp_path / "ref.zarr", **KW)
    target = tmp_path / "out.zarr"
    segment_zarr(image, target, **KW)
    calls = generator_calls()
    coords = (1, 1, 1)  # plane 1, bottom-right tile: holds objects (checked)
    assert reference["labels"][1, 48:96, 64:128].any()
    name = _damage(target, kind, coords)
    problem = rf"{name} chunk \(1, 1, 1\) (does not match its checksum|is unreadable \(RuntimeError\))"
    how = r"Rerun with repair=True \(--repair\), which redoes only the damaged slices"
    with pytest.raises(DamagedTargetError, match=rf"target: {target} is damaged: {problem}\. {how}"):
        verify_target(target)
    with pytest.raises(DamagedTargetError, match=rf"{problem}\. {how}"):
        segment_zarr(image, target, **KW)  # the same call: the completed target is verified before it is returned
    assert generator_calls() == calls
    with pytest.warns(UserWarning, match=rf"repairing {target}: redoing slice\(s\) \[1\]"):
        group = segment_zarr(image, target, repair=True, **KW)
    assert generator_calls() == calls + N_TILES  # the one plane, nothing else
    assert_identical(group, reference)
    assert verify_target(target) == N_SLICES * N_TILES and group.attrs[ATTR]["complete"]


def test_prompts_mode_repair_redoes_only_the_damaged_slice(tmp_path, resolved, monkeypatch):
    seen = use_fake_decoder(monkeypatch)
    image, rows = prompt_stack()
    table = write_table(tmp_path / "p.csv", rows)
    kwargs = dict(mode="prompts", prompts=table, **KW)
    reference = segment_zarr(image, tmp_path / "ref.zarr", **kwargs)
    target = tmp_path / "out.zarr"
    segment_zarr(image, target, **kwargs)
    assert len(seen) == 2 * N_SLICES
    path = chunk_file(target, "labels", (2, 1, 1))  # object 3 lies in its tile (1, 1) and others
    assert reference["labels"][2, 48:96, 64:128].max() == 3
    path.write_bytes(chunk_file(target, "labels", (0, 0, 0)).read_bytes())  # valid bytes, other values
    with pytest.raises(DamagedTargetError, match=r"labels chunk \(2, 1, 1\) does not match its checksum"):
        segment_zarr(image, target, **kwargs)
    with pytest.warns(UserWarning, match=r"redoing slice\(s\) \[2\]"):
        group = segment_zarr(image, target, repair=True, **kwargs)
    assert len(seen) == 2 * N_SLICES + 1  # object 3 only
    assert_identical(group, reference)
    assert verify_target(target) == N_SLICES * N_TILES


def test_a_slice_without_prompts_must_stay_empty(tmp_path, resolved, monkeypatch):
    """Chunks never written (no checksum) in a complete target must read as zeros."""
    use_fake_decoder(monkeypatch)
    image, rows = prompt_stack()
    table = write_table(tmp_path / "p.csv", rows[:1])
    target = tmp_path / "out.zarr"
    segment_zarr(image, target, mode="prompts", prompts=table, **KW)
    zarr.open_group(str(target))["labels"][2, 0:10, 0:10] = 7
    with pytest.raises(DamagedTargetError, match=r"labels chunk \(2, 0, 0\) does not match its checksum"):
        verify_target(target)


# --- 3. damaged flags, records and metadata ----------------------------------------------------------------------


def interrupted(image: np.ndarray, target: Path, monkeypatch, fail_at: int) -> zarr.Group:
    """Run the job until the generator's call ``fail_at`` raises; the generator is then reinstalled."""
    monkeypatch.setattr(batch_auto, "window_records", Counter(fail_at=fail_at))
    with pytest.raises(RuntimeError, match="simulated crash"):
        segment_zarr(image, target, **KW)
    monkeypatch.setattr(batch_auto, "window_records", Counter())
    return zarr.open_group(str(target), mode="r")


@pytest.mark.parametrize(
    "part",
    ["garbage done/tile chunk", "truncated done/tile chunk", "garbage work chunk", "truncated work chunk",
     "missing work record"],
)
def test_a_damaged_flag_or_record_is_named_and_repaired(tmp_path, resolved, monkeypatch, part):
    image = stack()
    reference = segment_zarr(image, tmp_path / "ref.zarr", **KW)
    target = tmp_path / "out.zarr"
    group = interrupted(image, target, monkeypatch, fail_at=3)
    tiles, chunks = group["done/tile"][...], group["done/chunk"][...]
    s, t = next((int(s), int(t)) for s, t in np.argwhere(tiles) if not chunks[s].all())
    flag, record = chunk_file(target, "done/tile", (s, t)), chunk_file(target, f"work/s{s}/t{t}", (0,))
    if part == "garbage done/tile chunk":
        flag.write_bytes(np.random.default_rng(0).bytes(40))
    elif part == "truncated done/tile chunk":
        flag.write_bytes(flag.read_bytes()[:5])
    elif part == "garbage work chunk":
        record.write_bytes(np.random.default_rng(0).bytes(len(record.read_bytes())))
    elif part == "truncated work chunk":
        record.write_bytes(record.read_bytes()[:-20])
    else:
        (target / f"work/s{s}/t{t}/zarr.json").unlink()
    named = rf"done/tile flag \({s}, {t}\) is unreadable" if "done" in part else rf"work/s{s}/t{t} (is missing|cannot)"
    with pytest.raises(DamagedTargetError, match=rf"target: {target} is damaged: .*{named}.*repair=True \(--repair\)"):
        segment_zarr(image, target, **KW)
    assert generator_calls() == 0
    with pytest.warns(UserWarning, match=rf"redoing slice\(s\) \[{s}\]"):
        group = segment_zarr(image, target, repair=True, **KW)
    assert_identical(group, reference)
    assert verify_target(target) == N_SLICES * N_TILES


@pytest.mark.parametrize("name", ["labels", "uncertainty"])
def test_missing_array_metadata_is_named_and_recreated_by_repair(tmp_path, resolved, name):
    image = stack()
    reference = segment_zarr(image, tmp_path / "ref.zarr", **KW)
    target = tmp_path / "out.zarr"
    segment_zarr(image, target, **KW)
    calls = generator_calls()
    (target / name / "zarr.json").unlink()
    for check in (verify_target, lambda t: segment_zarr(image, t, **KW)):
        with pytest.raises(DamagedTargetError, match=rf"is damaged: {name}/zarr\.json is missing\. Rerun with repair"):
            check(target)
    group = segment_zarr(image, target, repair=True, **KW)  # the chunks are intact: nothing to redo
    assert generator_calls() == calls
    assert_identical(group, reference)
    assert verify_target(target) == N_SLICES * N_TILES


@pytest.mark.parametrize("stage", ["tile", "plan", "chunk"])
def test_unreadable_flag_metadata_is_named_and_repair_redoes_that_stage(tmp_path, resolved, monkeypatch, stage):
    """``done/<stage>/zarr.json`` of an unfinished job overwritten with garbage: a DamagedTargetError naming it
    (was a raw JSONDecodeError, with or without repair); repair drops the lost flags and the job ends identical."""
    image = stack()
    reference = segment_zarr(image, tmp_path / "ref.zarr", **KW)
    target = tmp_path / "out.zarr"
    interrupted(image, target, monkeypatch, fail_at=6)
    (target / "done" / stage / "zarr.json").write_bytes(b"\x00garbage")
    for check in (verify_target, lambda t: segment_zarr(image, t, **KW)):
        with pytest.raises(DamagedTargetError, match=rf"is damaged: done/{stage}/zarr\.json is unreadable\. Rerun "
                                                     r"with repair"):
            check(target)
    assert_identical(segment_zarr(image, target, repair=True, **KW), reference)
    assert verify_target(target) == N_SLICES * N_TILES


def test_overwrite_deletes_only_what_a_job_wrote(tmp_path, resolved):
    """A user's file and array kept inside one of our targets survive ``overwrite=True`` (another job,
    and a damaged target restarted): only the group metadata and the job's own nodes are replaced."""
    image = stack()
    target = tmp_path / "out.zarr"
    segment_zarr(image, target, **KW)
    (target / "my_notes.txt").write_text("keep me")
    zarr.open_group(str(target)).create_array("my_corrected_labels", shape=(4,), dtype="uint8")[:] = [1, 2, 3, 4]
    other = {**KW, "halo": 8}  # another job
    group = segment_zarr(image, target, overwrite=True, **other)
    assert_identical(group, segment_zarr(image, tmp_path / "ref.zarr", **other))
    assert (target / "my_notes.txt").read_text() == "keep me"
    np.testing.assert_array_equal(zarr.open_array(str(target / "my_corrected_labels"))[...], [1, 2, 3, 4])
    chunk_file(target, "labels", (0, 0, 0)).unlink()  # damaged: overwrite starts the same job again
    segment_zarr(image, target, overwrite=True, **other)
    assert (target / "my_notes.txt").read_text() == "keep me"


def test_a_store_holding_other_data_is_refused_and_kept(tmp_path, resolved):
    """A target given as a zarr store object (not a folder) is checked like a folder: a store holding
    anything but our group is refused, with or without overwrite, and nothing in it is deleted."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    image = stack(1)[0]
    for overwrite in (False, True):
        store = zarr.storage.MemoryStore()
        sync(store.set("notes.txt", default_buffer_prototype().buffer.from_bytes(b"keep me")))
        with pytest.raises(InvalidInputError, match="holds data that was not written by a sum-hq batch job"):
            segment_zarr(image, store, overwrite=overwrite, **KW)
        assert sync(store.get("notes.txt", default_buffer_prototype())).to_bytes() == b"keep me"
    store = zarr.storage.MemoryStore()
    assert_identical(segment_zarr(image, store, **KW), segment_zarr(image, tmp_path / "ref.zarr", **KW))


def test_missing_group_metadata_is_refused_before_the_model_loads(tmp_path, resolved):
    image = stack(1)[0]
    target = tmp_path / "out.zarr"
    segment_zarr(image, target, **KW)
    resolved.clear()
    (target / "zarr.json").unlink()
    with pytest.raises(DamagedTargetError, match=rf"target: {target} is a damaged sum-hq batch target: its group "
                                                 r"metadata .*zarr\.json is missing.*overwrite=True \(--overwrite\)"):
        segment_zarr(image, target, **KW)
    assert resolved == []
    group = segment_zarr(image, target, overwrite=True, **KW)
    assert_identical(group, segment_zarr(image, tmp_path / "ref.zarr", **KW))


def test_a_target_written_before_checksums_opens_unverified(tmp_path, resolved, monkeypatch):
    """Format 1 (no ``checksums/``): an unfinished job resumes, a complete one is returned; verify says why not."""
    image = stack()
    reference = segment_zarr(image, tmp_path / "ref.zarr", **KW)
    target = tmp_path / "out.zarr"
    interrupted(image, target, monkeypatch, fail_at=6)
    old = zarr.open_group(str(target))
    del old["checksums"]
    old.attrs[ATTR] = {**old.attrs[ATTR], "format": 1}
    group = segment_zarr(image, target, **KW)
    assert generator_calls() == N_SLICES * N_TILES - 5 and "checksums" not in group
    assert_identical(group, reference)
    calls = generator_calls()
    assert_identical(segment_zarr(image, target, **KW), reference)
    assert generator_calls() == calls
    with pytest.raises(InvalidInputError, match=r"written before batch targets recorded checksums \(format 1\); it "
                                                r"cannot be verified"):
        verify_target(target)


def test_a_target_with_the_sampled_source_hash_of_older_versions_is_refused_as_such(tmp_path, resolved):
    """Versions before the exact data hash sampled the source: such a target may hold results for
    other data, and says so (not a confusing "differs in source")."""
    image = stack()
    target = tmp_path / "out.zarr"
    segment_zarr(image, target, **KW)
    old = zarr.open_group(str(target))
    info = old.attrs[ATTR]
    info["signature"]["source"]["data"] = "sample:0123abcd"
    old.attrs[ATTR] = info
    with pytest.raises(InvalidInputError, match=r"written by an older version of sum-hq, whose source hash sampled "
                                                r"the data.*pass overwrite=True"):
        segment_zarr(image, target, **KW)
    assert_identical(segment_zarr(image, target, overwrite=True, **KW), segment_zarr(image, tmp_path / "ref.zarr", **KW))


# --- 4. full disk ------------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (needs root and mount permission, else the test is skipped)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({mounted.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_stops_with_a_clear_error_and_the_rerun_ends_identical(tmp_path, resolved, small_disk):
    image = stack()
    reference = segment_zarr(image, tmp_path / "ref.zarr", **KW)
    filler = small_disk / "filler"
    stat = os.statvfs(small_disk)
    filler.write_bytes(bytes(stat.f_bavail * stat.f_frsize - 64 * 1024))  # 16 pages left: the job needs more
    target = small_disk / "out.zarr"
    with pytest.raises(SumError, match=rf"target: no space left on {target} \(No space left on device\); free space "
                                       r".*rerun the same command to resume \(finished work is kept\)") as full:
        segment_zarr(image, target, **KW)
    assert not isinstance(full.value, InvalidInputError)  # not the user's input: the disk
    filler.unlink()
    group = segment_zarr(image, target, **KW)
    assert_identical(group, reference)
    assert verify_target(target) == N_SLICES * N_TILES


# --- 5. fault injection ------------------------------------------------------------------------------------------


class Injected(Exception):
    """A fault injected at a write point."""


WRITE_POINTS = ("put", "write_chunk", "clear_slice", "seal_slice", "mark_done")


def count_writes(monkeypatch, fail_at: int | None) -> list[int]:
    """Count the target's write operations; raise :class:`Injected` before the one numbered ``fail_at``."""
    count = [0]
    for name in WRITE_POINTS:
        real = getattr(Target, name)

        def wrapped(self, *args, _real=real, **kwargs):
            count[0] += 1
            if count[0] == fail_at:
                raise Injected(f"fault at write {fail_at}")
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(Target, name, wrapped)
    return count


def corrupt_random_chunk(target: Path, rng: np.random.Generator) -> str | None:
    """Delete, truncate, garble or replace (another chunk's bytes, of either array) one random written output chunk."""
    files = sorted(p for name in ("labels", "uncertainty") for p in (target / name / "c").rglob("*") if p.is_file())
    if not files:
        return None
    path = files[int(rng.integers(len(files)))]
    kind = ("deleted", "truncated", "garbage", "replaced")[int(rng.integers(4))]
    data = path.read_bytes()
    if kind == "deleted":
        path.unlink()
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(rng.bytes(len(data)))
    else:
        others = [p for p in files if p.read_bytes() != data]  # of either array: also values of another dtype
        if not others:
            return None
        path.write_bytes(others[int(rng.integers(len(others)))].read_bytes())
    return f"{kind} {path.relative_to(target)}"


@pytest.mark.parametrize("mode", ["auto", "prompts"])
def test_interrupted_and_corrupted_jobs_end_identical_or_refused(tmp_path, resolved, monkeypatch, mode):
    """At random write points (seeded), interrupt the job, corrupt a random output chunk, rerun (and
    repair when refused): the result is byte-identical to an uninterrupted run, never different."""
    image, rows = (stack(), None) if mode == "auto" else prompt_stack()
    kwargs = dict(KW)
    if mode == "prompts":
        use_fake_decoder(monkeypatch)
        kwargs.update(mode="prompts", prompts=write_table(tmp_path / "p.csv", rows))
    with monkeypatch.context() as patch:
        writes = count_writes(patch, fail_at=None)
        reference = segment_zarr(image, tmp_path / "ref.zarr", **kwargs)
    total = writes[0]
    rng = np.random.default_rng(11)
    outcomes = []
    for trial, fail_at in enumerate(sorted(rng.choice(np.arange(1, total + 1), size=6, replace=False))):
        target = tmp_path / f"trial{trial}.zarr"
        with monkeypatch.context() as patch:
            count_writes(patch, fail_at=int(fail_at))
            with pytest.raises(Injected):
                segment_zarr(image, target, **kwargs)
        corrupted = corrupt_random_chunk(target, rng)
        try:
            group = segment_zarr(image, target, **kwargs)
            outcome = "resumed"
        except DamagedTargetError as refused:
            assert "Rerun with repair=True (--repair)" in str(refused)
            with pytest.warns(UserWarning, match="redoing slice"):
                group = segment_zarr(image, target, repair=True, **kwargs)
            outcome = "repaired"
        assert_identical(group, reference)
        assert verify_target(target) == N_SLICES * N_TILES
        outcomes.append((int(fail_at), corrupted, outcome))
    assert {o for *_, o in outcomes} == {"resumed", "repaired"}, outcomes  # the seed draws both kinds of end


# --- 6. command line ---------------------------------------------------------------------------------------------


def test_cli_verify_and_repair(tmp_path, resolved, capsys):
    source = tmp_path / "in.zarr"
    zarr.open_group(str(source), mode="w").create_array("raw", data=stack())
    target = tmp_path / "out.zarr"
    argv = ["batch", str(source), str(target), "--key", "raw", "--tile", "48,64", "--halo", "16", "--no-progress"]
    assert main(argv) == 0
    assert main([*argv, "--verify"]) == 0
    intact = f"verified {target}: {N_SLICES * N_TILES} chunk(s) of labels and uncertainty intact"
    assert intact in capsys.readouterr().out
    chunk_file(target, "labels", (0, 1, 0)).unlink()  # plane 0's bottom-left tile holds objects
    assert main([*argv, "--verify"]) == 2
    assert f"sum-hq batch: error: target: {target} is damaged: labels chunk (0, 1, 0)" in capsys.readouterr().err
    calls = generator_calls()
    assert main(argv) == 2 and generator_calls() == calls
    with pytest.warns(UserWarning, match=r"redoing slice\(s\) \[0\]"):
        assert main([*argv, "--repair"]) == 0
    assert generator_calls() == calls + N_TILES and main([*argv, "--verify"]) == 0


def test_cli_verify_refuses_the_options_of_a_job(tmp_path, resolved, capsys):
    """``--verify`` only checks: a ``--repair``, ``--overwrite`` or automatic option given with it was
    silently ignored (exit 0, nothing repaired)."""
    source = tmp_path / "in.zarr"
    zarr.open_group(str(source), mode="w").create_array("raw", data=stack())
    target = tmp_path / "out.zarr"
    argv = ["batch", str(source), str(target), "--key", "raw", "--tile", "48,64", "--halo", "16", "--no-progress"]
    assert main(argv) == 0
    chunk_file(target, "labels", (0, 1, 0)).unlink()
    for extra, named in ((["--repair"], "--repair"), (["--overwrite"], "--overwrite"),
                         (["--min-area", "5", "--repair"], "--repair, --min-area")):
        assert main([*argv, "--verify", *extra]) == 2
        err = capsys.readouterr().err
        assert f"sum-hq batch: error: --verify: only checks TARGET and cannot be combined with {named}; run " in err
    assert not chunk_file(target, "labels", (0, 1, 0)).exists()  # nothing was repaired or rewritten


# --- 7. interrupted repairs, what overwrite may clear, writes after an error -------------------------------------


def count_store_writes(patch, fail_at: int | None) -> list[int]:
    """Count the local zarr stores' writes (set, delete) made while a job settles damage (a repair's
    clearing); raise :class:`Injected` at the write numbered ``fail_at``."""
    count, active = [0], [False]
    for name in ("set", "set_if_not_exists", "delete", "delete_dir"):
        real = getattr(zarr.storage.LocalStore, name)

        async def wrapped(self, *args, _real=real, **kwargs):
            if active[0]:
                count[0] += 1
                if count[0] == fail_at:
                    raise Injected(f"fault at repair write {fail_at}")
            return await _real(self, *args, **kwargs)

        patch.setattr(zarr.storage.LocalStore, name, wrapped)
    real_settle = batch_job.settle

    def settle(*args, **kwargs):
        active[0] = True
        try:
            return real_settle(*args, **kwargs)
        finally:
            active[0] = False

    patch.setattr(batch_job, "settle", settle)
    return count


@pytest.mark.parametrize("damage", ["chunk deleted", "chunk and its checksum deleted"])
def test_a_repair_interrupted_at_any_write_ends_identical(tmp_path, resolved, monkeypatch, damage):
    """A repair used to zero the damaged plane's chunks and checksums (0: "never written, reads as
    zeros") before unsetting its flags and marking the target incomplete: interrupted there, the
    rerun returned the plane partly zeroed without an error. A chunk deleted with its checksum
    passed every check. Now, interrupted at each of its writes, the rerun (or a second repair)
    ends byte-identical to an uninterrupted job."""
    image = stack(2)
    reference = segment_zarr(image, tmp_path / "ref.zarr", **KW)
    damaged = tmp_path / "damaged.zarr"
    segment_zarr(image, damaged, **KW)
    assert reference["labels"][1, 48:96, 64:128].any()
    chunk_file(damaged, "labels", (1, 1, 1)).unlink()
    if damage == "chunk and its checksum deleted":
        chunk_file(damaged, "checksums/labels", (1, 1, 1)).unlink()
        problem = r"checksums/labels of chunk \(1, 1, 1\) is missing"
    else:
        problem = r"labels chunk \(1, 1, 1\) does not match its checksum"
    with pytest.raises(DamagedTargetError, match=rf"is damaged: {problem}\. Rerun with repair=True"):
        verify_target(damaged)
    with monkeypatch.context() as patch:
        writes = count_store_writes(patch, fail_at=None)
        shutil.copytree(damaged, tmp_path / "whole.zarr")
        with pytest.warns(UserWarning, match=r"redoing slice\(s\) \[1\]"):
            assert_identical(segment_zarr(image, tmp_path / "whole.zarr", repair=True, **KW), reference)
    assert writes[0] >= 1 + 2 * 2 * N_TILES  # the attributes, the plane's checksums and chunks (and its flags)
    ends = set()
    for fail_at in range(1, writes[0] + 1):
        target = tmp_path / f"at{fail_at}.zarr"
        shutil.copytree(damaged, target)
        with monkeypatch.context() as patch:
            count_store_writes(patch, fail_at=fail_at)
            with pytest.warns(UserWarning, match="redoing slice"), pytest.raises(Injected):
                segment_zarr(image, target, repair=True, **KW)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            try:
                group, end = segment_zarr(image, target, **KW), "resumed"
            except DamagedTargetError:
                group, end = segment_zarr(image, target, repair=True, **KW), "repaired again"
        assert_identical(group, reference)
        assert verify_target(target) == 2 * N_TILES, fail_at
        ends.add(end)
    assert ends == {"resumed", "repaired again"}


def _labels_folder(project: Path) -> Path:
    (project / "labels").mkdir(parents=True)
    (project / "labels" / "cell_annotations.csv").write_text("id,class\n1,nucleus\n")
    return project / "labels" / "cell_annotations.csv"


def _array(project: Path) -> Path:
    zarr.create_array(str(project), data=np.arange(12, dtype=np.uint16).reshape(3, 4))
    return project / "c" / "0" / "0"


def _corrupt_target_with_a_foreign_file(project: Path) -> Path:
    segment_zarr(stack(1)[0], project, **KW)
    (project / "zarr.json").write_text("{ not json")
    (project / "thesis.txt").write_text("keep me")
    return project / "thesis.txt"


def _foreign_group_folder(project: Path) -> Path:
    zarr.open_group(str(project), mode="w").create_array("raw", data=np.ones((4, 4), np.uint8))
    return project / "raw" / "c" / "0" / "0"


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize(
    "make, message",
    [
        (_labels_folder, r"is a non-empty folder that is not a zarr v3 group \(its zarr\.json is missing\) and not "
                         r"a sum-hq batch target; choose a new path \(nothing in it is deleted"),
        (_array, r"is a zarr array, not a group; choose a new target \(an existing array is never replaced"),
        (_corrupt_target_with_a_foreign_file,
         r"is a non-empty folder that is not a zarr v3 group \(its zarr\.json is unreadable\)"),
        (_foreign_group_folder, r"holds data that was not written by a sum-hq batch job; choose a new target "
                                r"\(another program's data is never replaced"),
    ],
    ids=["a folder with labels/ of the user", "a zarr array", "corrupt metadata and a foreign file",
         "a foreign group"],
)
def test_overwrite_never_clears_what_is_not_provably_a_target(tmp_path, resolved, make, message, overwrite):
    """``--overwrite`` deleted ``project/labels/cell_annotations.csv`` (its folder names looked like a
    damaged target), replaced a zarr array, and cleared a folder with a corrupt ``zarr.json``
    whatever else it held."""
    project = tmp_path / "project"
    kept = make(project)
    before = {p: p.read_bytes() for p in sorted(project.rglob("*")) if p.is_file()}
    resolved.clear()
    with pytest.raises(InvalidInputError, match=rf"target: {project} {message}"):
        segment_zarr(stack(1)[0], project, overwrite=overwrite, **KW)
    assert {p: p.read_bytes() for p in sorted(project.rglob("*")) if p.is_file()} == before and kept.exists()
    assert resolved == []  # refused before the model loads


def test_overwrite_clears_a_target_of_ours_with_corrupt_group_metadata(tmp_path, resolved):
    image = stack(1)[0]
    target = tmp_path / "out.zarr"
    segment_zarr(image, target, **KW)
    (target / "zarr.json").write_text("{ not json")
    with pytest.raises(DamagedTargetError, match=r"damaged sum-hq batch target: its group metadata .*zarr\.json is "
                                                 r"unreadable.*overwrite=True \(--overwrite\) to start again"):
        segment_zarr(image, target, **KW)
    assert_identical(segment_zarr(image, target, overwrite=True, **KW), segment_zarr(image, tmp_path / "r.zarr", **KW))


def test_overwrite_starts_a_damaged_target_of_the_same_job_again_as_advised(tmp_path, resolved):
    """The damaged-target error advises ``overwrite=True`` to start again; the same job's target
    used to be returned as it was, and the same error raised again."""
    image = stack()
    reference = segment_zarr(image, tmp_path / "ref.zarr", **KW)
    target = tmp_path / "out.zarr"
    segment_zarr(image, target, **KW)
    chunk_file(target, "labels", (1, 1, 1)).unlink()
    with pytest.raises(DamagedTargetError, match=r"or with overwrite=True \(--overwrite\) to start again") as advice:
        segment_zarr(image, target, **KW)
    calls = generator_calls()
    with pytest.warns(UserWarning, match=rf"starting {target} again \(overwrite=True\), it was damaged: "):
        group = segment_zarr(image, target, overwrite=True, **KW)
    assert "overwrite=True" in str(advice.value) and generator_calls() == calls + N_SLICES * N_TILES
    assert_identical(group, reference)
    assert verify_target(target) == N_SLICES * N_TILES
    calls = generator_calls()
    assert_identical(segment_zarr(image, target, overwrite=True, **KW), reference)  # intact: returned as it is
    assert generator_calls() == calls


def test_cancel_is_refused_for_process_schedulers(tmp_path, resolved):
    import threading as _threading

    with pytest.raises(InvalidInputError, match="cancel: only the threads and synchronous dask schedulers"):
        segment_zarr(stack(), tmp_path / "out.zarr", **{**KW, "scheduler": "processes"}, cancel=_threading.Event())
    assert resolved == []


def test_no_task_writes_the_target_after_an_error_was_raised(tmp_path, resolved, monkeypatch):
    """With the threads scheduler dask returned at a task's first error while the other tile
    tasks kept writing records, flags and chunks: a rerun with overwrite or repair could clear
    the target and then receive the old job's writes. Now the job waits for its running tasks
    (stopped at their next cancel check) before it raises and releases the lock."""
    import dask

    slow_started, returned, slow_ended = threading.Event(), threading.Event(), threading.Event()
    late: list[str] = []
    tile = threading.local()  # the tile a worker thread is segmenting

    def records(window, model, device, options, cancel=None):
        if tile.index == 0:
            assert slow_started.wait(60), "the slow tile never started"
            raise RuntimeError("a tile failed")
        if tile.index == 3:
            slow_started.set()
            while not returned.is_set() and not (cancel is not None and cancel.is_set()):
                returned.wait(0.01)  # a slow tile: works until the job stops it (or has returned)
        return []

    real_run_tile = batch_auto.run_tile

    def run_tile(target, volume, grid, s, t, *args):
        tile.index = t
        try:
            real_run_tile(target, volume, grid, s, t, *args)
        finally:
            if t == 3:
                slow_ended.set()

    monkeypatch.setattr(batch_auto, "run_tile", run_tile)
    monkeypatch.setattr(batch_auto, "window_records", records)
    for name in ("put", "write_chunk", "mark_done"):
        real = getattr(Target, name)

        def wrapped(self, *args, _real=real, _name=name, **kwargs):
            if returned.is_set():
                late.append(_name)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(Target, name, wrapped)
    target = tmp_path / "out.zarr"
    with dask.config.set(num_workers=N_TILES), pytest.raises(RuntimeError, match="a tile failed"):
        segment_zarr(stack(1)[0], target, **{**KW, "scheduler": "threads"})
    returned.set()
    assert slow_ended.wait(60), "the slow tile never ended"
    assert late == [] and not (target / ".sum-hq-batch.lock").exists()


def test_a_target_interrupted_while_starting_is_ours_and_overwrite_starts_it_again(tmp_path, resolved):
    """A job killed between creating its arrays and writing its attributes leaves a group without
    ``sum_hq_batch``: its nodes prove it ours, so ``overwrite`` may clear it (and nothing else may)."""
    image = stack(1)[0]
    target = tmp_path / "out.zarr"
    segment_zarr(image, target, **KW)
    group = zarr.open_group(str(target))
    group.attrs.clear()
    with pytest.raises(DamagedTargetError, match=r"damaged sum-hq batch target: its group metadata .* is without the "
                                                 r"job's attributes .*overwrite=True \(--overwrite\) to start again"):
        segment_zarr(image, target, **KW)
    assert_identical(segment_zarr(image, target, overwrite=True, **KW), segment_zarr(image, tmp_path / "r.zarr", **KW))


def test_a_format_2_target_keeps_its_rule_for_chunks_never_written(tmp_path, resolved, monkeypatch):
    """Format 3 records the checksum of zeros for the chunks of slices without prompts; a complete
    format 2 target has 0 there (never written, must read as zeros) and still verifies."""
    use_fake_decoder(monkeypatch)
    image, rows = prompt_stack()
    kwargs = dict(mode="prompts", prompts=write_table(tmp_path / "p.csv", rows[:1]), **KW)
    target = tmp_path / "out.zarr"
    segment_zarr(image, target, **kwargs)
    group = zarr.open_group(str(target))
    assert group.attrs[ATTR]["format"] == 3 and np.count_nonzero(group["checksums/labels"][...]) == N_SLICES * N_TILES
    for name in ("labels", "uncertainty"):
        group[f"checksums/{name}"][1:] = 0  # slices 1 and 2 hold no prompt: as format 2 left them
    group.attrs[ATTR] = {**group.attrs[ATTR], "format": 2}
    assert verify_target(target) == N_SLICES * N_TILES
    segment_zarr(image, target, **kwargs)  # returned as it is
    group["labels"][2, 0:10, 0:10] = 7
    with pytest.raises(DamagedTargetError, match=r"labels chunk \(2, 0, 0\) does not match its checksum"):
        verify_target(target)
