"""Issue 14 item 10: committed objects and their prompts are saved beside the image on every commit
(atomically, never over a file that is not ours) and come back when the image is opened again
(GUI, shown viewers, real keys and buttons)."""

from __future__ import annotations

import numpy as np
import pytest
from napari_fixtures import (  # noqa: F401
    camera_image,
    drain_thread_pool,
    notifications,
    open_widget,
    tiny_checkpoint,
)
from qtpy.QtCore import Qt
from test_napari_ux_commit import FIRST, FIRST_CLICK, SECOND, SECOND_CLICK, SHAPE, overlapping_decoder
from test_napari_widget import click, press, segment

pytestmark = pytest.mark.gui


def commit_object(viewer, qtbot, widget, where) -> None:
    widget.layers.points().add([where])
    segment(viewer, qtbot, widget, key=True)
    press(viewer, qtbot, Qt.Key_C)


def test_commits_are_saved_beside_the_image_and_reloaded_in_a_new_viewer(
    make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch, tmp_path
):
    import sum_core.predictor as predictor_module
    import tifffile
    import zarr

    monkeypatch.setattr(predictor_module, "decode_window", overlapping_decoder([FIRST, SECOND]))
    image_file = tmp_path / "cells.tif"
    tifffile.imwrite(image_file, camera_image(SHAPE))
    saved = tmp_path / "cells.tif.sum-annotations.zarr"

    viewer = make_napari_viewer(show=True)
    viewer.open(str(image_file), plugin="napari")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "cells")
    assert widget.annotation_edit.text() == str(saved)  # beside the image, by default
    commit_object(viewer, qtbot, widget, FIRST_CLICK)
    widget.flush_saves()
    assert saved.is_dir()  # autosaved on the first commit (in the saver thread)
    qtbot.waitUntil(lambda: "Saved to" in widget.status_label.text())
    commit_object(viewer, qtbot, widget, SECOND_CLICK)
    widget.flush_saves()
    committed = np.asarray(widget.layers.committed().data).copy()
    assert sorted(np.unique(committed)) == [0, 1, 2]
    group = zarr.open_group(saved, mode="r")
    np.testing.assert_array_equal(group["labels"][...], committed)
    np.testing.assert_array_equal(group["prompts/points"][...], [[1, *FIRST_CLICK, 1], [2, *SECOND_CLICK, 1]])
    assert group.attrs["commits"] == [[1], [2]]
    assert group.attrs["image_identity"] == {  # a save or load for another image is refused
        "source": str(image_file.absolute()),
        "shape": list(SHAPE),
        "dtype": np.dtype(camera_image(SHAPE).dtype).name,
    }
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left
    # As if napari had crashed after the commit: the first viewer is never closed (no close handler
    # runs, its saver is never shut down), so the new viewer has only what the autosave wrote.
    viewer = make_napari_viewer(show=True)
    viewer.open(str(image_file), plugin="napari")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "cells")
    np.testing.assert_array_equal(widget.layers.committed().data, committed)  # reloaded, exactly
    assert "Saved" not in widget.status_label.text()

    widget.layers.committed().data_setitem(np.nonzero(committed), 0)  # the user erases everything
    click(qtbot, widget.load_button)
    np.testing.assert_array_equal(widget.layers.committed().data, committed)
    assert widget.state.commit_prompts.commits == [[1], [2]]


def test_a_folder_that_is_not_ours_is_never_written(make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch, tmp_path):
    import sum_core.predictor as predictor_module

    monkeypatch.setattr(predictor_module, "decode_window", overlapping_decoder([FIRST, SECOND]))
    foreign = tmp_path / "results.zarr"
    foreign.mkdir()
    (foreign / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    viewer = make_napari_viewer(show=True)
    viewer.add_image(camera_image(SHAPE), name="cells")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "cells")
    assert widget.annotation_edit.text() == ""  # no file behind the layer: not saved until a path is typed
    qtbot.keyClicks(widget.annotation_edit, str(foreign))
    qtbot.keyClick(widget.annotation_edit, Qt.Key_Return)
    commit_object(viewer, qtbot, widget, FIRST_CLICK)
    widget.flush_saves()
    qtbot.waitUntil(lambda: "Not saved" in widget.status_label.text())
    status = widget.status_label.text()
    assert "Not saved" in status and "not a napari-sum-hq annotation file" in status
    assert "color" in widget.status_label.styleSheet()  # red
    assert sorted(p.name for p in foreign.iterdir()) == ["zarr.json"]
    assert widget.layers.committed().data.max() == 1  # the commit itself stands
    click(qtbot, widget.load_button)
    assert "Load failed" in widget.status_label.text()
