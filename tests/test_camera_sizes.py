"""Real camera sizes through every core consumer: full-size results, objects on exactly their pixels.

One matrix: the sizes of common microscopy cameras (and a lazy slide-sized image) driven
through :func:`sum_core.segment`, ``sum-hq segment``, :class:`sum_core.Predictor` with
several boxes and :func:`sum_core.propagate`. The model is a small random-weight HQ model
with SAM's real 1024 input, so the package's size rule decides as it does for real models
(512 px: one window; larger: tiles of at most 1024 px); the exact fake decoders
(``tests/tiled_fakes.py``) place each object, so every written mask must be full-size and
hold the object on exactly its pixels, wherever it lies (here: in the far corner).
"""

from __future__ import annotations

from dataclasses import dataclass

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

import sum_core
from sum_core.cli import main
from sum_core.loading import resolve_model
from sum_core.tiling import tile_grid
from tiled_fakes import FAKE_UNCERTAINTY, EncoderCounter, use_fake_decoders


@dataclass(frozen=True)
class Camera:
    """One image size and kind of the matrix."""

    name: str
    shape: tuple[int, ...]  # (H, W) or (H, W, 3)
    dtype: type
    lazy: bool = False

    @property
    def plane(self) -> tuple[int, int]:
        return self.shape[0], self.shape[1]


CAMERAS = [
    Camera("512x512", (512, 512), np.uint8),
    Camera("1040x1392", (1040, 1392), np.uint16),
    Camera("1200x1600-rgb", (1200, 1600, 3), np.uint8),
    Camera("2048x2048", (2048, 2048), np.uint16),
    Camera("2160x2560-uint16", (2160, 2560), np.uint16),
    Camera("3000x4000-dask", (3000, 4000), np.uint16, lazy=True),
]


def objects(plane: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """(row0, col0, row1, col1) of the objects: the first one in the far corner."""
    h, w = plane
    return [(h - 48, w - 61, h - 9, w - 7), (20, 30, 61, 83), (300, 420, 333, 466)]


def truth_of(plane: tuple[int, int], which: range | None = None) -> np.ndarray:
    truth = np.zeros(plane, bool)
    for index, (r0, c0, r1, c1) in enumerate(objects(plane)):
        if which is None or index in which:
            truth[r0:r1, c0:c1] = True
    return truth


def far_corner(plane: tuple[int, int]) -> np.ndarray:
    return truth_of(plane, range(1))


def corner_click(plane: tuple[int, int]) -> list[list[float]]:
    r0, c0, r1, c1 = objects(plane)[0]
    return [[(r0 + r1) / 2, (c0 + c1) / 2]]


def boxes(plane: tuple[int, int]) -> np.ndarray:
    """One box per object, 4 px around it."""
    return np.array([(r0 - 4, c0 - 4, r1 + 4, c1 + 4) for r0, c0, r1, c1 in objects(plane)], dtype=float)


def make_image(camera: Camera):
    """Noise plus bright objects; a dask array computed block by block for lazy cameras."""
    truth = truth_of(camera.plane)
    bright, noise = (200, 8) if camera.dtype == np.uint8 else (2300, 20)

    def pixels(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        rng = np.random.default_rng(r0 * 7919 + c0)
        values = rng.normal(bright / 8, noise, (r1 - r0, c1 - c0, *camera.shape[2:]))
        inside = truth[r0:r1, c0:c1]
        values[inside] += bright
        return np.clip(values, 0, np.iinfo(camera.dtype).max).astype(camera.dtype)

    if not camera.lazy:
        return pixels(0, camera.shape[0], 0, camera.shape[1])

    def block(block_info=None):
        (r0, r1), (c0, c1) = block_info[None]["array-location"]
        return pixels(r0, r1, c0, c1)

    return da.map_blocks(block, dtype=camera.dtype, chunks=((1000,) * 3, (1000,) * 4))


@pytest.fixture(scope="module")
def model(small_hq_checkpoint):
    """The small HQ model behind ``small_hq_checkpoint`` (image_size 1024), loaded once."""
    return resolve_model(small_hq_checkpoint, device="cpu")


@pytest.fixture(params=CAMERAS, ids=[c.name for c in CAMERAS])
def camera(request) -> Camera:
    return request.param


def test_segment(camera, model, monkeypatch):
    image = make_image(camera)
    use_fake_decoders(monkeypatch, truth_of(camera.plane))
    counter = EncoderCounter(model, monkeypatch)
    pred = sum_core.segment(image, points=corner_click(camera.plane), model=model, device="cpu")
    far = far_corner(camera.plane)
    assert type(pred) is sum_core.Prediction and pred.masks.shape == (1, *camera.plane)
    np.testing.assert_array_equal(pred.mask, far)
    np.testing.assert_array_equal(pred.uncertainty, far * FAKE_UNCERTAINTY)
    assert counter.images == 1  # the one window, or the corner's tile only


def write_input(camera: Camera, image, folder) -> str:
    """The image as users hand it to the CLI: TIFF, PNG for RGB, a zarr store for the lazy one."""
    if camera.lazy:
        path = folder / "image.zarr"
        store = zarr.create_array(str(path), shape=image.shape, dtype=image.dtype, chunks=(1000, 1000))
        da.store(image, store, lock=False)
    elif len(camera.shape) == 3:
        path = folder / "image.png"
        Image.fromarray(image).save(path)
    else:
        path = folder / "image.tif"
        tifffile.imwrite(path, image)
    return str(path)


def test_cli_segment(camera, small_hq_checkpoint, tmp_path, monkeypatch, capsys):
    source = write_input(camera, make_image(camera), tmp_path)
    use_fake_decoders(monkeypatch, truth_of(camera.plane))
    out, unc = tmp_path / "labels.tif", tmp_path / "uncertainty.tif"
    (row, col), = corner_click(camera.plane)
    code = main(["segment", source, "--point", f"{row},{col}", "--model", small_hq_checkpoint, "--device", "cpu",
                 "--out", str(out), "--uncertainty-out", str(unc)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    labels, uncertainty = tifffile.imread(out), tifffile.imread(unc)
    far = far_corner(camera.plane)
    assert labels.shape == uncertainty.shape == camera.plane
    np.testing.assert_array_equal(labels, far.astype(np.uint8))
    np.testing.assert_array_equal(uncertainty, far * FAKE_UNCERTAINTY)
    out2 = tmp_path / "three.tif"
    code = main(["segment", source, *(f"--box={','.join(str(v) for v in b)}" for b in boxes(camera.plane)),
                 "--model", small_hq_checkpoint, "--device", "cpu", "--out", str(out2)])  # fmt: skip
    assert code == 0
    expected = sum((k + 1) * truth_of(camera.plane, range(k, k + 1)).astype(np.uint8) for k in range(3))
    np.testing.assert_array_equal(tifffile.imread(out2), expected)


def test_predictor_with_several_boxes(camera, model, monkeypatch):
    image = make_image(camera)
    use_fake_decoders(monkeypatch, truth_of(camera.plane))
    predictor = sum_core.Predictor(model, device="cpu")
    predictor.set_image(image)
    assert predictor.is_tiled == (len(tile_grid(camera.plane, 1024)) > 1) == (max(camera.plane) > 1024)
    pred = predictor.predict(box=boxes(camera.plane))
    assert len(pred) == 3
    assert pred.masks.shape == pred.logits.shape == pred.uncertainties.shape == (3, *camera.plane)
    for k in range(3):
        np.testing.assert_array_equal(pred.masks[k], truth_of(camera.plane, range(k, k + 1)), err_msg=f"object {k}")
    np.testing.assert_array_equal(pred.scores, np.full(3, 0.9, np.float32))
    refined = predictor.predict(points=corner_click(camera.plane), mask_input=pred.logits[0])  # full-size prompt
    np.testing.assert_array_equal(refined.mask, far_corner(camera.plane))


def test_propagate(camera, model, monkeypatch):
    image = make_image(camera)
    stack = da.stack([image] * 3) if camera.lazy else np.stack([image] * 3)
    far = far_corner(camera.plane)
    use_fake_decoders(monkeypatch, far)
    out = sum_core.propagate(stack, 0, 1, {"points": corner_click(camera.plane)}, model, device="cpu", progress=False)
    assert out.shape == (3, *camera.plane) and out.dtype == bool
    np.testing.assert_array_equal(out, np.stack([far] * 3))
