"""What the image encoder produces for one image, and what the decode step returns."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import torch


@dataclass(frozen=True)
class ImageEmbedding:
    """Encoder output of one image (or one tile window): everything decoding needs.

    The one embedding container of the package: :func:`sum_core.encoding.encode` makes it,
    :meth:`sum_core.modeling.SamModel.decode` reads it, the tile caches keep it.

    Attributes
    ----------
    embedding : torch.Tensor
        ``1×256×E×E`` image embedding (float32).
    early : torch.Tensor or None
        ``1×E×E×C`` early encoder feature (HQ / SUM models), else None.
    hq_features : torch.Tensor or None
        ``1×32×L×L`` fused HQ features (``mask_decoder.hq_features(embedding, early)``),
        computed once per image for inference; None when not computed yet (training
        computes them in the decode step, with gradients) or for plain SAM.
    input_size : (int, int)
        ``(h, w)`` of the image resized to the encoder input (long side = image size).
    original_size : (int, int)
        ``(H, W)`` of the image (or window) in pixels.
    """

    embedding: torch.Tensor
    early: torch.Tensor | None
    hq_features: torch.Tensor | None
    input_size: tuple[int, int]
    original_size: tuple[int, int]

    @property
    def device(self) -> torch.device:
        """Device of the tensors."""
        return self.embedding.device

    def to(self, device: torch.device | str) -> ImageEmbedding:
        """The same embedding on ``device`` (float32)."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device=device, dtype=torch.float32)

        return replace(
            self, embedding=move(self.embedding), early=move(self.early), hq_features=move(self.hq_features)
        )


class DecodedMasks(NamedTuple):
    """Decoder output at low resolution for ``B`` prompts, ``C`` masks each.

    Attributes
    ----------
    logits : torch.Tensor
        ``B×C×L×L`` mask logits (SAM + HQ for HQ models unless ``hq_token_only``).
    iou : torch.Tensor
        ``B×C`` predicted IoU.
    sam_logits : torch.Tensor
        ``B×C×L×L`` logits of the chosen SAM tokens.
    hq_logits : torch.Tensor or None
        ``B×1×L×L`` HQ-token logits (HQ / SUM models), else None.
    """

    logits: torch.Tensor
    iou: torch.Tensor
    sam_logits: torch.Tensor
    hq_logits: torch.Tensor | None
