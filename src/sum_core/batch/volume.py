"""A lazily read image, 2D plane or stack of planes, with its axes resolved by name.

Sources are opened with :func:`sum_core.sources.open_image` (numpy, dask, zarr, OME-Zarr, TIFF)
and read through :class:`sum_core.sources.Planes`, so only the windows asked for are read and a
16k x 16k plane is never materialised by a batch job.

Axes are named from OME-Zarr ``multiscales[0].axes``, zarr v3 ``dimension_names``, xarray-style
``_ARRAY_DIMENSIONS`` attributes or a ``dims`` attribute when present, else by their index
(``"0"``, ``"1"``...). A last axis named ``c`` / ``channel`` (or an unnamed last axis of 3 or 4
values on a 3D+ source) holds colour channels; the **slice** axis (``axis=``, a name or an
index; by default the first axis of a 3D grayscale source) is iterated over; the two remaining
axes form the (row, col) plane.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..errors import InvalidInputError
from ..sources import Planes, open_image
from ..tiling import Region

_CHANNEL_NAMES = ("c", "channel", "channels")


@dataclass(frozen=True)
class Volume:
    """A source with its slice, channel and plane axes resolved.

    Attributes
    ----------
    planes : Planes
        Window reader of the source.
    names : tuple of str
        One name per source axis.
    slice_axis : int or None
        Axis iterated over; None for a single plane.
    has_channels : bool
        Whether the last axis holds colour channels.
    identity : str
        Where the data came from (path and key, or the array type), for the job signature.
    """

    planes: Planes
    names: tuple[str, ...]
    slice_axis: int | None
    has_channels: bool
    identity: str

    @property
    def array(self) -> Any:
        """The source array."""
        return self.planes.image

    @property
    def n_slices(self) -> int:
        """Number of planes (1 for a 2D source)."""
        return self.planes.n_slices

    @property
    def plane_shape(self) -> tuple[int, int]:
        """``(height, width)`` of a plane."""
        return self.planes.plane_shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        """Shape of the labels / uncertainty arrays: the source's without the channel axis."""
        shape = tuple(int(n) for n in self.array.shape)
        return shape[:-1] if self.has_channels else shape

    @property
    def out_names(self) -> tuple[str, ...]:
        """Axis names of the output arrays."""
        return self.names[: len(self.out_shape)]

    def out_chunks(self, tile_shape: tuple[int, int]) -> tuple[int, ...]:
        """Output chunks: one slice by one tile, so each task writes whole chunks."""
        chunks = list(tile_shape)
        if self.slice_axis is not None:
            chunks.insert(self.slice_axis, 1)
        return tuple(chunks)

    def out_index(self, slice_index: int, region: Region) -> tuple[slice | int, ...]:
        """Index of ``region`` of slice ``slice_index`` in the output arrays."""
        index: list[slice | int] = list(region.slices)
        if self.slice_axis is not None:
            index.insert(self.slice_axis, slice_index)
        return tuple(index)

    def read(self, slice_index: int, region: Region) -> np.ndarray:
        """Pixels of ``region`` of one plane, ``(h, w)`` or ``(h, w, C)``."""
        return self.planes.read(slice_index, region)


def open_volume(source: Any, key: str | None = None, axis: str | int | None = None) -> Volume:
    """Open ``source`` lazily and resolve its axes.

    Parameters
    ----------
    source : str, path, zarr array/group, dask or numpy array
        See :func:`sum_core.sources.open_image`.
    key : str, optional
        Array inside a zarr group.
    axis : str or int, optional
        Slice axis, by name or index; needed when the source has more than one axis besides
        the plane and the channels.

    Raises
    ------
    InvalidInputError
        Unreadable source, unknown axis name or index, or axes that do not leave a plane.
    """
    array = open_image(source, key=key)
    ndim = len(array.shape)
    if ndim < 2:
        raise InvalidInputError(f"source: has shape {tuple(array.shape)}; expected at least 2 dimensions")
    names = _axis_names(source, key, array)
    names = tuple(names) if names is not None and len(names) == ndim else tuple(str(i) for i in range(ndim))
    slice_axis = None if axis is None else _axis_index(axis, names)
    named_channels = names[-1].lower() in _CHANNEL_NAMES
    has_channels = slice_axis != ndim - 1 and (
        named_channels or (ndim >= 3 and array.shape[-1] in (3, 4) and names[-1] == str(ndim - 1))
    )
    rest = [a for a in range(ndim - has_channels) if a != slice_axis]
    if slice_axis is None and len(rest) == 3:
        slice_axis = rest.pop(0)
    described = ", ".join(f"{names[a]}={array.shape[a]}" for a in range(ndim))
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
    if has_channels and array.shape[-1] not in (1, 3, 4):
        raise InvalidInputError(
            f"source: channel axis {names[-1]!r} has {array.shape[-1]} channels; 1, 3 or 4 are supported"
        )
    planes = Planes(array, stack_axis=slice_axis)
    return Volume(planes, names, slice_axis, has_channels, _identity(source, key))


def _axis_index(axis: str | int, names: tuple[str, ...]) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (str, int, np.integer)):
        raise InvalidInputError(f"axis must be an axis name or index, got {axis!r}")
    if isinstance(axis, str) and axis in names:
        return names.index(axis)
    if isinstance(axis, str) and not axis.lstrip("-").isdigit():
        raise InvalidInputError(f"axis: no axis named {axis!r}; the source's axes are {list(names)}")
    index = int(axis)
    if not -len(names) <= index < len(names):
        raise InvalidInputError(f"axis: index {index} is out of range for {len(names)} axes {list(names)}")
    return index % len(names)


def _axis_names(source: Any, key: str | None, array: Any) -> list[str] | None:
    """Axis names from OME-Zarr ``axes``, zarr v3 ``dimension_names``, ``_ARRAY_DIMENSIONS`` or ``dims``."""
    group = None
    if isinstance(source, zarr.Group):
        group = source
    elif isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        try:
            node = zarr.open(str(source), mode="r")
        except Exception:  # noqa: BLE001 - open_image accepted it; names are optional
            node = None
        group = node if isinstance(node, zarr.Group) else None
    if group is not None and key is None:
        attrs = group.attrs.asdict()
        multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
        if multiscales and multiscales[0].get("axes"):
            return [a["name"] if isinstance(a, dict) else str(a) for a in multiscales[0]["axes"]]
    metadata = getattr(array, "metadata", None)
    names = getattr(metadata, "dimension_names", None)
    if names and all(n is not None for n in names):
        return [str(n) for n in names]
    attrs = getattr(array, "attrs", None)
    dims = attrs.get("_ARRAY_DIMENSIONS") if hasattr(attrs, "get") else None
    dims = dims or getattr(array, "dims", None)
    return [str(n) for n in dims] if dims else None


def _identity(source: Any, key: str | None) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(Path(source).resolve()) + (f"::{key}" if key else "")
    if isinstance(source, (zarr.Array, zarr.Group)):
        return f"zarr:{source.store}:{source.path}" + (f"::{key}" if key else "")
    return type(source).__name__
