"""Reliability of batch jobs: a target never overlaps its source, and one writer per target.

Issue 11: ``sum-hq batch X.zarr X.zarr --overwrite`` deleted the source and wrote an all-zero
result (exit 0), and two jobs on one target died with a raw ``KeyError``. A target that is,
contains or lies inside the source is refused before anything is created, deleted or loaded
(with or without ``overwrite``); a job holds a lock file inside its target while it runs, a second
writer is refused naming the holder, and a lock left by a killed job is taken over (so a job
killed with SIGKILL still resumes).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
import zarr.storage

from sum_core.auto_options import AutoOptions
from sum_core.batch import auto as batch_auto
from sum_core.batch import model_spec, segment_zarr
from sum_core.batch.lock import LOCK_NAME
from sum_core.cli import main
from sum_core.errors import InvalidInputError
from test_batch import Counter, blobs
from test_tiled_predictor import tiny_model

CAMERA = (1040, 1392)  # a real camera frame (uint16)
TILING = dict(tile_shape=(256, 384), halo=32)  # 1040 x 1392: 5 x 4 tiles


def camera_blobs(seed: int) -> np.ndarray:
    """A uint16 camera frame of discs (enough of them that the fixed normalization leaves the noise dark)."""
    return blobs(CAMERA, seed=seed, n=300, radius=12)


@pytest.fixture
def resolved(monkeypatch) -> list[str]:
    """Model resolutions of the jobs (none may happen before a refusal); the fake generator is installed."""
    model, calls = tiny_model(), []

    def resolve(name, device):
        calls.append(str(name))
        return model

    monkeypatch.setattr(model_spec, "resolve_model", resolve)
    monkeypatch.setattr(batch_auto, "window_records", Counter())
    return calls


def camera_zarr(path: Path) -> np.ndarray:
    """A zarr v3 group at ``path`` with one uint16 camera frame ``raw`` (an object far in the corner)."""
    image = camera_blobs(0)
    image[1000:1030, 1350:1380] = 3000
    zarr.open_group(str(path), mode="w").create_array("raw", data=image, chunks=(520, 696))
    return image


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_refused(source, target, resolved, match: str, **kwargs) -> None:
    """The job is refused with a message matching ``match``, before any model load or segmentation."""
    with pytest.raises(InvalidInputError, match=match):
        segment_zarr(source, target, progress=False, **kwargs)
    assert resolved == [] and batch_auto.window_records.calls == 0


# --- 1. a target that is, contains or lies inside the source ---------------------------------------------------


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("spelling", ["same", "relative", "trailing slash", "dot-dot", "symlink", "store"])
def test_target_that_is_the_source_is_refused_and_the_source_kept(tmp_path, monkeypatch, resolved, spelling,
                                                                  overwrite):
    source = tmp_path / "x.zarr"
    image = camera_zarr(source)
    before = snapshot(tmp_path)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    target = {
        "same": str(source),
        "relative": "../x.zarr",
        "trailing slash": f"{source}/",
        "dot-dot": tmp_path / "sub" / ".." / "x.zarr",
        "symlink": tmp_path / "link.zarr",
        "store": zarr.storage.LocalStore(str(source)),
    }[spelling]
    if spelling == "symlink":
        target.symlink_to(source, target_is_directory=True)
    assert_refused(str(source), target, resolved, rf"target: .* is the source {source}\b.*", key="raw",
                   overwrite=overwrite)
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("link.zarr")} == before
    np.testing.assert_array_equal(zarr.open_group(str(source), mode="r")["raw"][...], image)


@pytest.mark.parametrize("overwrite", [False, True])
def test_target_that_contains_the_source_is_refused(tmp_path, resolved, overwrite):
    """An array folder inside the target, a user-opened zarr array there, a TIFF kept in the target folder."""
    out = tmp_path / "out.zarr"
    image = camera_zarr(out)
    zarr.open_group(str(out)).attrs["note"] = "an earlier result"  # a zarr group: overwrite would clear it
    tifffile.imwrite(out / "img.tif", image)
    before = snapshot(tmp_path)
    dotted = tmp_path / "." / "out.zarr" / ".." / "out.zarr" / "img.tif"
    for source, message in (
        (out / "raw", f"contains the source {out}/raw;"),
        (zarr.open_group(str(out), mode="r")["raw"], f"is the source {out};"),  # the array's store
        (out / "img.tif", f"contains the source {out}/img.tif;"),
        (dotted, f"contains the source {dotted} ({out}/img.tif);"),
    ):
        assert_refused(source, out, resolved, re.escape(f"target: {out} {message}"), overwrite=overwrite)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("overwrite", [False, True])
def test_target_inside_the_source_is_refused(tmp_path, resolved, overwrite):
    """A result group inside the source's zarr group (given as a path or a user-opened group) or its array."""
    source = tmp_path / "img.zarr"
    camera_zarr(source)
    before = snapshot(tmp_path)
    user_group = zarr.open_group(str(source), mode="r")
    for given, key in ((source, "raw"), (user_group, "raw"), (user_group["raw"], None)):
        for target in (source / "result", source / "raw" / "result", f"{source}/./result/"):
            assert_refused(given, target, resolved, rf"target: .*result/? lies inside the source {source}\b",
                           key=key, overwrite=overwrite)
    assert snapshot(tmp_path) == before


def test_target_at_or_inside_a_tiff_source_is_refused(tmp_path, resolved):
    image = camera_blobs(1)
    tifffile.imwrite(tmp_path / "img.tif", image)
    before = snapshot(tmp_path)
    assert_refused(tmp_path / "img.tif", tmp_path / "img.tif", resolved, "is the source", overwrite=True)
    assert_refused(tmp_path / "img.tif", tmp_path / "img.tif" / "out.zarr", resolved, "lies inside the source")
    assert snapshot(tmp_path) == before


def test_a_sibling_target_with_a_similar_name_is_accepted(tmp_path, resolved):
    """``x.zarr`` and ``x.zarr2`` do not overlap (a path prefix is not a parent folder)."""
    camera_zarr(tmp_path / "x.zarr")
    group = segment_zarr(tmp_path / "x.zarr", tmp_path / "x.zarr2", key="raw", progress=False, **TILING)
    assert group.attrs["sum_hq_batch"]["complete"] and group["labels"][1000:1030, 1350:1380].min() > 0


def test_cli_target_equal_to_source_exits_non_zero_and_keeps_the_source(tmp_path, resolved, capsys):
    source = tmp_path / "x.zarr"
    image = camera_zarr(source)
    before = snapshot(tmp_path)
    assert main(["batch", str(source), str(source), "--overwrite", "--no-progress"]) == 2
    assert f"sum-hq batch: error: target: {source} is the source {source}" in capsys.readouterr().err
    assert snapshot(tmp_path) == before and resolved == []
    np.testing.assert_array_equal(zarr.open_group(str(source), mode="r")["raw"][...], image)


# --- 2. one writer per target ------------------------------------------------------------------------------------


def test_a_second_writer_is_refused_while_a_job_runs_and_the_lock_is_released(tmp_path, resolved, monkeypatch):
    """A second job on a running target (the same job, or another one with overwrite) is refused by name."""
    image = camera_blobs(2)
    target, lock = tmp_path / "out.zarr", tmp_path / "out.zarr" / LOCK_NAME
    kwargs = dict(progress=False, scheduler="synchronous", **TILING)
    refusals, seen = [], []
    counter = Counter()

    def second_writer(window, model, device, options, cancel=None):
        if counter.calls == 0:
            seen.append(lock.is_file())
            for extra in ({}, {"overwrite": True, "options": AutoOptions(min_area=5)}):
                with pytest.raises(InvalidInputError) as refused:
                    segment_zarr(image, target, **kwargs, **extra)
                refusals.append(str(refused.value))
        return counter(window, model, device, options, cancel)

    monkeypatch.setattr(batch_auto, "window_records", second_writer)
    group = segment_zarr(image, target, **kwargs)
    assert seen == [True] and len(refusals) == 2
    for message in refusals:
        holder = f"(pid {os.getpid()} on {socket.gethostname()})"
        assert f"target: {target} is being written by another job {holder}" in message
        assert f"delete {lock}" in message
    assert not lock.exists() and counter.calls == 20  # the first job ran whole
    monkeypatch.setattr(batch_auto, "window_records", reference_counter := Counter())
    reference = segment_zarr(image, tmp_path / "ref.zarr", **kwargs)
    assert reference_counter.calls == 20
    np.testing.assert_array_equal(group["labels"][...], reference["labels"][...])


@pytest.mark.parametrize("failure", [RuntimeError("simulated crash"), KeyboardInterrupt()])
def test_the_lock_is_released_on_error_and_interrupt(tmp_path, resolved, monkeypatch, failure):
    image = camera_blobs(3)
    target, lock = tmp_path / "out.zarr", tmp_path / "out.zarr" / LOCK_NAME
    kwargs = dict(progress=False, scheduler="synchronous", **TILING)
    seen = []

    def failing(window, model, device, options, cancel=None):
        seen.append(lock.is_file())
        raise failure

    monkeypatch.setattr(batch_auto, "window_records", failing)
    with pytest.raises(type(failure)):
        segment_zarr(image, target, **kwargs)
    assert seen == [True] and not lock.exists()
    monkeypatch.setattr(batch_auto, "window_records", counter := Counter())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no stale-lock warning: the lock was released
        group = segment_zarr(image, target, **kwargs)
    assert counter.calls == 20 and group.attrs["sum_hq_batch"]["complete"] and not lock.exists()


def test_a_lock_from_another_host_is_refused_with_how_to_clear_it(tmp_path, resolved):
    image = blobs((96, 128), seed=4)
    target = tmp_path / "out.zarr"
    target.mkdir()
    (target / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "node-17.cluster", "started": None}))
    with pytest.raises(InvalidInputError, match=r"pid 1 on node-17\.cluster.*no job is running there.*delete"):
        segment_zarr(image, target, progress=False)
    assert batch_auto.window_records.calls == 0 and (target / LOCK_NAME).exists()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process start times are read from /proc")
def test_a_lock_whose_pid_was_reused_is_stale(tmp_path, resolved):
    """A lock naming a live pid that started after the lock (pid reuse) is taken over."""
    image = blobs((96, 128), seed=5)
    target = tmp_path / "out.zarr"
    target.mkdir()
    (target / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": 1}))
    with pytest.warns(UserWarning, match=rf"taking over the stale lock .*pid {os.getpid()}"):
        group = segment_zarr(image, target, progress=False)
    assert group.attrs["sum_hq_batch"]["complete"] and not (target / LOCK_NAME).exists()


KILLED_JOB = """
    import os, signal, sys, time
    from pathlib import Path
    from sum_core.batch import auto as batch_auto, model_spec, segment_zarr
    from test_batch import Counter, blobs
    from test_tiled_predictor import tiny_model

    model = tiny_model()
    model_spec.resolve_model = lambda name, device: model
    counter = Counter()

    def stalls(window, model, device, options, cancel=None):
        if counter.calls == 5:  # 5 tiles done: wait to be killed
            Path(sys.argv[2]).write_text("running")
            time.sleep(120)
        return counter(window, model, device, options, cancel)

    batch_auto.window_records = stalls
    segment_zarr(blobs((1040, 1392), seed=6, n=300, radius=12), sys.argv[1], tile_shape=(256, 384), halo=32,
                 progress=False, scheduler="synchronous")
"""


def test_a_job_killed_with_sigkill_holds_the_target_until_dead_then_resumes(tmp_path, resolved, monkeypatch):
    """Another process's running job refuses this one by pid; SIGKILLed, its lock is taken over and the job resumes."""
    target, lock, running = tmp_path / "out.zarr", tmp_path / "out.zarr" / LOCK_NAME, tmp_path / "running"
    tests = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")])}
    job = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED_JOB), str(target), str(running)], env=env)
    try:
        deadline = time.monotonic() + 300
        while not running.exists():
            assert job.poll() is None and time.monotonic() < deadline, "the job did not start"
            time.sleep(0.1)
        image = camera_blobs(6)
        kwargs = dict(progress=False, scheduler="synchronous", **TILING)
        with pytest.raises(InvalidInputError, match=rf"being written by another job \(pid {job.pid} on "):
            segment_zarr(image, target, **kwargs)
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait()
    assert lock.is_file()  # left behind by the killed job
    monkeypatch.setattr(batch_auto, "window_records", resumed := Counter())
    with pytest.warns(UserWarning, match=rf"taking over the stale lock {lock} of pid {job.pid}"):
        group = segment_zarr(image, target, **kwargs)
    assert resumed.calls == 20 - 5 and not lock.exists()
    monkeypatch.setattr(batch_auto, "window_records", Counter())
    reference = segment_zarr(image, tmp_path / "ref.zarr", **kwargs)
    for name in ("labels", "uncertainty"):
        np.testing.assert_array_equal(group[name][...], reference[name][...])


def test_a_malformed_models_file_does_not_break_a_job_with_a_local_checkpoint(tmp_path, monkeypatch):
    """SUM_HQ_MODELS is only about registry names: a job given a checkpoint path still runs."""
    import torch

    bad = tmp_path / "models.yaml"
    bad.write_text("- {name: [not, a, string]}\n")
    monkeypatch.setenv("SUM_HQ_MODELS", str(bad))
    monkeypatch.setattr(batch_auto, "window_records", Counter())
    path = tmp_path / "local.pth"
    torch.save(tiny_model().state_dict(), path)
    group = segment_zarr(blobs((64, 80), seed=1), tmp_path / "out.zarr", model=path, device="cpu", progress=False)
    assert group.attrs["sum_hq_batch"]["signature"]["model"].startswith("weights:")
