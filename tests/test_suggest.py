"""sum_core.suggest: the suggested next click on hand-made masks and uncertainty maps with known answers."""

from __future__ import annotations

import numpy as np
import pytest

import sum_core
from sum_core.errors import InvalidInputError
from sum_core.prediction import Prediction, TiledPrediction
from sum_core.suggest import SuggestedClick, largest_region_click, suggest_click
from training.prompt_sampling import center_click


def _object(shape, box):
    mask = np.zeros(shape, bool)
    r0, c0, r1, c1 = box
    mask[r0:r1, c0:c1] = True
    return mask


def test_uncertain_blob_outside_the_mask_is_a_positive_click_at_its_centre():
    mask = _object((64, 64), (10, 10, 30, 30))
    u = np.zeros((64, 64), np.float32)
    u[32:41, 14:23] = 0.8  # 9 x 9 blob below the object, centre (36, 18)
    assert suggest_click(mask, u) == SuggestedClick((36, 18), 1, 81)
    assert sum_core.suggest_click is suggest_click  # public from the facade


def test_uncertain_blob_inside_the_mask_is_a_negative_click():
    mask = _object((64, 64), (10, 10, 40, 40))
    u = np.zeros((64, 64), np.float32)
    u[20:27, 30:37] = 0.5
    assert suggest_click(mask, u) == SuggestedClick((23, 33), 0, 49)


def test_a_blob_across_the_outline_is_split_by_side_and_the_larger_side_wins():
    mask = _object((64, 64), (10, 10, 40, 40))
    u = np.zeros((64, 64), np.float32)
    u[20:31, 36:45] = 1.0  # columns 36..39 inside (44 px), 40..44 outside (55 px)
    # the 11 x 5 outside part: every pixel of rows 22..28 in column 42 is 3 from its border; the first wins
    assert suggest_click(mask, u) == SuggestedClick((22, 42), 1, 55)


def test_the_largest_region_wins_and_ties_go_to_the_positive_side():
    mask = _object((80, 80), (20, 20, 60, 60))
    u = np.zeros((80, 80), np.float32)
    u[30:35, 30:35] = 0.9  # inside, 25 px
    u[62:67, 30:35] = 0.9  # outside, 25 px: the tie goes to the missed side
    assert suggest_click(mask, u) == SuggestedClick((64, 32), 1, 25)
    u[40:47, 40:47] = 0.9  # inside, 49 px: now the largest
    assert suggest_click(mask, u) == SuggestedClick((43, 43), 0, 49)


def test_threshold_is_inclusive_and_nothing_uncertain_gives_none():
    mask = _object((32, 32), (8, 8, 20, 20))
    u = np.full((32, 32), 0.39, np.float32)
    assert suggest_click(mask, u) is None
    u[22:25, 9:12] = 0.4
    assert suggest_click(mask, u) == SuggestedClick((23, 10), 1, 9)
    assert suggest_click(mask, u, threshold=0.41) is None
    assert suggest_click(mask, np.zeros((32, 32), np.float32)) is None


@pytest.mark.parametrize("shape", [(2048, 2048), (1040, 1392)])
def test_user_sizes_object_far_from_the_origin_and_far_uncertainty_ignored(shape):
    h, w = shape
    mask = _object(shape, (h - 140, w - 160, h - 60, w - 40))
    u = np.zeros(shape, np.float32)
    u[h - 55 : h - 44, w - 100 : w - 89] = 0.7  # 11 x 11 just below the object
    u[100:300, 100:300] = 0.9  # much larger, but far from this object: not its business
    assert suggest_click(mask, u) == SuggestedClick((h - 50, w - 95), 1, 121)
    # with a margin reaching it, the far region (40000 px, outside the mask) wins
    assert suggest_click(mask, u, margin=max(shape)) == SuggestedClick((199, 199), 1, 40000)


class _RecordingArray:
    """A lazy 2D array (as zarr / dask): records the regions read."""

    def __init__(self, array: np.ndarray) -> None:
        self._array, self.reads = array, []
        self.shape, self.dtype = array.shape, array.dtype

    def __getitem__(self, key):
        rows, cols = key
        self.reads.append((rows.start, cols.start, rows.stop, cols.stop))
        return self._array[key]


def test_with_a_window_only_the_search_region_is_read():
    shape = (2048, 2048)
    mask = _object(shape, (1500, 1700, 1560, 1780))
    u = np.zeros(shape, np.float32)
    u[1500:1520, 1790:1800] = 1.0
    lazy_mask, lazy_u = _RecordingArray(mask), _RecordingArray(u)
    click = suggest_click(lazy_mask, lazy_u, window=(1500, 1700, 1560, 1780), margin=32)
    assert click == SuggestedClick((1504, 1794), 1, 200)  # 20 x 10: the first of the tied centre column
    assert lazy_mask.reads == lazy_u.reads == [(1468, 1668, 1592, 1812)]


def test_an_empty_mask_without_window_searches_the_whole_image():
    mask = np.zeros((600, 700), bool)
    u = np.zeros((600, 700), np.float32)
    u[500:505, 600:607] = 0.6
    assert suggest_click(mask, u) == SuggestedClick((502, 602), 1, 35)  # 5 x 7: first of the tied centre row


def test_prediction_and_tiled_prediction_inputs():
    mask = _object((50, 60), (5, 5, 20, 20))
    u = np.zeros((50, 60), np.float32)
    u[22:27, 8:13] = 0.9
    other = np.zeros((50, 60), bool)
    prediction = Prediction(
        masks=np.stack([other, mask]), scores=np.ones(2, np.float32), logits=np.zeros((2, 50, 60), np.float32),
        uncertainties=np.stack([np.zeros_like(u), u]), low_res_logits=None,
    )
    assert suggest_click(prediction, k=1) == SuggestedClick((24, 10), 1, 25)
    assert suggest_click(prediction, k=0) is None
    tiled = TiledPrediction(
        mask=mask, score=1.0, logits=np.zeros((50, 60), np.float32), uncertainty=u, offset=(1000, 3000),
        image_shape=(4000, 8000), tiles=(0,), complete=True,
    )
    assert suggest_click(tiled) == SuggestedClick((1024, 3010), 1, 25)


def test_integer_label_masks_count_non_zero_as_the_object():
    labels = np.zeros((40, 40), np.uint16)
    labels[10:20, 10:20] = 7
    u = np.zeros((40, 40), np.float64)
    u[12:15, 12:15] = 1.0
    assert suggest_click(labels, u) == SuggestedClick((13, 13), 0, 9)


def test_largest_region_click_is_the_standard_users_centre_click():
    rng = np.random.default_rng(3)
    for _ in range(20):
        target = np.zeros((48, 56), bool)
        prediction = np.zeros((48, 56), bool)
        for array in (target, prediction):
            for _ in range(3):
                r, c = rng.integers(0, 48), rng.integers(0, 56)
                array[r : r + rng.integers(1, 20), c : c + rng.integers(1, 20)] = True
        expected = center_click(prediction, target)
        got = largest_region_click(target & ~prediction, prediction & ~target)
        if expected is None:
            assert got is None
        else:
            assert got.point == tuple(int(v) for v in expected[0]) and got.label == expected[1]


@pytest.mark.parametrize(
    ("arguments", "keywords", "words"),
    [
        ((np.zeros((8, 8), bool), np.zeros((8, 9))), {}, "uncertainty: shape"),
        ((np.zeros((8, 8), bool), np.full((8, 8), np.nan)), {}, "finite"),
        ((np.zeros((8, 8), bool), np.full((8, 8), 1.5)), {}, r"\[0, 1\]"),
        ((np.zeros((8, 8), bool), np.zeros((8, 8), bool)), {}, "uncertainty: expected real"),
        ((np.zeros((8, 8), np.float32), np.zeros((8, 8))), {}, "mask: expected a bool or integer"),
        ((np.zeros((2, 8, 8), bool), np.zeros((2, 8, 8))), {}, "mask: expected a non-empty 2D"),
        ((np.zeros((8, 8), bool),), {}, "uncertainty: required"),
        ((np.zeros((8, 8), bool), np.zeros((8, 8))), {"threshold": 1.5}, "threshold"),
        ((np.zeros((8, 8), bool), np.zeros((8, 8))), {"margin": -1}, "margin"),
        ((np.zeros((8, 8), bool), np.zeros((8, 8))), {"window": (0, 0, 9, 4)}, "window"),
        ((np.zeros((8, 8), bool), np.zeros((8, 8))), {"window": (4, 0, 4, 4)}, "window"),
        ((np.zeros((8, 8), bool), np.zeros((8, 8))), {"window": (0, 0, 4)}, "window"),
    ],
)
def test_bad_input_is_a_clear_error(arguments, keywords, words):
    with pytest.raises(InvalidInputError, match=words):
        suggest_click(*arguments, **keywords)


def test_bad_prediction_arguments_are_clear_errors():
    prediction = Prediction(
        masks=np.zeros((1, 8, 8), bool), scores=np.ones(1, np.float32), logits=np.zeros((1, 8, 8), np.float32),
        uncertainties=np.zeros((1, 8, 8), np.float32), low_res_logits=None,
    )
    with pytest.raises(InvalidInputError, match="leave it out"):
        suggest_click(prediction, np.zeros((8, 8)))
    with pytest.raises(InvalidInputError, match="k must be"):
        suggest_click(prediction, k=1)
