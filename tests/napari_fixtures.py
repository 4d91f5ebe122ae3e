"""Shared fixtures and helpers of the napari plugin tests (import them into a test module)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

ENCODE_TIMEOUT_MS = 120_000


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-weight HQ checkpoint of the small test ViT (loads in well under a second)."""
    import torch
    from small_models import small_vit_config
    from sum_core.modeling import build_from_config

    torch.manual_seed(0)
    model = build_from_config(small_vit_config())
    path = tmp_path_factory.mktemp("napari_models") / "tiny_hq.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(autouse=True)
def drain_thread_pool():
    """Let the workers a test leaves behind (a cancelled job finishes in the background) end
    before the next test starts, so they cannot fill Qt's global thread pool and starve its jobs."""
    yield
    from qtpy.QtCore import QThreadPool

    QThreadPool.globalInstance().waitForDone(ENCODE_TIMEOUT_MS)


@pytest.fixture
def notifications():
    """Collect the napari notifications (errors, infos) shown during a test."""
    from napari.utils.notifications import notification_manager

    caught = []
    notification_manager.notification_ready.connect(caught.append)
    yield caught
    notification_manager.notification_ready.disconnect(caught.append)


def disk_image(shape=(96, 128), center=(48, 60), radius=20) -> np.ndarray:
    """A dark uint8 image with one bright disk."""
    rows, cols = np.indices(shape[-2:])
    disk = (rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius**2
    plane = np.where(disk, 200, 30).astype(np.uint8)
    return np.broadcast_to(plane, shape).copy()


def open_widget(viewer, qtbot, checkpoint: Path, image_name: str | None = None, wait: bool = True):
    """Dock the interactive widget, choose the tiny checkpoint and an image layer.

    Returns the widget; with ``wait`` the current plane is prepared (encoded when it is one
    encoder window).
    """
    from napari_sum_hq._interactive_widget import InteractiveSegmentationWidget

    widget = InteractiveSegmentationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_model_source(str(checkpoint))
    if image_name is not None:
        widget.image_combo.setCurrentIndex(widget.image_combo.findText(image_name))
        if wait:
            wait_for_encode(widget, qtbot)
    return widget


def wait_for_encode(widget, qtbot) -> None:
    """Wait until no job (prepare, segment, propagate) is running and every worker thread has finished."""
    qtbot.waitUntil(lambda: not widget.is_busy and widget.running_workers == 0, timeout=ENCODE_TIMEOUT_MS)


class EventLoopGaps:
    """Longest gap between the ticks of a 10 ms QTimer: how long the GUI thread was blocked.

    Use as a context manager around a workflow; ``max_ms`` is the longest gap seen.
    """

    INTERVAL_MS = 10

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.ticks: list[float] = []
        self._timer = QTimer()
        self._timer.setInterval(self.INTERVAL_MS)
        self._timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def __enter__(self) -> EventLoopGaps:
        self.ticks = [time.perf_counter()]
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.stop()
        self.ticks.append(time.perf_counter())

    @property
    def max_ms(self) -> float:
        """The longest gap, in milliseconds (the last tick to the end of the block included)."""
        return float(np.diff(self.ticks).max() * 1000)


def ellipse(shape, center, radii) -> np.ndarray:
    """A bool plane with one filled ellipse."""
    rows, cols = np.indices(shape)
    return ((rows - center[0]) / radii[0]) ** 2 + ((cols - center[1]) / radii[1]) ** 2 <= 1


def camera_image(shape, seed=0) -> np.ndarray:
    """uint16 noise of a 12-bit camera (the encoder's view does not matter: the fake decoders place objects)."""
    return np.random.default_rng(seed).integers(100, 4000, shape, dtype=np.uint16)


def exact_window_decoder(truth: np.ndarray):
    """A ``sum_core.predictor.decode_window`` for planes of one encoder window that returns
    exactly the parts of ``truth`` under the clicks or in the boxes (see ``tiled_fakes``)."""
    import torch
    from sum_core.decoding import WindowMasks
    from sum_core.tiling import Region
    from tiled_fakes import fake_decoder

    decode_tile = fake_decoder(truth)

    def decode(model, image, prompts, options):
        boxes = [None] if prompts.boxes is None else list(prompts.boxes)
        window = Region(0, 0, *truth.shape)
        masks = [decode_tile(None, window, image, prompts.points, prompts.labels, box, None, options) for box in boxes]
        k = len(masks)
        return WindowMasks(
            logits=torch.from_numpy(np.stack([m.logits for m in masks])),
            scores=torch.full((k,), masks[0].score),
            uncertainty=torch.from_numpy(np.stack([m.uncertainty for m in masks])),
            low_res_logits=torch.zeros((k, 1, 256, 256)),
        )

    return decode


#: (plane shape, object centre, object radii, image kind): the object far from the origin, in the
#: far corner. Kinds: "uint16" camera noise, "rgb" uint8 (H, W, 3), "dask" lazy uint16 (512 px chunks).
SIZES = {
    "1040x1392": ((1040, 1392), (990, 1340), (40, 45), "uint16"),
    "1200x1600 RGB": ((1200, 1600), (1140, 1540), (45, 50), "rgb"),
    "1500x1500": ((1500, 1500), (1350, 1260), (50, 60), "uint16"),  # the example, rows 1300-1399
    "2048x2048": ((2048, 2048), (1990, 1985), (45, 50), "uint16"),
    "2160x2560": ((2160, 2560), (2100, 2500), (50, 55), "uint16"),
    "3000x4000 dask": ((3000, 4000), (2930, 3920), (55, 60), "dask"),
}


def make_image(shape, kind: str):
    """An image of one of the :data:`SIZES` kinds."""
    if kind == "rgb":
        return np.random.default_rng(0).integers(0, 255, (*shape, 3), dtype=np.uint8)
    if kind == "dask":
        import dask.array as da

        return da.from_array(camera_image(shape), chunks=512)
    return camera_image(shape)
