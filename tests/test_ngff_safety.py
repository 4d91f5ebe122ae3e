"""Data safety of the batch OME-Zarr targets (review findings): the labels listing under concurrent jobs,
damaged NGFF targets recognised as ours, label levels aligned with a translated parent image, and many-file
jobs never segmenting their own outputs. Each test fails on the code before the fix (named in its docstring).
"""

from __future__ import annotations

import tempfile
import threading
import time

import numpy as np
import pytest
import tifffile
import zarr

pytest.importorskip("ome_zarr_models")
pytest.importorskip("ome_zarr")
from ome_zarr.format import FormatV05  # noqa: E402
from ome_zarr.io import parse_url  # noqa: E402
from ome_zarr.writer import write_image  # noqa: E402
from ome_zarr_models.v05.image import Image  # noqa: E402
from ome_zarr_models.v05.image_label import ImageLabel  # noqa: E402

from sum_core.batch import auto as batch_auto  # noqa: E402
from sum_core.batch import ngff, segment_many, segment_zarr  # noqa: E402
from sum_core.errors import Cancelled, DamagedTargetError, InvalidInputError  # noqa: E402
from test_batch import blobs, fake_records  # noqa: E402
from test_batch_ids import cancelling  # noqa: E402
from test_batch_many import calls  # noqa: E402, F401 - fixture
from test_batch_ngff import KW, fake, ome_image, snapshot  # noqa: E402, F401 - fixture


def test_two_jobs_listing_labels_at_once_are_both_listed(tmp_path, monkeypatch):
    """Before: both read the listing, both wrote it back, the later rename dropped the other's name."""
    image = ome_image(tmp_path / "img.ome.zarr", np.zeros((1, 32, 32), np.uint16))
    real = tempfile.mkstemp

    def slow(*args, **kwargs):  # the write of the new listing takes a while: the other job reads meanwhile
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", slow)
    errors = []

    def add(name):
        try:
            ngff.list_label(image, name)
        except Exception as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=add, args=(name,)) for name in ("cells", "nuclei2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    listed = zarr.open_group(str(image / "labels"), mode="r").attrs["ome"]["labels"]
    assert sorted(listed) == ["cells", "nuclei", "nuclei2"]
    assert not (image / "labels" / ".sum-hq-batch.lock").exists()


def test_a_label_image_target_without_group_metadata_is_ours(tmp_path, fake):
    """Before: the NGFF layout (levels 0, 1..., uncertainty/ a group) was "not a sum-hq batch target"."""
    stack = np.stack([blobs((96, 120), seed=s, n=3) for s in range(2)])
    source = ome_image(tmp_path / "img.ome.zarr", stack)
    target = tmp_path / "cells.zarr"  # a label image on its own
    reference = segment_zarr(source, target, **KW)
    expected = reference["0"][...]
    (target / "zarr.json").unlink()  # e.g. lost with a crashed disk
    with pytest.raises(DamagedTargetError, match="damaged sum-hq batch target.*overwrite"):
        segment_zarr(source, target, **KW)
    group = segment_zarr(source, target, overwrite=True, **KW)
    np.testing.assert_array_equal(group["0"][...], expected)
    ImageLabel.from_zarr(group)
    # a folder with the same names that is not ours (levels of another dtype) is still refused and kept
    foreign = tmp_path / "foreign.zarr"
    other = zarr.open_group(str(foreign), mode="w", zarr_format=3)
    other.create_array("0", shape=(4, 4), dtype="uint8")
    other.create_array("uncertainty/0", shape=(4, 4), dtype="float16")
    (foreign / "zarr.json").unlink()
    before = snapshot(foreign)
    with pytest.raises(InvalidInputError, match="not a sum-hq batch target"):
        segment_zarr(source, foreign, overwrite=True, **KW)
    assert snapshot(foreign) == before


def test_an_interrupted_image_copy_without_group_metadata_resumes(tmp_path, fake, monkeypatch):
    """Before: the image made for a plain source, its zarr.json lost, was refused as another program's."""
    stack = np.stack([blobs((96, 120), seed=s, n=3) for s in range(2)])
    reference = segment_zarr(stack, tmp_path / "ref.ome.zarr", **KW)
    event = threading.Event()
    monkeypatch.setattr(batch_auto, "window_records", cancelling(3, event))
    target = tmp_path / "out.ome.zarr"
    with pytest.raises(Cancelled):
        segment_zarr(stack, target, cancel=event, **KW)
    (target / "zarr.json").unlink()
    monkeypatch.setattr(batch_auto, "window_records", fake_records)
    group = segment_zarr(stack, target, **KW)
    np.testing.assert_array_equal(group["0"][...], reference["0"][...])
    Image.from_zarr(zarr.open_group(str(target), mode="r"))  # its metadata written again
    np.testing.assert_array_equal(zarr.open_group(str(target), mode="r")["0"][...], stack)


def test_label_levels_carry_the_parent_images_translations(tmp_path, fake):
    """Before: each label level had only its own ``scale``, so labels drew shifted from their image."""
    stack = np.stack([blobs((128, 160), seed=s, n=4) for s in range(2)])
    transforms = [[{"type": "scale", "scale": [2.0, 0.5 * f, 0.5 * f]},
                   {"type": "translation", "translation": [10.0, 0.25 * (f - 1) + 3.0, 0.25 * (f - 1) - 7.0]}]
                  for f in (1, 2, 4)]
    path = tmp_path / "img.ome.zarr"
    root = zarr.group(store=parse_url(str(path), mode="w", fmt=FormatV05()).store)
    write_image(stack, group=root, axes="zyx", fmt=FormatV05(), scale_factors=(2, 4),
                storage_options=dict(chunks=(1, 64, 64)), coordinate_transformations=transforms)
    group = segment_zarr(path, path / "labels" / "cells", **KW)
    parent = zarr.open_group(str(path), mode="r").attrs["ome"]["multiscales"][0]["datasets"]
    labels = group.attrs["ome"]["multiscales"][0]["datasets"]
    assert [d["coordinateTransformations"] for d in labels] == [d["coordinateTransformations"] for d in parent]
    shifted = [t for d in labels for t in d["coordinateTransformations"] if t["type"] == "translation"]
    assert len(shifted) == 3 and any(any(v != 0 for v in t["translation"]) for t in shifted)
    uncertainty = group["uncertainty"].attrs["ome"]["multiscales"][0]["datasets"]
    assert [d["coordinateTransformations"] for d in uncertainty] == [d["coordinateTransformations"] for d in parent]
    ImageLabel.from_zarr(group)


def test_many_files_never_segment_their_own_outputs(tmp_path, calls):
    """Before: ``images/**`` with the output folder inside ``images`` listed the outputs of the first run."""
    images = tmp_path / "images"
    images.mkdir()
    tifffile.imwrite(images / "a.tif", blobs((64, 80), seed=1, n=3))
    out = images / "out"
    pattern = str(images / "**" / "*")
    first = segment_many(pattern, out, progress=False, tile_shape=(32, 40), halo=8)
    assert [r.status for r in first] == ["done"] and (out / "a.zarr").is_dir()
    with pytest.warns(UserWarning, match=r"path\(s\) under the output folder .* left out"):
        again = segment_many(pattern, out, progress=False, tile_shape=(32, 40), halo=8)
    assert [(r.file, r.status) for r in again] == [(str((images / "a.tif").resolve()), "done")]
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".zarr") == ["a.zarr"]
