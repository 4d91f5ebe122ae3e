"""sum_core.mask_ops: values by hand and parity with SAM's amg utilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reference_impl import sam
from sum_core.errors import InvalidInputError
from sum_core.mask_ops import (
    box_touches_edge,
    boxes_to_xyxy,
    clean_small_regions,
    masks_to_boxes,
    masks_to_label_image,
    pixel_counts,
    point_grid,
    stability_score,
)


@pytest.fixture(scope="module")
def amg():
    return sam().utils.amg


def test_pixel_counts_equal_numpy_counts() -> None:
    masks = torch.from_numpy(np.random.default_rng(0).random((2, 3, 40, 50)) > 0.3)
    masks[0, 1] = False
    counts = pixel_counts(masks)
    assert counts.dtype == torch.int64 and counts.shape == (2, 3)
    np.testing.assert_array_equal(counts.numpy(), masks.numpy().sum(axis=(-2, -1)))
    assert counts[0, 1] == 0 and pixel_counts(torch.ones(1040, 1392, dtype=torch.bool)) == 1040 * 1392


def test_stability_score_by_hand() -> None:
    logits = torch.full((1, 4, 4), -5.0)
    logits[0, :2, :2] = 3.0  # 4 px above +1
    logits[0, 2, :2] = 0.5  # 2 px only above -1
    assert stability_score(logits).tolist() == pytest.approx([4 / 6])
    assert stability_score(logits, offset=0.25).tolist() == pytest.approx([1.0])
    assert stability_score(torch.full((2, 3, 3), -5.0)).tolist() == [0.0, 0.0]


def test_stability_score_matches_sam(amg) -> None:
    logits = torch.randn(2, 3, 32, 40, generator=torch.Generator().manual_seed(0)) * 3
    ours = stability_score(logits, 0.0, 1.0)
    ref = amg.calculate_stability_score(logits, 0.0, 1.0)
    assert ours.shape == (2, 3)
    torch.testing.assert_close(ours, ref.float())


def test_masks_to_boxes_inclusive_and_empty(amg) -> None:
    masks = torch.zeros(3, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 7, 11] = True  # single pixel -> zero-area box
    boxes = masks_to_boxes(masks)
    assert boxes.dtype == torch.int64
    assert boxes.tolist() == [[2, 3, 4, 8], [7, 11, 7, 11], [0, 0, 0, 0]]
    # SAM gives the same boxes in (x, y) order; boxes_to_xyxy converts to it.
    ref = amg.batched_mask_to_box(masks)
    assert boxes_to_xyxy(boxes).tolist() == ref.float().tolist()
    assert boxes_to_xyxy(boxes).dtype == torch.float32


def test_masks_to_boxes_random_matches_sam(amg) -> None:
    masks = torch.rand(2, 4, 20, 30, generator=torch.Generator().manual_seed(1)) > 0.97
    ref = amg.batched_mask_to_box(masks)
    assert masks_to_boxes(masks)[..., [1, 0, 3, 2]].tolist() == ref.tolist()


def test_point_grid_matches_sam_in_row_col(amg) -> None:
    grid = point_grid(4)
    assert grid.shape == (16, 2)
    assert grid[0].tolist() == [0.125, 0.125]
    assert grid[1].tolist() == [0.125, 0.375]  # col varies fastest (row-major)
    np.testing.assert_allclose(grid[:, ::-1], amg.build_point_grid(4))
    assert point_grid(1).tolist() == [[0.5, 0.5]]


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_point_grid_validation(bad) -> None:
    with pytest.raises(InvalidInputError, match=f"points_per_side must be an integer >= 1, got {bad!r}"):
        point_grid(bad)


def test_box_touches_edge_by_hand() -> None:
    image_shape = (1000, 800)
    crop = (0, 400, 500, 800)  # top-right quadrant: left and bottom edges are interior
    boxes = torch.tensor(
        [
            [100, 410, 200, 500],  # 10 px from the left crop edge -> touches
            [100, 500, 200, 790],  # near the right edge, which is the image edge -> no
            [0, 500, 100, 600],  # at the top edge, the image edge -> no
            [300, 500, 495, 600],  # bottom row 495, crop end 500 -> touches
            [100, 450, 200, 600],  # 50 px inside -> no
        ]
    )
    assert box_touches_edge(boxes, crop, image_shape).tolist() == [True, False, False, True, False]
    near5 = box_touches_edge(boxes, crop, image_shape, atol=5)
    assert near5.tolist() == [False, False, False, True, False]


def test_box_touches_edge_matches_sam(amg) -> None:
    g = torch.Generator().manual_seed(3)
    image_shape = (300, 400)
    crop_rc = (100, 0, 300, 250)
    local = torch.randint(0, 200, (50, 2), generator=g)
    size = torch.randint(0, 60, (50, 2), generator=g)
    local_rc = torch.cat([local, (local + size).clamp(max=199)], dim=1)
    global_rc = local_rc + torch.tensor([crop_rc[0], crop_rc[1]] * 2)
    # SAM: boxes in crop-local (x, y), crop and image boxes (x0, y0, x1, y1).
    crop_xy = [crop_rc[1], crop_rc[0], crop_rc[3], crop_rc[2]]
    ref = amg.is_box_near_crop_edge(local_rc[:, [1, 0, 3, 2]], crop_xy, [0, 0, 400, 300])
    ours = box_touches_edge(global_rc, crop_rc, image_shape)
    assert ours.tolist() == ref.tolist()
    assert 0 < int(ours.sum()) < 50


def test_clean_small_regions_fills_holes_then_removes_islands() -> None:
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:12, 2:12] = True
    mask[5, 5] = False  # 1-px hole
    mask[6:8, 8:10] = False  # 4-px hole
    mask[16, 16] = True  # 1-px island
    mask[15:18, 0:3] = True  # 9-px island
    cleaned, changed = clean_small_regions(mask, min_area=5)
    expected = mask.copy()
    expected[5, 5] = expected[6:8, 8:10] = True
    expected[16, 16] = False
    assert changed
    np.testing.assert_array_equal(cleaned, expected)
    same, changed = clean_small_regions(expected, min_area=5)
    assert not changed and np.array_equal(same, expected)


def test_clean_small_regions_uses_8_connectivity_and_keeps_largest() -> None:
    mask = np.zeros((10, 10), dtype=bool)
    mask[1, 1] = mask[2, 2] = mask[3, 3] = True  # diagonal: one 3-px island
    mask[7, 7] = True
    cleaned, changed = clean_small_regions(mask, min_area=10)
    expected = np.zeros_like(mask)
    expected[1, 1] = expected[2, 2] = expected[3, 3] = True
    assert changed
    np.testing.assert_array_equal(cleaned, expected)
    untouched, changed = clean_small_regions(mask, min_area=0)
    assert not changed
    np.testing.assert_array_equal(untouched, mask)


def test_clean_small_regions_validation() -> None:
    with pytest.raises(InvalidInputError, match="mask must be 2D"):
        clean_small_regions(np.zeros((2, 3, 4), bool), 5)
    with pytest.raises(InvalidInputError, match="min_area must be an integer >= 0, got -1"):
        clean_small_regions(np.zeros((3, 4), bool), -1)


def test_masks_to_label_image_order() -> None:
    masks = np.zeros((4, 6, 6), dtype=bool)
    masks[0] = True  # largest: painted first, mostly overwritten
    masks[1, :3, :3] = True  # 9 px, score 0.9
    masks[2, 1:4, 1:4] = True  # 9 px, score 0.5 -> painted before mask 1
    masks[3, 5, 5] = True  # smallest: wins its pixel
    labels = masks_to_label_image(masks, np.array([0.1, 0.9, 0.5, 0.2]))
    assert labels.dtype == np.uint32
    expected = np.full((6, 6), 1, dtype=np.uint32)
    expected[1:4, 1:4] = 3
    expected[:3, :3] = 2
    expected[5, 5] = 4
    np.testing.assert_array_equal(labels, expected)
    # Without scores, ties fall back to input order (later index wins).
    assert masks_to_label_image(masks)[1, 1] == 3


def test_masks_to_label_image_validation() -> None:
    with pytest.raises(InvalidInputError, match=r"masks must have shape \(N, H, W\)"):
        masks_to_label_image(np.zeros((4, 4), bool))
    with pytest.raises(InvalidInputError, match=r"scores must have shape \(2,\)"):
        masks_to_label_image(np.zeros((2, 4, 4), bool), np.zeros(3))
