"""A fake decoder for the interactive widget's score, suggestion and re-segmentation tests: known masks, logits,
scores and uncertainty, and a record of every prompt it was given."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Logits of the mask's outer two-pixel rim: inside the mask (> 0) but under the stability's +1 threshold.
SOFT_LOGIT = 0.5
#: Uncertainty inside every mask (below suggest_click's threshold 0.4: never suggested).
INSIDE_UNCERTAINTY = 0.3


def rim(mask: np.ndarray) -> np.ndarray:
    """The mask's pixels within two pixels of its outline (their logit is :data:`SOFT_LOGIT`)."""
    return mask & ~ndimage.binary_erosion(mask, np.ones((5, 5), bool))


def logits_of(mask: np.ndarray) -> np.ndarray:
    logits = np.where(mask, 8.0, -8.0).astype(np.float32)
    logits[rim(mask)] = SOFT_LOGIT
    return logits


def expected_stability(mask: np.ndarray) -> float:
    """The stability score of :func:`logits_of` (offset 1): pixels above +1 over pixels above -1."""
    return float((mask.sum() - rim(mask).sum()) / mask.sum())


def uncertainty_of(mask: np.ndarray, extra: np.ndarray) -> np.ndarray:
    return np.maximum(np.where(mask, np.float32(INSIDE_UNCERTAINTY), np.float32(0)), extra).astype(np.float32)


def recording_decoder(objects, scores, extras, calls: list):
    """A ``sum_core.predictor.decode_window``: the first object holding the box's centre (or the first click),
    with its score, :func:`logits_of` and :func:`uncertainty_of` (``extras[i]`` added); ``calls`` gets the
    prompts of every call."""
    import torch
    from sum_core.decoding import WindowMasks

    def decode(model, image, prompts, options):
        calls.append(prompts)
        if prompts.boxes is not None:
            r0, c0, r1, c1 = prompts.boxes[0]
            row, col = int((r0 + r1) / 2), int((c0 + c1) / 2)
        else:
            row, col = (int(v) for v in prompts.points[0])
        i = next(i for i, m in enumerate(objects) if m[row, col])
        size = model.config.low_res_size
        return WindowMasks(
            logits=torch.from_numpy(logits_of(objects[i])[None]),
            scores=torch.full((1,), scores[i]),
            uncertainty=torch.from_numpy(uncertainty_of(objects[i], extras[i])[None]),
            low_res_logits=torch.zeros(1, 1, size, size),
        )

    return decode
