"""A lazily read image, 2D plane or stack of planes, with its axes resolved by name.

Sources are opened with :func:`sum_core.sources.open_image` (numpy, dask, zarr, OME-Zarr, TIFF)
and read through :class:`sum_core.sources.Planes`, so only the windows asked for are read and a
16k x 16k plane is never materialised by a batch job.

Axes are named as the file names them (:func:`sum_core.source_axes.axis_names`: OME-Zarr
``axes``, zarr v3 ``dimension_names``, ``_ARRAY_DIMENSIONS`` / ``dims``, TIFF series axes such
as ``YXS`` or ``TZCYX``), else by their index (``"0"``, ``"1"``...). An axis named S, C,
channel(s) or rgb (any case), or of NGFF type ``channel``, holds channels wherever it is (an
unnamed last axis of 3 or 4 values on a 3D+ source too); ``channel=`` chooses which feed the
model. The **slice** axis
(``axis=``, a name matched case-insensitively or an index; by default the first axis of a 3D
grayscale source) is iterated over; the two remaining axes form the (row, col) plane. The
outputs have the source's axes without the channel axis, with the physical pixel size of
:func:`sum_core.source_axes.physical_scale`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from .errors import InvalidInputError
from .source_axes import axis_names, channel_axes, physical_scale
from .sources import Planes, open_image
from .tiling import Region


@dataclass(frozen=True)
class Volume:
    """A source with its slice, channel and plane axes resolved.

    Attributes
    ----------
    planes : Planes
        Window reader of the source (channels moved last and chosen).
    names : tuple of str
        One name per source axis.
    slice_axis : int or None
        Source axis iterated over; None for a single plane.
    channel_axis : int or None
        Source axis holding channels; None for grayscale sources.
    identity : str
        Where the data came from (path and key, or the array type), for the job signature.
    source_scale : tuple of float
        Physical size of a pixel along each source axis (1.0 when unknown).
    source_units : tuple of str or None
        Unit of each source axis (NGFF names such as ``"micrometer"``; None when unknown).
    """

    planes: Planes
    names: tuple[str, ...]
    slice_axis: int | None
    channel_axis: int | None
    identity: str
    source_scale: tuple[float, ...]
    source_units: tuple[str | None, ...]

    @property
    def array(self) -> Any:
        """The source array."""
        return self.planes.image

    @property
    def has_channels(self) -> bool:
        """Whether the source has a channel axis."""
        return self.channel_axis is not None

    @property
    def n_slices(self) -> int:
        """Number of planes (1 for a 2D source)."""
        return self.planes.n_slices

    @property
    def plane_shape(self) -> tuple[int, int]:
        """``(height, width)`` of a plane."""
        return self.planes.plane_shape

    def _out(self, values: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(v for a, v in enumerate(values) if a != self.channel_axis)

    @property
    def out_shape(self) -> tuple[int, ...]:
        """Shape of the labels / uncertainty arrays: the source's without the channel axis."""
        return self._out([int(n) for n in self.array.shape])

    @property
    def out_names(self) -> tuple[str, ...]:
        """Axis names of the output arrays (the source's without the channel axis)."""
        return self._out(self.names)

    @property
    def scale(self) -> tuple[float, ...]:
        """Physical pixel size along each output axis (1.0 when unknown)."""
        return self._out(self.source_scale)

    @property
    def units(self) -> tuple[str | None, ...]:
        """Unit of each output axis (NGFF names such as ``"micrometer"``; None when unknown)."""
        return self._out(self.source_units)

    @property
    def out_slice_axis(self) -> int | None:
        """The slice axis in the output arrays (None for a single plane)."""
        if self.slice_axis is None:
            return None
        return self.slice_axis - (self.channel_axis is not None and self.channel_axis < self.slice_axis)

    def out_chunks(self, tile_shape: tuple[int, int]) -> tuple[int, ...]:
        """Output chunks: one slice by one tile, so each task writes whole chunks."""
        chunks = list(tile_shape)
        if self.out_slice_axis is not None:
            chunks.insert(self.out_slice_axis, 1)
        return tuple(chunks)

    def out_index(self, slice_index: int, region: Region) -> tuple[slice | int, ...]:
        """Index of ``region`` of slice ``slice_index`` in the output arrays."""
        index: list[slice | int] = list(region.slices)
        if self.out_slice_axis is not None:
            index.insert(self.out_slice_axis, slice_index)
        return tuple(index)

    def read(self, slice_index: int, region: Region) -> np.ndarray:
        """Pixels of ``region`` of one plane, ``(h, w)`` or ``(h, w, C)``."""
        return self.planes.read(slice_index, region)


def open_volume(
    source: Any,
    key: str | None = None,
    axis: str | int | None = None,
    channel: int | Sequence[int] | None = None,
) -> Volume:
    """Open ``source`` lazily and resolve its axes.

    Parameters
    ----------
    source : str, path, zarr array/group, dask or numpy array
        See :func:`sum_core.sources.open_image`.
    key : str, optional
        Array inside a zarr group.
    axis : str or int, optional
        Slice axis, by name (case-insensitive) or index; needed when the source has more than
        one axis besides the plane and the channels.
    channel : int or sequence of 3 int, optional
        Channels fed to the model when the source has a channel axis: None for all of them
        (it must then hold 1, 3 or 4: grayscale, RGB or RGBA), one index (that channel as a
        grayscale image) or three (those channels as R, G, B).

    Raises
    ------
    InvalidInputError
        Unreadable source, unknown or ambiguous axis name, an index out of range, axes that do
        not leave a plane, a channel axis chosen as slice axis, more than one channel axis, or
        a channel axis of another size than 1, 3 or 4 without ``channel``.
    """
    array = open_image(source, key=key)
    ndim = len(array.shape)
    if ndim < 2:
        raise InvalidInputError(f"source: has shape {tuple(array.shape)}; expected at least 2 dimensions")
    names = tuple(axis_names(source, key, array) or (str(i) for i in range(ndim)))
    described = ", ".join(f"{names[a]}={array.shape[a]}" for a in range(ndim))
    slice_axis = None if axis is None else _axis_index(axis, names)
    named = channel_axes(source, key, array, names)
    if len(named) > 1:
        raise InvalidInputError(
            f"source: has {len(named)} channel axes ({described}); select one of them first (e.g. with "
            "key= / --key, or by saving the channels you need)"
        )
    if named and slice_axis == named[0]:
        raise InvalidInputError(
            f"axis: {names[slice_axis]!r} is the channel axis ({described}); slices cannot be channels: "
            "choose the channels with channel= (--channel)"
        )
    unnamed_rgb = not named and ndim >= 3 and array.shape[-1] in (3, 4) and names[-1] in (str(ndim - 1), "Q")
    channel_axis = named[0] if named else ndim - 1 if unnamed_rgb and slice_axis != ndim - 1 else None
    rest = [a for a in range(ndim) if a not in (slice_axis, channel_axis)]
    if slice_axis is None and len(rest) == 3:
        slice_axis = rest.pop(0)
    if len(rest) != 2:
        if axis is None:
            raise InvalidInputError(
                f"axis: the source has {ndim} dimensions ({described}); name the slice axis with "
                "axis= (--axis); the other axes must be the plane and at most one channel axis"
            )
        raise InvalidInputError(
            f"axis: slicing along {names[slice_axis]!r} leaves {len(rest)} axes besides the channels "
            f"({described}); exactly 2 (the plane) must remain"
        )
    planes = Planes(array, stack_axis=slice_axis, channel_axis=channel_axis, channels=channel, axis_names=names)
    scale, units = physical_scale(source, key, array)
    return Volume(planes, names, slice_axis, channel_axis, _identity(source, key), scale, units)


def _axis_index(axis: str | int, names: tuple[str, ...]) -> int:
    """The index of the axis named ``axis`` (case-insensitive) or of index ``axis``."""
    if isinstance(axis, bool) or not isinstance(axis, (str, int, np.integer)):
        raise InvalidInputError(f"axis must be an axis name or index, got {axis!r}")
    if isinstance(axis, str):
        matches = [a for a, name in enumerate(names) if name.lower() == axis.lower()]
        if len(matches) > 1:
            raise InvalidInputError(
                f"axis: {axis!r} is ambiguous: the source's axes {list(names)} differ only by case; "
                "give the axis by index"
            )
        if matches:
            return matches[0]
        if not axis.lstrip("-").isdigit():
            raise InvalidInputError(f"axis: no axis named {axis!r}; the source's axes are {list(names)}")
    index = int(axis)
    if not -len(names) <= index < len(names):
        raise InvalidInputError(f"axis: index {index} is out of range for {len(names)} axes {list(names)}")
    return index % len(names)


def _identity(source: Any, key: str | None) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(Path(source).resolve()) + (f"::{key}" if key else "")
    if isinstance(source, (zarr.Array, zarr.Group)):
        return f"zarr:{source.store}:{source.path}" + (f"::{key}" if key else "")
    return type(source).__name__
