"""The automatic widget at its defaults: how soon progress shows, and the longest GUI-thread block (issue 14, item 6).

A shown napari viewer (``xvfb-run -a`` without a display) runs the automatic widget (AMG, its
default options and tiling) on a 1040 x 1392 uint16 camera frame with a small random-weight HQ
model (``tests/small_models.py``; the model is loaded in the worker, the first run of the
process included). Measured from the click on "Segment everything":

- **first report**: the bar leaves its busy state with ``0/N`` tasks (model loaded, job planned);
- **first fraction**: the first finished task (``1/N``, an ETA from then on);
- **total**: the result layers written;
- **longest GUI block**: the longest gap between the ticks of a 10 ms QTimer during the run
  (``tests/napari_fixtures.EventLoopGaps``), napari's creation of the result layers included.

Usage::

    xvfb-run -a python benchmarks/bench_auto_widget_progress.py [--repeats 2] [--points 32]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--points", type=int, default=None, help="AMG points per side (default: the widget's)")
    args = parser.parse_args()

    import napari
    import torch
    from napari_fixtures import EventLoopGaps, camera_image
    from qtpy.QtCore import QCoreApplication
    from small_models import small_vit_config
    from sum_core.modeling import build_from_config

    from napari_sum_hq._auto_widget import AutomaticSegmentationWidget

    folder = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    model_path = folder / "tiny_hq.pth"
    torch.save(build_from_config(small_vit_config()).state_dict(), model_path)
    viewer = napari.Viewer(show=True)
    viewer.add_image(camera_image((1040, 1392)), name="frame")
    widget = AutomaticSegmentationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model.set_source(str(model_path))
    if args.points:
        widget.auto_mode.groups["amg"].spins["points_per_side"].setValue(args.points)
    for round_ in range(args.repeats):
        marks: dict[str, float] = {}

        def seen(value: int) -> None:
            now = time.perf_counter()
            if widget.progress_bar.maximum() > 1:
                marks.setdefault("first report", now)
                if value > 0:
                    marks.setdefault("first fraction", now)

        widget.progress_bar.valueChanged.connect(seen)
        start = time.perf_counter()
        with EventLoopGaps() as gaps:
            widget.run()
            while widget.is_running or widget.running_workers:
                QCoreApplication.processEvents()
                time.sleep(0.005)
        end = time.perf_counter()
        widget.progress_bar.valueChanged.disconnect(seen)
        times = ", ".join(f"{k} {v - start:.1f} s" for k, v in marks.items())
        print(
            f"round {round_ + 1}: {times}, total {end - start:.1f} s, longest GUI block {gaps.max_ms:.0f} ms, "
            f"{widget.status_label.text()}"
        )
    viewer.close()


if __name__ == "__main__":
    main()
