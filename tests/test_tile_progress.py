"""Issue 14 item 6: a batch / automatic-widget job's progress moves within an AMG tile (per decoder batch)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import zarr
import zarr.storage
from sum_core.auto_options import AutoOptions
from sum_core.batch import segment_zarr
from sum_core.errors import InvalidInputError

# 4 x 4 = 16 clicks, 5 per decoder batch: 4 batches in the one tile of a small image
OPTIONS = AutoOptions(points_per_side=4, points_per_batch=5, pred_iou_thresh=0, stability_thresh=0)


def image() -> np.ndarray:
    return (np.random.default_rng(0).random((48, 64)) * 255).astype(np.uint8)


def run(target, checkpoint, **kwargs) -> zarr.Group:
    return segment_zarr(image(), target, mode="amg", model=checkpoint, options=OPTIONS, progress=False, **kwargs)


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_progress_moves_per_decoder_batch_of_one_tile_and_labels_are_unchanged(small_hq_checkpoint, scheduler):
    seen = []
    group = run(zarr.storage.MemoryStore(), small_hq_checkpoint, scheduler=scheduler,
                on_progress=lambda done, total: seen.append((done, total)))  # fmt: skip
    dones = [done for done, _ in seen]
    assert {total for _, total in seen} == {3}  # 1 tile + 1 plan + 1 chunk task
    assert dones == sorted(dones) and dones[0] == 0 and dones[-1] == 3  # never decreasing, ending complete
    within_tile = sorted({d for d in dones if 0 < d <= 1})
    assert within_tile == [0.25, 0.5, 0.75, 1.0]  # each of the 4 batches moved it, before the tile task ended
    plain = run(zarr.storage.MemoryStore(), small_hq_checkpoint, scheduler=scheduler)
    np.testing.assert_array_equal(np.asarray(group["labels"]), np.asarray(plain["labels"]))
    np.testing.assert_array_equal(np.asarray(group["uncertainty"]), np.asarray(plain["uncertainty"]))


def test_on_progress_must_be_callable_before_any_work(small_hq_checkpoint, tmp_path):
    with pytest.raises(InvalidInputError, match="on_progress must be a callable"):
        run(tmp_path / "out.zarr", small_hq_checkpoint, on_progress=3)
    assert not (tmp_path / "out.zarr").exists()  # refused before the target was made


def test_automatic_widget_relay_moves_within_the_one_tile(small_hq_checkpoint):
    from napari_sum_hq._batch_jobs import auto_job
    from napari_sum_hq._jobs import CancelToken
    from napari_sum_hq._session import ModelChoice

    emitted = []
    relay = SimpleNamespace(progressed=SimpleNamespace(emit=lambda done, total: emitted.append((done, total))))
    result = auto_job(image(), None, ModelChoice(small_hq_checkpoint), CancelToken(), relay, "amg", OPTIONS)
    dones = [done for done, _ in emitted]
    (total,) = {total for _, total in emitted}  # one scale for the whole job
    assert dones == sorted(dones) and dones[-1] == total
    tile_task = total // 3  # the tile is 1 of the job's 3 tasks
    assert len({d for d in dones if 0 < d <= tile_task}) >= 4  # the bar moved 4 times inside the tile
    plain = segment_zarr(image(), zarr.storage.MemoryStore(), mode="amg", model=small_hq_checkpoint,
                         options=OPTIONS, progress=False, scheduler="sync")  # fmt: skip
    np.testing.assert_array_equal(result.labels, np.asarray(plain["labels"]))
