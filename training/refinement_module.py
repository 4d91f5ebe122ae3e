"""SUM's mask-refinement module (paper Sec. 3.2.3 / App. D).

A trainable copy of SAM's prompt encoder and mask decoder that turns a SAM
pseudo-mask into a better mask. It sees the image through SAM's *frozen*
image encoder (the SAM's own :func:`sum_core.encoding.encode` embeddings, not a
copy), decodes through the one decode step :meth:`sum_core.modeling.SamModel.decode`
and takes three prompts at once:

* SAM's logits as the mask prompt (low-resolution ``L x L``, ``L = 256``),
* a box around the pseudo-label,
* the click that produced the pseudo-label.

Its output is the refined mask (single-mask output, token 0; SAM + HQ token
for HQ models); SUM's uncertainty is ``u = |sigmoid(SAM logit) - refined
probability|``.

The mask prompt is always re-derived from the 8-bit SAM probability stored
in the pseudo-label folder (:func:`mask_prompt_from_probability`), both for
the training pairs and for the pseudo-labels, so the refiner is trained on
exactly the kind of input it later receives.

The saved file (:meth:`RefinementModule.save`) holds the ``prompt_encoder.*``
and ``mask_decoder.*`` keys of a SAM checkpoint, so it is also a
decoder-only checkpoint for ``sum_core.checkpoint.load_checkpoint(path,
base=...)``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sum_core.checkpoint import load_state_dict_file
from sum_core.errors import CheckpointError, InvalidInputError
from sum_core.modeling import ImageEmbedding, SamModel
from sum_core.prompts import ModelPrompts, batch_to_model_frame, to_low_res_frame, validate_prompts

#: Probabilities are clipped to [EPS, 1 - EPS] (half an 8-bit step) before the logit.
PROB_EPS = 0.5 / 255.0


def probability_logits(prob_uint8: np.ndarray) -> np.ndarray:
    """Logits of an 8-bit probability map ``round(255 p)``, clipped to +-logit(1 - PROB_EPS)."""
    p = np.clip(np.asarray(prob_uint8, dtype=np.float64) / 255.0, PROB_EPS, 1.0 - PROB_EPS)
    return np.log(p / (1.0 - p)).astype(np.float32)


def mask_prompt_from_probability(
    prob_uint8: np.ndarray, input_size: tuple[int, int], image_size: int = 1024, low_res_size: int = 256
) -> np.ndarray:
    """SAM's mask prompt (``1 x L x L`` logits) from an 8-bit image-resolution probability map."""
    logits = probability_logits(prob_uint8)
    floor = float(np.log(PROB_EPS / (1.0 - PROB_EPS)))
    return to_low_res_frame(logits, input_size, image_size, low_res_size, floor).numpy()


def refiner_prompts(
    points: Sequence, boxes: Sequence, mask_inputs: Sequence[np.ndarray], image: ImageEmbedding, device=None
) -> ModelPrompts:
    """Batch K (click, box, mask prompt) triples into model-frame tensors.

    Parameters
    ----------
    points : sequence
        K clicks (row, col).
    boxes : sequence
        K boxes (row0, col0, row1, col1).
    mask_inputs : sequence of numpy.ndarray
        K ``(1, L, L)`` logits (see :func:`mask_prompt_from_probability`).
    image : ImageEmbedding
        The image the prompts refer to (for its sizes).
    device : torch.device or str, optional
        Device of the returned tensors.
    """
    if not (len(points) == len(boxes) == len(mask_inputs)) or len(points) == 0:
        raise InvalidInputError(
            f"points, boxes, mask_inputs: need the same non-zero count, got "
            f"{len(points)}, {len(boxes)}, {len(mask_inputs)}"
        )
    low_res = mask_inputs[0].shape[-1]
    objects = [
        validate_prompts(
            points=[point], labels=[1], box=box, mask_input=mask,
            image_shape=image.original_size, low_res_size=low_res,
        )
        for point, box, mask in zip(points, boxes, mask_inputs)
    ]
    return batch_to_model_frame(objects, image.original_size, image.input_size, device=device)


class _NoImageEncoder(nn.Module):
    """Stands in for the image encoder of a :class:`RefinementModule`, which has none."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise InvalidInputError(
            "the refinement module has no image encoder: encode the image with the SAM it refines"
        )


class RefinementModule(SamModel):
    """Trainable copy of a SAM model's prompt encoder and mask decoder.

    A :class:`~sum_core.modeling.SamModel` without an image encoder of its own: it decodes
    (:meth:`~sum_core.modeling.SamModel.decode`) the embeddings that the frozen SAM's image
    encoder made, with its own prompt encoder and mask decoder, so its state dict holds
    exactly their keys.

    Parameters
    ----------
    model : SamModel
        The SAM whose pseudo-labels are refined; its prompt encoder and mask
        decoder are deep-copied (the model itself is not changed and is not a
        submodule).
    """

    def __init__(self, model: SamModel) -> None:
        if not isinstance(model, SamModel):
            raise InvalidInputError(f"model must be a SamModel, got {type(model).__name__}")
        super().__init__(
            model.config,
            _NoImageEncoder(),
            copy.deepcopy(model.prompt_encoder),
            copy.deepcopy(model.mask_decoder),
        )
        self.requires_grad_(True)

    def forward(self, image: ImageEmbedding, prompts: ModelPrompts) -> torch.Tensor:
        """Refined mask logits ``B x 1 x L x L`` for B prompt triples on one image.

        The HQ features are always computed by the refiner's own (trainable) mask decoder:
        any that ``image`` carries (the frozen SAM's) are not used.
        """
        if prompts.point_coords is None or prompts.boxes is None or prompts.mask_input is None:
            raise InvalidInputError(
                "prompts: the refiner needs a click, a box and a mask prompt for every mask"
            )
        decoded = self.decode(
            replace(image, hq_features=None),
            points=(prompts.point_coords, prompts.point_labels),
            boxes=prompts.boxes,
            masks=prompts.mask_input,
        )
        return decoded.logits

    def save(self, path: str | os.PathLike) -> None:
        """Save the weights (``prompt_encoder.*`` / ``mask_decoder.*`` keys) with ``torch.save``."""
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        tmp = Path(f"{path}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)


def load_refiner(model: SamModel, path: str | os.PathLike) -> RefinementModule:
    """Load a refiner saved by :meth:`RefinementModule.save` on top of ``model``.

    Raises
    ------
    CheckpointError
        If the file is unreadable or its keys or shapes do not fit ``model``'s
        prompt encoder and mask decoder (the differences are listed).
    """
    state = load_state_dict_file(path)
    refiner = RefinementModule(model)
    expected = refiner.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = [
            f"{label}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        ]
        raise CheckpointError(
            f"refiner: {path} does not fit this model's prompt encoder and mask decoder "
            f"({'; '.join(parts)}); was it trained on another model?"
        )
    refiner.load_state_dict(state, strict=True)
    return refiner.to(model.pixel_mean.device)
