"""Instances from the AIS decoder's maps: the seeded watershed of micro-sam's automatic instance segmentation.

The AIS decoder predicts, per pixel, a foreground probability, a distance to the object's centre and a
distance to the object's boundary (0 deep inside an object, 1 on its outline), all in [0, 1].
:func:`instances_from_distance_maps` turns them into a label image the way micro-sam 1.8.14's
``InstanceSegmentationWithDecoder.generate`` does (untiled), with the same parameters and defaults:

1. the foreground map is smoothed with a Gaussian of ``foreground_smoothing`` (skipped at 0), the two
   distance maps with ``distance_smoothing``; every Gaussian has radius ``ceil(3 sigma)`` (at least 1) and
   mirrors the image at its border (``scipy`` mode ``"mirror"``), computed in float32, as bioimage-cpp's
   ``gaussian_smoothing`` that micro-sam and torch-em call;
2. the foreground mask is ``foreground > foreground_threshold``;
3. seeds are the 8-connected components of ``center < center_distance_threshold`` and
   ``boundary < boundary_distance_threshold`` inside the mask, numbered in raster order of their first pixel;
4. each seed floods the mask over the boundary-distance map (4-connected, lowest first; a pixel joins the
   object whose flood reaches it first);
5. objects under ``min_size`` pixels are removed and the rest renumbered ``1..N`` in the same order.

The order of the flood is where a pixel can differ. bioimage-cpp quantises the heights to 65 536 levels
over the mask's range and leaves the order within one level unspecified (it takes the last pixel pushed
first), scikit-image orders by the float height and then first in, first out; and its float32 Gaussian
differs from scipy's by up to 2 float32 ulps. So a pixel where two floods meet at heights closer than
``1/65535`` of the range can go to the other object: 5 of 14.7 million pixels in 100 runs on random
decoder-like maps (384x384, 5-40 touching cells, the five parameter sets of the tests; quantising as
bioimage-cpp does gave 9, so it is not done). On the maps of ``tests/test_ais_postprocess.py`` the labels
are identical to torch-em's ``watershed_from_center_and_boundary_distances``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import ndimage
from skimage.measure import label as connected_components
from skimage.segmentation import relabel_sequential, watershed

from .errors import InvalidInputError
from .validation import check_int, check_range

__all__ = [
    "SeedMaps",
    "check_decoder_map",
    "flood",
    "instances_from_distance_maps",
    "seed_maps",
    "smoothing_radius",
]


def check_decoder_map(value: object, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """One channel of the AIS decoder output as a finite float32 ``(H, W)`` array.

    Parameters
    ----------
    value : object
        Array-like of real numbers.
    name : str
        The argument's name, for the error message.
    shape : tuple of int, optional
        The shape it must have (that of the first map checked).

    Returns
    -------
    numpy.ndarray
        float32 ``(H, W)`` (the input itself when it already is).

    Raises
    ------
    InvalidInputError
        Not 2D, empty, of another shape, not real (bool included), or not finite.
    """
    array = np.asarray(value)
    if array.ndim != 2 or 0 in array.shape:
        raise InvalidInputError(
            f"{name}: expected a non-empty 2D (H, W) map, got shape {array.shape}; pass one channel of the "
            "decoder output per argument"
        )
    if shape is not None and array.shape != shape:
        raise InvalidInputError(f"{name}: shape {array.shape} differs from the foreground map's {shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise InvalidInputError(f"{name}: expected a real-valued map, got dtype {array.dtype}")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise InvalidInputError(f"{name}: contains NaN or infinite values; check the decoder output")
    return array


def smoothing_radius(sigma: float) -> int:
    """Pixels on each side that the Gaussian of ``sigma`` reads: ``ceil(3 sigma)`` (at least 1), 0 for none."""
    return 0 if sigma == 0 else max(1, math.ceil(3.0 * sigma))


def _smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    if sigma == 0:
        return image
    return ndimage.gaussian_filter(image, sigma, mode="mirror", radius=smoothing_radius(sigma), output=np.float32)


class SeedMaps(NamedTuple):
    """The watershed's inputs (steps 1-3 of the module docstring), from :func:`seed_maps`.

    Attributes
    ----------
    mask : numpy.ndarray
        bool ``(H, W)``: the smoothed foreground above its threshold.
    heights : numpy.ndarray
        float32 ``(H, W)``: the smoothed boundary distance (the flood's heights).
    seeds : numpy.ndarray
        bool ``(H, W)``: both smoothed distances below their thresholds, inside ``mask``.
    """

    mask: np.ndarray
    heights: np.ndarray
    seeds: np.ndarray


def seed_maps(
    foreground: np.ndarray,
    center_distances: np.ndarray,
    boundary_distances: np.ndarray,
    *,
    center_distance_threshold: float,
    boundary_distance_threshold: float,
    foreground_threshold: float,
    foreground_smoothing: float,
    distance_smoothing: float,
) -> SeedMaps:
    """Smooth the three float32 maps and threshold them (steps 1-3; arguments as
    :func:`instances_from_distance_maps`, already validated). Each output pixel depends only on the
    maps within :func:`smoothing_radius` px of it (the image border mirrored)."""
    mask = _smooth(foreground, foreground_smoothing) > foreground_threshold
    center = _smooth(center_distances, distance_smoothing)
    heights = _smooth(boundary_distances, distance_smoothing)
    seeds = (center < center_distance_threshold) & (heights < boundary_distance_threshold) & mask
    return SeedMaps(mask, heights, seeds)


def flood(heights: np.ndarray, seeds: np.ndarray, mask: np.ndarray, min_size: int = 0) -> np.ndarray:
    """Steps 4-5: each 8-connected seed floods ``mask`` over ``heights`` (4-connected, lowest first),
    then objects under ``min_size`` pixels are removed.

    The flood never leaves the 8-connected component of ``mask`` holding its seed, and its result
    there depends only on the heights, seeds and mask inside that component (the flood's queue orders
    by height, then first in, first out, and seeds enter it in raster order).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` uint32, objects ``1..N`` in raster order of their seeds' first pixels.
    """
    markers = connected_components(seeds, connectivity=2).astype(np.uint32)
    labels = watershed(heights, markers, mask=mask, connectivity=1).astype(np.uint32)
    if min_size > 0:
        sizes = np.bincount(labels.ravel())
        small = sizes < min_size
        small[0] = False
        if small.any():
            labels[small[labels]] = 0
            labels = relabel_sequential(labels)[0].astype(np.uint32)
    return labels


def instances_from_distance_maps(
    foreground: np.ndarray,
    center_distances: np.ndarray,
    boundary_distances: np.ndarray,
    *,
    center_distance_threshold: float = 0.5,
    boundary_distance_threshold: float = 0.5,
    foreground_threshold: float = 0.5,
    foreground_smoothing: float = 1.0,
    distance_smoothing: float = 1.6,
    min_size: int = 0,
) -> np.ndarray:
    """Label image from the AIS decoder's foreground, centre-distance and boundary-distance maps.

    The seeded watershed of micro-sam's AIS (see the module docstring for each step); the defaults are
    micro-sam 1.8.14's ``InstanceSegmentationWithDecoder.generate`` defaults.

    Parameters
    ----------
    foreground, center_distances, boundary_distances : numpy.ndarray
        ``(H, W)`` real maps of one shape (the decoder's three output channels), taken as float32.
    center_distance_threshold : float
        Seeds where the smoothed centre distance is below this, in [0, 1].
    boundary_distance_threshold : float
        ... and the smoothed boundary distance is below this, in [0, 1].
    foreground_threshold : float
        Foreground where the smoothed foreground probability is above this, in [0, 1].
    foreground_smoothing : float
        Gaussian sigma (pixels) for the foreground map; 0 for none.
    distance_smoothing : float
        Gaussian sigma (pixels) for both distance maps; 0 for none.
    min_size : int
        Objects with fewer pixels are removed (0 keeps all).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` uint32 labels, 0 background, objects ``1..N`` numbered in raster order of their seeds'
        first pixels (the same maps always give the same ids).

    Raises
    ------
    InvalidInputError
        A map that is not 2D, of another shape, not real, or not finite; a threshold outside [0, 1]; a
        negative or non-finite smoothing; a negative ``min_size``.

    Examples
    --------
    Two touching rectangles' worth of foreground with two 2x2 seeds (both distances 0); the floods meet
    half-way:

    >>> import numpy as np
    >>> fg = np.zeros((8, 12), np.float32); fg[2:6, 2:10] = 1
    >>> boundary = np.ones_like(fg); boundary[3:5, 3:5] = 0; boundary[3:5, 7:9] = 0
    >>> center = boundary.copy()
    >>> labels = instances_from_distance_maps(fg, center, boundary, foreground_smoothing=0, distance_smoothing=0)
    >>> labels.dtype, labels.max()
    (dtype('uint32'), np.uint32(2))
    >>> labels[4]
    array([0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 0, 0], dtype=uint32)
    """
    fg = check_decoder_map(foreground, "foreground")
    center = check_decoder_map(center_distances, "center_distances", fg.shape)
    boundary = check_decoder_map(boundary_distances, "boundary_distances", fg.shape)
    center_t = check_range(center_distance_threshold, "center_distance_threshold", 0.0, 1.0)
    boundary_t = check_range(boundary_distance_threshold, "boundary_distance_threshold", 0.0, 1.0)
    fg_t = check_range(foreground_threshold, "foreground_threshold", 0.0, 1.0)
    fg_sigma = check_range(foreground_smoothing, "foreground_smoothing", 0.0, math.inf)
    distance_sigma = check_range(distance_smoothing, "distance_smoothing", 0.0, math.inf)
    min_size = check_int(min_size, "min_size", 0)

    inputs = seed_maps(
        fg, center, boundary, center_distance_threshold=center_t, boundary_distance_threshold=boundary_t,
        foreground_threshold=fg_t, foreground_smoothing=fg_sigma, distance_smoothing=distance_sigma,
    )
    return flood(inputs.heights, inputs.seeds, inputs.mask, min_size)
