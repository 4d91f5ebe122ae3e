"""Test doubles for tiled prediction: an exact fake decoder and an encoder call counter."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from sum_core import predictor as predictor_module
from sum_core.decoding import WindowMasks
from sum_core.tiled_predictor import TiledPredictor, TileMasks

#: Score and uncertainty the fake decoder gives every mask pixel.
FAKE_SCORE = 0.9
FAKE_UNCERTAINTY = np.float32(0.25)


def fake_decoder(truth: np.ndarray, calls: list | None = None):
    """A ``TiledPredictor._decode`` returning exactly the parts of ``truth`` (in the window)
    under the positive clicks or inside the box; records ``(window, image points)`` in ``calls``.

    ``truth`` is the ``(H, W)`` plane. A part of ``truth`` is returned when a positive click lies
    on it, it reaches into the box or it overlaps the (window's full-resolution) mask prompt, and
    no negative click lies on it; logits are +8 on the mask
    and -8 elsewhere, the uncertainty :data:`FAKE_UNCERTAINTY` on the mask, the score
    :data:`FAKE_SCORE`.
    """

    def decode(self, window, embedding, points, labels, box, mask, options):
        crop = truth[window.slices]
        if calls is not None:
            calls.append((window, None if points is None else points + (window.row0, window.col0)))
        return _decode_crop(crop, points, labels, box, mask)

    return decode


def fake_window_decoder(truth: np.ndarray):
    """A ``decode_window`` for :class:`sum_core.Predictor` on images encoded as one window:
    one object per box (or one for clicks alone), each exactly as :func:`fake_decoder`."""

    def decode_window(model, image, prompts, options):
        assert tuple(image.original_size) == truth.shape, "the fake needs the whole image's truth"
        boxes = [None] if prompts.boxes is None else list(prompts.boxes)
        objects = [_decode_crop(truth, prompts.points, prompts.labels, box) for box in boxes]
        size = model.config.low_res_size
        return WindowMasks(
            logits=torch.from_numpy(np.stack([o.logits for o in objects])),
            scores=torch.full((len(objects),), FAKE_SCORE),
            uncertainty=torch.from_numpy(np.stack([o.uncertainty for o in objects])),
            low_res_logits=torch.zeros(len(objects), 1, size, size),
        )

    return decode_window


def use_fake_decoders(monkeypatch, truth: np.ndarray) -> None:
    """Make every Predictor / TiledPredictor decode ``truth`` exactly, tiled or not."""
    monkeypatch.setattr(TiledPredictor, "_decode", fake_decoder(truth))
    monkeypatch.setattr(predictor_module, "decode_window", fake_window_decoder(truth))


def _decode_crop(crop, points, labels, box, mask_prompt=None) -> TileMasks:
    """The parts of ``crop`` under the positive clicks, reaching into the box or overlapping the
    (full-resolution) mask prompt, minus the parts under negative clicks."""
    parts, _ = ndimage.label(crop)
    ids, removed = set(), set()
    for (r, c), label in zip(points if points is not None else [], labels if labels is not None else []):
        part = parts[min(int(r), crop.shape[0] - 1), min(int(c), crop.shape[1] - 1)]
        (ids if label == 1 else removed).add(part)
    if box is not None:  # every part that reaches into the box
        ids |= set(np.unique(parts[int(box[0]) : int(box[2]), int(box[1]) : int(box[3])]).tolist())
    if mask_prompt is not None:
        ids |= set(np.unique(parts[np.asarray(mask_prompt) > 0]).tolist())
    mask = np.isin(parts, sorted(ids - removed - {0}))
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


def points_from_model_frame(coords, original_size, input_size) -> np.ndarray:
    """Inverse of the point conversion of :func:`sum_core.prompts.to_model_frame`: ``(..., 2)``
    (x, y) in the resized frame -> float64 (row, col) in the original image (for fakes and tests)."""
    if hasattr(coords, "detach"):
        coords = coords.detach().cpu().numpy()
    (h, w), (newh, neww) = original_size, input_size
    xy = np.asarray(coords, dtype=np.float64)
    return xy[..., ::-1] / np.array([newh / h, neww / w])
