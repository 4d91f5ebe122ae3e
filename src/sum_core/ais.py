"""Automatic instance segmentation (AIS) of a whole image, tiled at any size.

The AIS decoder (:mod:`sum_core.modeling.ais_decoder`, micro-sam's UNETR decoder) maps one encoded
window to three per-pixel maps: foreground probability, centre distance, boundary distance.
:func:`ais_segment` runs it over an image cut by the package's one size rule
(:func:`sum_core.tiling.tile_grid`), as micro-sam's tiled AIS does:

1. each tile's outer window (tile plus halo) is read (:meth:`sum_core.sources.Planes.read`),
   converted to 8 bits with one intensity window for the whole image, encoded and decoded
   (:func:`window_maps`);
2. only the tile's *inner* block of the three maps is pasted into full-size maps, so every pixel's
   maps come from the one tile that owns it, computed with the halo as context;
3. ONE seeded watershed runs over the full-size maps
   (:func:`sum_core.ais_postprocess.instances_from_distance_maps`).

Objects are therefore never cut or doubled at tile borders by the stitching: there is none, the
instances are made once from maps that are continuous across the borders. The maps of a pixel
near a border are as good as the decoder's view of its surroundings: an object that reaches more
than ``halo`` px beyond its tile's inner region is seen cut by that window, and its maps there may
differ from the neighbour's (give a larger ``halo`` for large objects).

The options of the watershed are data: :class:`~sum_core.ais_options.AisOptions` (micro-sam's
defaults; also importable from here).
"""

from __future__ import annotations

import threading
from dataclasses import asdict

import numpy as np
from tqdm.auto import tqdm

from .ais_options import AisOptions
from .ais_postprocess import instances_from_distance_maps
from .ais_uncertainty import ais_pixel_uncertainty
from .encoding import encode_image
from .errors import check_cancel
from .image import Normalization
from .modeling import SamModel, decode_ais_maps
from .sources import Planes
from .tile_window import read_window
from .tiling import Tile, TileGrid

__all__ = [
    "AIS_MAP_BYTES_PER_PIXEL",
    "AisOptions",
    "ais_maps",
    "ais_segment",
    "maps_uncertainty",
    "tile_maps",
    "window_maps",
]

#: Bytes per pixel of the full-size decoder maps :func:`ais_segment` holds (three float32 maps).
AIS_MAP_BYTES_PER_PIXEL = 12
# Rows of the uncertainty map computed at a time (bounds its float64 temporaries on large images).
_UNCERTAINTY_PIXELS = 1 << 22


def window_maps(model: SamModel, window: np.ndarray, precision: str = "fp32") -> np.ndarray:
    """The AIS decoder's maps of one 8-bit RGB window: encode, then decode (the one per-window step).

    Parameters
    ----------
    model : SamModel
        A model carrying an AIS decoder (:func:`sum_core.modeling.ais_decoder_of`).
    window : np.ndarray
        ``(h, w, 3)`` uint8, e.g. from :func:`sum_core.image.to_uint8_rgb`.
    precision : {"fp32", "bf16", "fp16"}
        Encoder precision.

    Returns
    -------
    np.ndarray
        ``3×h×w`` float32: foreground probability, centre distance, boundary distance.
    """
    return decode_ais_maps(model, encode_image(model, window, precision))


def ais_maps(
    model: SamModel,
    planes: Planes,
    normalization: Normalization | None,
    grid: TileGrid,
    precision: str = "fp32",
    *,
    progress: bool = False,
    cancel: threading.Event | None = None,
) -> np.ndarray:
    """Full-size AIS decoder maps of an image: each tile's inner block, decoded on its outer window.

    Parameters
    ----------
    model : SamModel
        A model carrying an AIS decoder.
    planes : Planes
        The image (its plane 0), e.g. from :func:`sum_core.sources.image_planes`.
    normalization : Normalization or None
        The whole image's intensity window (:func:`sum_core.sources.fixed_normalization`).
    grid : TileGrid
        The tiling of the plane.
    precision : {"fp32", "bf16", "fp16"}
        Encoder precision.
    progress : bool
        Show a progress bar over the tiles.
    cancel : threading.Event, optional
        Checked before each tile: raises :class:`sum_core.errors.Cancelled` when set.

    Returns
    -------
    np.ndarray
        ``3×H×W`` float32 in [0, 1] (:data:`sum_core.modeling.ais_decoder.AIS_CHANNELS`).
    """
    height, width = grid.shape
    maps = np.empty((3, height, width), dtype=np.float32)
    for tile in tqdm(grid, desc="AIS: decoding tiles", disable=not progress):
        check_cancel(cancel)
        maps[(slice(None),) + tile.inner.slices] = tile_maps(model, planes, 0, tile, normalization, precision)
    return maps


def tile_maps(
    model: SamModel, planes: Planes, slice_index: int, tile: Tile, normalization: Normalization | None,
    precision: str = "fp32",
) -> np.ndarray:
    """The AIS maps of one tile's inner block, decoded on its outer window (:func:`window_maps`).

    Returns
    -------
    np.ndarray
        ``3×h×w`` float32 in [0, 1] for ``tile.inner`` (clipped: the sigmoid maps are resized
        bilinearly, and float rounding may leave them an ulp outside [0, 1]).
    """
    decoded = window_maps(model, read_window(planes, slice_index, tile.outer, normalization), precision)
    inner = np.ascontiguousarray(decoded[(slice(None),) + tile.inner_in_outer.slices], dtype=np.float32)
    return np.clip(inner, 0.0, 1.0, out=inner)


def ais_segment(
    model: SamModel,
    planes: Planes,
    normalization: Normalization | None,
    grid: TileGrid,
    options: AisOptions,
    precision: str = "fp32",
    *,
    progress: bool = False,
    cancel: threading.Event | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Instance labels and per-pixel uncertainty of an image by tiled AIS (see the module docstring).

    Parameters
    ----------
    model, planes, normalization, grid, precision, progress, cancel
        As :func:`ais_maps`; ``cancel`` is also checked before the watershed.
    options : AisOptions
        The watershed's parameters.

    Returns
    -------
    labels : np.ndarray
        uint32 ``(H, W)``, 0 background, objects ``1..N`` in raster order of their seeds (the
        same maps always give the same ids).
    uncertainty : np.ndarray
        float32 ``(H, W)`` in [0, 1]: :func:`sum_core.ais_uncertainty.ais_pixel_uncertainty` of
        the full-size foreground and boundary-distance maps.
    """
    maps = ais_maps(model, planes, normalization, grid, precision, progress=progress, cancel=cancel)
    check_cancel(cancel)
    labels = instances_from_distance_maps(maps[0], maps[1], maps[2], **asdict(options))
    uncertainty = np.empty(grid.shape, dtype=np.float32)
    rows = max(1, _UNCERTAINTY_PIXELS // grid.shape[1])
    for r in range(0, grid.shape[0], rows):
        band = slice(r, r + rows)
        uncertainty[band] = maps_uncertainty(maps[:, band], options)
    return labels, uncertainty


def maps_uncertainty(maps: np.ndarray, options: AisOptions) -> np.ndarray:
    """Per-pixel uncertainty (float32) of a block of the three maps (``3×h×w``), with the options' threshold."""
    return ais_pixel_uncertainty(maps[0], maps[2], boundary_distance_threshold=options.boundary_distance_threshold)
