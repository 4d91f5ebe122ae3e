"""segment_zarr(format="ome-zarr"): an NGFF 0.5 label image, inside an OME-Zarr image or on its own.

The source is written by ome-zarr-py (``ome_zarr.writer.write_image``, three levels, a physical pixel size);
the result is validated by ome-zarr-models (``ImageLabel``, ``Labels``, ``Image``) and read back by
ome-zarr-py's reader (``ome_zarr.reader.Reader``): ids, shapes and properties equal what the job wrote.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import pytest
import zarr

pytest.importorskip("ome_zarr_models")
pytest.importorskip("ome_zarr")
from ome_zarr.format import FormatV05  # noqa: E402
from ome_zarr.io import parse_url  # noqa: E402
from ome_zarr.reader import Reader  # noqa: E402
from ome_zarr.scale import Scaler  # noqa: E402
from ome_zarr.writer import write_image, write_labels  # noqa: E402
from ome_zarr_models.v05.image import Image  # noqa: E402
from ome_zarr_models.v05.image_label import ImageLabel  # noqa: E402
from ome_zarr_models.v05.labels import Labels  # noqa: E402

from sum_core import ais  # noqa: E402
from sum_core.batch import auto as batch_auto  # noqa: E402
from sum_core.batch import ngff  # noqa: E402
from sum_core.batch import object_table, segment_zarr, verify_target  # noqa: E402
from sum_core.errors import Cancelled, InvalidInputError  # noqa: E402
from test_ais_auto import ais_model  # noqa: E402, F401
from test_batch import blobs, fake_records, use_model  # noqa: E402
from test_batch_ais import finite_exact_maps, random_discs  # noqa: E402
from test_batch_ids import cancelling  # noqa: E402

KW = dict(tile_shape=(64, 96), halo=16, progress=False, format="ome-zarr")


@pytest.fixture
def fake(monkeypatch):
    from test_tiled_predictor import tiny_model

    use_model(monkeypatch, tiny_model())
    monkeypatch.setattr(batch_auto, "window_records", fake_records)


def ome_image(path: Path, data: np.ndarray) -> Path:
    """An OME-Zarr 0.5 image as ome-zarr-py writes it: three levels, 2 x 0.5 x 0.5 micrometer pixels, and an
    existing label image ``nuclei`` listed in ``labels``."""
    root = zarr.group(store=parse_url(str(path), mode="w", fmt=FormatV05()).store)
    write_image(data, group=root, axes="zyx", fmt=FormatV05(), scale_factors=(2, 4),
                storage_options=dict(chunks=(1, 64, 64)), scale={"z": 2.0, "y": 0.5, "x": 0.5},
                axes_units={"z": "micrometer", "y": "micrometer", "x": "micrometer"})
    write_labels((data > 1000).astype(np.uint8), group=root, name="nuclei", axes="zyx", fmt=FormatV05(),
                 scale_factors=(2, 4), scaler=Scaler(max_layer=2, method="nearest"))
    return path


def snapshot(folder: Path) -> dict[str, str]:
    """Digest of every file under ``folder`` (what a job must leave as it is)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_labels_inside_an_ome_zarr_image_validate_and_read_back(tmp_path, fake):
    stack = np.stack([blobs((200, 260), seed=s, n=6) for s in range(3)])
    source = ome_image(tmp_path / "img.ome.zarr", stack)
    before = snapshot(source)
    target = source / "labels" / "cells"
    group = segment_zarr(source, target, **KW)
    after = snapshot(source)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed - {"labels/zarr.json"} == {k for k in after if k.startswith("labels/cells/")}  # nothing else
    listing = zarr.open_group(str(source / "labels"), mode="r").attrs["ome"]
    assert listing["labels"] == ["nuclei", "cells"] and listing["version"] == "0.5"
    assert group.attrs["sum_hq_batch"]["complete"] and verify_target(target) == 3 * 12

    label_image = ImageLabel.from_zarr(zarr.open_group(str(target), mode="r"))  # validates
    Labels.from_zarr(zarr.open_group(str(source / "labels"), mode="r"))
    Image.from_zarr(zarr.open_group(str(target / "uncertainty"), mode="r"))
    Image.from_zarr(zarr.open_group(str(source), mode="r"))  # the parent is still a valid image
    ome = group.attrs["ome"]
    assert [d["path"] for d in ome["multiscales"][0]["datasets"]] == ["0", "1", "2"]  # the parent's 3 levels
    assert ome["multiscales"][0]["datasets"][1]["coordinateTransformations"][0]["scale"] == [2.0, 1.0, 1.0]
    assert ome["image-label"]["source"]["image"] == "../.."
    assert label_image.ome_attributes.image_label is not None

    labels = group["0"][...]
    n = int(labels.max())
    assert np.array_equal(np.unique(labels)[1:], np.arange(1, n + 1))
    assert [p["label-value"] for p in ome["image-label"]["properties"]] == list(range(1, n + 1))
    assert len({tuple(c["rgba"]) for c in ome["image-label"]["colors"]}) == n
    assert group["1"].shape == (3, 100, 130) and group["2"].shape == (3, 50, 65)
    np.testing.assert_array_equal(group["1"][...], labels[:, ::2, ::2])  # nearest neighbour: ids never mixed
    np.testing.assert_array_equal(group["2"][...], labels[:, ::4, ::4])
    np.testing.assert_array_equal(group["uncertainty/1"][...], group["uncertainty/0"][:, ::2, ::2])

    (read,) = [node for node in Reader(parse_url(str(source)))() if node.metadata.get("name") == "cells"]
    assert [tuple(level.shape) for level in read.data] == [(3, 200, 260), (3, 100, 130), (3, 50, 65)]
    for level, data in enumerate(read.data):
        np.testing.assert_array_equal(np.asarray(data), group[str(level)][...])
    assert sorted(read.metadata["properties"]) == list(range(1, n + 1))
    assert sorted(read.metadata["color"]) == list(range(1, n + 1))
    assert [a["unit"] for a in read.metadata["axes"]] == ["micrometer"] * 3


def test_ais_properties_are_the_object_table(tmp_path, monkeypatch, ais_model):
    monkeypatch.setattr(ais, "window_maps", finite_exact_maps())
    stack = np.stack([random_discs((300, 420), 20, seed=s) for s in range(2)])
    source = ome_image(tmp_path / "img.ome.zarr", stack)
    group = segment_zarr(source, source / "labels" / "cells", mode="ais", model=ais_model, device="cpu",
                         **{**KW, "tile_shape": 128, "halo": 24})
    table = object_table(group)
    properties = group.attrs["ome"]["image-label"]["properties"]
    assert [p["label-value"] for p in properties] == table["label"].tolist()
    assert [p["area"] for p in properties] == table["area"].tolist()
    assert [p["mean-uncertainty"] for p in properties] == table["mean_uncertainty"].tolist()
    assert [p["boundary-uncertainty"] for p in properties] == table["boundary_uncertainty"].tolist()
    ImageLabel.from_zarr(group)


def test_resume_after_cancel_gives_the_same_label_image(tmp_path, fake, monkeypatch):
    stack = np.stack([blobs((200, 260), seed=s, n=6) for s in range(3)])
    source = ome_image(tmp_path / "img.ome.zarr", stack)
    reference = segment_zarr(source, tmp_path / "ref.zarr", **KW)  # a label image on its own
    assert "labels" not in reference and reference.attrs["ome"]["image-label"]["source"]["image"] == "../img.ome.zarr"
    event = threading.Event()
    monkeypatch.setattr(batch_auto, "window_records", cancelling(14, event))
    target = source / "labels" / "cells"
    with pytest.raises(Cancelled):
        segment_zarr(source, target, cancel=event, **KW)
    assert "cells" not in zarr.open_group(str(source / "labels"), mode="r").attrs["ome"]["labels"]
    monkeypatch.setattr(batch_auto, "window_records", fake_records)
    group = segment_zarr(source, target, **KW)
    for name in ("0", "1", "2", "uncertainty/0", "uncertainty/2"):
        np.testing.assert_array_equal(group[name][...], reference[name][...])
    assert group.attrs["ome"]["image-label"]["properties"] == reference.attrs["ome"]["image-label"]["properties"]


def test_only_labels_name_inside_the_source_is_allowed(tmp_path, fake):
    stack = np.stack([blobs((96, 120), seed=s, n=3) for s in range(2)])
    source = ome_image(tmp_path / "img.ome.zarr", stack)
    before = snapshot(source)
    for target, kwargs in [(source / "labels" / "cells", {"format": "zarr"}), (source / "labels", {}),
                           (source / "s0", {}), (source / "labels" / "a" / "b", {}), (source / "cells", {})]:
        with pytest.raises(InvalidInputError, match="the source"):
            segment_zarr(source, target, **{**KW, **kwargs})
    with pytest.raises(InvalidInputError, match="not written by a sum-hq batch job"):
        segment_zarr(source, source / "labels" / "nuclei", **KW)  # another tool's label image
    assert snapshot(source) == before
    with pytest.raises(InvalidInputError, match="format must be one of"):
        segment_zarr(source, tmp_path / "x.zarr", **{**KW, "format": "ngff"})


def test_a_plain_source_becomes_an_ome_zarr_image_with_its_labels(tmp_path, fake, monkeypatch):
    monkeypatch.setattr(ngff, "SMALLEST_LEVEL", 200)  # levels until the longer side is <= 200 px: 260, 130
    stack = np.stack([blobs((200, 260), seed=s, n=6) for s in range(2)])
    target = tmp_path / "out.ome.zarr"
    group = segment_zarr(stack, target, **KW)  # numpy: no OME metadata
    assert Path(group.store.root) == target / "labels" / "sum-hq"
    Image.from_zarr(zarr.open_group(str(target), mode="r"))  # validates the image and its listed labels
    ImageLabel.from_zarr(group)
    image = zarr.open_group(str(target), mode="r")
    assert [d["path"] for d in image.attrs["ome"]["multiscales"][0]["datasets"]] == ["0", "1"]
    np.testing.assert_array_equal(image["0"][...], stack)
    np.testing.assert_array_equal(image["1"][...], stack[:, ::2, ::2])
    assert group.attrs["ome"]["image-label"]["source"]["image"] == "../.."
    nodes = {node.metadata.get("name"): node for node in Reader(parse_url(str(target)))()}
    np.testing.assert_array_equal(np.asarray(nodes["image"].data[0]), stack)
    np.testing.assert_array_equal(np.asarray(nodes["sum-hq"].data[1]), group["1"][...])
    assert segment_zarr(stack, target, **KW)["0"].shape == (2, 200, 260)  # a completed target is returned
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "data.txt").write_text("a user's file")
    with pytest.raises(InvalidInputError, match="not written by a sum-hq batch job"):
        segment_zarr(stack, tmp_path / "foreign", **KW)


def test_a_damaged_label_image_is_repaired_with_its_pyramid(tmp_path, fake):
    stack = np.stack([blobs((200, 260), seed=s, n=6) for s in range(3)])
    source = ome_image(tmp_path / "img.ome.zarr", stack)
    reference = segment_zarr(source, tmp_path / "ref.zarr", **KW)
    target = source / "labels" / "cells"
    segment_zarr(source, target, **KW)
    damaged = sorted(p for p in (target / "0" / "c" / "1").rglob("*") if p.is_file())[0]
    other = next(p for p in sorted((target / "0" / "c" / "2").rglob("*")) if p.is_file()
                 and p.read_bytes() != damaged.read_bytes())
    damaged.write_bytes(other.read_bytes())  # valid bytes, other values
    with pytest.raises(InvalidInputError, match=r"0 chunk \(1, \d, \d\) does not match its checksum"):
        verify_target(target)
    with pytest.warns(UserWarning, match=r"redoing slice\(s\) \[1\]"):
        group = segment_zarr(source, target, repair=True, **KW)
    for name in ("0", "1", "2", "uncertainty/0", "uncertainty/1"):
        np.testing.assert_array_equal(group[name][...], reference[name][...])
    for key in ("properties", "colors"):
        assert group.attrs["ome"]["image-label"][key] == reference.attrs["ome"]["image-label"][key]
    assert verify_target(target) == 3 * 12
