"""Per-object tables of every batch mode (AMG, prompts, AIS) and of targets of earlier versions; prompts with
channel=."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from sum_core import ais
from sum_core.batch import object_table, segment_zarr, verify_target
from sum_core.batch.objects import LEGACY_COLUMNS, TABLE_ATTR, TABLE_INFO
from sum_core.checksums import checksum
from sum_core.errors import DamagedTargetError, InvalidInputError
from sum_core.object_scores import object_scores
from test_ais_auto import ais_model  # noqa: F401
from test_batch import blobs, fake, fake_prompted, tiny, write_table  # noqa: F401
from test_batch_ais import finite_exact_maps, random_discs

KW = dict(progress=False, device="cpu", scheduler="synchronous")


def assert_rows_are_object_scores(group, n_slices: int) -> dict[str, np.ndarray]:
    """Each slice's rows equal ``object_scores`` of the whole written plane, exactly; returns the table."""
    table = object_table(group)
    for s in range(n_slices):
        index = s if group["labels"].ndim == 3 else ...
        expected = object_scores(group["labels"][index], group["uncertainty"][index])
        rows = table["slice"] == s
        assert rows.sum() > 0
        for name in ("label", "area", "mean_uncertainty", "boundary_uncertainty"):
            np.testing.assert_array_equal(table[name][rows], getattr(expected, name), err_msg=name)
    return table


def test_amg_table_scores_the_final_ids(tmp_path, fake):
    stack = np.stack([blobs((120, 200), seed=s) for s in range(2)])
    group = segment_zarr(stack, tmp_path / "out.zarr", mode="amg", axis=0, tile_shape=(64, 96), halo=24, **KW)
    table = assert_rows_are_object_scores(group, 2)
    # the fake generator's records: predicted IoU 0.9 + k * 1e-4 (k: the component in its window), stability 1
    assert np.all((table["predicted_iou"] > 0.9) & (table["predicted_iou"] < 0.91)) and np.all(table["stability"] == 1)
    assert verify_target(tmp_path / "out.zarr") > 0


def test_amg_table_can_be_cancelled_and_resumes_to_the_same_table(tmp_path, fake, monkeypatch):
    """The table is written after the tiles: Cancel still stops it (review F9), and rerunning writes it."""
    import threading

    import sum_core.batch.objects as objects_module
    from sum_core.errors import Cancelled

    stack = np.stack([blobs((120, 200), seed=s) for s in range(2)])
    whole = segment_zarr(stack, tmp_path / "whole.zarr", mode="amg", axis=0, tile_shape=(64, 96), halo=24, **KW)
    cancel, scored = threading.Event(), objects_module.object_scores

    def cancel_after_first(*args, **kwargs):
        cancel.set()  # the user presses Cancel while the table is written
        return scored(*args, **kwargs)

    monkeypatch.setattr(objects_module, "object_scores", cancel_after_first)
    kwargs = dict(mode="amg", axis=0, tile_shape=(64, 96), halo=24, **KW)
    with pytest.raises(Cancelled):
        segment_zarr(stack, tmp_path / "out.zarr", cancel=cancel, **kwargs)
    monkeypatch.setattr(objects_module, "object_scores", scored)
    resumed = segment_zarr(stack, tmp_path / "out.zarr", **kwargs)
    for column in ("label", "slice", "area", "predicted_iou", "mean_uncertainty", "boundary_uncertainty"):
        np.testing.assert_array_equal(resumed[f"objects/{column}"][...], whole[f"objects/{column}"][...])


def test_prompts_table_scores_the_final_labels_later_objects_winning(tmp_path, tiny, fake_prompted):
    stack = np.zeros((2, 80, 90), dtype=np.uint8)
    stack[0, 10:30, 10:30] = 255
    stack[1, 50:70, 60:80] = 255
    # object 4 (a box) is painted over by object 9 (later id) where they overlap
    table = write_table(tmp_path / "p.csv", ["7,0,point,15,15,,,1", "9,1,point,60,70,,,1", "4,1,box,45,55,60,75,"])
    group = segment_zarr(stack, tmp_path / "out.zarr", mode="prompts", prompts=table, model=tiny, **KW)
    rows = assert_rows_are_object_scores(group, 2)
    assert rows["label"].tolist() == [7, 4, 9] and rows["slice"].tolist() == [0, 1, 1]
    assert rows["area"][1] == 16 * 21 - 11 * 16  # the box minus object 9's pixels
    # the fake decoder's score is 0.9 and its logits are ±8: stability 1
    np.testing.assert_array_equal(rows["predicted_iou"], 0.9)
    np.testing.assert_array_equal(rows["stability"], 1.0)


def test_prompts_mode_reads_the_chosen_channel(tmp_path, tiny, fake_prompted):
    rgb = np.zeros((80, 90, 3), dtype=np.uint8)
    rgb[10:30, 10:40, 1] = 255  # channel 1's objects
    rgb[50:70, 20:60, 1] = 255
    rgb[0:40, 0:45, 0] = 255  # channel 0 holds other, larger objects under the same clicks
    rgb[45:80, 10:90, 0] = 255
    prompts = write_table(tmp_path / "p.csv", ["1,0,point,20,20,,,1", "2,0,point,60,30,,,1"])
    chosen = segment_zarr(rgb, tmp_path / "c1.zarr", mode="prompts", prompts=prompts, model=tiny, channel=1, **KW)
    alone = segment_zarr(np.ascontiguousarray(rgb[..., 1]), tmp_path / "alone.zarr", mode="prompts",
                         prompts=prompts, model=tiny, **KW)
    np.testing.assert_array_equal(chosen["labels"][...], alone["labels"][...])
    assert np.count_nonzero(chosen["labels"][...] == 1) == 20 * 30

    # A partial target of the previous version (which read all channels) is never resumed into (review F4).
    info = dict(chosen.attrs["sum_hq_batch"])
    assert info["signature"].pop("reads") == "planes"
    chosen.attrs["sum_hq_batch"] = {**info, "complete": False}
    with pytest.raises(InvalidInputError, match="different job .*reads"):
        segment_zarr(rgb, tmp_path / "c1.zarr", mode="prompts", prompts=prompts, model=tiny, channel=1, **KW)


def old_layout(path) -> zarr.Group:
    """Make a fresh target look written by the previous version: no ``objects_table`` mark; a table (AIS)
    of the five earlier columns checksummed as then, without the new arrays."""
    group = zarr.open_group(str(path))
    info = dict(group.attrs["sum_hq_batch"])
    info.pop(TABLE_INFO)
    group.attrs["sum_hq_batch"] = info
    if "objects" in group and info["signature"]["mode"] == "ais":
        table = group["objects"]
        for name in ("predicted_iou", "stability"):
            del table[name]
        slices = []
        for start, stop, _ in table.attrs[TABLE_ATTR]["slices"]:
            digest = checksum(*(np.ascontiguousarray(table[n][start:stop]) for n in LEGACY_COLUMNS), size=8).hex()
            slices.append([start, stop, digest])
        table.attrs[TABLE_ATTR] = {"slices": slices}
    elif "objects" in group:
        del group["objects"]
    return group


def damage_slice_1(group) -> None:
    group["labels"][1, :4, :4] = 77  # a chunk of slice 1 no longer matches its checksum


def test_an_ais_table_of_the_previous_version_verifies_reads_nan_and_is_repaired(tmp_path, monkeypatch, ais_model):
    monkeypatch.setattr(ais, "window_maps", finite_exact_maps())
    stack = np.stack([random_discs((120, 120), 8, seed=s) for s in range(2)])
    kwargs = dict(mode="ais", model=ais_model, **KW)
    fresh = object_table(segment_zarr(stack, tmp_path / "out.zarr", **kwargs))
    assert np.isnan(fresh["predicted_iou"]).all() and np.isnan(fresh["stability"]).all()
    group = old_layout(tmp_path / "out.zarr")
    assert verify_target(tmp_path / "out.zarr") > 0
    for name, values in object_table(segment_zarr(stack, tmp_path / "out.zarr", **kwargs)).items():
        np.testing.assert_array_equal(values, fresh[name], err_msg=name)  # NaN == NaN for assert_array_equal
    damage_slice_1(group)
    with pytest.warns(UserWarning, match=r"redoing slice\(s\) \[1\]"):
        repaired = segment_zarr(stack, tmp_path / "out.zarr", repair=True, **kwargs)
    assert "predicted_iou" in repaired["objects"]  # rewritten in the new layout, slice 0's rows kept
    for name, values in object_table(repaired).items():
        np.testing.assert_array_equal(values, fresh[name], err_msg=name)
    assert verify_target(tmp_path / "out.zarr") > 0


@pytest.mark.parametrize("mode", ["amg", "prompts"])
def test_targets_of_the_previous_version_without_a_table_stay_valid(tmp_path, fake, fake_prompted, tiny, mode):
    stack = np.stack([blobs((96, 120), seed=s) for s in range(2)])
    prompts = write_table(tmp_path / "p.csv", ["1,0,box,5,5,30,30,", "2,1,box,40,40,60,90,"])
    kwargs = dict(mode=mode, axis=0, model=tiny, prompts=prompts if mode == "prompts" else None, **KW)
    segment_zarr(stack, tmp_path / "out.zarr", **kwargs)
    group = old_layout(tmp_path / "out.zarr")
    assert verify_target(tmp_path / "out.zarr") > 0
    labels = segment_zarr(stack, tmp_path / "out.zarr", **kwargs)["labels"][...]
    with pytest.raises(InvalidInputError, match="earlier version of sum-hq"):
        object_table(group)
    damage_slice_1(group)
    with pytest.warns(UserWarning, match=r"redoing slice\(s\) \[1\]"):
        repaired = segment_zarr(stack, tmp_path / "out.zarr", repair=True, **kwargs)
    np.testing.assert_array_equal(repaired["labels"][...], labels)
    assert "objects" not in repaired  # slice 0's rows were never computed: left as it was
    assert verify_target(tmp_path / "out.zarr") > 0


def test_a_lost_amg_table_is_damage_and_repaired(tmp_path, fake):
    image = blobs((120, 200), seed=3)
    group = segment_zarr(image, tmp_path / "out.zarr", mode="amg", tile_shape=(64, 96), halo=24, **KW)
    expected = object_table(group)
    del group["objects"]
    with pytest.raises(DamagedTargetError, match="objects table of slice 0 is missing"):
        verify_target(tmp_path / "out.zarr")
    with pytest.warns(UserWarning, match="repairing"):
        group = segment_zarr(image, tmp_path / "out.zarr", mode="amg", tile_shape=(64, 96), halo=24, repair=True,
                             **KW)
    for name, values in object_table(group).items():
        np.testing.assert_array_equal(values, expected[name], err_msg=name)


def test_exports_carry_the_predicted_iou_as_score_and_the_stability(tmp_path, fake):
    import json

    import pandas as pd

    from sum_core.results import export_result, open_result

    group = segment_zarr(blobs((120, 200), seed=4), tmp_path / "out.zarr", mode="amg", **KW)
    table = object_table(group)
    rows = pd.read_csv(export_result(open_result(tmp_path / "out.zarr"), tmp_path / "o.csv", to="csv"))
    assert rows["label"].tolist() == table["label"].tolist()
    np.testing.assert_array_equal(rows["score"], table["predicted_iou"])  # repr round-trips float64
    np.testing.assert_array_equal(rows["stability"], table["stability"])
    features = json.loads(export_result(open_result(tmp_path / "out.zarr"), tmp_path / "o.geojson").read_text())
    assert [f["properties"]["measurements"]["Stability"] for f in features["features"]] == table["stability"].tolist()
