"""The interactive widget at real microscopy sizes, driven as a user would (shown viewer, real
buttons and keys; run under Xvfb: ``xvfb-run -a python -m pytest``).

Planes larger than the model input (1024 px) are encoded tile by tile by ``sum_core``; the
exact fake tile decoder of ``tests/tiled_fakes.py`` places the object, so the written layers
are compared with the truth pixel for pixel. The real (small, random) encoder runs on every
tile a segmentation reaches.

The longest gap of a 10 ms QTimer on the GUI thread is measured during each workflow (S,
commit, undo, clear) and printed; the target is 100 ms, asserted with a 10x margin for a loaded
2-core CI machine (:data:`GAP_BOUND_MS`). Each test fails on the bug it guards (issue 10): a
1500 x 1500 numpy image raised a broadcast error on S, S on a large image blocked the GUI
thread 7.6 s, a commit copied the whole stack (2.8 s, 900 MiB on 50 x 1024 x 1024), a cancelled
tiled job kept encoding, the cache folder hashed the data twice.
"""

from __future__ import annotations

import shutil
import threading
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest
from napari_fixtures import (  # noqa: F401
    SIZES,
    EventLoopGaps,
    camera_image,
    drain_thread_pool,
    ellipse,
    exact_window_decoder,
    make_image,
    notifications,
    open_widget,
    tiny_checkpoint,
    wait_for_encode,
)
from qtpy.QtCore import Qt
from tiled_fakes import FAKE_UNCERTAINTY, fake_decoder

pytestmark = pytest.mark.gui

#: Longest GUI-thread stall accepted in a workflow: the 100 ms target with a 10x margin for a
#: loaded 2-core CI machine with software rendering (single redraws of a 12 Mpixel plane were
#: seen at 260 ms under load); the bugs guarded stalled 2.8 s and 7.6 s. The measured gaps of a
#: quiet machine are in benchmarks/README.md (bench_widget.py).
GAP_BOUND_MS = 1000
#: Time given to the redraws a workflow queued, inside its measured block.
REDRAW_MS = 200


def press(viewer, qtbot, key, modifier=Qt.NoModifier) -> None:
    """Press a key on the napari canvas, as a user would."""
    qtbot.keyClick(viewer.window._qt_viewer.canvas.native, key, modifier)


def click(qtbot, button) -> None:
    qtbot.mouseClick(button, Qt.LeftButton)


def errors(caught) -> list[str]:
    return [str(n.message) for n in caught if str(n.severity) == "error"]


def box_around(mask: np.ndarray, margin: int = 3) -> np.ndarray:
    """The rectangle (two corners, data coordinates) of a mask's bounding box grown by ``margin``."""
    rows, cols = np.nonzero(mask)
    return np.array([[rows.min() - margin, cols.min() - margin], [rows.max() + margin, cols.max() + margin]])


def use_fake_decoder(monkeypatch, truth) -> None:
    from sum_core.tiled_predictor import TiledPredictor

    monkeypatch.setattr(TiledPredictor, "_decode", fake_decoder(truth))


@pytest.mark.parametrize("size", list(SIZES))
def test_s_commit_undo_clear_at_camera_sizes(
    make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch, notifications, size
):
    shape, center, radii, kind = SIZES[size]
    truth = ellipse(shape, center, radii)
    use_fake_decoder(monkeypatch, truth)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(make_image(shape, kind), name="cells")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "cells")
    predictor = widget.predictors.predictor(())
    assert predictor.is_tiled and predictor.tiled.tiles_encoded == 0  # nothing encoded up front ...
    assert widget.status_label.text().startswith("Image ready")  # ... and the status says so
    layers = widget.layers
    gaps = {}

    layers.points().add([list(center)])
    with EventLoopGaps() as gap:
        press(viewer, qtbot, Qt.Key_S)
        wait_for_encode(widget, qtbot)
        qtbot.wait(REDRAW_MS)
    gaps["S"] = gap.max_ms
    current, uncertainty = layers.current().data, layers.uncertainty().data
    assert current.shape == shape and uncertainty.shape == shape  # full size
    np.testing.assert_array_equal(current, truth.astype(current.dtype))  # exactly the object's pixels
    np.testing.assert_array_equal(uncertainty, np.where(truth, FAKE_UNCERTAINTY, 0).astype(np.float32))
    assert 1 <= predictor.tiled.tiles_encoded <= 2  # only the tiles the object reaches

    with EventLoopGaps() as gap:
        press(viewer, qtbot, Qt.Key_C)
        qtbot.wait(REDRAW_MS)
    gaps["commit"] = gap.max_ms
    committed = layers.committed()
    np.testing.assert_array_equal(committed.data, truth.astype(committed.data.dtype))
    assert not current.any() and not uncertainty.any()

    viewer.layers.selection.active = committed
    with EventLoopGaps() as gap:
        press(viewer, qtbot, Qt.Key_Z, Qt.ControlModifier)  # napari's own undo of the labels layer
        qtbot.wait(REDRAW_MS)
    gaps["undo"] = gap.max_ms
    assert not committed.data.any()

    viewer.layers.selection.active = layers.points()
    layers.points().add([list(center)])
    press(viewer, qtbot, Qt.Key_S)
    wait_for_encode(widget, qtbot)
    assert current[truth].all()
    with EventLoopGaps() as gap:
        press(viewer, qtbot, Qt.Key_C, Qt.ShiftModifier)
        qtbot.wait(REDRAW_MS)
    gaps["clear"] = gap.max_ms
    assert not current.any() and not uncertainty.any() and len(layers.points().data) == 0

    print(f"\n{size}: longest GUI-thread gap per workflow (ms): " + ", ".join(f"{k} {v:.0f}" for k, v in gaps.items()))
    assert errors(notifications) == []
    assert max(gaps.values()) < GAP_BOUND_MS, gaps


def test_several_boxes_give_several_objects_at_2160x2560(
    make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch, notifications
):
    shape = (2160, 2560)
    far = ellipse(shape, (2090, 2480), (45, 50))  # far corner
    top = ellipse(shape, (300, 2300), (35, 70))  # another tile
    use_fake_decoder(monkeypatch, far | top)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(camera_image(shape), name="cells")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "cells")
    layers = widget.layers
    for mask in (far, top):
        layers.boxes().add_rectangles(box_around(mask))

    with EventLoopGaps() as gap:
        click(qtbot, widget.segment_button)
        wait_for_encode(widget, qtbot)
        qtbot.wait(REDRAW_MS)
    current = layers.current().data
    expected = np.zeros(shape, current.dtype)
    expected[far], expected[top] = 1, 2  # one id per box, in box order
    np.testing.assert_array_equal(current, expected)
    assert "Segmented 2 object(s)" in widget.status_label.text()

    layers.committed().data_setitem((np.array([0]), np.array([0])), 5)  # an object painted earlier
    click(qtbot, widget.commit_button)
    committed = layers.committed().data
    expected = np.zeros(shape, committed.dtype)
    expected[0, 0], expected[far], expected[top] = 5, 6, 7  # new ids after the largest one
    np.testing.assert_array_equal(committed, expected)
    print(f"\n2 boxes at 2160x2560: longest GUI-thread gap during S {gap.max_ms:.0f} ms")
    assert errors(notifications) == []
    assert gap.max_ms < GAP_BOUND_MS


def test_cancel_stops_the_tiled_job_and_a_new_s_works(
    make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch, notifications
):
    shape = (1500, 1500)
    truth = ellipse(shape, (760, 1100), (150, 80))  # rows 610-910: beyond both tile windows at row 750
    use_fake_decoder(monkeypatch, truth)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(camera_image(shape), name="cells")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "cells")
    encoder = widget.predictors.model.image_encoder
    forward = encoder.forward
    entered, release, calls = threading.Event(), threading.Event(), []

    def held(x):  # the first tile's encoder run waits until the test has pressed Cancel
        calls.append(x.shape[0])
        entered.set()
        release.wait(60)
        return forward(x)

    monkeypatch.setattr(encoder, "forward", held)
    widget.layers.points().add([[760, 1100]])
    with EventLoopGaps() as gap:
        press(viewer, qtbot, Qt.Key_S)
        qtbot.waitUntil(entered.is_set, timeout=60_000)
        assert widget.cancel_button.isEnabled() and widget.progress_bar.maximum() == 0  # busy
        qtbot.waitUntil(lambda: widget.status_label.text() == "Segmenting: 0 tile(s) encoded so far...")
        click(qtbot, widget.cancel_button)
        assert widget.status_label.text() == "Segmentation cancelled." and not widget.is_busy
        release.set()
        wait_for_encode(widget, qtbot)  # the cancelled worker ends ...
    assert calls == [1]  # ... before the second tile: the cancel reached the running job
    assert not widget.layers.current().data.any()  # its result, if any, was dropped

    press(viewer, qtbot, Qt.Key_S)  # S again after Cancel
    wait_for_encode(widget, qtbot)
    current = widget.layers.current().data
    np.testing.assert_array_equal(current, truth.astype(current.dtype))
    assert calls == [1, 1]  # the first tile was kept; only the second one was encoded now
    print(f"\ncancel at 1500x1500: longest GUI-thread gap {gap.max_ms:.0f} ms")
    assert errors(notifications) == []
    assert gap.max_ms < GAP_BOUND_MS


def test_planes_too_large_for_full_size_results_are_segmented_by_window(
    make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch
):
    import dask.array as da
    import napari_sum_hq._session as session
    from sum_core.tiled_predictor import TiledPredictor

    shape = (2160, 2560)
    monkeypatch.setattr(session, "WINDOWED_PIXELS", shape[0] * shape[1] - 1)  # a whole slide, scaled down
    far = ellipse(shape, (2090, 2480), (45, 50))
    top = ellipse(shape, (300, 2300), (35, 70))
    use_fake_decoder(monkeypatch, far | top)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(da.from_array(camera_image(shape), chunks=512), name="slide")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "slide")
    assert isinstance(widget.predictors.predictor(()), TiledPredictor)
    for mask in (far, top):
        widget.layers.boxes().add_rectangles(box_around(mask))
    click(qtbot, widget.segment_button)
    wait_for_encode(widget, qtbot)
    current = widget.layers.current().data
    expected = np.zeros(shape, current.dtype)
    expected[far], expected[top] = 1, 2
    np.testing.assert_array_equal(current, expected)
    np.testing.assert_array_equal(widget.layers.uncertainty().data, np.where(far | top, FAKE_UNCERTAINTY, 0))
    press(viewer, qtbot, Qt.Key_C)
    np.testing.assert_array_equal(widget.layers.committed().data, expected.astype(np.uint32))


def test_cache_folder_hashes_data_and_weights_once_and_reuses_tiles(
    make_napari_viewer, qtbot, tiny_checkpoint, tmp_path, monkeypatch, notifications
):
    import sum_core.embedding_cache as embedding_cache
    import sum_core.encoding as encoding

    shape, center, radii, _ = SIZES["1040x1392"]
    truth = ellipse(shape, center, radii)
    use_fake_decoder(monkeypatch, truth)
    checkpoint = tmp_path / "fresh.pth"  # a model not loaded before: its weights were never hashed
    shutil.copy(tiny_checkpoint, checkpoint)
    data_hashes, weight_hashes = [], []
    data_hash = embedding_cache.data_hash

    def counted_data_hash(data, *args):
        data_hashes.append(data.shape)
        return data_hash(data, *args)

    monkeypatch.setattr(embedding_cache, "data_hash", counted_data_hash)

    blake2b = encoding.hashlib.blake2b  # the weights hash (data hashes are counted above)

    def counted_blake2b(*args, **kwargs):
        weight_hashes.append(1)
        return blake2b(*args, **kwargs)

    monkeypatch.setattr(encoding, "hashlib", SimpleNamespace(blake2b=counted_blake2b))

    viewer = make_napari_viewer(show=True)
    viewer.add_image(camera_image(shape), name="cells")
    widget = open_widget(viewer, qtbot, checkpoint)  # the sole image is pre-selected
    assert widget.image_combo.currentText() == "cells"
    wait_for_encode(widget, qtbot)
    widget.cache_edit.setText(str(tmp_path / "cache"))
    qtbot.keyClick(widget.cache_edit, Qt.Key_Return)  # typed: the image is prepared again with the folder
    wait_for_encode(widget, qtbot)
    assert data_hashes == [shape] and len(weight_hashes) == 1  # once each

    widget.layers.points().add([list(center)])
    press(viewer, qtbot, Qt.Key_S)
    wait_for_encode(widget, qtbot)
    assert widget.predictors.predictor(()).tiled.tiles_encoded == 1
    stores = list((tmp_path / "cache").glob("*/*.zarr"))
    weights = encoding.weights_hash(widget.predictors.model).split(":")[-1][:12]
    assert [s.relative_to(tmp_path / "cache").as_posix() for s in stores] == [f"cells-{weights}/plane.zarr"]

    click(qtbot, widget.embed_button)  # prepare the image again: a new predictor on the same store
    wait_for_encode(widget, qtbot)
    assert len(data_hashes) == 2 and len(weight_hashes) == 1  # the weights hash is memoised on the model
    widget.layers.points().add([list(center)])
    press(viewer, qtbot, Qt.Key_S)
    wait_for_encode(widget, qtbot)
    assert widget.predictors.predictor(()).tiled.tiles_encoded == 0  # the tile came from the cache
    current = widget.layers.current().data
    np.testing.assert_array_equal(current, truth.astype(current.dtype))

    viewer.layers["cells"].data = camera_image(shape, seed=1)  # other data under the same layer name
    click(qtbot, widget.embed_button)
    wait_for_encode(widget, qtbot)  # the store made for the old data is replaced, not refused
    assert len(data_hashes) == 4  # the mismatch, then the new store
    widget.layers.points().add([list(center)])
    press(viewer, qtbot, Qt.Key_S)
    wait_for_encode(widget, qtbot)
    assert widget.predictors.predictor(()).tiled.tiles_encoded == 1
    np.testing.assert_array_equal(current, truth.astype(current.dtype))
    assert errors(notifications) == []


def test_commit_on_a_50_slice_stack_touches_only_the_object(
    make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch, notifications
):
    import sum_core.predictor as predictor_module

    stack_shape, z = (50, 1024, 1024), 37
    truth = np.zeros(stack_shape[1:], bool)
    truth[900:1000, 880:980] = True  # a 100 x 100 object
    monkeypatch.setattr(predictor_module, "decode_window", exact_window_decoder(truth))
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.random.default_rng(0).integers(0, 255, stack_shape, dtype=np.uint8), name="stack")
    viewer.dims.set_current_step(0, z)
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "stack")
    widget.layers.points().add([[z, 950, 930]])
    press(viewer, qtbot, Qt.Key_S)
    wait_for_encode(widget, qtbot)
    committed = widget.layers.committed()

    tracemalloc.start()  # (it slows every allocation down: the GUI-thread gap is measured on a second commit)
    press(viewer, qtbot, Qt.Key_C)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert np.count_nonzero(committed.data) == truth.sum()
    np.testing.assert_array_equal(committed.data[z], truth.astype(np.uint32))
    press(viewer, qtbot, Qt.Key_Z, Qt.ControlModifier)  # the commit is one step of napari's undo
    assert not committed.data.any()

    widget.layers.points().add([[z, 950, 930]])
    press(viewer, qtbot, Qt.Key_S)
    wait_for_encode(widget, qtbot)
    qtbot.wait(REDRAW_MS)
    with EventLoopGaps() as gap:
        press(viewer, qtbot, Qt.Key_C)
        qtbot.wait(REDRAW_MS)
    print(f"\ncommit of a 100x100 object on 50x1024x1024: peak traced memory {peak / 2**20:.2f} MiB, "
          f"longest GUI-thread gap {gap.max_ms:.0f} ms")
    # one bool copy of the stack is 50 MiB (the old commit made several); the object's own index and
    # value arrays and napari's history copy are under 0.5 MiB: 8 MiB leaves room for napari's events.
    assert peak < 8 * 2**20
    np.testing.assert_array_equal(committed.data[z], 2 * truth.astype(np.uint32))  # undone ids are not reused
    assert gap.max_ms < GAP_BOUND_MS
    assert errors(notifications) == []
