"""SUM's mask-refinement module (paper Sec. 3.2.3 / App. D).

A trainable copy of SAM's prompt encoder and mask decoder that turns a SAM
pseudo-mask into a better mask. It sees the image through SAM's *frozen*
image encoder (shared, not copied) and takes three prompts at once:

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sum_core.checkpoint import load_state_dict_file
from sum_core.errors import CheckpointError, InvalidInputError
from sum_core.image import image_to_tensor, resize_longest_side
from sum_core.modeling import SamModel
from sum_core.prompts import ModelPrompts, to_model_frame, validate_prompts

#: Probabilities are clipped to [EPS, 1 - EPS] (half an 8-bit step) before the logit.
PROB_EPS = 0.5 / 255.0


@dataclass
class EncodedImage:
    """Frozen image-encoder output of one image.

    Attributes
    ----------
    embedding : torch.Tensor
        ``1 x 256 x E x E`` image embedding.
    early : torch.Tensor or None
        ``1 x E x E x C`` early feature (HQ models), else None.
    original_size : tuple of int
        (H, W) of the image.
    input_size : tuple of int
        (h, w) after resizing the long side to the encoder size.
    """

    embedding: torch.Tensor
    early: torch.Tensor | None
    original_size: tuple[int, int]
    input_size: tuple[int, int]

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> "EncodedImage":
        """Copy to ``device`` / ``dtype``."""
        early = None if self.early is None else self.early.to(device, dtype)
        return EncodedImage(self.embedding.to(device, dtype), early, self.original_size, self.input_size)


def encode_image(model: SamModel, image: np.ndarray) -> EncodedImage:
    """Run ``model``'s (frozen) image encoder on an (H, W, 3) uint8 image, without gradients."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InvalidInputError(
            "image must be (H, W, 3) uint8 (see sum_core.image.prepare_image), "
            f"got {image.dtype} {image.shape}"
        )
    device = model.pixel_mean.device
    resized = resize_longest_side(image, model.config.image_size)
    with torch.no_grad():
        embedding, early = model.image_encoder(model.preprocess(image_to_tensor(resized).to(device)))
    return EncodedImage(
        embedding, early if model.config.hq else None, tuple(image.shape[:2]), tuple(resized.shape[:2])
    )


def to_low_res_frame(
    values: np.ndarray | torch.Tensor,
    input_size: tuple[int, int],
    image_size: int,
    low_res_size: int,
    pad_value: float,
) -> torch.Tensor:
    """Map an image-resolution (H, W) float map into SAM's ``L x L`` low-resolution frame.

    The inverse of ``SamModel.postprocess_masks``: bilinear resize to the
    resized-image size ``input_size``, pad bottom/right with ``pad_value`` to
    ``image_size``, then an antialiased bilinear reduction to ``low_res_size``.

    Returns
    -------
    torch.Tensor
        float32 ``(1, L, L)``.
    """
    x = torch.as_tensor(np.asarray(values, dtype=np.float32) if not torch.is_tensor(values) else values)
    x = x.float()[None, None]
    x = F.interpolate(x, input_size, mode="bilinear", align_corners=False)
    pad = (0, image_size - input_size[1], 0, image_size - input_size[0])
    x = F.pad(x, pad, value=pad_value)
    x = F.interpolate(x, (low_res_size, low_res_size), mode="bilinear", align_corners=False, antialias=True)
    return x[0]


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
    points: Sequence, boxes: Sequence, mask_inputs: Sequence[np.ndarray], encoded: EncodedImage, device=None
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
    encoded : EncodedImage
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
    frames = [
        to_model_frame(
            validate_prompts(
                points=[point], labels=[1], box=box, mask_input=mask,
                image_shape=encoded.original_size, low_res_size=low_res,
            ),
            encoded.original_size,
            encoded.input_size,
            device=device,
        )
        for point, box, mask in zip(points, boxes, mask_inputs)
    ]
    return ModelPrompts(*(torch.cat([getattr(f, name) for f in frames]) for name in ModelPrompts._fields))


class RefinementModule(nn.Module):
    """Trainable copy of a SAM model's prompt encoder and mask decoder.

    Parameters
    ----------
    model : SamModel
        The SAM whose pseudo-labels are refined; its prompt encoder and mask
        decoder are deep-copied (the model itself is not changed and is not a
        submodule: its image encoder is used frozen, through :func:`encode_image`).
    """

    def __init__(self, model: SamModel) -> None:
        super().__init__()
        if not isinstance(model, SamModel):
            raise InvalidInputError(f"model must be a SamModel, got {type(model).__name__}")
        self.config = model.config
        self.prompt_encoder = copy.deepcopy(model.prompt_encoder)
        self.mask_decoder = copy.deepcopy(model.mask_decoder)
        self.prompt_encoder.requires_grad_(True)
        self.mask_decoder.requires_grad_(True)

    def forward(self, encoded: EncodedImage, prompts: ModelPrompts) -> torch.Tensor:
        """Refined mask logits ``B x 1 x L x L`` for B prompt triples on one image."""
        if prompts.point_coords is None or prompts.boxes is None or prompts.mask_input is None:
            raise InvalidInputError(
                "prompts: the refiner needs a click, a box and a mask prompt for every mask"
            )
        sparse, dense = self.prompt_encoder(
            points=(prompts.point_coords, prompts.point_labels), boxes=prompts.boxes, masks=prompts.mask_input
        )
        hq = None
        if self.config.hq:
            hq = self.mask_decoder.hq_features(encoded.embedding, encoded.early)
        out = self.mask_decoder(
            image_embeddings=encoded.embedding,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            hq_features=hq,
        )
        logits, _, _ = self.mask_decoder.select_outputs(out, multimask=False, hq_token_only=False)
        return logits

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
