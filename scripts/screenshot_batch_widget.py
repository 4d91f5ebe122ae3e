"""Screenshot of the batch widget after a real small job: ``docs/images/batch_widget.png``.

A shown napari viewer docks the batch widget (as the Plugins menu does), the widget's fields are
filled and its Run button is clicked: it segments a 3-slice zarr stack of blobs (AMG, a small
random-weight HQ-SAM of ``tests/small_models.py``, so the objects are whatever a random decoder
finds) into a zarr target, opens the result as layers, and the whole window is saved.

Run with a display (headless: ``xvfb-run -a -s "-screen 0 1600x1200x24"``)::

    xvfb-run -a -s "-screen 0 1600x1200x24" python scripts/screenshot_batch_widget.py [OUT.png]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Longest wait for the job (a few seconds on a laptop CPU).
JOB_TIMEOUT_S = 300


def tiny_checkpoint(folder: Path) -> Path:
    """A random-weight HQ checkpoint of the small test ViT (seed 0)."""
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from small_models import small_vit_config
    from sum_core.modeling import build_from_config

    torch.manual_seed(0)
    path = folder / "tiny_hq.pth"
    torch.save(build_from_config(small_vit_config()).state_dict(), path)
    return path


def blobs_zarr(folder: Path) -> tuple[Path, object]:
    """The bundled blobs sample (3 slices of 256 x 256) as a zarr array with axes z, y, x."""
    import zarr

    from napari_sum_hq._sample_data import blobs_stack_sample

    ((stack, _meta, _kind),) = blobs_stack_sample(depth=3, size=256)
    path = folder / "blobs.zarr"
    array = zarr.create_array(str(path), shape=stack.shape, chunks=(1, 256, 256), dtype=stack.dtype,
                              dimension_names=("z", "y", "x"))  # fmt: skip
    array[:] = stack
    return path, stack


def main(out: Path) -> None:
    import napari
    import numpy as np
    from imageio.v3 import imwrite
    from qtpy.QtWidgets import QApplication

    from napari._qt.dialogs.qt_notification import NapariQtNotification

    from napari_sum_hq._batch_widget import BatchSegmentationWidget

    with tempfile.TemporaryDirectory(prefix="batch-demo-") as tmp:
        folder = Path(tmp)
        checkpoint = tiny_checkpoint(folder)
        source, stack = blobs_zarr(folder)
        viewer = napari.Viewer(show=True)
        viewer.add_image(stack, name="blobs")
        widget = BatchSegmentationWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Batch segmentation (napari-sum-hq)", area="right")
        widget.model.set_source(str(checkpoint))
        widget.source_edit.setText(str(source))
        widget.target_edit.setText(str(folder / "blobs-segmentation.zarr"))
        widget.axis_edit.setText("z")
        spins = widget.auto_mode.groups["amg"].spins
        spins["points_per_side"].setValue(8)
        spins["pred_iou_thresh"].setValue(0.0)
        spins["stability_thresh"].setValue(0.0)
        spins["min_area"].setValue(100)  # a random decoder's specks are dropped
        widget.run_button.click()
        start = time.monotonic()
        while widget.is_running or widget.running_workers:
            QApplication.processEvents()
            time.sleep(0.02)
            if time.monotonic() - start > JOB_TIMEOUT_S:
                raise TimeoutError(f"the batch job did not end within {JOB_TIMEOUT_S} s")
        for _ in range(20):
            QApplication.processEvents()
            time.sleep(0.02)
        status = widget.status_label.text()
        if widget.status_label.styleSheet() or "blobs-segmentation.zarr labels" not in viewer.layers:
            raise RuntimeError(f"the batch job failed: {status}")
        viewer.layers["blobs-segmentation.zarr uncertainty"].visible = False  # the labels over the blobs
        for notification in viewer.window._qt_window.findChildren(NapariQtNotification):
            notification.close()  # e.g. napari's notice about the Qt binding
        viewer.window._qt_window.resize(1400, 900)
        for _ in range(10):
            QApplication.processEvents()
            time.sleep(0.02)
        viewer.reset_view()
        QApplication.processEvents()
        out.parent.mkdir(parents=True, exist_ok=True)
        imwrite(out, np.asarray(viewer.screenshot(canvas_only=False, flash=False)))
        print(f"{out}: {status} ({time.monotonic() - start:.1f} s job)")
        viewer.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "images" / "batch_widget.png")
