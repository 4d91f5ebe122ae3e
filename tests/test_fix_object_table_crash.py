"""The per-object table of an AIS batch target survives a crash while it is rewritten (repair).

Review finding: ``write_table`` deleted ``objects/`` before writing the new table, so a crash in
between left a target whose every rerun failed with a bare ``KeyError`` in ``slice_rows``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from sum_core.batch import ais_stages, object_table, segment_zarr
from sum_core.batch import objects as objects_mod
from sum_core.errors import DamagedTargetError, InvalidInputError
from test_ais_auto import ais_model  # noqa: F401
from test_batch_ais import KW, exact, random_discs  # noqa: F401


@pytest.fixture
def job(tmp_path, exact, ais_model):  # noqa: F811
    """A complete 2-slice AIS target, its table, the rows of slice 0, and the job's arguments."""
    stack = np.stack([random_discs((200, 200), 12, seed=s) for s in range(2)])
    kwargs = dict(mode="ais", model=ais_model, **KW)
    group = segment_zarr(stack, tmp_path / "out.zarr", **kwargs)
    table = object_table(group)
    return stack, tmp_path / "out.zarr", kwargs, table, int((table["slice"] == 0).sum())


def _assert_table(group: zarr.Group, expected: dict[str, np.ndarray]) -> None:
    table = object_table(group)
    for name in ("label", "slice", "area"):
        np.testing.assert_array_equal(table[name], expected[name])
    for name in ("mean_uncertainty", "boundary_uncertainty"):  # recomputed exactly (same maps): float64 noise only
        np.testing.assert_allclose(table[name], expected[name], rtol=1e-12, atol=0)


def test_crash_after_the_old_table_is_gone_is_repaired(job, monkeypatch):
    stack, target, kwargs, expected, rows = job
    group = zarr.open_group(target, mode="a")
    group["objects/area"][rows] += 1  # a row of slice 1 damaged: the repair redoes slice 1 only

    def crash(out, parts):  # killed while the table is rewritten, after the old one was removed
        del out.group["objects"]
        raise KeyboardInterrupt("simulated kill")

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning, match="repairing"):
        patch.setattr(ais_stages, "write_table", crash)
        segment_zarr(stack, target, repair=True, **kwargs)
    assert "objects" not in zarr.open_group(target, mode="r")
    with pytest.raises(DamagedTargetError, match="objects table of slice 0 is missing"):
        segment_zarr(stack, target, **kwargs)  # not a KeyError
    with pytest.warns(UserWarning, match="repairing"):
        group = segment_zarr(stack, target, repair=True, **kwargs)
    _assert_table(group, expected)


def test_complete_target_without_table_is_repaired(job):
    stack, target, kwargs, expected, _ = job
    shutil.rmtree(target / "objects")
    with pytest.raises(InvalidInputError, match="lost its object table; rerun its job with repair=True"):
        object_table(target)
    with pytest.raises(DamagedTargetError, match="objects table of slice 1 is missing"):
        segment_zarr(stack, target, **kwargs)
    with pytest.warns(UserWarning, match=r"redoing slice\(s\) \[0, 1\]"):
        group = segment_zarr(stack, target, repair=True, **kwargs)
    _assert_table(group, expected)


def test_crash_while_the_new_table_is_written_keeps_the_old_one(job, monkeypatch):
    stack, target, kwargs, expected, rows = job
    group = zarr.open_group(target, mode="a")
    group["objects/area"][rows] += 1
    real = zarr.Group.create_array

    def crash(self, name, *args, **kwargs):
        if name == "area":
            raise KeyboardInterrupt("simulated kill while the new table is written")
        return real(self, name, *args, **kwargs)

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning, match="repairing"):
        patch.setattr(zarr.Group, "create_array", crash)
        segment_zarr(stack, target, repair=True, **kwargs)
    old = zarr.open_group(target / "objects", mode="r")  # the old table, as it was
    np.testing.assert_array_equal(old["label"][...], expected["label"])
    assert old["area"][rows] == expected["area"][rows] + 1
    with pytest.warns(UserWarning, match="repairing"):
        group = segment_zarr(stack, target, repair=True, **kwargs)
    _assert_table(group, expected)
    assert sorted(p.name for p in target.iterdir() if p.name.startswith("objects")) == ["objects"]


def test_crash_between_the_swap_renames_is_repaired(job, monkeypatch):
    stack, target, kwargs, expected, rows = job
    group = zarr.open_group(target, mode="a")
    group["objects/area"][rows] += 1
    real = Path.rename

    def crash(self, other):
        if self.name == objects_mod.PARTIAL:
            raise KeyboardInterrupt("simulated kill between the renames")
        return real(self, other)

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning, match="repairing"):
        patch.setattr(Path, "rename", crash)
        segment_zarr(stack, target, repair=True, **kwargs)
    assert not (target / "objects").exists()
    with pytest.warns(UserWarning, match="repairing"):
        group = segment_zarr(stack, target, repair=True, **kwargs)
    _assert_table(group, expected)
    assert sorted(p.name for p in target.iterdir() if p.name.startswith("objects")) == ["objects"]
