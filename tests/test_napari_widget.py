"""GUI tests of the interactive segmentation widget (run under Xvfb: ``xvfb-run -a python -m pytest``)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from napari_fixtures import (  # noqa: F401
    disk_image,
    drain_thread_pool,
    notifications,
    open_widget,
    tiny_checkpoint,
    wait_for_encode,
)
from napari_sum_hq._job_widget import ERROR_STYLE
from qtpy.QtCore import Qt, QTimer

pytestmark = pytest.mark.gui


def press(viewer, qtbot, key, modifier=Qt.NoModifier) -> None:
    """Press a key on the napari canvas, as a user would."""
    qtbot.keyClick(viewer.window._qt_viewer.canvas.native, key, modifier)


def click(qtbot, button) -> None:
    qtbot.mouseClick(button, Qt.LeftButton)


def segment(viewer, qtbot, widget, key: bool = False) -> None:
    """Press S (or click Segment) and wait for the segmentation, which runs in a worker."""
    press(viewer, qtbot, Qt.Key_S) if key else click(qtbot, widget.segment_button)
    wait_for_encode(widget, qtbot)


def segment_the_disk(viewer, qtbot, checkpoint):
    """Open the widget on a ``disk_image`` layer "img", click the disk and segment it; the widget."""
    viewer.add_image(disk_image(), name="img")
    widget = open_widget(viewer, qtbot, checkpoint, "img")
    widget.layers.points().add([[48, 60]])
    segment(viewer, qtbot, widget)
    return widget


def errors(caught) -> list[str]:
    return [str(n.message) for n in caught if str(n.severity) == "error"]


def test_point_segments_into_labels_and_uncertainty(make_napari_viewer, qtbot, tiny_checkpoint):
    viewer = make_napari_viewer()
    image = viewer.add_image(disk_image(), name="img", scale=(2.0, 0.5), translate=(10.0, -3.0))
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "img")
    layers = widget.layers
    assert viewer.layers.selection.active is layers.points()
    items = [widget.image_combo.itemText(i) for i in range(widget.image_combo.count())]
    assert items[1:] == ["img"]  # the plugin's own uncertainty Image layer is not offered
    layers.points().add([[48, 60]])

    segment(viewer, qtbot, widget)

    current, unc = layers.current(), layers.uncertainty()
    assert current.data.shape == image.data.shape
    assert current.data.any()
    assert set(np.unique(current.data)) == {0, 1}
    assert unc.data.shape == image.data.shape and unc.data.dtype == np.float32
    assert 0.0 <= unc.data.min() and unc.data.max() <= 1.0 and unc.data.max() > 0
    assert unc.colormap.name == "magma" and tuple(unc.contrast_limits) == (0.0, 1.0)
    for layer in (current, unc, layers.points(), layers.boxes(), layers.committed()):
        np.testing.assert_allclose(layer.scale, image.scale)
        np.testing.assert_allclose(layer.translate, image.translate)


def test_key_s_segments_and_t_toggles_point_kind(make_napari_viewer, qtbot, tiny_checkpoint):
    viewer = make_napari_viewer()
    viewer.add_image(disk_image(), name="img")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "img")
    points = widget.layers.points()
    points.add([[48, 60]])
    press(viewer, qtbot, Qt.Key_T)
    assert "negative" in widget.point_kind_label.text()
    points.add([[5, 5]])
    assert points.features["label"].tolist() == [1, 0]
    np.testing.assert_allclose(points.face_color[:, :3], [[0, 128 / 255, 0], [1, 0, 0]], atol=0.01)
    assert viewer.layers.selection.active is points  # S must not switch the points layer to select mode

    segment(viewer, qtbot, widget, key=True)

    assert widget.layers.current().data.any()
    assert points.mode == "add"


def test_box_prompt_segments(make_napari_viewer, qtbot, tiny_checkpoint):
    viewer = make_napari_viewer()
    viewer.add_image(disk_image(), name="img")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "img")
    widget.layers.boxes().add_rectangles(np.array([[25, 35], [72, 85]]))

    segment(viewer, qtbot, widget)

    assert widget.layers.current().data.any()
    assert "Segmented 1 object" in widget.status_label.text()


def test_commit_undo_clear(make_napari_viewer, qtbot, tiny_checkpoint, notifications):
    viewer = make_napari_viewer()
    widget = segment_the_disk(viewer, qtbot, tiny_checkpoint)
    widget.commit_mode_combo.setCurrentText("overwrite")  # the random model's masks overlap at will
    layers = widget.layers
    first = layers.current().data > 0
    click(qtbot, widget.commit_button)
    committed = layers.committed()
    np.testing.assert_array_equal(committed.data == 1, first)
    assert len(layers.points().data) == 0 and not layers.current().data.any()

    layers.points().add([[10, 10]])
    segment(viewer, qtbot, widget, key=True)
    second = layers.current().data > 0
    press(viewer, qtbot, Qt.Key_C)
    assert committed.data.max() == 2
    np.testing.assert_array_equal(committed.data == 2, second)
    np.testing.assert_array_equal(committed.data == 1, first & ~second)

    press(viewer, qtbot, Qt.Key_Z, Qt.ControlModifier)  # undo the second commit (a prompt layer is active)
    np.testing.assert_array_equal(committed.data, first.astype(committed.data.dtype))
    click(qtbot, widget.undo_button)  # and the first
    assert not committed.data.any()
    click(qtbot, widget.undo_button)
    assert "No commit to undo." in [str(n.message) for n in notifications]

    layers.points().add([[48, 60]])
    layers.boxes().add_rectangles(np.array([[25, 35], [72, 85]]))
    segment(viewer, qtbot, widget, key=True)
    press(viewer, qtbot, Qt.Key_C, Qt.ShiftModifier)
    assert len(layers.points().data) == 0 and layers.boxes().nshapes == 0
    assert not layers.current().data.any() and not layers.uncertainty().data.any()
    assert not committed.data.any()  # clearing never touches committed objects
    assert errors(notifications) == []


def test_commits_are_in_napari_undo_history(make_napari_viewer, qtbot, tiny_checkpoint, notifications):
    """Ctrl+Z on the committed layer (napari's own undo) undoes a commit, redo restores it, and
    the widget's Undo commit button works on the same history without undoing a paint stroke."""
    viewer = make_napari_viewer()
    widget = segment_the_disk(viewer, qtbot, tiny_checkpoint)
    layers = widget.layers
    obj = layers.current().data > 0
    click(qtbot, widget.commit_button)
    committed = layers.committed()
    np.testing.assert_array_equal(committed.data == 1, obj)

    viewer.layers.selection.active = committed
    press(viewer, qtbot, Qt.Key_Z, Qt.ControlModifier)  # napari's labels undo, not the widget's binding
    assert not committed.data.any()
    press(viewer, qtbot, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)  # napari's redo
    np.testing.assert_array_equal(committed.data == 1, obj)
    click(qtbot, widget.undo_button)  # the redone commit is still a commit
    assert not committed.data.any()
    committed.redo()

    committed.paint((5, 5), 9)  # a brush stroke after the commit
    painted = committed.data.copy()
    click(qtbot, widget.undo_button)
    np.testing.assert_array_equal(committed.data, painted)  # the stroke is not undone as a "commit"
    assert any("not a commit" in str(n.message) for n in notifications)


def test_painting_on_the_current_object_is_committed_with_it(make_napari_viewer, qtbot, tiny_checkpoint):
    viewer = make_napari_viewer()
    widget = segment_the_disk(viewer, qtbot, tiny_checkpoint)
    layers = widget.layers
    current = layers.current()
    current.brush_size = 3
    current.paint((90, 120), 1)  # far from the object: outside the windows the widget wrote
    expected = current.data > 0
    assert expected[90, 120]
    click(qtbot, widget.commit_button)
    np.testing.assert_array_equal(layers.committed().data == 1, expected)
    assert not current.data.any()  # the painted pixels were cleared with the object


def test_refine_committed_label_keeps_its_id(make_napari_viewer, qtbot, tiny_checkpoint, notifications, monkeypatch):
    from sum_core.predictor import Predictor

    mask_inputs = []
    original = Predictor.predict

    def spy(self, *args, **kwargs):
        mask_inputs.append(kwargs.get("mask_input"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "predict", spy)
    viewer = make_napari_viewer()
    widget = segment_the_disk(viewer, qtbot, tiny_checkpoint)
    layers = widget.layers
    remembered = widget._last_result.low_res_logits[0]
    click(qtbot, widget.commit_button)
    assert mask_inputs == [None]

    widget.refine_spin.setValue(1)  # mask prompt only: SAM's remembered low-res logits
    segment(viewer, qtbot, widget)
    np.testing.assert_array_equal(mask_inputs[-1], remembered)
    assert mask_inputs[-1].shape == (1, 256, 256)
    refined = layers.current().data > 0
    click(qtbot, widget.commit_button)
    assert set(np.unique(layers.committed().data)) <= {0, 1}  # same id, no new object
    np.testing.assert_array_equal(layers.committed().data == 1, refined)
    assert widget.refine_spin.value() == 0

    layers.committed().data[...] = 0
    layers.committed().data[:5, :5] = 1  # a painted object: its full-size mask is the prompt
    widget.refine_spin.setValue(1)
    segment(viewer, qtbot, widget)
    expected = np.zeros((96, 128), bool)
    expected[:5, :5] = True
    assert mask_inputs[-1].dtype == bool
    np.testing.assert_array_equal(mask_inputs[-1], expected)

    widget.refine_spin.setValue(7)
    segment(viewer, qtbot, widget)
    assert "refine label 7" in widget.status_label.text()  # a sum_core error: the status line, red
    assert widget.status_label.styleSheet() == ERROR_STYLE and errors(notifications) == []


def test_3d_stack_segments_the_current_slice(make_napari_viewer, qtbot, tiny_checkpoint):
    viewer = make_napari_viewer()
    viewer.add_image(disk_image(shape=(4, 64, 64), center=(32, 32), radius=12), name="stack")
    viewer.dims.set_current_step(0, 2)
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "stack")
    assert widget.predictors.predictor((2,)) is not None
    widget.layers.points().add([[2, 32, 32], [1, 5, 5]])  # the second point is on another slice

    segment(viewer, qtbot, widget)

    current = widget.layers.current().data
    assert current[2].any()
    assert not current[[0, 1, 3]].any()

    viewer.dims.set_current_step(0, 3)  # a new slice is prepared on demand, then segmented
    widget.layers.points().add([[3, 32, 32]])
    segment(viewer, qtbot, widget)
    current = widget.layers.current().data
    assert current[3].any() and not current[:3].any()


class _ThresholdSegmenter:
    """Stands in for ``sum_core.propagation._SliceSegmenter``: slice ``s`` thresholded at 100."""

    def __init__(self, predictor, planes, normalization) -> None:
        self.planes = planes

    def segment(self, slice_index, points, labels, box, mask_input, options):
        from sum_core.prediction import Prediction

        mask = np.asarray(self.planes.read(slice_index)) > 100
        logits = np.where(mask, 5.0, -5.0).astype(np.float32)[None]
        return Prediction(mask[None], np.array([0.99], np.float32), logits, np.zeros_like(logits), None)


def test_shift_s_propagates_and_the_commit_takes_every_slice(make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch):
    import sum_core.propagation as propagation

    monkeypatch.setattr(propagation, "_SliceSegmenter", _ThresholdSegmenter)
    viewer = make_napari_viewer()
    stack = np.stack([disk_image((64, 64), (32, 32), 10 + z) for z in range(6)])
    stack[5] = 30  # the object ends before the last slice
    viewer.add_image(stack, name="stack")
    viewer.dims.set_current_step(0, 2)
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "stack")
    current = widget.layers.current()
    where = np.nonzero(stack[2] > 100)
    current.data_setitem((np.full(where[0].size, 2), *where), 1)  # the object painted on slice 2
    steps = []
    widget.progress_bar.valueChanged.connect(steps.append)

    press(viewer, qtbot, Qt.Key_S, Qt.ShiftModifier)
    wait_for_encode(widget, qtbot)

    np.testing.assert_array_equal(current.data[:5] > 0, stack[:5] > 100)
    assert not current.data[5].any()
    assert "on 5 slice(s) (0..4)" in widget.status_label.text()
    assert max(steps) >= 4  # one progress step per slice read
    press(viewer, qtbot, Qt.Key_C)  # the commit takes every slice, as one step of napari's undo
    committed = widget.layers.committed()
    expected = stack > 100
    expected[5] = False
    np.testing.assert_array_equal(committed.data, expected.astype(committed.data.dtype))
    viewer.layers.selection.active = committed
    press(viewer, qtbot, Qt.Key_Z, Qt.ControlModifier)
    assert not committed.data.any()


def test_live_mode_segments_on_every_point(make_napari_viewer, qtbot, tiny_checkpoint):
    viewer = make_napari_viewer()
    viewer.add_image(disk_image(), name="img")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "img")
    widget.live_check.setChecked(True)
    widget.layers.points().add([[48, 60]])
    wait_for_encode(widget, qtbot)
    assert widget.layers.current().data.any()
    widget.layers.points().data = np.empty((0, 2))
    assert not widget.layers.current().data.any()


def test_user_errors_are_said_in_the_status_line(make_napari_viewer, qtbot, tiny_checkpoint, notifications):
    viewer = make_napari_viewer()
    viewer.add_image(disk_image(), name="img")
    viewer.add_image(disk_image(), name="other")  # two images: none is pre-selected
    widget = open_widget(viewer, qtbot, tiny_checkpoint)  # no image chosen yet
    click(qtbot, widget.segment_button)
    assert "No image chosen" in widget.status_label.text()
    click(qtbot, widget.commit_button)
    assert "Nothing to commit" in widget.status_label.text()
    widget.image_combo.setCurrentIndex(widget.image_combo.findText("img"))
    wait_for_encode(widget, qtbot)
    segment(viewer, qtbot, widget)
    assert "No prompt on this slice" in widget.status_label.text()
    assert widget.status_label.styleSheet() == ERROR_STYLE and errors(notifications) == []  # no pop-up


def test_bad_checkpoint_is_said_in_the_status_line(make_napari_viewer, qtbot, tmp_path, notifications):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"this is not a checkpoint")
    viewer = make_napari_viewer()
    viewer.add_image(disk_image(), name="img")
    widget = open_widget(viewer, qtbot, bad, "img")

    assert errors(notifications) == []  # a sum_core error: the status line only, red
    assert widget.status_label.text().startswith("Embedding failed") and "broken.pth" in widget.status_label.toolTip() + widget.status_label.text()
    assert widget.predictors.predictor(()) is None and not widget.cancel_button.isEnabled()


def test_cancel_drops_a_slow_encode(make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch):
    from sum_core.predictor import Predictor

    original = Predictor.set_image

    def slow_set_image(self, image, *args, **kwargs):
        time.sleep(1.5)
        original(self, image, *args, **kwargs)

    monkeypatch.setattr(Predictor, "set_image", slow_set_image)
    viewer = make_napari_viewer()
    viewer.add_image(disk_image(), name="img")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "img", wait=False)
    worker = widget._job.worker
    qtbot.waitUntil(lambda: widget.progress_bar.value() == 1, timeout=60_000)  # encoding now
    assert widget.cancel_button.isEnabled()

    with qtbot.waitSignal(worker.aborted, timeout=60_000):
        click(qtbot, widget.cancel_button)
        assert widget.status_label.text() == "Embedding cancelled."
        assert not widget.is_busy and not widget.cancel_button.isEnabled()
    wait_for_encode(widget, qtbot)
    assert widget.predictors.predictor(()) is None  # the cancelled embedding was dropped

    widget.compute_embedding()  # a superseded encode is dropped too
    superseded = widget._job.worker
    widget.compute_embedding()
    assert superseded is not widget._job.worker
    wait_for_encode(widget, qtbot)
    assert widget.predictors.predictor(()) is not None


def test_event_loop_stays_responsive_while_encoding(make_napari_viewer, qtbot, tiny_checkpoint):
    viewer = make_napari_viewer()
    viewer.add_image(disk_image(shape=(700, 900), center=(350, 450), radius=150), name="img")
    widget = open_widget(viewer, qtbot, tiny_checkpoint)
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    for _ in range(3):  # three full encodes (model load + embedding)
        widget.predictors.clear()
        widget.compute_embedding() if widget.image_layer else widget.image_combo.setCurrentIndex(1)
        wait_for_encode(widget, qtbot)
    timer.stop()
    gaps = np.diff(ticks)
    print(f"\nevent loop during 3 encodes: {len(ticks)} ticks, max gap {gaps.max() * 1000:.0f} ms")
    assert widget.predictors.predictor(()) is not None
    assert gaps.max() < 1.0


def test_screenshot_shows_mask_and_uncertainty_where_computed(make_napari_viewer, qtbot, tiny_checkpoint):
    viewer = make_napari_viewer(show=True)
    image = viewer.add_image(disk_image(), name="img")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "img")
    layers = widget.layers
    layers.points().add([[48, 60]])
    segment(viewer, qtbot, widget)
    mask = layers.current().data > 0
    assert 0 < mask.mean() < 1
    for layer in (image, layers.points(), layers.boxes()):
        layer.visible = False  # all colour on the canvas comes from the overlay shown
    viewer.window._qt_window.resize(1400, 900)
    qtbot.wait(100)
    viewer.reset_view()

    def grab(visible):
        for layer in (layers.current(), layers.uncertainty()):
            layer.visible = layer is visible
        qtbot.wait(50)
        return viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)

    labels_shot, unc_shot = grab(layers.current()), grab(layers.uncertainty())
    assert viewer.camera.zoom > 3  # several screen pixels per image pixel
    # the data pixel shown at each screen pixel
    rows, cols = np.indices(labels_shot.shape[:2], dtype=float)
    zoom, center = viewer.camera.zoom, viewer.camera.center[-2:]
    world = np.stack([center[0] + (rows - rows.shape[0] / 2) / zoom, center[1] + (cols - cols.shape[1] / 2) / zoom])
    data = np.rint(world).astype(int)
    on_image = np.all((data >= 0) & (data < np.array(mask.shape)[:, None, None]), axis=0)
    r, c = np.clip(data[0], 0, mask.shape[0] - 1), np.clip(data[1], 0, mask.shape[1] - 1)
    from scipy import ndimage

    inside = on_image & ndimage.binary_erosion(mask, iterations=1)[r, c]
    outside = on_image & ~ndimage.binary_dilation(mask, iterations=1)[r, c]
    inside_rgb, outside_rgb = labels_shot[inside].sum(axis=1).mean(), labels_shot[outside].sum(axis=1).mean()
    print(f"\nlabels overlay: mean R+G+B inside the mask {inside_rgb:.0f}, outside {outside_rgb:.0f}")
    assert inside.sum() > 1000 and outside.sum() > 1000
    assert inside_rgb > 60
    assert outside_rgb < 5
    unc_layer = layers.uncertainty()
    data_unc = np.asarray(unc_layer.data)
    assert tuple(unc_layer.contrast_limits) == (0, 1)
    # Expected on-screen brightness of each screen pixel from the layer's own colormap (contrast 0..1,
    # opacity, additive on black), checked where the 3x3 data neighbourhood is nearly flat so that a
    # half-pixel error in the screen-to-data mapping does not matter.
    flat = (ndimage.maximum_filter(data_unc, 3) - ndimage.minimum_filter(data_unc, 3)) < 0.05
    check = on_image & flat[r, c]
    values = data_unc[r, c][check]
    expected = (unc_layer.colormap.map(np.clip(values, 0, 1))[:, :3] * 255 * unc_layer.opacity).sum(axis=1)
    shown = unc_shot[check].sum(axis=1)
    correlation = np.corrcoef(expected, shown)[0, 1]
    print(f"uncertainty overlay: {check.sum()} screen pixels, expected brightness {expected.min():.0f}.."
          f"{expected.max():.0f}, correlation with the screen {correlation:.3f}, "
          f"mean |error| {np.abs(expected - shown).mean():.1f}")
    assert check.sum() > 1000 and expected.std() > 5
    assert correlation > 0.6  # 0.76 measured; a misplaced or missing overlay gives about 0
    assert np.abs(expected - shown).mean() < 0.1 * (expected.max() - expected.min())


def test_opening_the_widget_loads_no_model_and_no_torch(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, napari\n"
        "from napari_sum_hq._interactive_widget import InteractiveSegmentationWidget\n"
        "viewer = napari.Viewer(show=False)\n"
        "viewer.add_image(np.zeros((32, 32), np.uint8), name='img')\n"
        "widget = InteractiveSegmentationWidget(viewer)\n"
        "viewer.window.add_dock_widget(widget)\n"
        "print('RESULT', 'torch' in sys.modules, widget.predictors.model is None, widget.model_combo.count() > 1)\n"
        "viewer.close()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    line = [ln for ln in result.stdout.splitlines() if ln.startswith("RESULT")]
    assert line == ["RESULT False True True"], result.stdout + result.stderr


def test_choosing_an_image_never_downloads_a_registry_model(make_napari_viewer, qtbot, tmp_path, monkeypatch, notifications):
    models = tmp_path / "models.yaml"
    models.write_text(
        "- name: unreachable_model\n"
        "  url: http://127.0.0.1:9/unreachable_model.pth\n"
        f"  known_hash: sha256:{'0' * 64}\n"
    )
    monkeypatch.setenv("SUM_HQ_MODELS", str(models))
    monkeypatch.setenv("SUM_HQ_CACHE", str(tmp_path / "cache"))
    viewer = make_napari_viewer()
    viewer.add_image(disk_image(), name="img")
    widget = open_widget(viewer, qtbot, "unreachable_model")
    assert widget.model_combo.currentIndex() < widget.model_combo.count() - 1
    assert widget.model_combo.findText("unreachable_model") >= 0  # listed from the models file
    widget.image_combo.setCurrentIndex(widget.image_combo.findText("img"))
    wait_for_encode(widget, qtbot)

    assert errors(notifications) == []  # not downloaded: said in red, nothing downloads by itself
    assert "model unreachable_model" in widget.status_label.text() and "is not downloaded" in widget.status_label.text()
    assert widget.status_label.styleSheet() == ERROR_STYLE


@pytest.mark.gui
def test_scrolling_during_propagation_keeps_it_running_and_blank_slices_raise_no_popup(
    make_napari_viewer, qtbot, tiny_checkpoint, notifications, monkeypatch
):
    """The user scrolls to watch a running propagation: the job goes on (it used to be cancelled
    by the preparation of the new slice); scrolling onto a blank slice afterwards only says so in
    the status line, no error pop-up."""
    import threading

    import napari_sum_hq._interactive_propagation as propagation_part
    from napari_sum_hq._propagation import PropagationResult
    from sum_core.propagation import DirectionStop, PropagationInfo

    release = threading.Event()

    def slow_job(choice, model, stack, index, mask, token, *rest):
        release.wait(20)
        token.check()
        stop = DirectionStop(index, "empty_mask")
        return PropagationResult(model, (), PropagationInfo(stop, stop), {})

    monkeypatch.setattr(propagation_part, "propagation_job", slow_job)
    viewer = make_napari_viewer()
    stack = np.stack([disk_image((64, 64), (32, 32), 10 + z) for z in range(6)])
    stack[5] = 0  # a blank slice
    viewer.add_image(stack, name="stack")
    viewer.dims.set_current_step(0, 2)
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "stack")
    where = np.nonzero(stack[2] > 100)
    widget.layers.current().data_setitem((np.full(where[0].size, 2), *where), 1)
    widget.propagate()
    assert widget._job.name == "Propagation"
    viewer.dims.set_current_step(0, 4)  # the user scrolls to watch
    qtbot.wait(600)  # longer than the slice debounce
    assert widget._job is not None and widget._job.name == "Propagation"
    release.set()
    qtbot.waitUntil(lambda: widget._job is None, timeout=20000)
    assert "Propagated from slice 2" in widget.status_label.text()  # ran to its end, not cancelled
    shown = len(notifications)
    viewer.dims.set_current_step(0, 5)
    qtbot.waitUntil(lambda: "failed" in widget.status_label.text(), timeout=20000)
    assert "all pixels are equal" in widget.status_label.text()
    assert len(notifications) == shown
