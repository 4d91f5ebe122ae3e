"""Uncertainty of an automatic instance segmentation (AIS): a per-pixel map and a per-object table.

**Per pixel.** With ``p`` the decoder's foreground probability, ``b`` its boundary distance (0 deep inside
an object, 1 on its outline), both in [0, 1], and ``t`` the post-processing's
``boundary_distance_threshold`` (0.5 by default)::

    u = max(H(p), p * r(b)),   H(p) = (-p log p - (1 - p) log(1 - p)) / log 2,   r(b) = clip((b - t) / (1 - t), 0, 1)

- ``H(p)``, the normalised binary entropy (:func:`sum_core.uncertainty.bernoulli_entropy`), is the
  uncertainty about *whether* the pixel belongs to an object: 0 at p = 0 or 1, 1 at p = 0.5.
- ``p * r(b)`` is the uncertainty about *which* object it belongs to and *where that object ends*. Where
  ``b < t`` the pixel can be part of a seed (:func:`sum_core.ais_postprocess.instances_from_distance_maps`
  seeds only there), so its object is decided: ``r = 0``. Beyond ``t`` the object is decided by the flood,
  the more arbitrarily the nearer the ridge ``b = 1`` where two touching objects' floods meet or the
  object's outline is placed: ``r`` rises linearly to 1 there. It is weighted by ``p`` because only
  foreground pixels are assigned to an object (in the background ``H(p)`` says all there is).

The maximum keeps the map in [0, 1] and each term keeps its meaning (a sum would count a pixel that is
both twice). The maps are used as the decoder gives them (before the post-processing's smoothing).

**Per object** (:func:`ais_object_scores`): ``area`` in pixels, ``mean_uncertainty`` the mean of ``u`` over
the object's pixels, and ``boundary_uncertainty`` the mean of ``u`` over its *boundary band*: the pixels
within ``band_width`` pixels (chessboard distance) of its outline on either side, i.e. the object dilated by
a ``(2 w + 1)``-square minus the object eroded by it. The image border is not an outline (an object cut by the
frame has no band along it). The default ``band_width=2`` is the reach of the post-processing's distance
smoothing (sigma 1.6 pixels): an outline is not placed more precisely than that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .ais_postprocess import check_decoder_map
from .errors import InvalidInputError
from .validation import check_int, check_range

__all__ = ["AisObjectScores", "ais_object_scores", "ais_pixel_uncertainty"]

# p = 0 or 1 has an infinite logit; bernoulli_entropy needs a finite one. In float64, exp(-1000) is 0, so the
# entropy at a logit of ±1000 is exactly 0, as H(0) = H(1) = 0.
_LOGIT_LIMIT = 1000.0


def _probabilities(value: object, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    array = check_decoder_map(value, name, shape)
    if array.min() < 0 or array.max() > 1:
        raise InvalidInputError(
            f"{name}: values must lie in [0, 1] (the decoder's sigmoid output), got "
            f"[{float(array.min()):.4g}, {float(array.max()):.4g}]"
        )
    return array


def ais_pixel_uncertainty(
    foreground: np.ndarray, boundary_distances: np.ndarray, *, boundary_distance_threshold: float = 0.5
) -> np.ndarray:
    """Per-pixel AIS uncertainty ``max(H(p), p * r(b))`` (defined in the module docstring).

    Parameters
    ----------
    foreground : numpy.ndarray
        ``(H, W)`` foreground probability ``p`` in [0, 1].
    boundary_distances : numpy.ndarray
        ``(H, W)`` boundary distance ``b`` in [0, 1] (0 inside, 1 on an outline).
    boundary_distance_threshold : float
        ``t`` in [0, 1), the seed threshold the labels were made with.

    Returns
    -------
    numpy.ndarray
        float32 ``(H, W)`` in [0, 1].

    Raises
    ------
    InvalidInputError
        A map that is not 2D, of another shape, not finite, or outside [0, 1]; ``t`` outside [0, 1).

    Examples
    --------
    Background, undecided, certain inside, certain foreground halfway between the seed threshold and the
    outline:

    >>> import numpy as np
    >>> p = np.array([[0.0, 0.5, 1.0, 1.0]], np.float32)
    >>> b = np.array([[1.0, 0.0, 0.0, 0.75]], np.float32)
    >>> ais_pixel_uncertainty(p, b)
    array([[0. , 1. , 0. , 0.5]], dtype=float32)
    """
    p = _probabilities(foreground, "foreground")
    b = _probabilities(boundary_distances, "boundary_distances", p.shape)
    t = check_range(boundary_distance_threshold, "boundary_distance_threshold", 0.0, 1.0)
    if t == 1.0:
        raise InvalidInputError("boundary_distance_threshold: must be below 1 (no pixel lies beyond a threshold of 1)")
    ramp = np.clip((b - np.float32(t)) / np.float32(1.0 - t), 0.0, 1.0)
    # torch only here: the per-object scores (results exports, the napari reader) stay torch-free.
    import torch

    from .uncertainty import bernoulli_entropy

    logits = torch.logit(torch.from_numpy(p.astype(np.float64))).clamp_(-_LOGIT_LIMIT, _LOGIT_LIMIT)
    entropy = bernoulli_entropy(logits).numpy()
    return np.maximum(entropy, p * ramp).astype(np.float32, copy=False)


@dataclass(frozen=True)
class AisObjectScores:
    """Per-object uncertainty of a label image, one row per object, sorted by label.

    Attributes
    ----------
    label : numpy.ndarray
        uint32 object ids.
    area : numpy.ndarray
        int64 pixel counts.
    mean_uncertainty : numpy.ndarray
        float64 mean per-pixel uncertainty over the object.
    boundary_uncertainty : numpy.ndarray
        float64 mean per-pixel uncertainty over the object's boundary band.
    """

    label: np.ndarray
    area: np.ndarray
    mean_uncertainty: np.ndarray
    boundary_uncertainty: np.ndarray

    def __len__(self) -> int:
        return len(self.label)


def ais_object_scores(labels: np.ndarray, uncertainty: np.ndarray, *, band_width: int = 2) -> AisObjectScores:
    """Area, mean uncertainty and boundary-band uncertainty of every object of a label image.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(H, W)`` non-negative integer labels, 0 background.
    uncertainty : numpy.ndarray
        ``(H, W)`` per-pixel uncertainty in [0, 1], e.g. from :func:`ais_pixel_uncertainty`.
    band_width : int
        Half-width ``w >= 1`` of the boundary band in pixels (see the module docstring).

    Returns
    -------
    AisObjectScores
        One row per label present, sorted by label (empty when there is none).

    Raises
    ------
    InvalidInputError
        ``labels`` not a 2D non-negative integer array, ``uncertainty`` of another shape, not finite or
        outside [0, 1], or ``band_width < 1``.

    Examples
    --------
    A 2x2 object in a 4x4 image whose uncertainty is 1 on the top row only; with ``band_width=1`` the band
    is the whole image (12 pixels around the object, 4 in it), 4 of them on the top row:

    >>> import numpy as np
    >>> labels = np.zeros((4, 4), np.uint32); labels[1:3, 1:3] = 7
    >>> u = np.zeros((4, 4), np.float32); u[0] = 1
    >>> table = ais_object_scores(labels, u, band_width=1)
    >>> table.label.tolist(), table.area.tolist(), table.mean_uncertainty.tolist(), table.boundary_uncertainty.tolist()
    ([7], [4], [0.0], [0.25])
    """
    lab = np.asarray(labels)
    if lab.ndim != 2 or lab.dtype == bool or not np.issubdtype(lab.dtype, np.integer):
        raise InvalidInputError(f"labels: expected a 2D integer label image, got {lab.dtype} of shape {lab.shape}")
    if lab.size and lab.min() < 0:
        raise InvalidInputError("labels: ids must be >= 0 (0 is background)")
    u = _probabilities(uncertainty, "uncertainty", lab.shape).astype(np.float64)
    w = check_int(band_width, "band_width", 1)
    square = np.ones((2 * w + 1, 2 * w + 1), dtype=bool)

    ids, areas, means, bands = [], [], [], []
    for index, box in enumerate(ndimage.find_objects(lab), start=1):
        if box is None:
            continue
        # The bounding box grown by w holds the whole band; only the image border clips it.
        grown = tuple(slice(max(s.start - w, 0), min(s.stop + w, n)) for s, n in zip(box, lab.shape))
        inside = lab[grown] == index
        band = ndimage.binary_dilation(inside, square) & ~ndimage.binary_erosion(inside, square, border_value=1)
        window = u[grown]
        ids.append(index)
        areas.append(int(inside.sum()))
        means.append(float(window[inside].mean()))
        bands.append(float(window[band].mean()))
    return AisObjectScores(
        label=np.asarray(ids, dtype=np.uint32),
        area=np.asarray(areas, dtype=np.int64),
        mean_uncertainty=np.asarray(means, dtype=np.float64),
        boundary_uncertainty=np.asarray(bands, dtype=np.float64),
    )
