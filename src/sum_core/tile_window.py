"""The one read of a tile window as the encoder sees it (automatic segmentation, AIS, batch jobs)."""

from __future__ import annotations

import numpy as np

from .image import Normalization, to_uint8_rgb
from .sources import Planes
from .tiling import Region

__all__ = ["read_window"]


def read_window(planes: Planes, slice_index: int, region: Region, normalization: Normalization | None) -> np.ndarray:
    """Pixels of ``region`` of one plane as ``(h, w, 3)`` uint8 RGB, ready to encode.

    Every window of an image is converted with the image's ONE intensity window
    (:func:`sum_core.sources.fixed_normalization`), so tiles share it.

    Parameters
    ----------
    planes : Planes
        The image (:func:`sum_core.sources.image_planes`).
    slice_index : int
        The plane (0 for a 2D image).
    region : Region
        The window, e.g. a tile's ``outer`` region.
    normalization : Normalization or None
        The image's intensity window (None: the dtype's range, see :func:`sum_core.image.to_uint8_rgb`).

    Returns
    -------
    numpy.ndarray
        ``(h, w, 3)`` uint8.
    """
    return to_uint8_rgb(planes.read(slice_index, region), normalization)
