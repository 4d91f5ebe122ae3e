"""Sample images bundled with scikit-image (no download needed)."""

from __future__ import annotations

import numpy as np


def sample_image() -> np.ndarray:
    """Return an immunohistochemistry section (512 x 512 RGB uint8) with stained nuclei.

    The image is scikit-image's bundled ``data.immunohistochemistry()``; a good
    prompt is a click on a brown (DAB-stained) nucleus, e.g. (row, col) = (88, 203).
    """
    from skimage import data

    return data.immunohistochemistry()
