"""Screenshots of the napari UX tests (issue 14): saved only when asked for."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

#: Set to a folder to save the workflow screenshots there (the docs use docs/images).
SCREENSHOT_ENV = "SUM_HQ_SCREENSHOTS"


def save_screenshot(viewer, qtbot, name: str) -> Path | None:
    """Save the whole window (canvas and docks) as ``<$SUM_HQ_SCREENSHOTS>/<name>`` when that
    variable is set; returns the path (None when not saved)."""
    folder = os.environ.get(SCREENSHOT_ENV)
    if not folder:
        return None
    from imageio.v3 import imwrite

    viewer.window._qt_window.resize(1400, 900)
    qtbot.wait(200)
    viewer.reset_view()
    qtbot.wait(100)
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    imwrite(path, np.asarray(viewer.screenshot(canvas_only=False, flash=False)))
    return path
