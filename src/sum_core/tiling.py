"""Regular tile grid with a halo over a 2D plane, for encoding images larger than the model input.

Each tile has an **inner** region, the part of the plane it owns (the inner regions of all
tiles partition the plane), and an **outer** region, the inner region grown by the halo on
every side and clipped to the image: the window that is encoded. Results for a tile are
computed on the outer window and only its inner part is kept, so objects crossing an inner
border are still seen whole when they fit in the halo.

Regions are half-open ``(row0, col0, row1, col1)`` in image pixels (:class:`Region`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from .errors import InvalidInputError
from .validation import check_int

__all__ = ["Region", "Tile", "TileGrid", "default_tiling", "encoded_pixel_ratio", "tile_grid"]


class Region(NamedTuple):
    """Half-open rectangle ``[row0, row1) x [col0, col1)`` in image pixels."""

    row0: int
    col0: int
    row1: int
    col1: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return (self.row1 - self.row0, self.col1 - self.col0)

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices, so ``image[region.slices]`` is the region's pixels."""
        return (slice(self.row0, self.row1), slice(self.col0, self.col1))

    def intersects(self, other: Region) -> bool:
        """Whether the two regions share at least one pixel."""
        return (
            self.row0 < other.row1
            and other.row0 < self.row1
            and self.col0 < other.col1
            and other.col0 < self.col1
        )


@dataclass(frozen=True)
class Tile:
    """One tile of a :class:`TileGrid`.

    Attributes
    ----------
    index : int
        Position in the grid's row-major order (``grid_row * n_cols + grid_col``).
    grid_pos : (int, int)
        ``(grid_row, grid_col)``.
    inner : Region
        The pixels this tile owns.
    outer : Region
        ``inner`` plus the halo on every side, clipped to the image: the encoded window.
    """

    index: int
    grid_pos: tuple[int, int]
    inner: Region
    outer: Region

    @property
    def inner_in_outer(self) -> Region:
        """``inner`` relative to ``outer``: crop a result computed on ``outer`` with this."""
        r, c = self.outer.row0, self.outer.col0
        inner = self.inner
        return Region(inner.row0 - r, inner.col0 - c, inner.row1 - r, inner.col1 - c)


def _is_int(value: object) -> bool:
    return hasattr(value, "__index__") and not isinstance(value, bool)


def _pair(value: int | Sequence[int], name: str, minimum: int) -> tuple[int, int]:
    """``value`` (an int or a pair of ints) as a pair, each ``>= minimum``."""
    if _is_int(value):
        value = (value, value)
    if not isinstance(value, Sequence) or len(value) != 2 or not all(_is_int(v) for v in value):
        raise InvalidInputError(
            f"{name} must be an int or a (rows, cols) pair of ints, got {value!r}"
        )
    pair = (int(value[0]), int(value[1]))
    if min(pair) < minimum:
        raise InvalidInputError(f"{name} must be >= {minimum} on both axes, got {pair}")
    return pair


class TileGrid:
    """A regular grid of tiles anchored at the origin, each with a halo.

    Tiles are ``tile_shape`` except the last row/column, which hold the remainder.

    Parameters
    ----------
    shape : (int, int)
        ``(height, width)`` of the plane.
    tile_shape : int or (int, int)
        Inner tile size, ``>= 1``.
    halo : int or (int, int)
        Context added on every side of a tile, ``>= 0``.

    Raises
    ------
    InvalidInputError
        For a shape, tile shape or halo that is not a pair of ints in range.
    """

    def __init__(
        self, shape: Sequence[int], tile_shape: int | Sequence[int], halo: int | Sequence[int] = 0
    ) -> None:
        if _is_int(shape):
            raise InvalidInputError(f"shape must be a (height, width) pair, got {shape!r}")
        self.shape = _pair(shape, "shape", 1)
        self.tile_shape = _pair(tile_shape, "tile_shape", 1)
        self.halo = _pair(halo, "halo", 0)
        self.grid_shape = (
            math.ceil(self.shape[0] / self.tile_shape[0]),
            math.ceil(self.shape[1] / self.tile_shape[1]),
        )

    def __repr__(self) -> str:
        return f"TileGrid(shape={self.shape}, tile_shape={self.tile_shape}, halo={self.halo})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TileGrid):
            return NotImplemented
        mine = (self.shape, self.tile_shape, self.halo)
        return mine == (other.shape, other.tile_shape, other.halo)

    def __hash__(self) -> int:
        return hash((self.shape, self.tile_shape, self.halo))

    def __len__(self) -> int:
        return self.grid_shape[0] * self.grid_shape[1]

    def __iter__(self) -> Iterator[Tile]:
        return (self[i] for i in range(len(self)))

    def __getitem__(self, index: int) -> Tile:
        if not -len(self) <= index < len(self):
            raise IndexError(f"tile index {index} out of range for {len(self)} tiles")
        index %= len(self)
        gr, gc = divmod(index, self.grid_shape[1])
        (h, w), (th, tw), (hr, hc) = self.shape, self.tile_shape, self.halo
        inner = Region(gr * th, gc * tw, min((gr + 1) * th, h), min((gc + 1) * tw, w))
        outer = Region(
            max(inner.row0 - hr, 0),
            max(inner.col0 - hc, 0),
            min(inner.row1 + hr, h),
            min(inner.col1 + hc, w),
        )
        return Tile(index=index, grid_pos=(gr, gc), inner=inner, outer=outer)

    def tile_containing(self, row: float, col: float) -> Tile:
        """The tile whose inner region contains pixel ``(row, col)`` (fractions are floored)."""
        r, c = math.floor(row), math.floor(col)
        if not (0 <= r < self.shape[0] and 0 <= c < self.shape[1]):
            raise InvalidInputError(
                f"point ({row}, {col}) lies outside the plane of shape {self.shape}"
            )
        return self[(r // self.tile_shape[0]) * self.grid_shape[1] + c // self.tile_shape[1]]

    def tiles_touching(self, region: Sequence[int]) -> list[Tile]:
        """Tiles whose inner region shares a pixel with ``region`` (half-open, row-major order).

        ``region`` is clipped to the plane; a region outside it, or empty, touches no tile.
        """
        if len(region) != 4:
            raise InvalidInputError(f"region must be (row0, col0, row1, col1), got {region!r}")
        r0, c0 = max(int(region[0]), 0), max(int(region[1]), 0)
        r1, c1 = min(int(region[2]), self.shape[0]), min(int(region[3]), self.shape[1])
        if r0 >= r1 or c0 >= c1:
            return []
        (th, tw), n_cols = self.tile_shape, self.grid_shape[1]
        return [
            self[gr * n_cols + gc]
            for gr in range(r0 // th, (r1 - 1) // th + 1)
            for gc in range(c0 // tw, (c1 - 1) // tw + 1)
        ]


def encoded_pixel_ratio(grid: TileGrid) -> float:
    """Pixels in all outer windows divided by the plane's pixels (1.0 for a single tile).

    This counts source pixels, halo overlaps included. The encoder's cost per tile is fixed
    (every window is resized to the model input), so compute cost is ``len(grid)`` encoder
    runs whatever this ratio.
    """
    total = sum(t.outer.shape[0] * t.outer.shape[1] for t in grid)
    return total / (grid.shape[0] * grid.shape[1])


def default_tiling(shape: Sequence[int], encoder_size: int = 1024, halo: int | None = None) -> TileGrid:
    """Tiling that keeps every encoded window within ``encoder_size`` (no downscaling).

    A plane whose sides are both ``<= encoder_size`` is a single tile without halo. Larger
    planes get ``halo = encoder_size // 16`` (64 for SAM). An axis of at most
    ``encoder_size`` pixels is not split; a longer axis gets the fewest tiles with inner size
    ``<= encoder_size - 2 * halo`` (896), split evenly so that all windows are nearly the
    same size and are resized by the same factor (no thin remainder tile blown up to the
    model input).

    Every window is then at most ``encoder_size`` on each side, and the encoded pixel ratio
    (:func:`encoded_pixel_ratio`) is below ``(1024 / 896) ** 2 ≈ 1.31`` (each split axis adds
    ``2 * halo`` per inner border, under 128 / 896 of its length); it tends to 1.31 for very
    large images. For comparison micro-sam's 1024 tile + 256 halo encodes
    ``(1536 / 1024) ** 2 = 2.25`` times the image's pixels, each window downscaled by 1.5.
    A halo of 64 px keeps objects up to about 64 px across intact at inner borders in the
    automatic mode; for larger objects build a :class:`TileGrid` with a larger halo.

    Parameters
    ----------
    shape : (int, int)
        ``(height, width)`` of the plane.
    encoder_size : int
        Side of the model input (1024 for SAM); must be >= 32.
    halo : int, optional
        Another halo for planes that are split (default ``encoder_size // 16``); the tiles
        shrink so that tile + 2 halo still fits the encoder (no window is downscaled).
    """
    h, w = _pair(shape, "shape", 1)
    check_int(encoder_size, "encoder_size", 32)
    if h <= encoder_size and w <= encoder_size:
        return TileGrid((h, w), (h, w), 0)
    halo = encoder_size // 16 if halo is None else check_int(halo, "halo", 0)
    max_inner = encoder_size - 2 * halo
    if max_inner < 1:
        raise InvalidInputError(f"halo={halo} leaves no room for a tile in a {encoder_size}-pixel encoder window")
    tile = tuple(
        n if n <= encoder_size else math.ceil(n / math.ceil(n / max_inner)) for n in (h, w)
    )
    return TileGrid((h, w), tile, halo)


def tile_grid(
    shape: Sequence[int],
    encoder_size: int = 1024,
    tile_shape: int | Sequence[int] | None = None,
    halo: int | Sequence[int] | None = None,
) -> TileGrid:
    """The tiling of a plane: the one size rule of the package.

    The predictor, the tiled predictor, automatic segmentation, batch jobs, the CLI and the
    napari widgets all tile through here, so an image is cut the same way by each of them.

    - Neither ``tile_shape`` nor ``halo``: :func:`default_tiling`: a plane of at most
      ``encoder_size`` on both sides is one window; a larger one is tiled so that no window
      is downscaled (small objects keep their pixels).
    - ``tile_shape`` given: tiles of that size with ``halo`` (default ``encoder_size // 16``).
      ``tile_shape`` equal to the plane's shape (or larger) means one window resized to the
      encoder, SAM's own behaviour: faster (one encoder run), coarser.
    - only ``halo`` (an int): the default tiling with that halo, its tiles shrunk so that no
      window is downscaled; a ``(rows, cols)`` halo keeps the default tile size.

    Parameters
    ----------
    shape : (int, int)
        ``(height, width)`` of the plane.
    encoder_size : int
        Side of the model input (``model.config.image_size``, 1024 for SAM).
    tile_shape, halo : int or (int, int), optional
        See above.
    """
    if tile_shape is None and halo is None:
        return default_tiling(shape, encoder_size)
    if tile_shape is None:
        if _is_int(halo):
            return default_tiling(shape, encoder_size, halo)
        tile_shape = default_tiling(shape, encoder_size).tile_shape
    return TileGrid(shape, tile_shape, encoder_size // 16 if halo is None else halo)
