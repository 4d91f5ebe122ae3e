"""GUI tests of the automatic widget's AIS mode (issue 13): the mode choice follows the model's AIS decoder,
AIS results equal ``sum_core.auto_segment(mode="ais")`` and carry per-object scores as the Labels layer's
``features`` (run under Xvfb: ``xvfb-run -a python -m pytest``).

The AIS runs use the exact window-local fake decoder of ``test_ais_auto`` (``sum_core.ais.window_maps``
replaced: the random decoder of a tiny model finds no objects), on images whose objects are discs of their
own grey values.
"""

from __future__ import annotations

import numpy as np
from skimage.segmentation import relabel_sequential
import pytest
from qtpy.QtCore import Qt
from napari_sum_hq._job_widget import ERROR_STYLE
from napari_fixtures import EventLoopGaps, disk_image, drain_thread_pool, notifications, tiny_checkpoint  # noqa: F401
from test_ais_auto import draw_disc, exact_window_maps, objects
from test_napari_jobs import amg, click, errors, wait_job

pytestmark = pytest.mark.gui
CHECK_TIMEOUT_MS = 60_000
CAMERA = (1040, 1392)


@pytest.fixture(scope="module")
def ais_checkpoint(tmp_path_factory):
    """A tiny random-weight HQ checkpoint carrying a random AIS decoder (our own state-dict layout)."""
    import torch
    from small_models import small_vit_config
    from sum_core.modeling import AISDecoder, AISDecoderConfig, attach_ais_decoder, build_from_config

    torch.manual_seed(0)
    model = attach_ais_decoder(build_from_config(small_vit_config()), AISDecoder(AISDecoderConfig(initial_features=8)))
    path = tmp_path_factory.mktemp("napari_ais") / "tiny_ais.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture
def exact_decoder(monkeypatch):
    from sum_core import ais

    monkeypatch.setattr(ais, "window_maps", exact_window_maps())


def disc_plane(shape, discs) -> np.ndarray:
    """A uint16 plane with non-touching discs ``(row, col, radius, grey)``."""
    plane = np.zeros(shape, np.uint16)
    for row, col, radius, grey in discs:
        draw_disc(plane, row, col, radius, grey)
    return plane


#: Discs of a camera frame: near the origin, across the default tile borders, far from the origin.
CAMERA_DISCS = [(60, 80, 20, 900), (520, 700, 28, 1500), (515, 760, 14, 2100), (700, 300, 25, 2600),
                (990, 1340, 30, 3200), (1000, 1250, 18, 3700), (300, 1200, 22, 1200)]  # fmt: skip


def open_auto_widget(viewer, source):
    from napari_sum_hq._auto_widget import AutomaticSegmentationWidget

    widget = AutomaticSegmentationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model.set_source(str(source))
    return widget


def wait_checked(widget, qtbot) -> None:
    qtbot.waitUntil(lambda: not widget.auto_mode.checking, timeout=CHECK_TIMEOUT_MS)


@pytest.mark.parametrize("decoder", ["exact", "random"])
def test_ais_model_preselects_ais_and_gives_auto_segments_labels_and_scores(
    make_napari_viewer, qtbot, ais_checkpoint, monkeypatch, notifications, decoder
):
    """The exact fake finds the drawn discs; the tiny model's random decoder finds its own objects."""
    from sum_core import AisOptions, ais, auto_segment

    if decoder == "exact":
        monkeypatch.setattr(ais, "window_maps", exact_window_maps())

    viewer = make_napari_viewer(show=True)
    image = disc_plane(CAMERA, CAMERA_DISCS)
    viewer.add_image(image, name="cells")
    widget = open_auto_widget(viewer, ais_checkpoint)
    wait_checked(widget, qtbot)
    assert widget.auto_mode.ais_enabled() and widget.auto_mode.mode() == "ais"
    assert widget.auto_mode.groups["ais"].isVisible() and not widget.auto_mode.groups["amg"].isVisible()
    assert "carries an AIS decoder" in widget.auto_mode.mode_combo.toolTip()
    spins = widget.auto_mode.groups["ais"].spins
    assert spins["distance_smoothing"].value() == AisOptions().distance_smoothing
    assert spins["min_size"].toolTip() == "Remove objects with fewer pixels (0: keep all)."
    spins["min_size"].setValue(10)

    with EventLoopGaps() as gaps:
        click(qtbot, widget.run_button)
        wait_job(widget, qtbot)
    print(f"\nAIS {CAMERA} ({decoder} decoder): longest GUI-thread gap {gaps.max_ms:.0f} ms")

    assert errors(notifications) == []
    expected, expected_unc = auto_segment(
        image, AisOptions(min_size=10), mode="ais", model=str(ais_checkpoint), device="cpu", progress=False
    )
    labels = viewer.layers["cells auto labels"]
    assert labels.data.dtype == np.uint32
    np.testing.assert_array_equal(labels.data, expected)  # the same ids
    np.testing.assert_allclose(viewer.layers["cells auto uncertainty"].data, expected_unc, atol=1e-3)  # float16
    if decoder == "exact":
        assert int(expected.max()) == int(objects(image).max()) == len(CAMERA_DISCS)
    assert expected.max() >= 1
    features = labels.features
    assert list(features.columns) == ["index", "slice", "area", "predicted_iou", "stability", "mean_uncertainty",
                                      "boundary_uncertainty"]
    assert features["predicted_iou"].isna().all() and features["stability"].isna().all()  # AIS has neither
    ids = np.unique(expected)
    ids = ids[ids > 0]  # the random decoder may leave no background
    np.testing.assert_array_equal(features["index"], ids)
    np.testing.assert_array_equal(features["area"], [np.count_nonzero(expected == i) for i in ids])
    assert (features["slice"] == 0).all()
    assert ((features["mean_uncertainty"] >= 0) & (features["boundary_uncertainty"] <= 1)).all()
    assert widget.status_label.text() == f"Found {len(ids)} object(s) (AIS)."
    # napari shows an object's row over it
    row, col = np.argwhere(expected == ids[-1])[0]
    status = labels.get_status((row, col))["coordinates"]
    assert "area" in status and f"{int(features['area'][features['index'] == expected[row, col]].iloc[0])}" in status


def test_model_without_decoder_disables_ais_and_runs_amg(make_napari_viewer, qtbot, tiny_checkpoint):
    viewer = make_napari_viewer()
    viewer.add_image(disk_image(), name="img")
    widget = open_auto_widget(viewer, "vit_b_lm")  # a registry entry with a decoder: nothing downloaded
    assert widget.auto_mode.ais_enabled() and widget.auto_mode.mode() == "ais"
    widget.auto_mode.mode_combo.setCurrentIndex(widget.auto_mode.mode_combo.findData("amg"))
    widget.model.device_combo.setCurrentText("cpu")  # another device: the user's mode stays
    assert widget.auto_mode.mode() == "amg" and widget.auto_mode.groups["amg"].isVisibleTo(widget)
    widget.model.set_source("sam_hq_vit_b")
    assert not widget.auto_mode.ais_enabled() and widget.auto_mode.mode() == "amg"
    widget.model.set_source(str(tiny_checkpoint))
    wait_checked(widget, qtbot)
    mode = widget.auto_mode
    assert not mode.ais_enabled() and mode.mode() == "amg"
    assert "has none" in mode.mode_combo.itemData(mode.mode_combo.findData("ais"), Qt.ToolTipRole)
    assert mode.groups["amg"].isVisibleTo(widget) and not mode.groups["ais"].isVisibleTo(widget)
    amg(widget)["points_per_side"].setValue(4)
    amg(widget)["pred_iou_thresh"].setValue(0.0)
    amg(widget)["stability_thresh"].setValue(0.0)

    click(qtbot, widget.run_button)
    wait_job(widget, qtbot)

    labels = viewer.layers["img auto labels"]
    n = len(np.unique(labels.data)) - 1
    assert n >= 1 and widget.status_label.text() == f"Found {n} object(s) (AMG)."
    assert len(labels.features) == n  # AMG objects have their scores too (tests/test_napari_auto_scores.py)


def test_ais_asked_of_a_model_without_decoder_fails_with_sum_cores_message(
    make_napari_viewer, qtbot, tiny_checkpoint, notifications
):
    viewer = make_napari_viewer()
    viewer.add_image(disk_image(), name="img")
    widget = open_auto_widget(viewer, tiny_checkpoint)
    wait_checked(widget, qtbot)
    widget.auto_mode.set_decoder(True, "")  # as if the file had changed since it was checked
    click(qtbot, widget.run_button)
    wait_job(widget, qtbot)
    assert "has no AIS decoder" in widget.status_label.text() and widget.status_label.text().startswith("Failed")
    assert widget.status_label.styleSheet() == ERROR_STYLE  # red, in the status line only (a SumError: no pop-up)
    assert errors(notifications) == []
    assert "img auto labels" not in viewer.layers


def test_stack_slices_keep_their_feature_rows(make_napari_viewer, qtbot, ais_checkpoint, exact_decoder):
    from sum_core import auto_segment

    stack = np.stack([
        disc_plane((200, 240), [(50, 60, 15, 1000)]),
        disc_plane((200, 240), [(40, 40, 12, 1000), (120, 170, 20, 2000), (150, 60, 9, 3000)]),
        disc_plane((200, 240), [(100, 100, 25, 1000), (30, 200, 10, 2500)]),
    ])  # fmt: skip
    viewer = make_napari_viewer()
    viewer.add_image(stack, name="stack")
    widget = open_auto_widget(viewer, ais_checkpoint)
    wait_checked(widget, qtbot)

    viewer.dims.set_current_step(0, 1)
    click(qtbot, widget.run_button)
    wait_job(widget, qtbot)
    layer = viewer.layers["stack auto labels"]
    first = layer.features.copy()
    expected1, _ = auto_segment(stack[1], mode="ais", model=str(ais_checkpoint), device="cpu", progress=False)
    np.testing.assert_array_equal(layer.data[1], expected1)  # the first objects of the stack: ids 1..3
    assert len(first) == 3 and (first["slice"] == 1).all()
    assert widget.status_label.text() == "Found 3 object(s) (AIS) on slice (1,)."

    viewer.dims.set_current_step(0, 2)
    click(qtbot, widget.run_button)
    wait_job(widget, qtbot)
    features = layer.features
    assert sorted(features["slice"]) == [1, 1, 1, 2, 2]
    np.testing.assert_array_equal(features[features["slice"] == 1].to_numpy(), first.to_numpy())  # kept
    assert features["index"].is_unique and features["index"].is_monotonic_increasing
    assert set(np.unique(layer.data)) == {0, 1, 2, 3, 4, 5}  # compact: slice 2 follows slice 1
    for s in (1, 2):  # every row is an object of its slice, with its area
        rows = features[features["slice"] == s]
        ids, areas = np.unique(layer.data[s], return_counts=True)
        np.testing.assert_array_equal(rows["index"], ids[1:])
        np.testing.assert_array_equal(rows["area"], areas[1:])
    assert not layer.data[[0]].any()

    viewer.dims.set_current_step(0, 1)  # again: slice 1's rows are replaced, not added; its new ids follow slice 2's
    click(qtbot, widget.run_button)
    wait_job(widget, qtbot)
    assert sorted(layer.features["slice"]) == [1, 1, 1, 2, 2]
    np.testing.assert_array_equal(layer.data[1], np.where(expected1 > 0, expected1 + np.uint32(5), 0))
    assert layer.features["index"].is_unique and sorted(layer.features["index"]) == [4, 5, 6, 7, 8]
    columns = ["slice", "area", "mean_uncertainty", "boundary_uncertainty"]
    np.testing.assert_array_equal(layer.features[columns].to_numpy(), features[columns].to_numpy()[[3, 4, 0, 1, 2]])

    before = layer.data.copy()  # the whole stack: the same objects, numbered 1..N in slice order
    widget.scope_combo.setCurrentText("whole image / stack")
    click(qtbot, widget.run_button)
    wait_job(widget, qtbot)
    assert set(np.unique(layer.data)) == set(range(7))
    for s in (1, 2):
        np.testing.assert_array_equal(relabel_sequential(layer.data[s])[0], relabel_sequential(before[s])[0])
    assert sorted(layer.features["slice"]) == [0, 1, 1, 1, 2, 2]
    np.testing.assert_array_equal(layer.features["index"], np.arange(1, 7))
    assert widget.status_label.text() == "Found 6 object(s) (AIS)."


def test_batch_widget_offers_ais_and_opens_the_object_table(
    make_napari_viewer, qtbot, ais_checkpoint, exact_decoder, tmp_path
):
    import zarr
    from napari_sum_hq._batch_widget import BatchSegmentationWidget
    from sum_core.batch import object_table

    source = tmp_path / "source.zarr"
    stack = np.stack([disc_plane((96, 128), [(30, 40, 12, 1000)]), disc_plane((96, 128), [(60, 90, 15, 2000)])])
    zarr.create_array(str(source), shape=stack.shape, chunks=(1, 96, 128), dtype="uint16",
                      dimension_names=("z", "y", "x"))[:] = stack  # fmt: skip
    viewer = make_napari_viewer()
    widget = BatchSegmentationWidget(viewer)
    widget.model.set_source(str(ais_checkpoint))
    wait_checked(widget, qtbot)
    assert widget.auto_mode.mode() == "ais" and widget.auto_mode.isVisibleTo(widget)
    widget.source_edit.setText(str(source))
    widget.target_edit.setText(str(tmp_path / "result.zarr"))
    widget.axis_edit.setText("z")
    assert widget.job_arguments()["mode"] == "ais"
    click(qtbot, widget.run_button)
    wait_job(widget, qtbot)
    table = object_table(tmp_path / "result.zarr")
    features = viewer.layers["result.zarr labels"].features
    np.testing.assert_array_equal(features["index"], table["label"])
    np.testing.assert_array_equal(features["slice"], [0, 1])
    np.testing.assert_array_equal(features["area"], table["area"])
    widget.mode_combo.setCurrentText("prompts")  # the automatic mode's options are hidden for prompts
    assert not widget.auto_mode.isVisibleTo(widget)
