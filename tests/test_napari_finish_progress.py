"""Issue 14 item 6: AMG reports progress within one window, after every decoder batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sum_core.auto_options import AutoOptions
from sum_core.automatic import generate_masks
from sum_core.encoding import encode_image
from sum_core.errors import InvalidInputError
from sum_core.image import prepare_image
from sum_core.modeling import build_from_config

from small_models import small_vit_config


@pytest.fixture(scope="module")
def model_and_embedding():
    torch.manual_seed(0)
    model = build_from_config(small_vit_config(hq=True))
    image = (np.random.default_rng(0).random((48, 64)) * 255).astype(np.uint8)
    return model, encode_image(model, prepare_image(image))


def test_on_batch_reports_each_decoder_batch_of_one_window_and_gives_the_same_masks(model_and_embedding):
    model, embedding = model_and_embedding
    # 4 x 4 = 16 clicks, 5 per batch: 4 batches (the last one of 1 click) in ONE window
    options = AutoOptions(points_per_side=4, points_per_batch=5, pred_iou_thresh=0, stability_thresh=0)
    calls = []
    records = generate_masks(model, embedding, options, on_batch=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]  # increasing within the window, ending complete
    plain = generate_masks(model, embedding, options)
    assert [r.score for r in records] == [r.score for r in plain]
    for got, want in zip(records, plain, strict=True):
        np.testing.assert_array_equal(got.mask, want.mask)


def test_on_batch_must_be_callable_before_any_decoding(model_and_embedding):
    model, embedding = model_and_embedding
    with pytest.raises(InvalidInputError, match="on_batch must be a callable"):
        generate_masks(model, embedding, AutoOptions(points_per_side=2), on_batch=3)
