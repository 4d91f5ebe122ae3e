"""sum_core.batch.segment_zarr on a dask.distributed cluster: same output and resume as local dask."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zarr

from sum_core.auto_options import AutoOptions
from sum_core.batch import auto as batch_auto
from sum_core.batch import segment_zarr
from test_batch import Counter, blobs, tiny_model, use_model

distributed = pytest.importorskip("distributed")

TILING = dict(tile_shape=(64, 96), halo=24)  # 200 x 260 plane: 4 x 3 tiles


@pytest.fixture(autouse=True)
def resolved_model(monkeypatch):
    """Jobs resolve their model once (for its input size): the in-process tests use a tiny random one."""
    use_model(monkeypatch, tiny_model())


@pytest.fixture(scope="module")
def client():
    """Two in-process workers: they see the test's monkeypatched fake generator."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        yield c


def wait_until_idle(client, timeout: float = 20.0) -> None:
    """Wait until no worker holds a task (cancelled tasks of a failed run finish in the background)."""
    deadline = time.monotonic() + timeout
    while any(w.state.tasks for w in client.cluster.workers.values()):
        assert time.monotonic() < deadline, "cluster did not become idle"
        time.sleep(0.05)


def run_both(tmp_path, source, monkeypatch, **kwargs):
    """The same job with the default threaded scheduler and with the client; generator call counts."""
    local, remote = Counter(), Counter()
    monkeypatch.setattr(batch_auto, "window_records", local)
    reference = segment_zarr(source, tmp_path / "threads.zarr", **{**kwargs, "scheduler": None, "progress": False})
    monkeypatch.setattr(batch_auto, "window_records", remote)
    group = segment_zarr(source, tmp_path / "cluster.zarr", **kwargs)
    return reference, group, local.calls, remote.calls


def assert_same_output(group, reference) -> None:
    """Bit-identical output: the jobs ran the same fake generator in one process."""
    for name in ("labels", "uncertainty"):
        np.testing.assert_array_equal(group[name][...], reference[name][...])
    assert group.attrs["sum_hq_batch"] == reference.attrs["sum_hq_batch"]  # same job, ids and completion


# A real model run in other processes sums its float32 reductions in another order (dask's worker processes run
# torch with one thread, the threaded reference with all cores), so the float32 maps agree to a few float32 ulps
# only. Rounded to the float16 ``uncertainty`` array, a value then lands on the same float16 or, when it sits by a
# rounding boundary, on its neighbour: one float16 ulp, <= 2**-10 of the value (10 fraction bits). Near zero the
# float32 maps' own absolute error dominates (the disagreement map subtracts two sigmoids of order 1, each rounded
# to 2**-24 in float32): ATOL allows 16 of those, still ~1e-6, while any real change of an uncertainty map (a
# different mask, prompt or model) moves values by far more than 1e-3.
FLOAT16_ULP_RTOL = 2.0**-10
FLOAT32_ABS_ATOL = 16 * 2.0**-24


def assert_same_output_across_processes(group, reference) -> None:
    """Labels (ids and pixels) exactly; uncertainty within one float16 ulp (or float32 rounding near 0)."""
    np.testing.assert_array_equal(group["labels"][...], reference["labels"][...])
    actual, expected = group["uncertainty"][...], reference["uncertainty"][...]
    assert actual.dtype == expected.dtype == np.float16
    np.testing.assert_allclose(actual.astype(np.float32), expected.astype(np.float32),
                               rtol=FLOAT16_ULP_RTOL, atol=FLOAT32_ABS_ATOL)
    assert group.attrs["sum_hq_batch"] == reference.attrs["sum_hq_batch"]  # same job, ids and completion


def test_2d_plane_on_cluster_equals_threads_and_is_not_redone(tmp_path, client, monkeypatch):
    image = blobs((200, 260), seed=0)
    reference, group, local_calls, remote_calls = run_both(
        tmp_path, image, monkeypatch, scheduler=client, progress=False, **TILING)
    assert local_calls == remote_calls == 12  # every tile segmented once, on the workers
    labels = group["labels"][...]
    assert labels.max() > 0 and "work" not in group
    assert_same_output(group, reference)
    again = Counter()
    monkeypatch.setattr(batch_auto, "window_records", again)
    segment_zarr(image, tmp_path / "cluster.zarr", scheduler=client, progress=False, **TILING)
    assert again.calls == 0  # a completed job is not recomputed


def test_3d_stack_on_cluster_equals_threads_without_a_dead_progress_bar(tmp_path, client, monkeypatch, capsys):
    stack = np.stack([blobs((96, 120), seed=s, n=6) for s in range(3)])
    root = zarr.open_group(str(tmp_path / "src.zarr"), mode="w")
    root.create_array("raw", data=stack, chunks=(1, 48, 60), dimension_names=("z", "y", "x"))
    kwargs = dict(key="raw", axis="z", tile_shape=(48, 64), halo=16, progress=True)  # 2 x 2 tiles per plane
    monkeypatch.setattr(batch_auto, "window_records", Counter())
    reference = segment_zarr(tmp_path / "src.zarr", tmp_path / "threads.zarr", **kwargs)
    assert "27/27" in capsys.readouterr().err  # local bar: 3 planes x (4 tiles + 1 plan + 4 chunks)
    on_cluster = Counter()
    monkeypatch.setattr(batch_auto, "window_records", on_cluster)
    group = segment_zarr(tmp_path / "src.zarr", tmp_path / "cluster.zarr", scheduler=client, **kwargs)
    assert "sum-hq batch" not in capsys.readouterr().err  # local callbacks never see a client's tasks
    assert on_cluster.calls == 3 * 4
    labels = group["labels"][...]
    ids = np.unique(labels)[1:]  # the documented id rule: 1..N over the volume
    assert len(ids) and np.array_equal(ids, np.arange(1, len(ids) + 1))
    assert group["counts"][...].sum() == len(ids)
    assert_same_output(group, reference)


def test_resume_on_cluster_after_crash_redoes_only_unfinished_tiles(tmp_path, client, monkeypatch):
    image = blobs((200, 260), seed=1)
    kwargs = dict(scheduler=client, progress=False, **TILING)
    monkeypatch.setattr(batch_auto, "window_records", Counter(fail_at=6))
    with pytest.raises(RuntimeError, match="simulated crash"):
        segment_zarr(image, tmp_path / "out.zarr", **kwargs)
    wait_until_idle(client)
    done = int(zarr.open_group(str(tmp_path / "out.zarr"))["done/tile"][...].sum())
    assert 5 <= done < 12  # the calls before the crash completed their tiles, the crashed one did not
    resumed = Counter()
    monkeypatch.setattr(batch_auto, "window_records", resumed)
    group = segment_zarr(image, tmp_path / "out.zarr", **kwargs)
    assert resumed.calls == 12 - done
    clean = Counter()
    monkeypatch.setattr(batch_auto, "window_records", clean)
    reference = segment_zarr(image, tmp_path / "ref.zarr", progress=False, **TILING)
    assert_same_output(group, reference)


@pytest.mark.slow
def test_worker_processes_load_the_checkpoint_themselves(tmp_path, small_hq_checkpoint, monkeypatch):
    """Real random-weight model given by path: each worker process loads it; same output as threads."""
    image = blobs((128, 160), seed=5)  # one tile per plane: these random weights find nothing in smaller tiles
    stack = np.stack([image, image])
    monkeypatch.undo()  # the real checkpoint, loaded by each process
    kwargs = dict(model=small_hq_checkpoint, device="cpu", progress=False,
                  options=AutoOptions(points_per_side=4, pred_iou_thresh=0.0, stability_thresh=0.0))
    reference = segment_zarr(stack, tmp_path / "threads.zarr", **kwargs)
    assert reference["labels"][...].max() > 0
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        group = segment_zarr(stack, tmp_path / "cluster.zarr", scheduler=c, **kwargs)
        assert_same_output_across_processes(group, reference)
