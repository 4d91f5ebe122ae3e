"""The assembled model: image encoder, prompt encoder, mask decoder, pre/post-processing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
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
        input_size: tuple[int, int],
        original_size: tuple[int, int],
    ) -> torch.Tensor:
        """Upscale decoder logits to the original image (no threshold).

        Parameters
        ----------
        low_res : torch.Tensor
            ``B×C×L×L`` logits.
        input_size : tuple of int
            ``(h, w)`` of the resized image inside the padded ``S×S`` input.
        original_size : tuple of int
            ``(H, W)`` of the original image.

        Returns
        -------
        torch.Tensor
            ``B×C×H×W`` logits.
        """
        size = self.config.image_size
        masks = F.interpolate(low_res, (size, size), mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        if tuple(masks.shape[-2:]) == tuple(original_size):
            return masks  # a same-size bilinear resize is the identity: skip the copy
        return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)
