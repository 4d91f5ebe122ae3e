"""Turn user images into the H×W×3 uint8 RGB arrays SAM expects, and resize them.

:func:`prepare_image` validates an image and converts it to 8-bit RGB.
:func:`preprocess_shape` and :func:`resize_longest_side` reproduce SAM's
``ResizeLongestSide`` preprocessing exactly (PIL bilinear on uint8), so embeddings
match the reference implementation (:func:`sum_core.encoding.to_pixels` turns the result
into the encoder's tensor). No torch import.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .errors import InvalidInputError

__all__ = [
    "Normalization",
    "prepare_image",
    "preprocess_shape",
    "resize_longest_side",
    "to_uint8_rgb",
    "validate_image",
]


@dataclass(frozen=True)
class Normalization:
    """How a non-uint8 image is rescaled to 0..255.

    The intensity window ``[lo, hi]`` is mapped linearly onto ``[0, 255]``;
    values outside it are clipped, and the result is rounded to uint8.

    Parameters
    ----------
    low, high : float
        Percentiles (0..100) of all pixel values (all channels together, so the
        colour balance of RGB data is kept) that give ``lo`` and ``hi``. The
        defaults 0.5 / 99.5 ignore a few hot or dead pixels, which is what
        most uint16 microscopy data needs. ``low=0, high=100`` is plain
        min/max scaling. If the percentiles coincide although the image is
        not constant (e.g. a few bright spots on a uniform background), the
        image minimum and maximum are used instead.
    limits : tuple of float, optional
        Fixed ``(vmin, vmax)`` window instead of percentiles, for consistent
        contrast across a series of images (e.g. ``(0, 4095)`` for 12-bit
        camera data). Overrides ``low`` / ``high``.

    Notes
    -----
    ``prepare_image(image)`` without a normalisation uses uint8 images as they
    are (like SAM) and rescales every other dtype with ``Normalization()``.
    Passing a normalisation explicitly applies it to uint8 images too. Boolean
    images always map False to 0 and True to 255.
    """

    low: float = 0.5
    high: float = 99.5
    limits: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not (0.0 <= self.low < self.high <= 100.0):
            raise InvalidInputError(
                f"normalization: percentiles must satisfy 0 <= low < high <= 100, got low={self.low}, high={self.high}"
            )
        if self.limits is not None:
            if len(self.limits) != 2:
                raise InvalidInputError(f"normalization: limits must be (vmin, vmax), got {self.limits!r}")
            vmin, vmax = (float(v) for v in self.limits)
            if not (np.isfinite(vmin) and np.isfinite(vmax) and vmin < vmax):
                raise InvalidInputError(
                    f"normalization: limits must be finite with vmin < vmax, got {self.limits!r}"
                )

    def window(self, values: np.ndarray) -> tuple[float, float]:
        """Return the ``(lo, hi)`` intensity window for ``values`` (finite, not constant)."""
        if self.limits is not None:
            return float(self.limits[0]), float(self.limits[1])
        lo, hi = np.percentile(values, [self.low, self.high])
        if hi <= lo:
            lo, hi = values.min(), values.max()
        return float(lo), float(hi)


def _check_shape(arr: np.ndarray) -> None:
    if arr.size == 0:
        raise InvalidInputError(f"image: is empty (shape {arr.shape})")
    if arr.ndim < 2:
        raise InvalidInputError(
            f"image: has {arr.ndim} dimension(s) (shape {arr.shape}); expected a 2-D (H, W) "
            "grayscale image or an (H, W, C) image with C = 1, 3 or 4"
        )
    if arr.ndim > 3:
        raise InvalidInputError(
            f"image: has {arr.ndim} dimensions (shape {arr.shape}); pick one plane, e.g. image[0] "
            "or image[t, z], to get a 2-D (H, W) or (H, W, C) image"
        )
    if arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4):
        hint = ""
        if arr.shape[0] in (1, 3, 4):
            hint = "; if the channels come first, use np.moveaxis(image, 0, -1)"
        raise InvalidInputError(
            f"image: shape {arr.shape} looks like a stack of {arr.shape[0]} planes; pass one plane "
            f"(e.g. image[0]){hint}"
        )


def _check_dtype(arr: np.ndarray) -> None:
    kind = arr.dtype.kind
    if kind == "c":
        raise InvalidInputError(f"image: complex dtype {arr.dtype} is not supported; pass np.abs(image) or image.real")
    if kind == "O":
        raise InvalidInputError("image: object dtype is not supported; pass a numeric array")
    if kind not in "biuf":
        raise InvalidInputError(f"image: dtype {arr.dtype} is not a real numeric type")


def _check_values(arr: np.ndarray) -> None:
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        if not finite.all():
            n_nan = int(np.isnan(arr).sum())
            n_inf = int((~finite).sum()) - n_nan
            raise InvalidInputError(
                f"image: contains {n_nan} NaN and {n_inf} infinite value(s); replace them first "
                "(e.g. np.nan_to_num)"
            )
    pixels = arr.reshape(-1, arr.shape[-1]) if arr.ndim == 3 else arr.reshape(-1, 1)
    if (pixels == pixels[0]).all():
        raise InvalidInputError(
            f"image: all pixels are equal ({pixels[0].tolist()}); a constant image cannot be segmented"
        )


def validate_image(image: np.ndarray) -> None:
    """Check an in-memory image plane as :func:`prepare_image` does, without converting it.

    Raises
    ------
    InvalidInputError
        Empty, 1-D or more than 3-D arrays, stacks of planes, complex, object or
        non-numeric dtypes, NaN or infinite values, and constant images.
    """
    arr = np.asarray(image)
    _check_dtype(arr)
    _check_shape(arr)
    _check_values(arr[..., :3] if arr.ndim == 3 and arr.shape[-1] == 4 else arr)


def prepare_image(image, normalization: Normalization | None = None) -> np.ndarray:
    """Validate an image and convert it to an H×W×3 uint8 RGB array.

    Parameters
    ----------
    image : array_like
        ``(H, W)`` or ``(H, W, 1)`` grayscale, ``(H, W, 3)`` RGB or ``(H, W, 4)``
        RGBA (alpha is dropped), of any real dtype (bool, integer, float).
    normalization : Normalization, optional
        How to rescale to 0..255. By default uint8 images are used as they are
        (as SAM does) and other dtypes are rescaled with ``Normalization()``
        (0.5 / 99.5 percentiles, clipped). See :class:`Normalization`.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8, C-contiguous, never a view of ``image``.

    Raises
    ------
    InvalidInputError
        Empty, 1-D or more than 3-D arrays, stacks of planes, complex, object
        or non-numeric dtypes, NaN or infinite values, constant images, and a
        ``normalization`` that is not a :class:`Normalization`.
    """
    if normalization is not None and not isinstance(normalization, Normalization):
        raise InvalidInputError(
            f"normalization must be a sum_core.Normalization, got {type(normalization).__name__}"
        )
    arr = np.asarray(image)
    _check_dtype(arr)
    _check_shape(arr)
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    _check_values(arr)
    if arr.dtype == np.bool_ or (arr.dtype == np.uint8 and normalization is None):
        return np.array(to_uint8_rgb(arr, None), order="C", copy=True)
    window = (normalization or Normalization()).window(arr.astype(np.float64, copy=False))
    return np.array(to_uint8_rgb(arr, Normalization(limits=window)), order="C", copy=True)


def preprocess_shape(h: int, w: int, target: int = 1024) -> tuple[int, int]:
    """Size ``(newh, neww)`` with the long side equal to ``target``, rounded as SAM does.

    ``scale = target / max(h, w)``, ``newh = int(h * scale + 0.5)``,
    ``neww = int(w * scale + 0.5)``; a side that would round to 0 (an image more than
    ``2 * target`` times longer than wide) is 1 pixel (SAM's own code fails on it).
    """
    if h < 1 or w < 1 or target < 1:
        raise InvalidInputError(f"preprocess_shape: sizes must be positive, got h={h}, w={w}, target={target}")
    scale = target * 1.0 / max(h, w)
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


def _check_uint8_rgb(image: np.ndarray, name: str) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise InvalidInputError(
            f"{name}: expected an (H, W, 3) uint8 array (see prepare_image), got shape {shape} and dtype {dtype}"
        )


def resize_longest_side(image: np.ndarray, target: int = 1024) -> np.ndarray:
    """Resize an H×W×3 uint8 image so its long side is ``target`` pixels.

    PIL bilinear resampling (antialiased when downscaling), byte-identical to
    SAM's ``ResizeLongestSide.apply_image``.
    """
    _check_uint8_rgb(image, "image")
    newh, neww = preprocess_shape(image.shape[0], image.shape[1], target)
    resized = Image.fromarray(np.ascontiguousarray(image)).resize((neww, newh), Image.BILINEAR)
    return np.asarray(resized)


def to_uint8_rgb(window: np.ndarray, normalization: Normalization | None) -> np.ndarray:
    """Convert one window of a plane to ``(h, w, 3)`` uint8 with a fixed intensity window.

    The one conversion to the encoder's 8-bit RGB: :func:`prepare_image` (whole images) and the
    tiled paths (windows, with the window from :func:`sum_core.sources.fixed_normalization`)
    both end here. Unlike :func:`prepare_image` this accepts constant windows (the empty
    background tiles of a slide are constant), since the window comes from the whole image.

    Parameters
    ----------
    window : np.ndarray
        ``(h, w)`` or ``(h, w, C)``, C in 1, 3, 4 (alpha is dropped).
    normalization : Normalization or None
        With ``limits`` set (e.g. from :func:`sum_core.sources.fixed_normalization`), or None to use uint8/bool as is.
    """
    arr = window[..., :3] if window.ndim == 3 else window
    if arr.dtype == np.bool_:
        out = arr.astype(np.uint8) * np.uint8(255)
    elif normalization is None:
        if arr.dtype != np.uint8:
            raise InvalidInputError(
                f"image: dtype {arr.dtype} needs a normalization (see fixed_normalization)"
            )
        out = arr
    else:
        values = arr.astype(np.float64, copy=False)
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise InvalidInputError(
                "image: contains NaN or infinite values; replace them first (np.nan_to_num)"
            )
        lo, hi = normalization.limits
        out = np.rint(np.clip((values - lo) * (255.0 / (hi - lo)), 0.0, 255.0)).astype(np.uint8)
    if out.ndim == 2:
        out = out[:, :, None]
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return np.ascontiguousarray(out)

