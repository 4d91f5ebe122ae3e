"""The ``image-label`` properties of a batch OME-Zarr target come from whatever columns its ``objects/`` table
holds, in every mode (AMG: predicted IoU and stability too); NaN values are left out; without a table only
``label-value``. Validated by ome-zarr-models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import zarr

pytest.importorskip("ome_zarr_models")
from ome_zarr_models.v05.image_label import ImageLabel  # noqa: E402

from sum_core.batch import ngff, object_table, segment_zarr  # noqa: E402
from sum_core.batch.writer import Target  # noqa: E402
from sum_core.volume import open_volume  # noqa: E402
from test_batch import blobs, fake_prompted, tiny, write_table  # noqa: E402, F401 - fixtures
from test_batch_ngff import KW, fake, ome_image  # noqa: E402, F401 - fixture

KEYS = {"area": "area", "predicted_iou": "predicted-iou", "stability": "stability",
        "mean_uncertainty": "mean-uncertainty", "boundary_uncertainty": "boundary-uncertainty"}


def expected_properties(table: dict[str, np.ndarray]) -> list[dict]:
    rows = []
    for i, label in enumerate(table["label"]):
        row = {"label-value": int(label)}
        for column, key in KEYS.items():
            if column in table and not math.isnan(float(table[column][i])):
                row[key] = int(table[column][i]) if column == "area" else float(table[column][i])
        rows.append(row)
    return rows


def test_amg_properties_are_its_table_columns(tmp_path, fake):
    stack = np.stack([blobs((160, 200), seed=s, n=5) for s in range(2)])
    source = ome_image(tmp_path / "img.ome.zarr", stack)
    group = segment_zarr(source, source / "labels" / "cells", **KW)
    table = object_table(group)
    properties = group.attrs["ome"]["image-label"]["properties"]
    assert properties == expected_properties(table) and len(properties) >= 5
    assert all("predicted-iou" in p and "area" in p for p in properties)
    ImageLabel.from_zarr(group)


def test_columns_a_table_lacks_or_leaves_unknown_are_no_property(tmp_path, fake):
    """Before: the properties were the AIS columns, read by name (a table without them raised KeyError)."""
    stack = np.stack([blobs((96, 120), seed=s, n=3) for s in range(2)])
    source = ome_image(tmp_path / "img.ome.zarr", stack)
    segment_zarr(source, tmp_path / "cells.zarr", **KW)
    group = zarr.open_group(str(tmp_path / "cells.zarr"), mode="a")
    ids = np.asarray(group["objects/label"][...])
    del group["objects"]
    objects = group.create_group("objects")
    objects.create_array("label", shape=ids.shape, dtype="uint32")[...] = ids
    objects.create_array("area", shape=ids.shape, dtype="int64")[...] = np.arange(len(ids)) + 10
    stability = np.linspace(0.5, 0.9, len(ids))
    stability[0] = np.nan
    objects.create_array("stability", shape=ids.shape, dtype="float64")[...] = stability
    volume = open_volume(source)
    target = Target(group, tmp_path / "cells.zarr")
    assert ngff.object_ids(target, "amg", []).tolist() == ids.tolist()
    label_image, _ = ngff.metadata(target, volume, "cells", source, None, ids)
    properties = label_image["image-label"]["properties"]
    assert properties[0] == {"label-value": int(ids[0]), "area": 10}
    assert properties[1] == {"label-value": int(ids[1]), "area": 11, "stability": float(stability[1])}
    del group["objects"]  # no table: the label values alone
    (label_image, _) = ngff.metadata(Target(group, tmp_path / "cells.zarr"), volume, "cells", source, None, ids)
    assert label_image["image-label"]["properties"] == [{"label-value": int(k)} for k in ids]


def test_prompts_stack_object_on_two_slices_is_one_id(tmp_path, tiny, fake_prompted):
    """One object id on two slices (prompts mode): one colour and one property (areas summed, mean uncertainty
    weighted by area, no boundary band across planes), so the label image validates (review finding F3)."""
    stack = np.stack([blobs((96, 120), seed=s) for s in range(2)])
    prompts = write_table(tmp_path / "p.csv", ["1,0,box,5,5,30,30,", "1,1,box,5,5,30,30,", "2,1,box,50,60,90,110,"])
    out = tmp_path / "out.ome.zarr"
    segment_zarr(stack, out, mode="prompts", axis=0, model=tiny, prompts=prompts, format="ome-zarr",
                 progress=False, device="cpu", scheduler="synchronous")
    label_image = zarr.open_group(str(out / "labels" / "sum-hq"), mode="r")
    ImageLabel.from_zarr(label_image)  # "Duplicated label-value" before
    meta = label_image.attrs["ome"]["image-label"]
    assert [c["label-value"] for c in meta["colors"]] == [1, 2]
    table = object_table(str(out / "labels" / "sum-hq"))
    rows = table["label"] == 1
    one = meta["properties"][0]
    assert one["label-value"] == 1 and one["area"] == int(table["area"][rows].sum())
    expected = float((table["mean_uncertainty"][rows] * table["area"][rows]).sum() / table["area"][rows].sum())
    assert one["mean-uncertainty"] == pytest.approx(expected, rel=1e-12) and "boundary-uncertainty" not in one
    assert meta["properties"][1]["boundary-uncertainty"] == float(table["boundary_uncertainty"][table["label"] == 2][0])
