"""GUI tests of 3D propagation and of the automatic and batch widgets
(run under Xvfb: ``xvfb-run -a python -m pytest``)."""

from __future__ import annotations

import numpy as np
import pytest
from napari_fixtures import disk_image, drain_thread_pool, notifications, open_widget, tiny_checkpoint, wait_for_encode  # noqa: F401
from qtpy.QtCore import Qt

pytestmark = pytest.mark.gui
JOB_TIMEOUT_MS = 120_000


def press(viewer, qtbot, key, modifier=Qt.NoModifier) -> None:
    qtbot.keyClick(viewer.window._qt_viewer.canvas.native, key, modifier)


def click(qtbot, button) -> None:
    qtbot.mouseClick(button, Qt.LeftButton)


def wait_job(widget, qtbot) -> None:
    qtbot.waitUntil(lambda: not widget.is_running and widget.running_workers == 0, timeout=JOB_TIMEOUT_MS)


def amg(widget) -> dict:
    """The AMG option spin boxes of an automatic or batch widget, by option name."""
    return widget.auto_mode.groups["amg"].spins


def errors(caught) -> list[str]:
    return [str(n.message) for n in caught if str(n.severity) == "error"]


def blob_stack(depth=6, size=64) -> np.ndarray:
    """A disk whose radius changes from slice to slice (present on every slice)."""
    return np.stack([disk_image((size, size), (32, 32), 10 + z) for z in range(depth)])


class _ExactSegmenter:
    """Stands in for sum_core.propagation._SliceSegmenter: thresholds slice ``s`` at 100."""

    def __init__(self, predictor, planes, normalization) -> None:
        self.planes = planes

    def segment(self, slice_index, points, labels, box, mask_input, options):
        from sum_core.prediction import Prediction

        mask = np.asarray(self.planes.read(slice_index)) > 100
        return Prediction(
            masks=mask[None], scores=np.array([0.99], np.float32),
            logits=np.where(mask, 5.0, -5.0).astype(np.float32)[None],
            uncertainties=np.zeros((1, *mask.shape), np.float32), low_res_logits=None,
        )  # fmt: skip


def _segment_slice(viewer, qtbot, widget, z):
    viewer.dims.set_current_step(0, z)
    wait_for_encode(widget, qtbot)
    widget.layers.points().add([[z, 32, 32]])
    click(qtbot, widget.segment_button)
    wait_for_encode(widget, qtbot)
    assert widget.layers.current().data[z].any()


def test_shift_s_propagates_through_the_stack(make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch):
    import sum_core.propagation as propagation

    monkeypatch.setattr(propagation, "_SliceSegmenter", _ExactSegmenter)
    viewer = make_napari_viewer()
    stack = blob_stack()
    stack[5] = 30  # the object ends before the last slice
    viewer.add_image(stack, name="stack")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "stack")
    viewer.dims.set_current_step(0, 2)
    widget.layers.current().data[2] = stack[2] > 100  # the object as segmented on slice 2
    steps = []
    widget.progress_bar.valueChanged.connect(steps.append)

    press(viewer, qtbot, Qt.Key_S, Qt.ShiftModifier)
    wait_for_encode(widget, qtbot)

    current = widget.layers.current().data
    np.testing.assert_array_equal(current[:5] > 0, stack[:5] > 100)
    assert not current[5].any()
    assert "on 5 slice(s) (0..4)" in widget.status_label.text()
    assert max(steps) >= 4  # one progress step per slice read
    click(qtbot, widget.commit_button)  # the commit takes every slice
    assert set(np.flatnonzero(widget.layers.committed().data.reshape(6, -1).any(axis=1))) == {0, 1, 2, 3, 4}


def test_propagation_cancel_keeps_the_current_object(
    make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch, notifications
):
    import threading

    import sum_core.propagation as propagation

    started, release = threading.Event(), threading.Event()

    class Blocking(_ExactSegmenter):
        """Holds the first slice until the test has pressed Cancel."""

        def segment(self, *args):
            started.set()
            release.wait(JOB_TIMEOUT_MS / 1000)
            return super().segment(*args)

    monkeypatch.setattr(propagation, "_SliceSegmenter", Blocking)
    viewer = make_napari_viewer()
    stack = viewer.add_image(blob_stack(depth=12), name="stack").data
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "stack")
    viewer.dims.set_current_step(0, 0)
    widget.layers.current().data[0] = stack[0] > 100
    before = widget.layers.current().data.copy()
    click(qtbot, widget.propagate_button)
    assert widget.status_label.text() == "Propagation running...", errors(notifications)
    qtbot.waitUntil(started.is_set, timeout=JOB_TIMEOUT_MS)
    click(qtbot, widget.cancel_button)
    release.set()
    assert widget.status_label.text() == "Propagation cancelled."
    wait_for_encode(widget, qtbot)
    np.testing.assert_array_equal(widget.layers.current().data, before)


def test_real_small_model_propagation(make_napari_viewer, qtbot, tiny_checkpoint, notifications):
    viewer = make_napari_viewer()
    viewer.add_image(blob_stack(depth=4), name="stack")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "stack")
    _segment_slice(viewer, qtbot, widget, 1)
    start = widget.layers.current().data[1].copy()
    widget.iou_spin.setValue(0.0)
    widget.score_spin.setValue(0.0)
    click(qtbot, widget.propagate_button)
    wait_for_encode(widget, qtbot)
    current = widget.layers.current().data
    filled = np.flatnonzero(current.reshape(4, -1).any(axis=1))
    print(f"\nreal small model: object on slices {filled.tolist()}")
    np.testing.assert_array_equal(current[1], start)
    # the status line names the rule that ended each direction (thresholds at 0: an empty mask, a constant
    # slice, or the random model's predicted IoU below 0)
    status = widget.status_label.text()
    assert "Ends: down: " in status and "; up: " in status
    assert len(filled) > 1 or status.count("stopped at slice") == 2
    assert errors(notifications) == []


def test_propagation_needs_a_stack_and_an_object(make_napari_viewer, qtbot, tiny_checkpoint, notifications):
    viewer = make_napari_viewer()
    viewer.add_image(blob_stack(depth=3), name="stack")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "stack")
    click(qtbot, widget.propagate_button)
    assert "Nothing to propagate" in widget.status_label.text()


def test_automatic_widget_writes_labels_and_uncertainty(make_napari_viewer, qtbot, tiny_checkpoint):
    from napari_sum_hq._auto_widget import AutomaticSegmentationWidget

    viewer = make_napari_viewer()
    image = viewer.add_image(disk_image(), name="img", scale=(2.0, 0.5))
    widget = AutomaticSegmentationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model.set_source(str(tiny_checkpoint))
    amg(widget)["points_per_side"].setValue(4)
    for spin in (amg(widget)["pred_iou_thresh"], amg(widget)["stability_thresh"]):
        spin.setValue(0.0)  # a random-weight model: keep every candidate

    click(qtbot, widget.run_button)
    wait_job(widget, qtbot)

    labels = viewer.layers["img auto labels"]
    unc = viewer.layers["img auto uncertainty"]
    assert labels.data.shape == image.data.shape and labels.data.dtype == np.uint32
    ids = np.unique(labels.data)
    assert ids.max() >= 1 and set(ids[1:]) == set(range(1, ids.max() + 1))
    assert unc.data.dtype == np.float32 and unc.data.shape == image.data.shape
    assert 0.0 <= unc.data.min() and unc.data.max() <= 1.0 and unc.data.max() > 0
    np.testing.assert_allclose(labels.scale, image.scale)
    assert widget.status_label.text().startswith("Found")


def test_automatic_widget_on_one_slice_and_cancel(make_napari_viewer, qtbot, tiny_checkpoint):
    from napari_sum_hq._auto_widget import AutomaticSegmentationWidget

    viewer = make_napari_viewer()
    viewer.add_image(blob_stack(depth=3), name="stack")
    viewer.dims.set_current_step(0, 1)
    widget = AutomaticSegmentationWidget(viewer)
    widget.model.set_source(str(tiny_checkpoint))
    amg(widget)["points_per_side"].setValue(4)
    amg(widget)["pred_iou_thresh"].setValue(0.0)
    amg(widget)["stability_thresh"].setValue(0.0)
    click(qtbot, widget.run_button)
    wait_job(widget, qtbot)
    labels = viewer.layers["stack auto labels"].data
    assert labels.shape == (3, 64, 64) and labels[1].any() and not labels[[0, 2]].any()

    widget.scope_combo.setCurrentText("whole image / stack")
    click(qtbot, widget.run_button)
    click(qtbot, widget.cancel_button)  # before the first tile finishes
    assert widget.status_label.text() == "Cancelled." and widget.run_button.isEnabled()
    wait_job(widget, qtbot)
    assert not viewer.layers["stack auto labels"].data[[0, 2]].any()  # the cancelled result is dropped


def test_automatic_widget_cancel_stops_the_running_tile_between_decoder_batches(
    make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch
):
    import threading

    from napari_sum_hq._auto_widget import AutomaticSegmentationWidget
    from sum_core import automatic

    started, release = threading.Event(), threading.Event()
    batches = []
    real = automatic.decode_points

    def blocking(*args):
        batches.append(1)
        started.set()
        release.wait(JOB_TIMEOUT_MS / 1000)  # the first batch runs until the test pressed Cancel
        return real(*args)

    monkeypatch.setattr(automatic, "decode_points", blocking)
    viewer = make_napari_viewer()
    viewer.add_image(disk_image(), name="img")
    widget = AutomaticSegmentationWidget(viewer)
    widget.model.set_source(str(tiny_checkpoint))
    amg(widget)["points_per_side"].setValue(16)  # 256 clicks: 4 decoder batches of 64 in the one tile
    click(qtbot, widget.run_button)
    qtbot.waitUntil(started.is_set, timeout=JOB_TIMEOUT_MS)
    click(qtbot, widget.cancel_button)
    release.set()
    assert widget.status_label.text() == "Cancelled." and widget.run_button.isEnabled()
    qtbot.waitUntil(lambda: widget.running_workers == 0, timeout=JOB_TIMEOUT_MS)
    assert len(batches) == 1  # the worker stopped after the batch it was decoding, inside the tile
    assert "img auto labels" not in viewer.layers


def _write_source(tmp_path):
    import zarr

    source = tmp_path / "source.zarr"
    array = zarr.create_array(str(source), shape=(2, 64, 64), chunks=(1, 64, 64), dtype="uint8",
                              dimension_names=("z", "y", "x"))  # fmt: skip
    array[:] = blob_stack(depth=2)
    return source


def test_batch_widget_cancel_then_resume_and_open(make_napari_viewer, qtbot, tiny_checkpoint, tmp_path, monkeypatch):
    import sum_core.batch.auto as batch_auto
    from napari_sum_hq._batch_widget import BatchSegmentationWidget

    tiles = []
    original = batch_auto.window_records

    def counting(prepared, *args, **kwargs):
        records = original(prepared, *args, **kwargs)
        tiles.append(prepared.shape)  # completed (a tile cancelled between its batches is not)
        return records

    monkeypatch.setattr(batch_auto, "window_records", counting)
    viewer = make_napari_viewer()
    widget = BatchSegmentationWidget(viewer)
    widget.model.set_source(str(tiny_checkpoint))
    widget.source_edit.setText(str(_write_source(tmp_path)))
    target = tmp_path / "result.zarr"
    widget.target_edit.setText(str(target))
    widget.axis_edit.setText("z")
    amg(widget)["points_per_side"].setValue(4)
    amg(widget)["pred_iou_thresh"].setValue(0.0)
    amg(widget)["stability_thresh"].setValue(0.0)
    widget.tiling.tile_spin.setValue(32)
    widget.tiling.halo_spin.setValue(8)  # 2 slices x 4 tiles
    # cancel as soon as the first task ends (1 of the 18 tasks: 2 x (4 tiles + 1 plan + 4 chunks); the bar
    # also moves within a tile, per decoder batch)
    widget.progress_bar.valueChanged.connect(
        lambda v: v >= widget.progress_bar.maximum() / 18 and widget.is_running and widget.cancel()
    )

    click(qtbot, widget.run_button)
    qtbot.waitUntil(lambda: widget.running_workers == 0, timeout=JOB_TIMEOUT_MS)
    first = len(tiles)
    assert widget.status_label.text() == "Cancelled."
    assert 1 <= first < 8 and "result.zarr labels" not in viewer.layers

    widget.progress_bar.valueChanged.disconnect()
    click(qtbot, widget.run_button)
    wait_job(widget, qtbot)
    print(f"\nbatch: {first} tile(s) before cancel, {len(tiles) - first} on resume (8 in all)")
    assert len(tiles) == 8  # no completed tile segmented again

    labels, unc = viewer.layers["result.zarr labels"], viewer.layers["result.zarr uncertainty"]
    import dask.array as da

    assert isinstance(labels.data, da.Array) and labels.data.shape == (2, 64, 64)
    import zarr

    group = zarr.open_group(str(target), mode="r")
    assert labels.data.dtype == np.uint32 and group.attrs["sum_hq_batch"]["complete"] is True
    assert isinstance(unc.data, da.Array) and float(unc.data.max()) <= 1.0
    click(qtbot, widget.run_button)  # a complete job is returned without work
    wait_job(widget, qtbot)
    assert len(tiles) == 8


def test_batch_widget_errors_are_in_the_status_line(make_napari_viewer, qtbot, tiny_checkpoint, tmp_path, notifications):
    from napari_sum_hq._batch_widget import BatchSegmentationWidget
    from napari_sum_hq._job_widget import ERROR_STYLE

    viewer = make_napari_viewer()
    widget = BatchSegmentationWidget(viewer)
    click(qtbot, widget.run_button)
    assert "Give a source image and a target" in widget.status_label.text()
    assert widget.status_label.styleSheet() == ERROR_STYLE
    widget.model.set_source(str(tiny_checkpoint))
    widget.source_edit.setText(str(tmp_path / "missing.zarr"))
    widget.target_edit.setText(str(tmp_path / "out.zarr"))
    click(qtbot, widget.run_button)
    wait_job(widget, qtbot)
    text = widget.status_label.text()
    assert text.startswith("Failed: ") and "missing.zarr" in text and "does not exist" in text
    assert widget.status_label.styleSheet() == ERROR_STYLE
    assert errors(notifications) == []  # sum_core errors: no pop-up
