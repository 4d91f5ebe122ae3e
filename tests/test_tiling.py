"""sum_core.tiling: partition, halos, lookups, default tiling cost."""

from __future__ import annotations

import numpy as np
import pytest

from sum_core.errors import InvalidInputError
from sum_core.tiling import Region, TileGrid, default_tiling, encoded_pixel_ratio, tile_grid


def test_grid_regions_by_hand() -> None:
    grid = TileGrid((250, 130), (100, 64), halo=(10, 5))
    assert grid.grid_shape == (3, 3)
    assert len(grid) == 9
    t = grid[4]  # middle tile
    assert t.grid_pos == (1, 1)
    assert t.inner == Region(100, 64, 200, 128)
    assert t.outer == Region(90, 59, 210, 130)  # right side clipped at the image edge
    assert t.inner_in_outer == Region(10, 5, 110, 69)
    last = grid[-1]
    assert last.index == 8
    assert last.inner == Region(200, 128, 250, 130)
    assert last.outer == Region(190, 123, 250, 130)
    assert grid[0].outer == Region(0, 0, 110, 69)


@pytest.mark.parametrize(
    ("shape", "tile", "halo"),
    [((37, 53), (8, 11), (3, 0)), ((10, 10), 10, 4), ((5, 300), (7, 64), 16)],
)
def test_inner_regions_partition_and_outer_is_clipped_halo(shape, tile, halo) -> None:
    grid = TileGrid(shape, tile, halo)
    hr, hc = grid.halo
    count = np.zeros(shape, dtype=int)
    for i, t in enumerate(grid):
        assert t.index == i
        count[t.inner.slices] += 1
        inner, outer = t.inner, t.outer
        assert outer.row0 == max(inner.row0 - hr, 0)
        assert outer.col0 == max(inner.col0 - hc, 0)
        assert outer.row1 == min(inner.row1 + hr, shape[0])
        assert outer.col1 == min(inner.col1 + hc, shape[1])
        # Cropping a result computed on the outer window gives exactly the inner pixels.
        image = np.arange(shape[0] * shape[1]).reshape(shape)
        window = image[outer.slices]
        np.testing.assert_array_equal(window[t.inner_in_outer.slices], image[inner.slices])
    assert (count == 1).all()


def test_tile_containing() -> None:
    grid = TileGrid((250, 130), (100, 64), halo=8)
    assert grid.tile_containing(0, 0).index == 0
    assert grid.tile_containing(99.9, 64.0).index == 1  # 99.9 is in pixel row 99
    assert grid.tile_containing(100.0, 64.0).index == 1 * 3 + 1
    assert grid.tile_containing(249, 129).index == 8
    for t in grid:
        assert grid.tile_containing(t.inner.row1 - 1, t.inner.col0).index == t.index
    message = r"point \(250, 3\) lies outside the plane of shape \(250, 130\)"
    with pytest.raises(InvalidInputError, match=message):
        grid.tile_containing(250, 3)
    with pytest.raises(InvalidInputError, match="outside the plane"):
        grid.tile_containing(-0.5, 3)


def test_tiles_touching() -> None:
    grid = TileGrid((250, 130), (100, 64), halo=8)
    assert [t.index for t in grid.tiles_touching((0, 0, 100, 64))] == [0]
    assert [t.index for t in grid.tiles_touching((99, 63, 101, 65))] == [0, 1, 3, 4]
    assert [t.index for t in grid.tiles_touching((-50, 100, 500, 500))] == [1, 2, 4, 5, 7, 8]
    assert grid.tiles_touching((300, 0, 400, 10)) == []
    assert grid.tiles_touching((10, 10, 10, 20)) == []
    # Agrees with brute-force intersection.
    region = Region(37, 20, 180, 70)
    assert grid.tiles_touching(region) == [t for t in grid if t.inner.intersects(region)]
    with pytest.raises(InvalidInputError, match="region must be"):
        grid.tiles_touching((1, 2, 3))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tile_shape": 0}, r"tile_shape must be >= 1 on both axes, got \(0, 0\)"),
        ({"tile_shape": (64, -1)}, "tile_shape must be >= 1"),
        ({"tile_shape": (64, 64, 64)}, "tile_shape must be an int or a"),
        ({"tile_shape": 64.0}, "tile_shape must be an int or a"),
        ({"tile_shape": 64, "halo": -2}, r"halo must be >= 0 on both axes, got \(-2, -2\)"),
        ({"tile_shape": 64, "halo": "8"}, "halo must be an int or a"),
        ({"tile_shape": True}, "tile_shape must be an int"),
    ],
)
def test_validation(kwargs, match) -> None:
    with pytest.raises(InvalidInputError, match=match):
        TileGrid((100, 100), **kwargs)


def test_shape_validation() -> None:
    with pytest.raises(InvalidInputError, match="shape must be a"):
        TileGrid(100, 10)
    with pytest.raises(InvalidInputError, match="shape must be >= 1"):
        TileGrid((0, 100), 10)
    with pytest.raises(InvalidInputError, match="encoder_size must be an integer >= 32"):
        default_tiling((100, 100), encoder_size=8)


def test_default_tiling_small_plane_is_one_tile() -> None:
    grid = default_tiling((1024, 700))
    assert len(grid) == 1
    assert grid[0].inner == grid[0].outer == Region(0, 0, 1024, 700)
    assert encoded_pixel_ratio(grid) == 1.0


def test_default_tiling_by_hand() -> None:
    grid = default_tiling((1100, 1100))
    assert (grid.tile_shape, grid.halo) == ((550, 550), (64, 64))
    assert [t.outer.shape for t in grid] == [(614, 614)] * 4
    assert encoded_pixel_ratio(grid) == pytest.approx((1228 / 1100) ** 2)
    # An axis that fits the encoder is not split.
    tall = default_tiling((3000, 900))
    assert tall.grid_shape == (4, 1)
    assert tall.tile_shape == (750, 900)


@pytest.mark.parametrize(
    "shape", [(1025, 1025), (2000, 1500), (4097, 333), (10000, 8000), (896 * 5 + 1, 2049)]
)
def test_default_tiling_bounds(shape) -> None:
    grid = default_tiling(shape, encoder_size=1024)
    assert len(grid) > 1
    outer_sides = [side for t in grid for side in t.outer.shape]
    assert max(outer_sides) <= 1024
    assert encoded_pixel_ratio(grid) < (1024 / 896) ** 2 < 1.6
    # Even split: inner sizes along an axis differ by at most the number of tiles.
    heights = {t.inner.shape[0] for t in grid}
    assert max(heights) - min(heights) <= grid.grid_shape[0]


def test_encoded_pixel_ratio_of_micro_sam_tiling() -> None:
    # micro-sam's whole-slide setting: 1024 tile + 256 halo -> 2.25x for an interior tile.
    grid = TileGrid((1024 * 10, 1024 * 10), 1024, 256)
    interior = grid[11]
    assert interior.outer.shape == (1536, 1536)
    assert 2.0 < encoded_pixel_ratio(grid) < 2.25


@pytest.mark.parametrize("shape", [(1040, 1392), (2048, 2048), (2160, 2560)])
@pytest.mark.parametrize("halo", [0, 64, 128, 200])
def test_a_halo_alone_shrinks_the_tiles_so_no_window_is_downscaled(shape, halo):
    grid = tile_grid(shape, 1024, halo=halo)
    assert grid.halo == (halo, halo)
    assert max(max(t.outer.shape) for t in grid) <= 1024  # every window fits the encoder


def test_a_halo_that_leaves_no_tile_is_refused():
    with pytest.raises(InvalidInputError, match="leaves no room for a tile"):
        tile_grid((2048, 2048), 1024, halo=512)
