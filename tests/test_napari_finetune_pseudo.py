"""GUI tests of the fine-tune widget's SUM pseudo-labels, in a shown viewer with a tiny random model:

- "Pseudo-label unannotated images": Run on one annotated and one unannotated image pseudo-labels the
  unannotated one (with uncertainty maps), trains on both (human and pseudo steps), the loss falls and
  the checkpoint loads into the interactive widget.
- "Rest of annotated images is unknown": the pseudo-label child is asked to label the annotated image
  too, with its committed objects as --exclude-masks; Cancel stops the pseudo-labelling.
- The bundle is written in a worker thread from a copy: an edit made while it is written does not
  reach the exported masks.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from napari_fixtures import drain_thread_pool, open_widget  # noqa: F401 - fixture

from napari_sum_hq import _finetune_widget
from napari_sum_hq._finetune_run import FINAL_FILE, METRICS_FILE, read_losses
from sum_core.imageio import read_image
from test_finetune_widget import _discs
from test_training_finetune import save_tiny_model

pytestmark = pytest.mark.gui

TIMEOUT_MS = 90_000
TRAIN_OPTIONS = (
    "--device cpu --batch-size 1 --lr 0.01 --prompt-kinds box --no-box-jitter --no-augment "
    "--max-instances 1 --num-points 2 --max-pseudo-masks 2"
)
#: A random model's masks pass no SUM filter: keep them (a 4 x 4 grid keeps it fast), but not its
#: whole-image mask, which teaches "everything is the object" against the human masks.
PSEUDO_OPTIONS = "--points-per-side 4 --pred-iou-thresh 0 --stability-thresh 0 --max-area-fraction 0.5"
REFINE_OPTIONS = "--pred-iou-thresh 0 --stability-thresh 0 --max-area-fraction 1 --min-iou 0 --epochs 1"


@pytest.fixture
def commands(monkeypatch):
    """The commands of the child processes the widget starts, in order."""
    started = []
    real = _finetune_widget.ChildProcess

    def record(command):
        started.append(command)
        return real(command)

    monkeypatch.setattr(_finetune_widget, "ChildProcess", record)
    return started


def _viewer_with_images(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer(show=True)
    image, labels = _discs()
    viewer.add_image(image, name="cells")
    layer = viewer.add_labels(labels.copy(), name="cells committed objects")
    viewer.add_image(_discs(centres=((16, 40, 9), (46, 18, 7)))[0], name="more cells")  # no objects
    return viewer, layer, labels


def _widget(viewer, tmp_path, base):
    widget = _finetune_widget.FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model_picker.set_source(str(base))
    widget.output_edit.setText(str(tmp_path / "run"))
    widget.scheme_combo.setCurrentText("hq")
    widget.extra_edit.setText(TRAIN_OPTIONS)
    widget.pseudo_extra_edit.setText(PSEUDO_OPTIONS)
    widget.refine_extra_edit.setText(REFINE_OPTIONS)
    return widget


def _click_box(qtbot, box):
    """Click a check box on its indicator (a click right of its text does not toggle it)."""
    from qtpy.QtCore import QPoint, Qt

    qtbot.mouseClick(box, Qt.LeftButton, pos=QPoint(6, box.height() // 2))


def _module(command):
    return command[2]  # python -m <module>


def test_pseudo_labels_unannotated_image_trains_and_loads(make_napari_viewer, qtbot, tmp_path, commands):
    from qtpy.QtCore import Qt

    viewer, _, _ = _viewer_with_images(make_napari_viewer, tmp_path)
    base = save_tiny_model(tmp_path / "tiny.pth")
    interactive = open_widget(viewer, qtbot, base, image_name="cells", wait=False)
    widget = _widget(viewer, tmp_path, base)
    widget.epochs_spin.setValue(4)
    assert not widget.pseudo_check.isChecked() and not widget.pseudo_annotated_check.isChecked()  # off by default
    _click_box(qtbot, widget.pseudo_check)
    assert widget.pseudo_check.isChecked()

    qtbot.mouseClick(widget.run_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)
    run = tmp_path / "run"
    assert widget.status_label.text().startswith("Finished"), widget.status_label.toolTip()
    modules = [_module(c) for c in commands]
    assert modules == ["training.from_annotations", "training.pseudolabel", "training.refine", "training.finetune"]
    assert "--exclude-masks" not in commands[1]  # the annotated image is not pseudo-labelled
    assert sorted(p.name for p in (run / "annotations" / "unlabeled").iterdir()) == ["more_cells.tif"]
    pseudo = run / "pseudo" / "more_cells"
    assert sorted(p.name for p in pseudo.glob("uncertainty_*.png")) and (pseudo / "masks.csv").is_file()
    assert commands[3][commands[3].index("--pseudo") + 1] == str(run / "pseudo")
    kinds = [line.split(",")[3] for line in (run / METRICS_FILE).read_text().splitlines()[1:]]
    assert kinds.count("human") == 4 and kinds.count("pseudo") == 4  # SUM's 1 : 1 mixing
    losses = [loss for _, loss in read_losses(run)]
    assert np.mean(losses[-2:]) < np.mean(losses[:2])

    qtbot.mouseClick(widget.load_button, Qt.LeftButton)
    assert interactive.model_choice().source == str(run / FINAL_FILE)


def test_unknown_rest_asks_to_label_annotated_images_and_bundle_is_a_worker_copy(
    make_napari_viewer, qtbot, tmp_path, commands, monkeypatch
):
    from qtpy.QtCore import Qt

    viewer, layer, labels = _viewer_with_images(make_napari_viewer, tmp_path)
    widget = _widget(viewer, tmp_path, save_tiny_model(tmp_path / "tiny.pth"))
    _click_box(qtbot, widget.pseudo_annotated_check)  # and "unannotated images" left off

    edited, threads = threading.Event(), []
    real_write = _finetune_widget.write_bundle

    def write_after_the_edit(*args, **kwargs):
        threads.append(threading.current_thread())
        assert edited.wait(30)
        return real_write(*args, **kwargs)

    monkeypatch.setattr(_finetune_widget, "write_bundle", write_after_the_edit)
    assert widget.pseudo_annotated_check.isChecked()
    qtbot.mouseClick(widget.run_button, Qt.LeftButton)
    assert widget.is_running
    layer.data[layer.data == 1] = 0  # the user erases an object while the bundle is written
    layer.refresh()
    edited.set()
    qtbot.waitUntil(lambda: bool(commands) and _module(commands[-1]) == "training.pseudolabel", timeout=TIMEOUT_MS)
    qtbot.mouseClick(widget.cancel_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)

    assert threads and threads[0] is not threading.main_thread()
    run = tmp_path / "run"
    np.testing.assert_array_equal(read_image(run / "annotations" / "masks" / "cells.tif"), labels)  # as at Run
    pseudolabel = commands[-1]
    assert pseudolabel[pseudolabel.index("--exclude-masks") + 1] == str(run / "annotations" / "masks")
    assert sorted(p.name for p in (run / "annotations" / "unlabeled").iterdir()) == ["cells.tif"]  # only it
    assert [_module(c) for c in commands] == ["training.from_annotations", "training.pseudolabel"]
    assert widget.status_label.text() == "Cancelled."
    assert not (run / METRICS_FILE).exists()
