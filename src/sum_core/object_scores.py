"""Per-object scores of a segmentation: the one definition, for every segmenter and every output.

Each object (one id of a label image, or one plane of it in a stack) gets one row of :data:`COLUMNS`:

- ``label``: its id; ``area``: its pixel count;
- ``predicted_iou``: the decoder's own estimate of the mask's IoU (SAM's IoU head; the automatic mask
  generator's ``predicted_iou``, an interactive or propagated mask's ``score``); NaN where the segmenter has
  none (AIS);
- ``stability``: SAM's stability score of the object's mask logits,
  :func:`sum_core.mask_ops.stability_score` with offset :data:`STABILITY_OFFSET` (the IoU of the masks
  thresholded at +1 and -1); NaN where there are no logits (AIS);
- ``mean_uncertainty``: the mean per-pixel uncertainty over the object's pixels;
- ``boundary_uncertainty``: the mean per-pixel uncertainty over its *boundary band*: the pixels within
  ``band_width`` pixels (chessboard distance) of its outline on either side, i.e. the object dilated by a
  ``(2 w + 1)``-square minus the object eroded by it. The image border is not an outline (an object cut by
  the frame has no band along it). The default :data:`BAND_WIDTH` = 2 is the reach of the AIS
  post-processing's distance smoothing (sigma 1.6 pixels): an outline is not placed more precisely than that.

The per-pixel uncertainty is the segmenter's (prompted: :mod:`sum_core.uncertainty`; AIS:
:func:`sum_core.ais_uncertainty.ais_pixel_uncertainty`), in [0, 1]. High ``mean_uncertainty`` or
``boundary_uncertainty`` and low ``predicted_iou`` / ``stability`` mark the objects to review first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .ais_postprocess import check_decoder_map
from .errors import InvalidInputError
from .validation import check_int

__all__ = ["BAND_WIDTH", "COLUMNS", "STABILITY_OFFSET", "ObjectScores", "object_scores"]

#: The columns of a per-object table, in order.
COLUMNS = ("label", "area", "predicted_iou", "stability", "mean_uncertainty", "boundary_uncertainty")
#: Default half-width of the boundary band, in pixels.
BAND_WIDTH = 2
#: Logit offset of the stability score (SAM's ``stability_score_offset``).
STABILITY_OFFSET = 1.0


@dataclass(frozen=True)
class ObjectScores:
    """Per-object scores of a label image, one row per object, sorted by label (see the module docstring).

    Attributes
    ----------
    label : numpy.ndarray
        Object ids: uint32, or uint64 when an id needs it.
    area : numpy.ndarray
        int64 pixel counts.
    predicted_iou, stability : numpy.ndarray
        float64, NaN where the segmenter gave none.
    mean_uncertainty, boundary_uncertainty : numpy.ndarray
        float64 means of the per-pixel uncertainty over the object and over its boundary band.
    """

    label: np.ndarray
    area: np.ndarray
    predicted_iou: np.ndarray
    stability: np.ndarray
    mean_uncertainty: np.ndarray
    boundary_uncertainty: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    def columns(self) -> dict[str, np.ndarray]:
        """The rows as ``{column: array}`` in :data:`COLUMNS` order (e.g. for ``pandas.DataFrame``)."""
        return {name: getattr(self, name) for name in COLUMNS}


def _per_label(values: Mapping[int, float] | None, ids: list[int], name: str) -> np.ndarray:
    if values is None:
        return np.full(len(ids), np.nan)
    if not isinstance(values, Mapping):
        raise InvalidInputError(f"{name}: expected a mapping from label id to value, got {type(values).__name__}")
    try:
        return np.asarray([float(values.get(i, np.nan)) for i in ids], dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InvalidInputError(f"{name}: values must be numbers ({error})") from None


def object_scores(
    labels: np.ndarray,
    uncertainty: np.ndarray,
    *,
    band_width: int = BAND_WIDTH,
    predicted_iou: Mapping[int, float] | None = None,
    stability: Mapping[int, float] | None = None,
) -> ObjectScores:
    """Area, predicted IoU, stability, mean and boundary-band uncertainty of every object of a label image.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(H, W)`` non-negative integer labels, 0 background.
    uncertainty : numpy.ndarray
        ``(H, W)`` per-pixel uncertainty in [0, 1].
    band_width : int
        Half-width ``w >= 1`` of the boundary band in pixels (see the module docstring).
    predicted_iou, stability : mapping of int to float, optional
        The segmenter's values per label id; ids missing (or no mapping) get NaN.

    Returns
    -------
    ObjectScores
        One row per label present, sorted by label (empty when there is none).

    Raises
    ------
    InvalidInputError
        ``labels`` not a 2D non-negative integer array, ``uncertainty`` of another shape, not finite or
        outside [0, 1], ``band_width < 1``, or values that are not numbers.

    Examples
    --------
    A 2x2 object in a 4x4 image whose uncertainty is 1 on the top row only; with ``band_width=1`` the band
    is the whole image (12 pixels around the object, 4 in it), 4 of them on the top row:

    >>> import numpy as np
    >>> labels = np.zeros((4, 4), np.uint32); labels[1:3, 1:3] = 7
    >>> u = np.zeros((4, 4), np.float32); u[0] = 1
    >>> table = object_scores(labels, u, band_width=1, predicted_iou={7: 0.9})
    >>> table.label.tolist(), table.area.tolist(), table.mean_uncertainty.tolist(), table.boundary_uncertainty.tolist()
    ([7], [4], [0.0], [0.25])
    >>> table.predicted_iou.tolist(), table.stability.tolist()
    ([0.9], [nan])
    """
    lab = np.asarray(labels)
    if lab.ndim != 2 or lab.dtype == bool or not np.issubdtype(lab.dtype, np.integer):
        raise InvalidInputError(f"labels: expected a 2D integer label image, got {lab.dtype} of shape {lab.shape}")
    if lab.size and lab.min() < 0:
        raise InvalidInputError("labels: ids must be >= 0 (0 is background)")
    u = check_decoder_map(uncertainty, "uncertainty", lab.shape)
    if u.size and (u.min() < 0 or u.max() > 1):
        raise InvalidInputError(
            f"uncertainty: values must lie in [0, 1], got [{float(u.min()):.4g}, {float(u.max()):.4g}]"
        )
    w = check_int(band_width, "band_width", 1)
    square = np.ones((2 * w + 1, 2 * w + 1), dtype=bool)

    # find_objects allocates one entry per id value: ids far above the pixel count (in the billions) are
    # made compact first, in the order of their values.
    largest = int(lab.max()) if lab.size else 0
    if largest <= max(lab.size, 1 << 16):
        compact = lab
        present = np.flatnonzero(np.bincount(lab.ravel(), minlength=largest + 1)[1:]) + 1
    else:
        present, compact = np.unique(lab, return_inverse=True)
        compact = compact.reshape(lab.shape)
        if present[0] == 0:
            present = present[1:]
        else:
            compact += 1  # no background: compact ids start at 1
    ids = [int(k) for k in present]
    areas, means, bands = [], [], []
    for index, box in enumerate(ndimage.find_objects(compact), start=1):
        if box is None:  # an id value not present
            continue
        # The bounding box grown by w holds the whole band; only the image border clips it.
        grown = tuple(slice(max(s.start - w, 0), min(s.stop + w, n)) for s, n in zip(box, lab.shape))
        inside = compact[grown] == index
        band = ndimage.binary_dilation(inside, square) & ~ndimage.binary_erosion(inside, square, border_value=1)
        window = u[grown].astype(np.float64)  # the window only: a whole float64 copy would double memory
        areas.append(int(inside.sum()))
        means.append(float(window[inside].mean()))
        bands.append(float(window[band].mean()) if band.any() else np.nan)  # an object filling the frame: no band
    return ObjectScores(
        label=present.astype(np.uint64 if present.size and int(present[-1]) >= 2**32 else np.uint32),
        area=np.asarray(areas, dtype=np.int64),
        predicted_iou=_per_label(predicted_iou, ids, "predicted_iou"),
        stability=_per_label(stability, ids, "stability"),
        mean_uncertainty=np.asarray(means, dtype=np.float64),
        boundary_uncertainty=np.asarray(bands, dtype=np.float64),
    )
