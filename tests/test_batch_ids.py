"""Sequential instance ids of segment_zarr's automatic modes: 1..N over a stack, each plane numbered as on its own.

Plane ``s`` holds ``offset_s + 1 .. offset_s + counts[s]`` (``offset_s`` = the earlier planes' counts): ids a
regionprops / napari / CellProfiler user can take as they are. Targets of older versions (``id_stride``:
plane ``s`` from ``s * id_stride + 1``) still resume with their rule.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import zarr
from skimage.measure import regionprops

from sum_core.batch import auto as batch_auto
from sum_core.batch import segment_zarr, verify_target
from sum_core.batch.writer import ATTR, Target
from sum_core.errors import Cancelled, DamagedTargetError
from test_batch import blobs, fake_records, use_model

N = 8
KW = dict(tile_shape=(48, 64), halo=16, progress=False)  # 2 x 2 tiles per plane


@pytest.fixture
def stack() -> np.ndarray:
    return np.stack([blobs((96, 120), seed=s, n=3 + s) for s in range(N)])  # 3..10 objects per plane


@pytest.fixture
def fake(monkeypatch):
    from test_tiled_predictor import tiny_model

    use_model(monkeypatch, tiny_model())
    monkeypatch.setattr(batch_auto, "window_records", fake_records)


def offsets(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)[:-1]])


def test_stack_ids_are_1_to_n_and_each_plane_numbered_as_alone(tmp_path, stack, fake):
    group = segment_zarr(stack, tmp_path / "out.zarr", **KW)
    labels = group["labels"][...]
    ids = np.unique(labels)[1:]
    counts = group["counts"][...]
    assert np.array_equal(ids, np.arange(1, len(ids) + 1)) and counts.sum() == len(ids) > 3 * N
    assert labels.max() < 100  # not slice * 2**32 // N + k (3,758,096,385 for the last plane before)
    for s, offset in enumerate(offsets(counts)):
        alone = segment_zarr(stack[s], tmp_path / f"plane{s}.zarr", **KW)["labels"][...]  # ids 1..n_s
        np.testing.assert_array_equal(np.where(labels[s] > 0, labels[s] - offset, 0), alone)
        props = regionprops(labels[s])  # allocates per id: needs compact ids
        assert [p.label for p in props] == list(range(offset + 1, offset + counts[s] + 1))


def cancelling(after: int, event: threading.Event):
    calls = []

    def window_records(window, model, device, options, cancel=None):
        calls.append(1)
        if len(calls) == after:
            event.set()
        return fake_records(window, model, device, options)

    return window_records


@pytest.mark.parametrize("after", [3, 17])  # inside the first plane; in the fifth (earlier planes painted)
def test_resume_after_cancel_is_bit_identical(tmp_path, stack, fake, monkeypatch, after):
    reference = segment_zarr(stack, tmp_path / "ref.zarr", **KW)
    event = threading.Event()
    monkeypatch.setattr(batch_auto, "window_records", cancelling(after, event))
    with pytest.raises(Cancelled):
        segment_zarr(stack, tmp_path / "out.zarr", cancel=event, **KW)
    monkeypatch.setattr(batch_auto, "window_records", fake_records)
    group = segment_zarr(stack, tmp_path / "out.zarr", **KW)
    for name in ("labels", "uncertainty", "counts"):
        np.testing.assert_array_equal(group[name][...], reference[name][...])
    assert verify_target(tmp_path / "out.zarr") == N * 4


def test_a_lost_count_is_damage_that_repair_redoes(tmp_path, stack, fake):
    reference = segment_zarr(stack, tmp_path / "ref.zarr", **KW)
    target = tmp_path / "out.zarr"
    segment_zarr(stack, target, **KW)
    (target / "counts" / "c" / "2").unlink()
    with pytest.raises(DamagedTargetError, match=r"counts of slice 2 is missing or unreadable.*repair=True"):
        verify_target(target)
    with pytest.warns(UserWarning, match=r"redoing slice\(s\) \[2\]"):
        group = segment_zarr(stack, target, repair=True, **KW)
    for name in ("labels", "counts"):
        np.testing.assert_array_equal(group[name][...], reference[name][...])


def as_older_version(target, n_slices: int) -> int:
    """Turn an interrupted target into what versions with ``id_stride`` left: plane ``s``'s planned and
    painted ids moved to ``s * stride + k``, no ``counts``; returns the stride."""
    group = zarr.open_group(str(target))
    out = Target(group)
    stride = 2**32 // n_slices
    planned = out.flags("plan")
    for s in range(n_slices):
        if planned[s] and f"work/s{s}/plan" in group:
            plan = dict(out.get(f"s{s}/plan"))
            plan["label"] = plan["label"] + s * stride
            out.put(f"s{s}/plan", plan)
    offset = offsets(group["counts"][...].clip(0))
    for coords in zip(*np.nonzero(group["checksums/labels"][...])):
        region = out.chunk_selection(tuple(int(c) for c in coords))
        s = region[0].start
        labels = group["labels"][region].astype(np.int64)
        moved = np.where(labels > 0, labels - offset[s] + s * stride, 0).astype(np.uint32)
        out.write_chunk(region, moved, group["uncertainty"][region])
    info = {k: v for k, v in group.attrs[ATTR].items() if k != "ids"}
    group.attrs[ATTR] = {**info, "id_stride": stride}
    del group["counts"]
    return stride


def test_a_target_of_an_older_version_resumes_with_its_id_stride(tmp_path, stack, fake, monkeypatch):
    reference = segment_zarr(stack, tmp_path / "ref.zarr", **KW)
    target = tmp_path / "out.zarr"
    event = threading.Event()
    monkeypatch.setattr(batch_auto, "window_records", cancelling(17, event))
    with pytest.raises(Cancelled):
        segment_zarr(stack, target, cancel=event, **KW)
    stride = as_older_version(target, N)
    monkeypatch.setattr(batch_auto, "window_records", fake_records)
    group = segment_zarr(stack, target, **KW)
    assert "counts" not in group and group.attrs[ATTR]["id_stride"] == stride
    expected = reference["labels"][...].astype(np.int64)
    for s, offset in enumerate(offsets(reference["counts"][...])):
        expected[s] = np.where(expected[s] > 0, expected[s] - offset + s * stride, 0)
    np.testing.assert_array_equal(group["labels"][...], expected)
    assert verify_target(target) == N * 4
