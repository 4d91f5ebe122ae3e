"""SAM's prompt encoder: points, boxes and mask logits to sparse and dense embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import LayerNorm2d
from .config import ModelConfig


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier-feature positional encoding (``positional_encoding_gaussian_matrix``).

    Parameters
    ----------
    num_pos_feats : int
        Half the output width (sin and cos are concatenated).
    """

    def __init__(self, num_pos_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_pos_feats))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """Encode ``...×2`` (x, y) coordinates normalised to ``[0, 1]`` as ``...×2F`` features."""
        projected = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        projected = 2 * math.pi * projected
        return torch.cat([torch.sin(projected), torch.cos(projected)], dim=-1)

    def dense(self, size: int) -> torch.Tensor:
        """Encoding of the centres of a ``size×size`` grid, shape ``2F×size×size``."""
        device = self.positional_encoding_gaussian_matrix.device
        dtype = self.positional_encoding_gaussian_matrix.dtype
        centres = (torch.arange(size, device=device, dtype=dtype) + 0.5) / size
        y, x = torch.meshgrid(centres, centres, indexing="ij")
        return self.encode(torch.stack([x, y], dim=-1)).permute(2, 0, 1)


class PromptEncoder(nn.Module):
    """SAM's prompt encoder with the reference state-dict keys.

    Parameters
    ----------
    config : ModelConfig
        Uses ``prompt_embed_dim``, ``image_size``, ``embedding_size`` and ``mask_in_chans``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        dim = config.prompt_embed_dim
        chans = config.mask_in_chans
        self.embed_dim = dim
        self.input_size = config.image_size
        self.embedding_size = config.embedding_size
        self.pe_layer = PositionEmbeddingRandom(dim // 2)
        # 0 negative point, 1 positive point, 2 box top-left, 3 box bottom-right.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(chans // 4),
            nn.GELU(),
            nn.Conv2d(chans // 4, chans, kernel_size=2, stride=2),
            LayerNorm2d(chans),
            nn.GELU(),
            nn.Conv2d(chans, dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image-embedding grid, ``1×256×E×E``."""
        return self.pe_layer.dense(self.embedding_size).unsqueeze(0)

    def _embed_coords(self, coords: torch.Tensor) -> torch.Tensor:
        """Encode ``B×N×2`` (x, y) pixel coordinates of the S-frame (pixel centres)."""
        return self.pe_layer.encode((coords + 0.5) / self.input_size)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """Point tokens ``B×N(+1)×256`` of ``B×N×2`` (x, y) S-frame clicks and their ``B×N`` labels.

        Labels select the tables without control flow (1 positive, 0 negative, 2 / 3 box
        corners, -1 padding: ``not_a_point_embed`` and no positional term), as SAM's ONNX
        decoder does; ``pad`` appends SAM's (0, 0) / -1 padding point.
        """
        if pad:
            coords = torch.cat([coords, coords.new_zeros(coords.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), -1)], dim=1)
        labels = labels[..., None]
        embedding = self._embed_coords(coords) * (labels != -1)
        embedding = embedding + (labels == -1) * self.not_a_point_embed.weight
        for value, table in enumerate(self.point_embeddings):
            embedding = embedding + (labels == value) * table.weight
        return embedding

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        corners = self._embed_coords(boxes.reshape(-1, 2, 2))
        corner_tables = torch.cat(
            [self.point_embeddings[2].weight, self.point_embeddings[3].weight]
        )
        return corners + corner_tables

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed prompts.

        Parameters
        ----------
        points : tuple of torch.Tensor, optional
            ``(coords B×N×2 float (x, y) in the S-frame, labels B×N int)``; labels 1 positive,
            0 negative, -1 padding (2 / 3 box corners). A padding point is appended when
            ``boxes`` is None.
        boxes : torch.Tensor, optional
            ``B×4`` (x0, y0, x1, y1) in the S-frame.
        masks : torch.Tensor, optional
            ``B×1×L×L`` mask logits.

        Returns
        -------
        sparse : torch.Tensor
            ``B×K×256`` point and box tokens.
        dense : torch.Tensor
            ``B×256×E×E`` mask embedding (or the broadcast no-mask embedding).
        """
        if points is not None:
            batch = points[0].shape[0]
        elif boxes is not None:
            batch = boxes.shape[0]
        elif masks is not None:
            batch = masks.shape[0]
        else:
            batch = 1
        weight = self.no_mask_embed.weight
        parts = [weight.new_empty(batch, 0, self.embed_dim)]
        if points is not None:
            coords, labels = points
            parts.append(self.embed_points(coords.to(weight.dtype), labels, pad=boxes is None))
        if boxes is not None:
            parts.append(self._embed_boxes(boxes.to(weight.dtype)))
        sparse = torch.cat(parts, dim=1)
        return sparse, self.embed_masks(masks, batch)

    def embed_masks(self, masks: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Dense embedding ``B×256×E×E`` of ``B×1×L×L`` mask logits, or the no-mask embedding
        broadcast over ``batch`` prompts (no copy) when ``masks`` is None."""
        if masks is not None:
            return self.mask_downscaling(masks)
        size = self.embedding_size
        return self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, size, size)
