"""Issue 14 item 10, decided: saved prompts stay with their committed objects on reload.

The prompt layers hold the prompts of the *current*, uncommitted object: S segments from them and
C commits the result. The prompts in ``<image>.sum-annotations.zarr`` made objects that are
already committed, so reloading does not put them into the prompt layers (the next S would
segment those objects again, and a click for a new object would be mixed with old ones). They are
kept with the committed objects and written back, with the new commits' prompts, on every save.
"""

from __future__ import annotations

import numpy as np
import pytest
from napari_fixtures import camera_image, drain_thread_pool, notifications, open_widget, tiny_checkpoint  # noqa: F401
from test_napari_large_save import commit_object
from test_napari_ux_commit import FIRST, FIRST_CLICK, SECOND, SECOND_CLICK, SHAPE, overlapping_decoder

pytestmark = pytest.mark.gui


def test_reloaded_prompts_stay_with_the_committed_objects_and_are_saved_again(
    make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch, tmp_path  # noqa: F811
):
    import sum_core.predictor as predictor_module
    import tifffile
    import zarr

    monkeypatch.setattr(predictor_module, "decode_window", overlapping_decoder([FIRST, SECOND]))
    image_file = tmp_path / "cells.tif"
    tifffile.imwrite(image_file, camera_image(SHAPE))

    viewer = make_napari_viewer(show=True)
    viewer.open(str(image_file), plugin="napari")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "cells")
    commit_object(viewer, qtbot, widget, FIRST_CLICK)
    widget.flush_saves()
    first = np.asarray(widget.layers.committed().data).copy()
    saved = widget.annotation_edit.text()  # beside the image
    viewer.close()

    viewer = make_napari_viewer(show=True)
    viewer.open(str(image_file), plugin="napari")
    widget = open_widget(viewer, qtbot, tiny_checkpoint, "cells")
    np.testing.assert_array_equal(widget.layers.committed().data, first)  # the committed object is back
    assert len(widget.layers.points().data) == 0 and widget.layers.boxes().nshapes == 0  # its prompts are not
    np.testing.assert_array_equal(widget.state.commit_prompts.points, [[1, *FIRST_CLICK, 1]])  # kept with it

    commit_object(viewer, qtbot, widget, SECOND_CLICK)  # a new object from its own click only
    widget.flush_saves()
    committed = np.asarray(widget.layers.committed().data)
    assert sorted(np.unique(committed)) == [0, 1, 2] and (committed == 1).sum() == (first == 1).sum()
    group = zarr.open_group(saved, mode="r")
    np.testing.assert_array_equal(group["prompts/points"][...], [[1, *FIRST_CLICK, 1], [2, *SECOND_CLICK, 1]])
    assert group.attrs["commits"] == [[1], [2]]
