"""Sample images bundled with scikit-image (no download needed)."""

from __future__ import annotations

import numpy as np


def cell_sample() -> list[tuple]:
    """Return scikit-image's phase-contrast cell image (660 x 550, uint8).

    Returns
    -------
    list of tuple
        One napari LayerData tuple ``(data, {"name": "cell"}, "image")``.
    """
    from skimage import data

    return [(data.cell(), {"name": "cell"}, "image")]


def blobs_stack_sample(depth: int = 8, size: int = 256, seed: int = 0) -> list[tuple]:
    """Return a small synthetic 3D stack of blurred, noisy blobs (Z x Y x X, uint8).

    Generated from :func:`skimage.data.binary_blobs` (no download), so 3D
    workflows can be tried offline.

    Parameters
    ----------
    depth : int
        Number of slices.
    size : int
        Height and width of each slice in pixels.
    seed : int
        Seed of the blob layout and of the noise.

    Returns
    -------
    list of tuple
        One napari LayerData tuple ``(data, {"name": "blobs stack"}, "image")``.
    """
    from skimage import data, filters

    blobs = data.binary_blobs(
        length=size, blob_size_fraction=0.12, n_dim=3, volume_fraction=0.25, rng=seed
    )[:depth]
    smooth = filters.gaussian(blobs.astype(np.float32), sigma=1.5)
    noisy = smooth + np.random.default_rng(seed).normal(0.0, 0.05, smooth.shape)
    stack = (np.clip(noisy, 0.0, 1.0) * 255).astype(np.uint8)
    return [(stack, {"name": "blobs stack"}, "image")]
