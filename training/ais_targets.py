"""Training targets of the AIS decoder: foreground, centre and boundary distances per object.

micro-sam trains its AIS decoder (:class:`sum_core.modeling.AISDecoder`) on three maps
computed from an instance label image by torch-em's ``PerObjectDistanceTransform``
with ``distances=True, boundary_distances=True, directed_distances=False,
foreground=True, min_size=25`` (micro-sam's ``default_sam_dataset``). This module
computes the same maps with scipy / scikit-image (tested equal to torch-em's in
``tests/test_training_ais_targets.py``):

1. **Objects.** Connected components of equal-valued pixels (8-connected, as
   ``skimage.measure.label``): an instance in two pieces is two objects. Components
   of fewer than ``min_size`` pixels become background.
2. **Foreground** (channel 0): 1 inside objects, 0 outside.
3. **Centre distance** (channel 1): the Euclidean distance to the object's centre,
   divided by its maximum inside the object. The centre is the rounded centroid
   (``numpy.round``: halves to even); when that pixel is not in the object, the
   object's pixel farthest from its boundary (first in raster order) is the centre.
4. **Boundary distance** (channel 2): with ``b`` the Euclidean distance to the
   nearest *inner boundary* pixel (``find_boundaries(mode="inner")`` over all
   objects, measured inside the object's bounding box), ``max(b) - b`` divided by its
   maximum: 0 at the most central pixel, 1 on the outline.

Both distances are normalised per object by ``max + 1e-7`` and are 1 (torch-em's
``distance_fill_value``) outside the objects. Values are float32, computed in
float32 where torch-em does (its distance transforms return float32).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.measure import label, regionprops
from skimage.segmentation import find_boundaries

from sum_core.errors import InvalidInputError

#: micro-sam's minimum object size (pixels) for the AIS training targets (``min_size=25``).
AIS_MIN_SIZE = 25
#: torch-em's normalisation epsilon (``PerObjectDistanceTransform.eps``).
_EPS = np.float32(1e-7)
#: torch-em's value of both distance channels outside the objects.
_FILL = 1.0


def ais_targets(labels: np.ndarray, min_size: int = AIS_MIN_SIZE) -> np.ndarray:
    """The AIS decoder's three training targets of one instance label image.

    Parameters
    ----------
    labels : np.ndarray
        ``H×W`` instance labels (integers or bool; 0 is background; each connected
        region of one value is an object).
    min_size : int
        Objects (connected components) with fewer pixels become background.

    Returns
    -------
    np.ndarray
        ``3×H×W`` float32: foreground, normalised centre distance, normalised boundary
        distance (:data:`sum_core.modeling.AIS_CHANNELS`), as torch-em's
        ``PerObjectDistanceTransform`` with micro-sam's arguments.

    Raises
    ------
    InvalidInputError
        If ``labels`` is not a 2D integer / bool array or ``min_size`` is negative.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "biu":
        raise InvalidInputError(
            f"labels must be a 2D integer label image, got shape {labels.shape} and dtype {labels.dtype}"
        )
    if min_size < 0:
        raise InvalidInputError(f"min_size must be >= 0, got {min_size}")
    objects = label(labels, connectivity=2)
    if min_size > 0:
        small = np.bincount(objects.ravel()) < min_size
        small[0] = False
        objects[small[objects]] = 0
    boundaries = find_boundaries(objects, mode="inner")
    targets = np.full((3, *labels.shape), _FILL, np.float32)
    targets[0] = objects > 0
    for prop in regionprops(objects):
        box, mask = prop.slice, prop.image
        centre, boundary = _object_distances(mask, boundaries[box], prop.centroid, box)
        for channel, values in ((1, centre), (2, boundary)):
            values[~mask] = 0
            targets[channel][box][mask] = (values / (values.max() + _EPS))[mask]
    return targets


def _object_distances(
    mask: np.ndarray, boundaries: np.ndarray, centroid: tuple[float, ...], box: tuple[slice, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Un-normalised centre and inverted boundary distances of one object in its bounding box (float32)."""
    boundary = ndimage.distance_transform_edt(~boundaries).astype(np.float32)
    boundary[~mask] = 0
    peak = np.unravel_index(np.argmax(boundary), boundary.shape)
    centre = tuple(int(c) - s.start for c, s in zip(np.round(centroid).astype(int), box))
    if not mask[centre]:
        centre = peak
    rows, cols = np.indices(mask.shape)
    squared = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2
    return np.sqrt(squared.astype(np.float32)), boundary[peak] - boundary
