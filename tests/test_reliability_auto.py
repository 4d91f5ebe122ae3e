"""auto_segment on images larger than memory (issue 11): lazy inputs are read one tile window at a
time with one whole-image intensity window, and outputs that cannot fit in memory are refused
before anything is read or loaded."""

from __future__ import annotations

import threading
from collections import Counter

import dask
import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from sum_core import automatic
from sum_core.auto_options import AutoOptions
from sum_core.automatic import MAX_OUTPUT_BYTES, auto_segment
from sum_core.errors import Cancelled, InvalidInputError
from sum_core.image import prepare_image
from sum_core.tiling import Region, tile_grid

from test_automatic import (
    assert_labels_are_truth,
    block_discs,
    expected_uncertainty,
    install_exact_fake,
    objects_for_grid,
    to_image,
)
from test_tiled_predictor import tiny_model

CAMERA = (1040, 1392)
#: Filters off, so that the random-weight model keeps masks (the labels are then not empty).
REAL_OPTIONS = AutoOptions(points_per_side=4, pred_iou_thresh=0, stability_thresh=0)


@pytest.fixture(scope="module")
def model():
    return tiny_model()  # input size 256


def no_load(*args, **kwargs):
    raise AssertionError("the model was loaded")


def camera_frame() -> np.ndarray:
    """A noisy uint16 camera frame with an object far from the origin and one near it."""
    image = np.random.default_rng(3).normal(1000, 150, CAMERA)
    image[900:960, 1300:1380] = 30000
    image[100:180, 200:260] = 12000
    return np.clip(image, 0, None).astype(np.uint16)


def segment_frame(source, model) -> tuple[np.ndarray, np.ndarray]:
    """auto_segment of a camera frame as one window, with the real (random-weight) model."""
    return auto_segment(source, REAL_OPTIONS, tile_shape=CAMERA, model=model, device="cpu", progress=False)


class Recorder:
    """An array-like over a dask array that records the region of every read (``np.asarray`` of
    the whole array, which numpy calls ``__array__``, records the whole image)."""

    def __init__(self, array: da.Array) -> None:
        self.array, self.shape, self.dtype = array, array.shape, array.dtype
        self.reads: list[Region] = []

    def __getitem__(self, key):
        rows, cols = key[:2]
        height, width = self.shape[:2]
        self.reads.append(Region(rows.start or 0, cols.start or 0, rows.stop or height, cols.stop or width))
        return self.array[key]

    def __array__(self, dtype=None, copy=None):
        self.reads.append(Region(0, 0, *self.shape[:2]))
        return np.asarray(self.array, dtype=dtype)


def counted(image: np.ndarray | da.Array, chunks: int, reads: Counter) -> da.Array:
    """``image`` as a dask array of ``chunks``-sized blocks that counts each block's reads."""

    def read(block, block_info=None):
        reads[block_info[None]["chunk-location"]] += 1
        return block

    lazy = image if isinstance(image, da.Array) else da.from_array(image, chunks=chunks)
    return lazy.map_blocks(read, dtype=lazy.dtype, meta=np.array((), dtype=lazy.dtype))


def test_numpy_frame_is_segmented_as_its_prepared_image(model):
    # Today's contract for numpy images: the result of segmenting prepare_image(image), i.e. the
    # whole image normalised by its own 0.5 / 99.5 percentiles (uint8 RGB is used as it is).
    image = camera_frame()
    labels, uncertainty = segment_frame(image, model)
    expected_labels, expected_uncertainty = segment_frame(prepare_image(image), model)
    assert labels.max() >= 1 and uncertainty.max() > 0
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_allclose(uncertainty, expected_uncertainty, rtol=0, atol=1e-6)


def test_dask_zarr_and_paths_give_the_numpy_result(model, tmp_path):
    # Up to 4 Mpixel the whole-image intensity window is computed on every pixel of a lazy image
    # too, so every kind of input gives exactly the numpy result (float32 ops in the same order:
    # 1e-6 is float32 rounding at values <= 1).
    image = camera_frame()
    tifffile.imwrite(tmp_path / "frame.tif", image, tile=(256, 256))
    store = zarr.open_array(tmp_path / "frame.zarr", mode="w", shape=CAMERA, chunks=(256, 256), dtype=np.uint16)
    store[...] = image
    expected = segment_frame(image, model)
    assert expected[0].max() >= 1
    inputs = {
        "dask": da.from_array(image, chunks=256),
        "zarr array": store,
        "zarr path": str(tmp_path / "frame.zarr"),
        "tiff path": tmp_path / "frame.tif",
    }
    for name, source in inputs.items():
        labels, uncertainty = segment_frame(source, model)
        np.testing.assert_array_equal(labels, expected[0], err_msg=name)
        np.testing.assert_allclose(uncertainty, expected[1], rtol=0, atol=1e-6, err_msg=name)


def test_lazy_image_is_read_tile_window_by_tile_window(model, monkeypatch):
    encoded = install_exact_fake(monkeypatch)
    shape, tile_shape, halo, chunk = (3000, 4000), 1024, 64, 500
    grid = tile_grid(shape, model.config.image_size, tile_shape, halo)
    centres = objects_for_grid(grid, points_per_side=4, gap=300)
    truth = block_discs(shape, centres)
    assert max(r + c for r, c in centres) > 6000  # objects far from the origin
    block_reads: Counter = Counter()
    source = Recorder(counted(to_image(truth, np.uint16), chunk, block_reads))
    with dask.config.set(scheduler="synchronous"):
        labels, uncertainty = auto_segment(
            source, AutoOptions(points_per_side=4, max_area_fraction=0.5), tile_shape=tile_shape, halo=halo,
            model=model, progress=False,
        )  # fmt: skip
    assert_labels_are_truth(labels, truth)
    np.testing.assert_array_equal(uncertainty, expected_uncertainty(truth))
    assert encoded == [tile.outer.shape for tile in grid]  # each window encoded once
    # Every read is one tile window (3 x 4 of them, each read once) or one 64 x 64 window of the
    # intensity sample (8 x 8 of them over 12 Mpixel); none reads the whole image.
    windows = [r for r in source.reads if r.shape != (64, 64)]
    assert windows == [tile.outer for tile in grid]
    assert len(source.reads) == len(grid) + 64
    # A 500 px block lies in at most 2 x 2 tile windows (1152 px wide, 1024 apart) and at most
    # 2 x 2 sample windows (about 420 / 560 px apart): 8 reads at most, and every block is read.
    n_blocks = (shape[0] // chunk) * (shape[1] // chunk)
    assert len(block_reads) == n_blocks and max(block_reads.values()) <= 8


def no_read(block):
    raise AssertionError("a block of the image was read")


def test_outputs_larger_than_the_bound_are_refused_before_anything_is_read(monkeypatch):
    monkeypatch.setattr(automatic, "resolve_model", no_load)
    # 50000 x 50000 uint16 (4.7 GiB); its outputs would be 18.6 GiB. Reading any block fails at
    # once (so that a regression fails fast instead of filling the memory).
    huge = da.zeros((50000, 50000), dtype=np.uint16, chunks=5000).map_blocks(no_read, meta=np.array((), np.uint16))
    assert 50000 * 50000 * 8 > MAX_OUTPUT_BYTES
    with pytest.raises(InvalidInputError) as info:
        auto_segment(huge, progress=False)
    message = str(info.value)
    assert "50000 x 50000" in message and "18.63 GiB" in message and "MAX_OUTPUT_BYTES (4.00 GiB)" in message
    assert "sum_core.batch.segment_zarr" in message and "sum-hq batch" in message


def test_outputs_larger_than_the_available_memory_are_refused(monkeypatch):
    monkeypatch.setattr(automatic, "resolve_model", no_load)
    monkeypatch.setattr(automatic, "_available_memory", lambda: 100 * 2**20)
    block_reads: Counter = Counter()
    image = counted(da.ones((4000, 4000), dtype=np.uint16, chunks=1000), 1000, block_reads)
    expected = r"4000 x 4000 .* 0\.12 GiB, more than the memory available now \(0\.10 GiB\).*segment_zarr"
    with pytest.raises(InvalidInputError, match=expected):
        auto_segment(image, progress=False)
    assert not block_reads


def test_bad_progress_and_set_cancel_stop_before_anything_is_read(monkeypatch):
    monkeypatch.setattr(automatic, "resolve_model", no_load)
    block_reads: Counter = Counter()
    image = counted(da.ones((600, 700), dtype=np.uint16, chunks=100), 100, block_reads)
    with pytest.raises(InvalidInputError, match="progress must be True or False, got 1"):
        auto_segment(image, progress=1)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        auto_segment(image, progress=False, cancel=cancel)
    assert not block_reads


def test_a_stack_or_a_missing_path_is_refused_with_its_name(tmp_path, monkeypatch):
    monkeypatch.setattr(automatic, "resolve_model", no_load)
    with pytest.raises(InvalidInputError, match=r"stack_axis= .*image\[t\]"):
        auto_segment(da.zeros((5, 64, 64), dtype=np.uint16), progress=False)
    with pytest.raises(InvalidInputError, match="missing.tif"):
        auto_segment(tmp_path / "missing.tif", progress=False)
