"""TiledEmbeddings / TiledPredictor read through a given ``Planes`` (its channel choice), and a persistent cache
made for one channel choice is never served for another."""

from __future__ import annotations

import numpy as np
import pytest

from sum_core.errors import InvalidInputError
from sum_core.sources import Planes
from sum_core.tiled_embedding import TiledEmbeddings
from test_batch import tiny  # noqa: F401


def test_planes_channel_choice_is_read_and_part_of_the_cache(tmp_path, tiny):
    rgb = np.zeros((64, 80, 3), np.uint8)
    rgb[10:30, 10:40, 1] = 255
    rgb[:, :, 0] = 90
    chosen = TiledEmbeddings(tiny, Planes(rgb, channel_axis=2, channels=1), cache=tmp_path / "c")
    np.testing.assert_array_equal(chosen.planes.read(0), rgb[..., 1])  # the Planes given, not a second reader
    chosen.ensure([(0, 0)])
    with pytest.raises(InvalidInputError, match="other preprocessing"):
        TiledEmbeddings(tiny, rgb, cache=tmp_path / "c")  # all three channels: another image for the encoder
    again = TiledEmbeddings(tiny, Planes(rgb, channel_axis=2, channels=1), cache=tmp_path / "c")
    assert again.missing() == []  # the same choice reuses the cache
    with pytest.raises(InvalidInputError, match="stack_axis"):
        TiledEmbeddings(tiny, Planes(rgb), stack_axis=0)
