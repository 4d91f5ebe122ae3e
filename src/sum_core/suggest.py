"""Suggested next click: the point of the current object where a click is expected to help most.

**Rule.** The per-pixel uncertainty map is read as the model's own estimate of where its mask is wrong.
Its uncertain pixels (``u >= threshold``) are split by the side of the mask they lie on:

- **outside** the mask: foreground the model may have missed; a **positive** click (label 1) there
  would add it;
- **inside** the mask: a part the model may have added wrongly; a **negative** click (label 0) there
  would remove it.

An uncertain pixel is one whose call the model doubts, and the only thing a click can do to a pixel is
to insist on the other call, so the label is the opposite of the mask's value at the point. (The model
may have been right after all: the user answers the other label, or ignores the suggestion.)

The suggestion is the **centre** (the pixel farthest from the region's border, by a Euclidean distance
transform) of the **largest** 8-connected uncertain region of either side, labelled by its side: the
standard simulated user's rule (micro-sam / RITM: the centre of the largest *error* region, see
``training.prompt_sampling.center_click``) with the uncertainty map in place of the unknown ground truth.
:func:`largest_region_click` is that rule on any two region maps. The centre, not the most uncertain
pixel, because a click's effect spreads from it: a click deep inside a region corrects the most of it.

**Where it looks.** Only the object's neighbourhood is read: the mask's bounding box (or the ``window``
given, e.g. where the object was drawn) grown by ``margin`` pixels on every side and clipped to the image.
Uncertain pixels farther away are other objects' business, and a click per object never costs
work on the whole image (only finding the mask's bounding box reads it, and a ``window`` avoids even
that: lazy zarr / dask arrays are then read in the window alone). The window's edge counts as a border
for the distance transform, as the image border does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage

from .errors import InvalidInputError
from .prediction import Prediction, TiledPrediction
from .tiling import Region
from .validation import check_index, check_int, check_range

__all__ = ["DEFAULT_MARGIN", "DEFAULT_THRESHOLD", "SuggestedClick", "largest_region_click", "suggest_click"]

#: Uncertain means ``u >= 0.4``: SUM's certain region is ``certainty = 1 - u > 0.6`` (its App. D.3 split,
#: also ``training.evaluate``'s default ``--certainty-threshold``), so this is the rest.
DEFAULT_THRESHOLD = 0.4

#: Pixels searched around the object's bounding box on every side.
DEFAULT_MARGIN = 64

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


class SuggestedClick(NamedTuple):
    """A suggested click.

    Attributes
    ----------
    point : (int, int)
        ``(row, col)`` in image pixels.
    label : int
        1 (positive: the point lies outside the mask) or 0 (negative: inside it).
    area : int
        Pixels of the region whose centre the point is.
    """

    point: tuple[int, int]
    label: int
    area: int


def largest_region_click(missed: np.ndarray, extra: np.ndarray) -> SuggestedClick | None:
    """The click at the centre of the largest 8-connected region of ``missed`` (positive) or ``extra``
    (negative).

    The largest component of either map wins (ties: ``missed`` first, then the first in raster order);
    the point is its pixel farthest from its border (maximum of the Euclidean distance transform, the
    array's edge counting as border; the first in raster order on ties). With the true false-negative and
    false-positive maps this is the standard simulated user's click; :func:`suggest_click` passes the
    uncertain pixels outside and inside the mask.

    Parameters
    ----------
    missed, extra : numpy.ndarray
        bool ``(H, W)`` maps of the same shape.

    Returns
    -------
    SuggestedClick or None
        None when both maps are empty.

    Examples
    --------
    >>> import numpy as np
    >>> missed = np.zeros((5, 7), bool); missed[1:4, 0:3] = True
    >>> extra = np.zeros((5, 7), bool); extra[0:2, 5:7] = True
    >>> largest_region_click(missed, extra)
    SuggestedClick(point=(2, 1), label=1, area=9)
    """
    if missed.shape != extra.shape or missed.ndim != 2:
        raise InvalidInputError(f"missed and extra must be 2D maps of one shape, got {missed.shape} and {extra.shape}")
    best: tuple[int, np.ndarray, int, int] | None = None  # (area, components, id, label)
    for region, label in ((missed, 1), (extra, 0)):
        components, count = ndimage.label(region, structure=_EIGHT_CONNECTED)
        if count == 0:
            continue
        sizes = np.bincount(components.ravel())[1:]
        largest = int(np.argmax(sizes))
        if best is None or sizes[largest] > best[0]:
            best = (int(sizes[largest]), components, largest + 1, label)
    if best is None:
        return None
    area, components, index, label = best
    # The component's bounding box grown by one pixel holds, for each of its pixels, a nearest border pixel.
    rows, cols = ndimage.find_objects(components, max_label=index)[index - 1]
    component = components[rows, cols] == index
    distance = ndimage.distance_transform_edt(np.pad(component, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return SuggestedClick((int(r) + rows.start, int(c) + cols.start), label, area)


def _plane(value: Any, name: str) -> Any:
    shape = tuple(getattr(value, "shape", np.shape(value)))
    if len(shape) != 2 or 0 in shape:
        raise InvalidInputError(f"{name}: expected a non-empty 2D (H, W) array, got shape {shape}")
    lazy = all(hasattr(value, attribute) for attribute in ("shape", "dtype", "__getitem__"))
    return value if lazy else np.asarray(value)


def _region(window: Sequence[int], shape: tuple[int, int]) -> Region:
    values = tuple(window)
    if len(values) != 4 or any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) for v in values):
        raise InvalidInputError(f"window must be 4 integers (row0, col0, row1, col1), got {window!r}")
    r0, c0, r1, c1 = (int(v) for v in values)
    if not (0 <= r0 < r1 <= shape[0] and 0 <= c0 < c1 <= shape[1]):
        raise InvalidInputError(
            f"window {values} must be a non-empty half-open region inside the image of shape {shape}"
        )
    return Region(r0, c0, r1, c1)


def _mask_box(mask: Any) -> Region | None:
    rows = np.flatnonzero(np.asarray(mask).any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(np.asarray(mask[rows[0] : rows[-1] + 1]).any(axis=0))
    return Region(int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)


def _sources(prediction: Any, uncertainty: Any, k: int) -> tuple[Any, Any, tuple[int, int]]:
    """``(mask, uncertainty, offset)`` of the object, whatever form it came in."""
    if isinstance(prediction, (Prediction, TiledPrediction)):
        if uncertainty is not None:
            raise InvalidInputError("uncertainty: leave it out when passing a Prediction (it carries its own)")
        if isinstance(prediction, TiledPrediction):
            return prediction.mask, prediction.uncertainty, prediction.offset
        k = check_index(k, "k", len(prediction))
        return prediction.masks[k], prediction.uncertainties[k], (0, 0)
    if uncertainty is None:
        raise InvalidInputError("uncertainty: required with a mask (pass the object's (H, W) uncertainty map)")
    return prediction, uncertainty, (0, 0)


def suggest_click(
    prediction: Prediction | TiledPrediction | Any,
    uncertainty: Any = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    margin: int = DEFAULT_MARGIN,
    window: Sequence[int] | None = None,
    k: int = 0,
) -> SuggestedClick | None:
    """The point of the current object where a click is expected to help most, and its label.

    The centre of the largest connected region of uncertain pixels (``u >= threshold``) near the object,
    positive if it lies outside the mask, negative inside (the rule and its reasons: module docstring).

    Parameters
    ----------
    prediction : Prediction, TiledPrediction or array_like
        The current object: a :class:`~sum_core.Prediction` (object ``k``), a
        :class:`~sum_core.TiledPrediction` (its window; the point comes back in image pixels), or its
        ``(H, W)`` mask (bool, or integers with non-zero foreground; numpy, zarr or dask: only the search
        window is read when ``window`` is given).
    uncertainty : array_like, optional
        ``(H, W)`` uncertainty in [0, 1] of that object; required with a mask, left out with a prediction.
    threshold : float
        Pixels with ``u >= threshold`` are uncertain, in [0, 1]; default 0.4 (SUM's certainty
        threshold 0.6).
    margin : int
        Pixels searched around the object's bounding box (or ``window``) on every side, ``>= 0``.
    window : (int, int, int, int), optional
        Half-open ``(row0, col0, row1, col1)`` region, in the mask's pixels, holding the object (e.g. where
        its layer was written); default: the mask's bounding box. An empty mask without ``window`` is
        searched whole.
    k : int
        Object of a :class:`~sum_core.Prediction` with several.

    Returns
    -------
    SuggestedClick or None
        ``(point, label, area)``; None when no pixel of the search window is uncertain (nothing to suggest).

    Raises
    ------
    InvalidInputError
        Shapes, types, ``threshold``, ``margin``, ``window`` or ``k`` not valid; uncertainty values in the
        search window not finite or outside [0, 1].

    Examples
    --------
    A 10 x 10 object with an uncertain 7 x 7 blob just below it: the model may have missed that part, so
    the suggestion is the blob's centre, positive. The same blob inside the mask would be a negative click.

    >>> import numpy as np
    >>> mask = np.zeros((40, 40), bool); mask[10:20, 10:20] = True
    >>> u = np.zeros((40, 40), np.float32); u[22:29, 12:19] = 0.9
    >>> suggest_click(mask, u)
    SuggestedClick(point=(25, 15), label=1, area=49)
    >>> mask[22:29, 12:19] = True
    >>> suggest_click(mask, u).label
    0
    """
    threshold = check_range(threshold, "threshold", 0.0, 1.0)
    margin = check_int(margin, "margin", 0)
    mask, u_map, offset = _sources(prediction, uncertainty, k)
    mask, u_map = _plane(mask, "mask"), _plane(u_map, "uncertainty")
    if tuple(u_map.shape) != tuple(mask.shape):
        raise InvalidInputError(f"uncertainty: shape {tuple(u_map.shape)} differs from the mask's {tuple(mask.shape)}")
    dtype = np.dtype(mask.dtype)
    if not (dtype == bool or np.issubdtype(dtype, np.integer)):
        raise InvalidInputError(f"mask: expected a bool or integer mask, got dtype {dtype}")
    u_dtype = np.dtype(u_map.dtype)
    if u_dtype == bool or not (np.issubdtype(u_dtype, np.floating) or np.issubdtype(u_dtype, np.integer)):
        raise InvalidInputError(f"uncertainty: expected real values in [0, 1], got dtype {u_dtype}")
    h, w = (int(n) for n in mask.shape)
    box = _region(window, (h, w)) if window is not None else _mask_box(mask)
    if box is None:
        search = Region(0, 0, h, w)
    else:
        search = Region(max(box.row0 - margin, 0), max(box.col0 - margin, 0),
                        min(box.row1 + margin, h), min(box.col1 + margin, w))
    inside = np.asarray(mask[search.slices]) != 0
    u = np.asarray(u_map[search.slices], dtype=np.float32)
    if not np.isfinite(u).all() or u.min() < 0 or u.max() > 1:
        raise InvalidInputError("uncertainty: values must be finite and lie in [0, 1]")
    uncertain = u >= threshold
    click = largest_region_click(uncertain & ~inside, uncertain & inside)
    if click is None:
        return None
    row, col = click.point
    return click._replace(point=(row + search.row0 + offset[0], col + search.col0 + offset[1]))
