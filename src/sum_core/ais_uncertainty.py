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

**Per object**: :func:`sum_core.object_scores.object_scores` (the one definition for every segmenter)
of this map.
"""

from __future__ import annotations

import numpy as np

from .ais_postprocess import check_decoder_map
from .errors import InvalidInputError
from .validation import check_range

__all__ = ["ais_pixel_uncertainty"]

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
