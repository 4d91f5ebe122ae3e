"""Test doubles for tiled prediction: an exact fake decoder and an encoder call counter."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from sum_core.tiled_predictor import TileMasks

#: Score and uncertainty the fake decoder gives every mask pixel.
FAKE_SCORE = 0.9
FAKE_UNCERTAINTY = np.float32(0.25)


def fake_decoder(truth: np.ndarray, calls: list | None = None):
    """A ``TiledPredictor._decode`` returning exactly the parts of ``truth`` (in the window)
    under the positive clicks or inside the box; records ``(window, image points)`` in ``calls``.

    ``truth`` is the ``(H, W)`` plane. The mask prompt is ignored; logits are +8 on the mask
    and -8 elsewhere, the uncertainty :data:`FAKE_UNCERTAINTY` on the mask, the score
    :data:`FAKE_SCORE`.
    """

    def decode(self, window, embedding, points, labels, box, mask, options):
        crop = truth[window.slices]
        if calls is not None:
            calls.append((window, None if points is None else points + (window.row0, window.col0)))
        return _decode_crop(crop, points, labels, box)

    return decode


def _decode_crop(crop, points, labels, box) -> TileMasks:
    parts, _ = ndimage.label(crop)
    ids = set()
    for (r, c), label in zip(points if points is not None else [], labels if labels is not None else []):
        if label == 1:
            ids.add(parts[min(int(r), crop.shape[0] - 1), min(int(c), crop.shape[1] - 1)])
    if box is not None:  # every part that reaches into the box
        ids |= set(np.unique(parts[int(box[0]) : int(box[2]), int(box[1]) : int(box[3])]).tolist())
    mask = np.isin(parts, sorted(ids - {0}))
    logits = np.where(mask, 8.0, -8.0).astype(np.float32)
    return TileMasks(mask, logits, mask * FAKE_UNCERTAINTY, FAKE_SCORE)


class EncoderCounter:
    """Counts encoder calls and encoded images; optionally fails after ``fail_after`` calls."""

    def __init__(self, model, monkeypatch, fail_after: int | None = None) -> None:
        self.calls = self.images = 0
        forward = model.image_encoder.forward

        def counted(x):
            if fail_after is not None and self.calls >= fail_after:
                raise RuntimeError("interrupted")
            self.calls += 1
            self.images += x.shape[0]
            return forward(x)

        monkeypatch.setattr(model.image_encoder, "forward", counted)
