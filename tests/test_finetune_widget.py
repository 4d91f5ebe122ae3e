"""GUI test of the fine-tune-from-annotations widget in a shown viewer: Run on a few committed objects
(a 2D image and one slice of a stack) with a tiny random model, Cancel mid-run (a resumable state),
Run again (resumes), the loss falls, the checkpoint loads with sum_core.load_model and into the
interactive widget. Plus the run folder rules (Qt-free). Screenshot (``SUM_HQ_SCREENSHOTS=docs/images``):
finetune_widget.png."""

from __future__ import annotations

import numpy as np
import pytest
from napari_fixtures import drain_thread_pool, open_widget  # noqa: F401 - fixture
from napari_ux_helpers import save_screenshot

from napari_sum_hq import _finetune_run
from napari_sum_hq._finetune_run import FINAL_FILE, STATE_FILE, read_losses, run_state
from sum_core.errors import InvalidInputError
from test_training_finetune import save_tiny_model

TRAIN_TIMEOUT_MS = 80_000


def _discs(shape=(64, 64), centres=((20, 22, 8), (44, 40, 10))):
    """A dark image with bright discs and their instance labels."""
    rows, cols = np.indices(shape)
    image = np.full(shape, 20, np.uint8)
    labels = np.zeros(shape, np.int32)
    for index, (r, c, radius) in enumerate(centres, start=1):
        disc = (rows - r) ** 2 + (cols - c) ** 2 <= radius**2
        image[disc] = 220
        labels[disc] = index
    return image, labels


def test_schemes_are_those_of_training_finetune():
    from training.config import SCHEMES

    assert _finetune_run.SCHEMES == SCHEMES


def test_run_folder_rules(tmp_path):
    assert run_state(tmp_path / "new") == "new"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.docx").write_text("x")
    with pytest.raises(InvalidInputError, match="choose a new or empty folder"):
        run_state(tmp_path / "mine")
    (tmp_path / "mine" / STATE_FILE).write_bytes(b"")
    assert run_state(tmp_path / "mine") == "resumable"
    (tmp_path / "mine" / FINAL_FILE).write_bytes(b"")
    assert run_state(tmp_path / "mine") == "finished"


@pytest.mark.gui
def test_run_cancel_resume_loss_falls_and_loads(make_napari_viewer, qtbot, tmp_path):
    from napari_sum_hq._finetune_widget import FinetuneWidget
    from qtpy.QtCore import Qt
    from sum_core import load_model

    viewer = make_napari_viewer(show=True)
    image, labels = _discs()
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="cells committed objects")
    stack = np.stack([image // 2, image[::-1], image])
    stack_labels = np.zeros(stack.shape, np.int32)
    stack_labels[1] = labels[::-1]
    viewer.add_image(stack, name="stack")
    viewer.add_labels(stack_labels, name="stack committed objects")
    base = save_tiny_model(tmp_path / "tiny.pth")  # the one-block model of the training tests
    interactive = open_widget(viewer, qtbot, base)

    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.model_picker.choice().source == str(base)  # the interactive widget's model
    assert [pair[1].name for pair in widget.chosen_pairs()] == ["cells committed objects", "stack committed objects"]
    run = tmp_path / "run"
    widget.output_edit.setText(str(run))
    widget.scheme_combo.setCurrentText("hq")
    widget.epochs_spin.setValue(4)
    widget.extra_edit.setText(
        "--device cpu --batch-size 1 --lr 0.01 --prompt-kinds box --no-box-jitter --no-augment "
        "--max-instances 1 --num-points 2"
    )

    qtbot.mouseClick(widget.run_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: len(read_losses(run)) >= 1, timeout=TRAIN_TIMEOUT_MS)
    qtbot.mouseClick(widget.cancel_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TRAIN_TIMEOUT_MS)
    assert "Run resumes" in widget.status_label.text()
    assert (run / STATE_FILE).is_file() and not (run / FINAL_FILE).exists()
    assert sorted(p.name for p in (run / "annotations" / "images").iterdir()) == ["cells.tif", "stack_z1.tif"]
    stopped_at = len(read_losses(run))
    assert 1 <= stopped_at < 8

    qtbot.mouseClick(widget.run_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TRAIN_TIMEOUT_MS)
    assert widget.status_label.text().startswith("Finished"), widget.status_label.toolTip()
    steps = read_losses(run)
    assert [step for step, _ in steps] == list(range(1, 9))  # resumed: no step repeated or lost
    losses = [loss for _, loss in steps]
    assert np.mean(losses[-2:]) < np.mean(losses[:2])
    assert widget.loss_plot.points == steps
    interactive.parent().hide()  # its dock (the screenshot shows this widget alone)
    save_screenshot(viewer, qtbot, "finetune_widget.png")
    interactive.parent().show()

    final = run / FINAL_FILE
    model = load_model(final, device="cpu")
    assert model.config.hq
    assert widget.load_button.isEnabled()
    qtbot.mouseClick(widget.load_button, Qt.LeftButton)
    assert interactive.model_choice().source == str(final)
