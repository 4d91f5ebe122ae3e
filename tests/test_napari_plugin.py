"""Plugin packaging and Qt-free parts: manifest, sample data, prompt conversion, plane predictors, result windows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import napari_sum_hq
from napari_sum_hq._commit import SlicePixels, plan_commit
from napari_sum_hq._prompts import box_shapes, boxes_on_slice, on_slice, points_on_slice
from napari_sum_hq._sample_data import blobs_stack_sample, cell_sample
from napari_sum_hq._session import ModelChoice, PlanePredictors, Prepared, bounding_box, cache_store, object_piece

MANIFEST = Path(napari_sum_hq.__file__).parent / "napari.yaml"


def test_manifest_validates_and_imports():
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    assert manifest.name == "napari-sum-hq"
    ids = {c.id for c in manifest.contributions.commands}
    assert ids == {
        "napari-sum-hq.interactive_widget",
        "napari-sum-hq.automatic_widget",
        "napari-sum-hq.batch_widget",
        "napari-sum-hq.review_widget",
        "napari-sum-hq.finetune_widget",
        "napari-sum-hq.sample_cell",
        "napari-sum-hq.sample_blobs_stack",
        "napari-sum-hq.get_reader",
        "napari-sum-hq.write_geojson",
        "napari-sum-hq.write_imagej_roi",
        "napari-sum-hq.write_ome_zarr",
    }
    for command in manifest.contributions.commands:
        assert callable(_resolve(command.python_name))
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-sum-hq"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid!" in result.stdout
    menu = [item.command for item in manifest.contributions.menus["napari/layers/segment"]]
    assert menu == [
        "napari-sum-hq.interactive_widget",
        "napari-sum-hq.automatic_widget",
        "napari-sum-hq.batch_widget",
        "napari-sum-hq.review_widget",
        "napari-sum-hq.finetune_widget",
    ]


def _resolve(python_name: str):
    import importlib

    module, name = python_name.split(":")
    return getattr(importlib.import_module(module), name)


def test_package_exports_are_lazy():
    assert napari_sum_hq.cell_sample is cell_sample
    assert "InteractiveSegmentationWidget" in napari_sum_hq.__all__
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        napari_sum_hq.missing  # noqa: B018


def test_sample_data_is_bundled():
    (cell, meta, kind), = cell_sample()
    assert kind == "image" and meta["name"] == "cell"
    assert cell.shape == (660, 550) and cell.dtype == np.uint8
    (stack, meta, kind), = blobs_stack_sample(depth=4, size=64)
    assert kind == "image" and stack.shape == (4, 64, 64) and stack.dtype == np.uint8
    assert stack.min() < 50 and stack.max() > 200  # dark background, bright blobs


def test_widget_module_does_not_import_torch():
    code = (
        "import sys\n"
        "from napari_sum_hq import _interactive_widget, _layers, _prompts, _session, _sample_data\n"
        "from napari_sum_hq import _auto_widget, _batch_widget, _propagation, _jobs, _widget_parts\n"
        "from napari_sum_hq import _reader, _writer, _review_widget, _finetune_widget\n"
        "print('torch' in sys.modules, 'sum_core.predictor' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_points_on_slice_selects_by_rounded_leading_coordinates():
    coords = np.array([[2.2, 10, 20], [1.6, 5, 6], [3, 7, 8], [2, 1.5, 2.5]])
    pts, labels = points_on_slice(coords, [1, 0, 1, 0], (2,))
    np.testing.assert_array_equal(pts, [[10, 20], [5, 6], [1.5, 2.5]])
    np.testing.assert_array_equal(labels, [1, 0, 0])
    pts, labels = points_on_slice(np.array([[3.0, 4.0]]), [1], ())
    np.testing.assert_array_equal(pts, [[3, 4]])
    assert on_slice(np.empty((0, 3)), (1,)).shape == (0,)


def test_boxes_on_slice_takes_axis_aligned_bounds():
    rect = np.array([[1, 30, 40], [1, 10, 40], [1, 10, 5], [1, 30, 5]], dtype=float)
    other = rect.copy()
    other[:, 0] = 0
    np.testing.assert_array_equal(boxes_on_slice([rect, other], (1,)), [[10, 5, 30, 40]])
    assert boxes_on_slice([], ()).shape == (0, 4)


def test_plane_predictors_are_lru_and_drop_planes_of_another_model():
    predictors = PlanePredictors(max_slices=2)
    a, b = ModelChoice("a"), ModelChoice("b", "cpu")
    for key in [(0,), (1,), (2,)]:
        predictors.store(Prepared(a, "model-a", key, f"pred{key}"))
    assert predictors.predictor((0,)) is None and predictors.predictor((1,)) == "pred(1,)"
    assert predictors.model_for(a) == "model-a" and predictors.model_for(b) is None
    predictors.store(Prepared(b, "model-b", (1,), "pred-b"))
    assert predictors.predictor((2,)) is None and predictors.predictor((1,)) == "pred-b"
    assert b.torch_device == "cpu" and a.torch_device is None
    predictors.clear_slices()
    assert predictors.predictor((1,)) is None and predictors.model_for(b) == "model-b"


def test_object_piece_cuts_a_far_corner_object_to_its_box():
    mask = np.zeros((2160, 2560), bool)
    mask[2050:2150, 2440:2555] = True
    mask[2100, 2400] = True
    piece = object_piece((3,), mask, 2)
    assert piece.slice_key == (3,) and piece.index == 2
    assert tuple(piece.region) == (2050, 2400, 2150, 2555)
    plane = np.zeros_like(mask)
    plane[piece.region.slices] = piece.mask
    np.testing.assert_array_equal(plane, mask)
    assert object_piece((), np.zeros((4, 4), bool), 1) is None and bounding_box(np.zeros((3, 3), bool)) is None
    shifted = object_piece((), mask[2000:, 2300:], 1, offset=(2000, 2300))  # a window's mask
    assert shifted.region == piece.region


def test_cache_store_is_named_by_layer_plane_and_weights(tmp_path):
    import torch
    from small_models import small_vit_config
    from sum_core.encoding import weights_hash
    from sum_core.modeling import build_from_config

    torch.manual_seed(0)
    model = build_from_config(small_vit_config())
    weights = weights_hash(model).split(":")[-1][:12]
    assert cache_store(tmp_path, "my image [1]", (), model) == tmp_path / f"my_image_1-{weights}" / "plane.zarr"
    assert cache_store(tmp_path, "..", (4,), model) == tmp_path / f"image-{weights}" / "slice-4.zarr"


def _pixels(key, mask, new_id) -> SlicePixels:
    rows, cols = np.nonzero(mask)
    return SlicePixels(key, rows, cols, np.full(rows.size, new_id))


def _square(shape, r0, r1, c0, c1) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[r0:r1, c0:c1] = True
    return mask


def test_plan_commit_modes_protect_match_and_refine():
    shape = (40, 40)
    committed = np.zeros(shape, np.uint32)
    committed[_square(shape, 0, 10, 0, 10)] = 1
    committed[_square(shape, 20, 30, 20, 30)] = 2
    new1 = _square(shape, 5, 15, 5, 15)  # covers 25 of object 1's 100 px
    new2 = _square(shape, 19, 31, 19, 31)  # covers all of object 2
    pieces = [SlicePixels((), *np.nonzero(new1 | new2), np.where(new2, 2, 1)[new1 | new2])]

    def written(plan):
        out = np.zeros(shape, np.int64)
        for piece in plan.pixels:
            out[piece.rows, piece.cols] = piece.ids
        return out

    plan = plan_commit(pieces, committed)  # protect objects (default)
    assert plan.matched == {2: 2} and plan.protected == 25
    np.testing.assert_array_equal(written(plan), np.where(new1 & (committed == 0), 1, 0))
    plan = plan_commit(pieces, committed, "protect pixels")
    assert plan.matched == {} and plan.protected == 125
    np.testing.assert_array_equal(written(plan), np.where(committed == 0, np.where(new2, 2, np.where(new1, 1, 0)), 0))
    plan = plan_commit(pieces, committed, "overwrite")
    np.testing.assert_array_equal(written(plan), np.where(new2, 2, np.where(new1, 1, 0)))
    plan = plan_commit(pieces, committed, "protect objects", threshold=0.2)  # 25 % of object 1: a match too
    assert plan.matched == {1: 1, 2: 2} and plan.pixels == []
    plan = plan_commit([_pixels((), new1, 1)], committed, refine_id=1)  # object 1's own pixels are free
    assert plan.matched == {} and plan.protected == 0
    np.testing.assert_array_equal(written(plan), new1.astype(np.int64))
    with pytest.raises(ValueError, match="commit mode"):
        plan_commit(pieces, committed, "merge")


def test_plan_commit_matches_over_the_slices_the_new_object_touches():
    stack = np.zeros((3, 20, 20), np.uint32)
    stack[0][_square((20, 20), 0, 10, 0, 10)] = 3
    stack[1][_square((20, 20), 0, 10, 0, 10)] = 3
    on_0 = _pixels((0,), _square((20, 20), 0, 10, 0, 10), 1)
    assert plan_commit([on_0], stack).matched == {1: 3}  # all of object 3 on slice 0
    on_0_and_2 = [on_0, _pixels((2,), _square((20, 20), 0, 5, 0, 5), 1)]
    assert plan_commit(on_0_and_2, stack).matched == {1: 3}
    half = _pixels((0,), _square((20, 20), 0, 5, 0, 10), 1)
    assert plan_commit([half], stack).matched == {} and plan_commit([half], stack).protected == 50


def test_box_shapes_refuse_lines_and_paths():
    from sum_core.errors import InvalidInputError

    square = np.array([[0, 0], [0, 5], [5, 5], [5, 0]], float)
    assert len(box_shapes([square, square, square], ["rectangle", "ellipse", "polygon"])) == 3
    with pytest.raises(InvalidInputError, match="a line / path is not a prompt"):
        box_shapes([square, square, square], ["rectangle", "path", "line"])
