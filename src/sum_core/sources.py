"""Lazy access to large images and stacks: open, index planes, normalise consistently.

:func:`open_image` turns a path or an in-memory array into an array-like that is read only
where it is indexed (numpy, dask, zarr v2/v3, TIFF through tifffile's ``aszarr`` store,
OME-Zarr multiscale levels). :class:`Planes` reads windows of the 2D planes of an image or
of a stack (one stack axis), with the channel axis (wherever it is) last and the channels
chosen (:func:`sum_core.volume.open_volume` finds both axes by name).
:func:`fixed_normalization` computes ONE intensity window for a whole image or stack from a
sample of it, so that every tile and every slice is converted to 8 bits with the same contrast;
:func:`sum_core.image.to_uint8_rgb` applies it to one window.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr

from .errors import InvalidInputError, SumError
from .image import Normalization, validate_image
from .imageio import TIFF_SUFFIXES, check_input_path, is_zarr_path, open_zarr, read_image
from .tiling import Region
from .validation import check_int

__all__ = ["Planes", "fixed_normalization", "image_planes", "open_image", "read_block"]

# fixed_normalization: below this many pixels everything is read, above it a grid of windows
# (in-memory numpy images are read whole up to a larger size: they cost no I/O).
_MAX_SAMPLE = 1 << 22
_MAX_SAMPLE_IN_MEMORY = 1 << 26
_N_WINDOWS = 8  # per plane axis (so up to 64 windows per sampled plane)
_WINDOW = 64
_MAX_SAMPLED_SLICES = 16

# The file each array opened by open_image was read from, by id (removed when the array goes),
# so that Planes.read can name it when a read fails.
_FILES: dict[int, str] = {}


def _is_array_like(obj: Any) -> bool:
    return hasattr(obj, "shape") and hasattr(obj, "dtype") and hasattr(obj, "__getitem__")


def open_image(source: Any, key: str | None = None, level: int = 0) -> Any:
    """Open an image or stack lazily: nothing is read until the result is indexed.

    Parameters
    ----------
    source : array-like, zarr group, str or path-like
        - a numpy array, dask array, zarr array or any object with ``shape``, ``dtype``
          and numpy-style slicing: returned as it is;
        - a zarr group, or a path to a zarr store (v2 or v3; a ``.zarr`` path or a folder
          with zarr metadata): the array ``key``; without ``key``, level ``level`` of an
          OME-Zarr multiscale image (0 = full resolution), else the first array by name;
        - a ``.tif`` / ``.tiff`` path: opened through tifffile's zarr store
          (``aszarr=True``), so only the TIFF tiles/strips that are indexed are decoded;
          ``level`` picks a pyramid level of a pyramidal TIFF;
        - any other image file (PNG, JPEG...): read whole with
          :func:`sum_core.imageio.read_image` (those formats cannot be read partially).
    key : str, optional
        Array path inside a zarr group.
    level : int
        Resolution level of a multiscale source (0 = full resolution).

    Returns
    -------
    array-like
        With ``shape``, ``dtype`` and numpy-style slicing.

    Raises
    ------
    InvalidInputError
        Missing path, unknown format, missing key or level.
    """
    check_int(level, "level", 0)
    if isinstance(source, zarr.Group):
        return open_zarr(source, key, level)
    if _is_array_like(source) and not isinstance(source, (str, os.PathLike)):
        if key is not None or level != 0:
            raise InvalidInputError("key/level: only used with zarr groups, TIFF files or paths")
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidInputError(
            f"source: expected an array, a zarr group or a path, got {type(source).__name__}"
        )
    path = check_input_path(source, "source")
    if is_zarr_path(path):
        return _named(open_zarr(path, key, level), path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        if key is not None:
            raise InvalidInputError(f"key: only used for zarr stores, but {path} is a TIFF file")
        node = _open_tiff(path)
        if isinstance(node, zarr.Array):
            if level != 0:
                raise InvalidInputError(f"level: {path} is not a pyramidal TIFF, it has only level 0")
            return _named(node, path)
        return _named(open_zarr(node, None, level, name=str(path)), path)
    if key is not None or level != 0:
        raise InvalidInputError(f"key/level: not used for {path.suffix or 'this'} files")
    return read_image(path)


def _open_tiff(path: Path) -> zarr.Array | zarr.Group:
    """A TIFF file through tifffile's zarr store, refused when it is unreadable or cut short."""
    try:
        with tifffile.TiffFile(path) as tif:
            size = tif.filehandle.size
            end = max(_data_end(level) for level in tif.series[0].levels)
            if end > size:
                raise InvalidInputError(
                    f"source: {path} is truncated: its image data reach byte {end} but the file has "
                    f"{size} bytes (an interrupted copy or download?); copy or write it again"
                )
            store = tif.aszarr()
        return zarr.open(store, mode="r")
    except InvalidInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any tifffile / zarr failure means an unreadable file
        raise InvalidInputError(f"source: could not open TIFF {path}: {exc}") from exc


def _data_end(level: Any) -> int:
    """The byte just after the image data of one level of a TIFF series: the end of a contiguous
    level, else the furthest strip or tile of its first and last pages (a file cut short loses
    its last bytes)."""
    if level.dataoffset is not None:
        return int(level.dataoffset + level.nbytes)
    pages = [page for page in (level.pages[0], level.pages[-1]) if page is not None]
    return max(
        (int(o + n) for page in pages for o, n in zip(page.dataoffsets, page.databytecounts)), default=0
    )


def _named(array: Any, path: Path) -> Any:
    """Remember that ``array`` reads ``path`` (for the messages of :meth:`Planes.read`)."""
    _FILES[id(array)] = str(path)
    weakref.finalize(array, _FILES.pop, id(array), None)
    return array


def read_block(image: Any, index: tuple, where: str) -> np.ndarray:
    """``np.asarray(image[index])``: the one read of a source's pixels into memory.

    Parameters
    ----------
    image : array-like
        A source from :func:`open_image` (or any array-like).
    index : tuple
        numpy-style index of the block.
    where : str
        The block in words, for the error message (e.g. ``"rows 0:64, cols 0:64 of slice 1"``).

    Raises
    ------
    InvalidInputError
        The read failed (a damaged or truncated file, a codec or I/O error): the message names
        ``where`` and the file (for sources opened by :func:`open_image` from a path).

    Examples
    --------
    >>> import numpy as np
    >>> read_block(np.arange(6).reshape(2, 3), (slice(0, 1), slice(None)), "row 0")
    array([[0, 1, 2]])
    """
    try:
        return np.asarray(image[index])
    except (SumError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - reader, codec and I/O errors of any source
        name = _FILES.get(id(image), "the image")
        raise InvalidInputError(
            f"image: could not read {where} of {name} ({type(exc).__name__}: {exc}); the file may be "
            "damaged or cut short: write or copy it again"
        ) from exc


class Planes:
    """The 2D planes of an image (one plane) or a stack (planes along ``stack_axis``).

    Windows are read with the channel axis, wherever it is in the source, moved last, so a
    ``(C, Y, X)`` OME-Zarr and a ``(Y, X, S)`` RGB TIFF both give ``(h, w, C)`` windows.

    Parameters
    ----------
    image : array-like
        ``(H, W)``, ``(H, W, C)`` with ``C`` in 1, 3, 4, or a stack of those (stack axis
        anywhere); with ``channel_axis``, the channel axis may be anywhere and hold any number
        of channels (then choose them with ``channels``).
    stack_axis : int, optional
        Axis of the slices (Z or T); None for a single 2D image.
    channel_axis : int, optional
        Axis of the channels. Without it, the last axis of a 3D plane holds channels when it
        has 1, 3 or 4 values (an ``(H, W, C)`` image), as for an array without axis names.
    channels : int or sequence of 3 int, optional
        Channels fed to the model: None for all of them (1, 3 or 4: grayscale, RGB, RGBA),
        one index (that channel as a grayscale plane) or three (those as R, G, B).
    axis_names : sequence of str, optional
        Names of the source's axes, for messages.

    Raises
    ------
    InvalidInputError
        For a 3D array that is not RGB without ``stack_axis``, 4D+ arrays without
        ``stack_axis``, an axis that does not leave a 2D (or 2D + channel) plane, or channels
        the channel axis does not have.
    """

    def __init__(
        self,
        image: Any,
        stack_axis: int | None = None,
        channel_axis: int | None = None,
        channels: int | Sequence[int] | None = None,
        axis_names: Sequence[str] | None = None,
    ) -> None:
        if not _is_array_like(image):
            raise InvalidInputError(
                f"image: expected an array with shape, dtype and slicing, got {type(image).__name__}"
            )
        shape = tuple(int(n) for n in image.shape)
        kind = np.dtype(image.dtype).kind
        if kind not in "biuf":
            raise InvalidInputError(f"image: dtype {image.dtype} is not a real numeric type")
        stack_axis = _axis_argument(stack_axis, "stack_axis", shape)
        channel_axis = _axis_argument(channel_axis, "channel_axis", shape)
        if stack_axis is not None and stack_axis == channel_axis:
            raise InvalidInputError(f"stack_axis: {stack_axis} is the channel axis; slices cannot be channels")
        other = [a for a in range(len(shape)) if a not in (stack_axis, channel_axis)]
        if channel_axis is None and len(other) == 3 and shape[other[-1]] in (1, 3, 4):
            channel_axis = other.pop()
        if len(other) != 2:
            plane_shape = tuple(shape[a] for a in range(len(shape)) if a != stack_axis)
            if stack_axis is None and len(shape) >= 3:
                raise InvalidInputError(
                    f"image: shape {shape} is not a 2D (H, W) or (H, W, C) image; for a 3D or "
                    "time stack pass stack_axis= (e.g. stack_axis=0); for more axes pick one "
                    "stack first (e.g. image[t])"
                )
            raise InvalidInputError(
                f"stack_axis: {stack_axis} leaves planes of shape {plane_shape} for image shape "
                f"{shape}; each plane must be (H, W) or (H, W, C) with C in 1, 3, 4"
            )
        if min(shape) < 1:
            raise InvalidInputError(f"image: is empty (shape {shape})")
        self.image = image
        self.stack_axis = stack_axis
        self.channel_axis = channel_axis
        self.channels = None if channel_axis is None else _check_channels(channels, channel_axis, shape, axis_names)
        if channel_axis is None and channels is not None:
            raise InvalidInputError(f"channel: the image (shape {shape}) has no channel axis to choose from")
        self.n_slices = 1 if stack_axis is None else shape[stack_axis]
        self.plane_shape: tuple[int, int] = (shape[other[0]], shape[other[1]])
        self.ndim_plane = 2 if channel_axis is None or isinstance(self.channels, int) else 3
        self.dtype = np.dtype(image.dtype)

    def read(self, slice_index: int = 0, region: Region | None = None) -> np.ndarray:
        """Read one window of one plane into memory, ``(h, w)`` or ``(h, w, C)``.

        Every read of an image plane's pixels goes through here (and :func:`read_block`).

        Raises
        ------
        InvalidInputError
            A bad ``slice_index``, or a read that fails (a damaged or truncated file, a codec or
            I/O error): the message names the file (for sources opened by :func:`open_image`
            from a path) and the rows, columns and slice read.
        """
        if not 0 <= slice_index < self.n_slices:
            raise InvalidInputError(f"slice_index: must be in [0, {self.n_slices}), got {slice_index}")
        plane_axes = iter((slice(None), slice(None)) if region is None else region.slices)
        channel_index = self.channels if isinstance(self.channels, int) else slice(None)
        index = tuple(
            slice_index if a == self.stack_axis else channel_index if a == self.channel_axis else next(plane_axes)
            for a in range(len(self.image.shape))
        )
        h, w = self.plane_shape
        r0, c0, r1, c1 = (0, 0, h, w) if region is None else region
        where = f"rows {r0}:{r1}, cols {c0}:{c1}" + ("" if self.stack_axis is None else f" of slice {slice_index}")
        window = read_block(self.image, index, where)
        if self.ndim_plane == 2:
            return window
        position = self.channel_axis - (self.stack_axis is not None and self.stack_axis < self.channel_axis)
        if position != 2:
            window = np.ascontiguousarray(np.moveaxis(window, position, -1))
        return window if self.channels is None else window[..., list(self.channels)]


def _axis_argument(axis: Any, name: str, shape: tuple[int, ...]) -> int | None:
    """``axis`` (an index, negative from the end, or None) as an index in ``[0, len(shape))``."""
    if axis is None:
        return None
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise InvalidInputError(f"{name}: must be an integer or None, got {axis!r}")
    if not -len(shape) <= axis < len(shape):
        raise InvalidInputError(f"{name}: {axis} is out of range for an image with {len(shape)} axes {shape}")
    return int(axis) % len(shape)


def _check_channels(
    channels: Any, axis: int, shape: tuple[int, ...], names: Sequence[str] | None
) -> int | tuple[int, ...] | None:
    """``channels`` checked against the channel axis: None (1, 3 or 4 channels), one index or three."""
    count = shape[axis]
    described = f"{names[axis]!r} " if names is not None and len(names) == len(shape) else ""
    described += f"(axis {axis}, {count} channel{'s' * (count != 1)})"
    if channels is None:
        if count not in (1, 3, 4):
            raise InvalidInputError(
                f"channel: the channel axis {described} is neither grayscale nor RGB(A); choose the "
                "channel fed to the model with channel=N (--channel N) or three as R, G, B with "
                "channel=(R, G, B) (--channel R,G,B)"
            )
        return None
    single = isinstance(channels, (int, np.integer)) and not isinstance(channels, bool)
    values = [channels] if single else list(channels) if isinstance(channels, (list, tuple)) else None
    if (
        values is None
        or (not single and len(values) != 3)
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
    ):
        raise InvalidInputError(f"channel: expected one channel index or three (R, G, B), got {channels!r}")
    bad = [int(v) for v in values if not 0 <= v < count]
    if bad:
        raise InvalidInputError(f"channel: {bad} not in the channel axis {described}; choose from 0..{count - 1}")
    return int(values[0]) if single else tuple(int(v) for v in values)


def image_planes(image: Any) -> Planes:
    """The one plane of an image given as numpy, a lazy array or a path.

    A numpy array is checked in full (:func:`sum_core.image.validate_image`: dtype, shape, NaN);
    anything else is opened lazily (:func:`open_image`) and checked as its windows are read.

    Raises
    ------
    InvalidInputError
        A bad numpy image, or a source :func:`open_image` refuses.

    Examples
    --------
    >>> import numpy as np
    >>> frame = np.random.default_rng(0).integers(0, 4096, (1040, 1392), dtype=np.uint16)
    >>> image_planes(frame).plane_shape
    (1040, 1392)
    """
    if isinstance(image, np.ndarray):
        validate_image(image)
        return Planes(image)
    return Planes(open_image(image))


def _sample(planes: Planes) -> np.ndarray:
    """Values of a sample of the whole image/stack (everything if it is small)."""
    h, w = planes.plane_shape
    n = planes.n_slices
    limit = _MAX_SAMPLE_IN_MEMORY if isinstance(planes.image, np.ndarray) else _MAX_SAMPLE
    if n * h * w <= limit:
        return np.concatenate([_colour(planes.read(s)).ravel() for s in range(n)])
    n_sampled = min(n, _MAX_SAMPLED_SLICES)
    slices = sorted({round(i * (n - 1) / max(n_sampled - 1, 1)) for i in range(n_sampled)})
    wh, ww = min(h, _WINDOW), min(w, _WINDOW)
    rows = sorted({round(i * (h - wh) / (_N_WINDOWS - 1)) for i in range(_N_WINDOWS)})
    cols = sorted({round(i * (w - ww) / (_N_WINDOWS - 1)) for i in range(_N_WINDOWS)})
    pieces = [
        _colour(planes.read(s, Region(r, c, r + wh, c + ww))).ravel() for s in slices for r in rows for c in cols
    ]
    return np.concatenate(pieces)


def _colour(window: np.ndarray) -> np.ndarray:
    """The colour values of a window (an alpha channel is not part of the image's contrast)."""
    return window[..., :3] if window.ndim == 3 and window.shape[-1] == 4 else window


def fixed_normalization(
    planes: Planes, normalization: Normalization | None = None
) -> Normalization | None:
    """One intensity window for the whole image or stack, as a ``Normalization(limits=...)``.

    Computing percentiles per tile (or per slice) would give every tile its own contrast;
    this computes them once, on all values of in-memory numpy images up to 64 Mpixel and of
    lazy images up to 4 Mpixel (then the result equals :func:`sum_core.image.prepare_image`'s
    own percentiles, so a numpy image is normalised the same way by every entry point), and
    otherwise on a regular grid of 64×64 windows (8×8 per plane, on up to 16 evenly spaced
    slices), which reads a few hundred chunks of a lazy image, never all of it. Alpha channels
    are left out, as :func:`~sum_core.image.prepare_image` does.

    Parameters
    ----------
    planes : Planes
        The image.
    normalization : Normalization, optional
        Percentiles or fixed limits (see :class:`sum_core.image.Normalization`). Without
        it, uint8 and bool images are used as they are (returns None) and other dtypes
        get the default 0.5 / 99.5 percentiles.

    Returns
    -------
    Normalization or None
        With ``limits`` set, or None when no rescaling is wanted.
    """
    if normalization is not None and normalization.limits is not None:
        return normalization
    if planes.dtype == np.bool_ or (planes.dtype == np.uint8 and normalization is None):
        return None
    values = _sample(planes)
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if finite.size == 0:
        raise InvalidInputError("image: the sampled pixels are all NaN or infinite")
    lo, hi = (normalization or Normalization()).window(finite)
    if hi <= lo:  # a constant sample: any window containing the value works
        hi = lo + 1.0
    return Normalization(limits=(lo, hi))
