"""sum_core.ais_postprocess: the AIS seeded watershed, against torch-em's as the reference.

The reference is micro-sam 1.8.14's untiled ``InstanceSegmentationWithDecoder.generate`` post-processing:
bioimage-cpp's Gaussian on the foreground map, then torch-em 0.10.9's
``watershed_from_center_and_boundary_distances``, reached through ``reference_impl.torch_em()`` (torch-em
imports torchvision, stubbed there when it does not load with the CPU torch); it needs ``bioimage-cpp``,
``python-elf`` and ``scikit-learn``. Without them those tests skip.
"""

from __future__ import annotations

import importlib
import importlib.util

import numpy as np
import pytest
from scipy import ndimage

import reference_impl
from sum_core.ais_postprocess import instances_from_distance_maps
from sum_core.errors import InvalidInputError

MICRO_SAM_DEFAULTS = dict(
    center_distance_threshold=0.5,
    boundary_distance_threshold=0.5,
    foreground_threshold=0.5,
    foreground_smoothing=1.0,
    distance_smoothing=1.6,
    min_size=0,
)
PARAMETER_SETS = [
    {},
    dict(center_distance_threshold=0.75, boundary_distance_threshold=0.6),
    dict(foreground_smoothing=0.0, distance_smoothing=0.0),
    dict(foreground_threshold=0.4, min_size=50),
    dict(foreground_smoothing=2.0, distance_smoothing=2.5, min_size=20),
]
PARAMETER_IDS = ["defaults", "thresholds", "no-smoothing", "min-size", "smoother"]


def _reference():
    """(bioimage_cpp, torch-em's util/segmentation module), or skip."""
    bic = pytest.importorskip("bioimage_cpp")
    pytest.importorskip("elf.segmentation")
    if importlib.util.find_spec("torch_em") is None:
        pytest.skip("torch-em is not installed (pip install --no-deps torch-em==0.10.9)")
    reference_impl.torch_em()
    return bic, importlib.import_module("torch_em.util.segmentation")


def reference_instances(foreground, center, boundary, **params):
    """micro-sam's generate() post-processing, untiled, with its defaults."""
    bic, segmentation = _reference()
    p = {**MICRO_SAM_DEFAULTS, **params}
    if p["foreground_smoothing"] > 0:
        foreground = bic.filters.gaussian_smoothing(foreground, p["foreground_smoothing"])
    return segmentation.watershed_from_center_and_boundary_distances(
        center_distances=center,
        boundary_distances=boundary,
        foreground_map=foreground,
        center_distance_threshold=p["center_distance_threshold"],
        boundary_distance_threshold=p["boundary_distance_threshold"],
        foreground_threshold=p["foreground_threshold"],
        distance_smoothing=p["distance_smoothing"],
        min_size=p["min_size"],
    )


def decoder_like_maps(shape, centres, radii, seed):
    """Foreground, centre- and boundary-distance maps of overlapping disks (each pixel to its nearest centre),
    the targets torch-em trains the decoder on, plus smooth noise as a network's output has; clipped to [0, 1]."""
    yy, xx = np.indices(shape)
    nearest = np.full(shape, np.inf)
    instances = np.zeros(shape, np.int32)
    for i, ((cy, cx), r) in enumerate(zip(centres, radii), start=1):
        d = np.hypot(yy - cy, xx - cx) / r
        take = (d < 1) & (d < nearest)
        instances[take], nearest[take] = i, d[take]
    foreground = (instances > 0).astype(np.float32)
    center = np.ones(shape, np.float32)
    boundary = np.ones(shape, np.float32)
    for i, box in enumerate(ndimage.find_objects(instances), start=1):
        if box is None:
            continue
        box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        inside = instances[box] == i
        to_edge = ndimage.distance_transform_edt(inside)
        boundary[box][inside] = 1 - to_edge[inside] / to_edge.max()
        cy, cx = centres[i - 1]
        to_centre = np.hypot(yy[box] - cy, xx[box] - cx)[inside]
        center[box][inside] = to_centre / max(to_centre.max(), 1.0)
    rng = np.random.default_rng(seed)

    def noisy(x):
        noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 2.0)
        return np.clip(x + 0.2 * noise, 0, 1).astype(np.float32)

    return noisy(foreground), noisy(center), noisy(boundary)


def touching_cells():
    centres = [(60, 60), (60, 100), (100, 80), (180, 180), (180, 215), (200, 40)]
    return decoder_like_maps((256, 256), centres, [25, 25, 22, 20, 20, 15], seed=0)


def camera_frame():
    """1040x1392 (a common sCMOS frame) with 60 cells, all in the bottom-right corner, far from the origin."""
    rng = np.random.default_rng(1)
    centres = [tuple(int(v) for v in rng.integers([600, 900], [1020, 1370])) for _ in range(60)]
    radii = [int(r) for r in rng.integers(10, 30, 60)]
    return decoder_like_maps((1040, 1392), centres, radii, seed=3)


@pytest.mark.parametrize("params", PARAMETER_SETS, ids=PARAMETER_IDS)
def test_touching_cells_match_torch_em(params):
    maps = touching_cells()
    expected = reference_instances(*maps, **params)
    labels = instances_from_distance_maps(*maps, **params)
    assert labels.dtype == np.uint32
    assert labels.max() >= 5  # the touching cells are separated, not merged into one
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize("params", PARAMETER_SETS, ids=PARAMETER_IDS)
def test_camera_frame_far_from_origin_matches_torch_em(params):
    maps = camera_frame()
    expected = reference_instances(*maps, **params)
    labels = instances_from_distance_maps(*maps, **params)
    assert labels.max() > 40
    assert not labels[:560].any() and not labels[:, :860].any()
    np.testing.assert_array_equal(labels, expected)


def test_no_foreground_gives_no_objects():
    zeros = np.zeros((64, 80), np.float32)
    labels = instances_from_distance_maps(zeros, zeros + 1, zeros + 1)
    assert labels.dtype == np.uint32 and labels.shape == (64, 80) and not labels.any()


def test_no_foreground_matches_torch_em():
    zeros = np.zeros((64, 80), np.float32)
    expected = reference_instances(zeros, zeros + 1, zeros + 1)
    np.testing.assert_array_equal(instances_from_distance_maps(zeros, zeros + 1, zeros + 1), expected)


def _squares():
    """Two touching 6x8 rectangles and a 2x3 one; no ties where the floods meet (no smoothing used).

    Seeds (centre and boundary distance 0): rows 3-6 of columns 2-5 and 11-14, and pixel (4, 19). Between
    the first two seeds the boundary distance rises to a ridge at column 8 whose left neighbour (0.4) is
    lower than its right one (0.5), so the left object reaches it first.
    """
    fg = np.zeros((10, 24), np.float32)
    fg[2:8, 1:17] = 1
    fg[4:6, 18:21] = 1
    center = np.ones_like(fg)
    center[3:7, 2:6] = center[3:7, 11:15] = center[4, 19] = 0
    boundary = np.ones_like(fg)
    boundary[2:8, 1:17] = [0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.4, 0.9, 0.5, 0.3, 0.1, 0.1, 0.1, 0.1, 0.3, 0.6]
    boundary[center == 0] = 0
    return fg, center, boundary


def test_hand_made_ids_sizes_and_min_size():
    fg, center, boundary = _squares()
    off = dict(foreground_smoothing=0.0, distance_smoothing=0.0)
    labels = instances_from_distance_maps(fg, center, boundary, **off)
    assert [int((labels == i).sum()) for i in (1, 2, 3)] == [48, 48, 6]
    assert (labels[2:8, 1:9] == 1).all() and (labels[2:8, 9:17] == 2).all() and (labels[4:6, 18:21] == 3).all()
    # min_size=7 drops the 6-pixel object; the others keep ids 1, 2
    kept = instances_from_distance_maps(fg, center, boundary, min_size=7, **off)
    assert kept.max() == 2 and not kept[4:6, 18:21].any()
    np.testing.assert_array_equal(kept[:, :17], labels[:, :17])


def test_ids_follow_seed_raster_order_and_are_stable():
    fg, center, boundary = _squares()
    flipped = [np.ascontiguousarray(m[:, ::-1]) for m in (fg, center, boundary)]
    labels = instances_from_distance_maps(*flipped, foreground_smoothing=0.0, distance_smoothing=0.0)
    # mirrored, the seeds in raster order: row 3 columns 9-12 (id 1), row 3 columns 18-21 (id 2), (4, 4) (id 3)
    assert labels[3, 10] == 1 and labels[3, 20] == 2 and labels[4, 4] == 3
    again = instances_from_distance_maps(*flipped, foreground_smoothing=0.0, distance_smoothing=0.0)
    np.testing.assert_array_equal(labels, again)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda m: instances_from_distance_maps(m[0], m[1], m[2][:-1]), "boundary_distances"),
        (lambda m: instances_from_distance_maps(m[0][None], m[1], m[2]), "foreground"),
        (lambda m: instances_from_distance_maps(m[0], np.where(m[1] > 0.5, np.nan, m[1]), m[2]), "center_distances"),
        (lambda m: instances_from_distance_maps(*m, center_distance_threshold=1.5), "center_distance_threshold"),
        (lambda m: instances_from_distance_maps(*m, distance_smoothing=-1), "distance_smoothing"),
        (lambda m: instances_from_distance_maps(*m, min_size=-1), "min_size"),
        (lambda m: instances_from_distance_maps(m[0] > 0, m[1], m[2]), "foreground"),
    ],
)
def test_bad_arguments_are_named(call, name):
    with pytest.raises(InvalidInputError, match=name):
        call(_squares())
