"""auto_segment's per-object scores (``AutoSegmentation.objects``) in both modes."""

from __future__ import annotations

import pickle

import numpy as np

from sum_core import ais, automatic
from sum_core.auto_options import AutoOptions
from sum_core.automatic import AutoSegmentation, auto_segment
from sum_core.object_scores import object_scores
from test_ais_auto import ais_model, exact_window_maps  # noqa: F401
from test_batch import blobs, fake_records, tiny  # noqa: F401
from test_batch_ais import random_discs

KW = dict(device="cpu", progress=False)


def test_amg_objects_carry_each_masks_predicted_iou_and_stability_by_final_id(monkeypatch, tiny):
    def records(model, window, options, precision="fp32", *, progress=False, cancel=None, on_batch=None):
        found = fake_records(window, model, None, options)
        for k, rec in enumerate(found):  # identifiable per mask: its area, and its index in the window
            rec.score, rec.stability = rec.area * 1e-6, 0.5 + k * 1e-3
        return found

    monkeypatch.setattr(automatic, "window_masks", records)
    image = blobs((200, 260), seed=0)
    result = auto_segment(image, AutoOptions(), tile_shape=(64, 96), halo=24, model=tiny, **KW)
    labels, uncertainty = result  # unpacks as before
    assert isinstance(result, AutoSegmentation) and result.labels is labels and result.uncertainty is uncertainty
    expected = object_scores(labels, uncertainty)
    objects = result.objects
    assert len(objects) >= 8
    for name in ("label", "area", "mean_uncertainty", "boundary_uncertainty"):
        np.testing.assert_array_equal(getattr(objects, name), getattr(expected, name), err_msg=name)
    # the discs never overlap: each final id's area is its mask's, whose score was set from it
    np.testing.assert_array_equal(objects.predicted_iou, objects.area * 1e-6)
    assert ((objects.stability >= 0.5) & (objects.stability < 0.6)).all()
    again = pickle.loads(pickle.dumps(result))
    np.testing.assert_array_equal(again.objects.label, objects.label)
    np.testing.assert_array_equal(again.labels, labels)


def test_ais_objects_have_no_predicted_iou_or_stability(monkeypatch, ais_model):
    monkeypatch.setattr(ais, "window_maps", exact_window_maps())
    result = auto_segment(random_discs((160, 160), 6, seed=2), mode="ais", model=ais_model, **KW)
    expected = object_scores(result.labels, result.uncertainty)
    assert len(result.objects) >= 1
    for name in ("label", "area", "mean_uncertainty", "boundary_uncertainty"):
        np.testing.assert_array_equal(getattr(result.objects, name), getattr(expected, name), err_msg=name)
    assert np.isnan(result.objects.predicted_iou).all() and np.isnan(result.objects.stability).all()
