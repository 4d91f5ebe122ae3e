"""Issue 14 item 7: large images in the interactive widget (GUI, shown viewer, real keys and buttons).

A cut at ``max tiles`` is said and can be continued; a cache folder typed after choosing the image
is used; point markers and box outlines keep their screen size at every zoom of a 6000 px image; a second S while
a segmentation runs encodes no tile twice.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from napari_fixtures import (  # noqa: F401
    SIZES,
    camera_image,
    drain_thread_pool,
    ellipse,
    notifications,
    open_widget,
    tiny_checkpoint,
    wait_for_encode,
)
from napari_ux_helpers import save_screenshot
from qtpy.QtCore import Qt
from test_napari_sizes import box_around, use_fake_decoder
from test_napari_widget import click, errors, press

pytestmark = pytest.mark.gui


def test_a_cut_at_max_tiles_is_shown_and_continue_segments_the_object_whole(
    make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch, notifications
):
    import napari_sum_hq._session as session

    shape = (2160, 2560)
    monkeypatch.setattr(session, "WINDOWED_PIXELS", shape[0] * shape[1] - 1)  # a whole slide, scaled down
    truth = ellipse(shape, (1080, 1280), (700, 900))  # crosses the inner tile borders
    use_fake_decoder(monkeypatch, truth)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(camera_image(shape), name="slide")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "slide")
    widget.tile_limit.spin.setValue(2)
    widget.layers.boxes().add_rectangles(box_around(truth))
    press(viewer, qtbot, Qt.Key_S)
    wait_for_encode(widget, qtbot)
    status = widget.status_label.text()
    assert "still reaches a tile border after 2 tiles (max tiles) and may be cut there" in status
    assert "color" in widget.status_label.styleSheet()  # red
    button = widget.tile_limit.continue_button
    assert button.isVisible() and button.text().startswith("Continue with all ")
    current = widget.layers.current().data
    assert 0 < np.count_nonzero(current) < np.count_nonzero(truth)  # cut
    save_screenshot(viewer, qtbot, "large_image.png")

    click(qtbot, button)
    wait_for_encode(widget, qtbot)
    np.testing.assert_array_equal(widget.layers.current().data, truth.astype(current.dtype))
    assert not button.isVisible() and "Segmented 1 object(s)" in widget.status_label.text()
    assert errors(notifications) == []


def test_a_cache_folder_typed_after_choosing_the_image_is_used(
    make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch, tmp_path
):
    shape, center, radii, _ = SIZES["1040x1392"]
    truth = ellipse(shape, center, radii)
    use_fake_decoder(monkeypatch, truth)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(camera_image(shape), name="cells")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "cells")  # prepared without a cache folder
    qtbot.keyClicks(widget.cache_edit, str(tmp_path / "cache"))
    qtbot.keyClick(widget.cache_edit, Qt.Key_Return)
    wait_for_encode(widget, qtbot)
    widget.layers.points().add([list(center)])
    press(viewer, qtbot, Qt.Key_S)
    wait_for_encode(widget, qtbot)
    assert [p.name for p in (tmp_path / "cache").glob("cells-*/*.zarr")] == ["plane.zarr"]
    current = widget.layers.current().data
    np.testing.assert_array_equal(current, truth.astype(current.dtype))


def green_diameter(viewer) -> int:
    """Width in screen pixels of the point marker (green face, white border) on the black image."""
    shot = np.asarray(viewer.screenshot(canvas_only=True, flash=False))
    cols = np.flatnonzero((shot[..., :3].max(axis=-1) > 40).any(axis=0))
    return int(cols.max() - cols.min() + 1) if cols.size else 0


def test_point_markers_keep_their_screen_size_at_every_zoom_of_a_6000_px_image(
    make_napari_viewer, qtbot, tiny_checkpoint
):
    from napari_sum_hq._layers import MARKER_SCREEN_PX

    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((6000, 6000), np.uint8), name="huge", contrast_limits=(0, 255))
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "huge", wait=False)
    widget.layers.points().add([[3000, 3000]])
    sizes = []
    for zoom in (0.1, 0.4, 2.0):  # the whole image, closer, pixels visible
        viewer.scene.camera.center = (3000, 3000)
        viewer.scene.camera.zoom = zoom
        qtbot.wait(100)
        sizes.append(green_diameter(viewer))
    assert min(sizes) >= MARKER_SCREEN_PX - 2 and max(sizes) - min(sizes) <= 2, sizes
    wait_for_encode(widget, qtbot)


def yellow_runs(viewer) -> list[int]:
    """Widths in screen pixels of the yellow box outlines crossed by the canvas' middle row."""
    shot = np.asarray(viewer.screenshot(canvas_only=True, flash=False))
    row = shot[shot.shape[0] // 2, :, :3].astype(int)
    yellow = np.r_[False, (row[:, 0] > 100) & (row[:, 1] > 100) & (row[:, 2] < 80), False]
    edges = np.flatnonzero(np.diff(yellow.astype(int)))
    return (edges[1::2] - edges[::2]).tolist()


def test_box_outlines_keep_their_screen_width_at_every_zoom_of_a_6000_px_image(
    make_napari_viewer, qtbot, tiny_checkpoint
):
    """Issue 14 item 7 (box prompts, as the point markers): a box's outline is as wide on the screen
    zoomed out as zoomed in, also for a box drawn after zooming (napari draws edges in data units)."""
    from napari_sum_hq._layers import BOX_EDGE_SCREEN_PX

    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((6000, 6000), np.uint8), name="huge", contrast_limits=(0, 255))
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "huge", wait=False)
    boxes = widget.layers.boxes()
    boxes.add_rectangles(np.array([[2950, 2950], [3050, 3050]]))
    widths = {}
    for zoom in (0.1, 0.4, 2.0):  # the whole image, closer, pixels visible
        viewer.scene.camera.center = (3000, 3000)
        viewer.scene.camera.zoom = zoom
        qtbot.wait(100)
        widths[zoom] = yellow_runs(viewer)
    boxes.add_rectangles(np.array([[2980, 2980], [3020, 3020]]))  # drawn at zoom 2
    qtbot.wait(100)
    widths["second box"] = yellow_runs(viewer)
    assert [len(runs) for runs in widths.values()] == [2, 2, 2, 4], widths
    every = [width for runs in widths.values() for width in runs]
    assert min(every) >= BOX_EDGE_SCREEN_PX - 1 and max(every) <= BOX_EDGE_SCREEN_PX + 1, widths
    wait_for_encode(widget, qtbot)


def test_a_second_s_while_segmenting_encodes_each_tile_once(
    make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch, notifications
):
    shape = (1500, 1500)
    truth = ellipse(shape, (760, 1100), (150, 80))  # two tiles
    use_fake_decoder(monkeypatch, truth)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(camera_image(shape), name="cells")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "cells")
    encoder = widget.predictors.model.image_encoder
    forward = encoder.forward
    entered, release, calls = threading.Event(), threading.Event(), []

    def held(x):  # the first tile's encoder run waits until the test has pressed S again
        calls.append(x.shape[0])
        entered.set()
        release.wait(60)
        return forward(x)

    monkeypatch.setattr(encoder, "forward", held)
    widget.layers.points().add([[760, 1100]])
    press(viewer, qtbot, Qt.Key_S)
    qtbot.waitUntil(entered.is_set, timeout=60_000)
    press(viewer, qtbot, Qt.Key_S)  # impatient
    assert "A segmentation is running" in widget.status_label.text()
    release.set()
    wait_for_encode(widget, qtbot)
    current = widget.layers.current().data
    np.testing.assert_array_equal(current, truth.astype(current.dtype))
    assert calls == [1, 1]  # two tiles, each encoded once
    assert errors(notifications) == []
