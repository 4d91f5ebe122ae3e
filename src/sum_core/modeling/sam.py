"""The assembled model: image encoder, prompt encoder, mask decoder, pre/post-processing."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .embedding import DecodedMasks, ImageEmbedding
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class SamModel(nn.Module):
    """SAM / HQ-SAM / SUM model with the official state-dict layout.

    Parameters
    ----------
    config : ModelConfig
        Architecture description.
    image_encoder : nn.Module
        ``ViTEncoder`` or ``TinyViTEncoder`` built from ``config``.
    prompt_encoder : PromptEncoder
    mask_decoder : MaskDecoder
    """

    def __init__(
        self,
        config: ModelConfig,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
    ) -> None:
        super().__init__()
        self.config = config
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        mean = torch.tensor(PIXEL_MEAN).view(-1, 1, 1)
        std = torch.tensor(PIXEL_STD).view(-1, 1, 1)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``B×3×h×w`` RGB values in 0..255 and zero-pad bottom/right to ``S×S``."""
        size = self.config.image_size
        x = (x - self.pixel_mean) / self.pixel_std
        return F.pad(x, (0, size - x.shape[-1], 0, size - x.shape[-2]))

    def postprocess_masks(
        self,
        low_res: torch.Tensor,
        input_size: tuple[int, int] | torch.Tensor,
        original_size: tuple[int, int] | torch.Tensor,
    ) -> torch.Tensor:
        """Upscale decoder logits to the original image (no threshold).

        Parameters
        ----------
        low_res : torch.Tensor
            ``B×C×L×L`` logits.
        input_size : tuple of int or torch.Tensor
            ``(h, w)`` of the resized image inside the padded ``S×S`` input.
        original_size : tuple of int or torch.Tensor
            ``(H, W)`` of the original image. Sizes given as int64 tensors of 2 values
            (inputs of an exported graph) are always resized to (no identity shortcut).

        Returns
        -------
        torch.Tensor
            ``B×C×H×W`` logits.
        """
        size = self.config.image_size
        masks = F.interpolate(low_res, (size, size), mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        if not isinstance(original_size, torch.Tensor) and tuple(masks.shape[-2:]) == tuple(original_size):
            return masks  # a same-size bilinear resize is the identity: skip the copy
        size = (original_size[0], original_size[1])
        return F.interpolate(masks, size, mode="bilinear", align_corners=False)

    def with_hq_features(self, image: ImageEmbedding, keep_early: bool = True) -> ImageEmbedding:
        """``image`` with its HQ features fused (``mask_decoder.hq_features``), once.

        Unchanged for a plain SAM model or when they are there already. Gradients follow the
        caller's mode (training fuses them with gradients, once per image). ``keep_early=False``
        drops the early feature, which decoding no longer needs (memory of cached tiles).
        """
        if self.config.hq and image.hq_features is None:
            image = replace(image, hq_features=self.mask_decoder.hq_features(image.embedding, image.early))
        return image if keep_early else replace(image, early=None)

    def decode(
        self,
        image: ImageEmbedding,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        boxes: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        task: int | None = None,
        multimask: bool = False,
        hq_token_only: bool = False,
    ) -> DecodedMasks:
        """The decode step: prompts in the model frame -> low-resolution masks.

        Every consumer decodes through here (predictors, automatic segmentation,
        training, evaluation). Differentiable: no ``no_grad`` inside (callers choose).
        The image embedding is broadcast over the ``B`` prompts, not copied.

        Parameters
        ----------
        image : ImageEmbedding
            The encoded image; its ``hq_features`` are computed here when absent.
        points : (coords B×N×2, labels B×N), optional
            Clicks in SAM's (x, y) input frame (see :func:`sum_core.prompts.to_model_frame`).
        boxes : torch.Tensor, optional
            ``B×4`` boxes (x0, y0, x1, y1) in the input frame.
        masks : torch.Tensor, optional
            ``B×1×L×L`` (or ``1×1×L×L``) mask-prompt logits.
        task : int, optional
            SUM task (0, 1, 2); ignored by models without SUM task tables; None adds none.
        multimask, hq_token_only : bool
            Output selection, see :meth:`MaskDecoder.select_outputs`; plain SAM with
            ``multimask`` keeps its 3 candidates.

        Returns
        -------
        DecodedMasks
        """
        hq_features = self.with_hq_features(image).hq_features
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=masks)
        return self.decode_embedded(image.embedding, hq_features, sparse, dense, task, multimask, hq_token_only)

    def decode_embedded(
        self,
        embedding: torch.Tensor,
        hq_features: torch.Tensor | None,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        task: int | torch.Tensor | None,
        multimask: bool,
        hq_token_only: bool,
    ) -> DecodedMasks:
        """The second half of :meth:`decode`: embedded prompts -> low-resolution masks.

        :meth:`decode` embeds the prompts with the prompt encoder; an exported ONNX decoder
        embeds them with SAM's ONNX interface (``sum_core.export``) and decodes here.

        Parameters
        ----------
        embedding : torch.Tensor
            ``1×256×E×E`` (or ``B×...``) image embedding.
        hq_features : torch.Tensor or None
            ``1×32×L×L`` fused HQ features (HQ / SUM models), else None.
        sparse, dense : torch.Tensor
            ``B×K×256`` and ``B×256×E×E`` prompt embeddings.
        task : int, 0-d int64 torch.Tensor or None
            SUM task (ignored by models without SUM task tables).
        multimask, hq_token_only : bool
            As :meth:`decode`.

        Returns
        -------
        DecodedMasks
        """
        out = self.mask_decoder(
            image_embeddings=embedding,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            hq_features=hq_features,
            task=task if self.config.sum_tokens else None,
        )
        logits, iou, sam_logits = self.mask_decoder.select_outputs(out, multimask, hq_token_only)
        return DecodedMasks(logits, iou, sam_logits, out.hq_logits)
