"""SAM mask decoder with the optional HQ-SAM extension and SUM task-prompt tables."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..errors import InvalidInputError
from .common import MLP, LayerNorm2d
from .config import ModelConfig
from .transformer import TwoWayTransformer


class DecoderOutput(NamedTuple):
    """Raw decoder outputs for ``B`` prompts.

    Attributes
    ----------
    sam_logits : torch.Tensor
        ``B×4×L×L`` logits of the four SAM mask tokens.
    iou : torch.Tensor
        ``B×4`` predicted IoU of the SAM tokens.
    hq_logits : torch.Tensor or None
        ``B×1×L×L`` logits of the HQ token (None for plain SAM).
    """

    sam_logits: torch.Tensor
    iou: torch.Tensor
    hq_logits: torch.Tensor | None


def _upscaler(in_dim: int, mid_dim: int, out_dim: int, final_gelu: bool) -> nn.Sequential:
    """ConvT(2,2) -> LayerNorm2d -> GELU -> ConvT(2,2) [-> GELU]: 4× upsampling."""
    layers: list[nn.Module] = [
        nn.ConvTranspose2d(in_dim, mid_dim, kernel_size=2, stride=2),
        LayerNorm2d(mid_dim),
        nn.GELU(),
        nn.ConvTranspose2d(mid_dim, out_dim, kernel_size=2, stride=2),
    ]
    if final_gelu:
        layers.append(nn.GELU())
    return nn.Sequential(*layers)


def _zero_tables(count: int, rows: int, dim: int) -> nn.ModuleList:
    tables = nn.ModuleList(nn.Embedding(rows, dim) for _ in range(count))
    for table in tables:
        nn.init.zeros_(table.weight)
    return tables


class MaskDecoder(nn.Module):
    """Predict mask logits and IoU scores from image and prompt embeddings.

    Parameters
    ----------
    config : ModelConfig
        Uses the decoder sizes, ``hq`` (HQ token and fusion layers), ``sum_tokens``
        (task tables, zero-initialised) and ``early_feature_dim``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        dim = config.prompt_embed_dim
        self.num_mask_tokens = config.num_multimask_outputs + 1
        self.hq = config.hq
        self.sum_tokens = config.sum_tokens
        self.num_task_tokens = config.num_task_tokens
        self.num_task_embeddings = config.num_task_embeddings

        self.transformer = TwoWayTransformer(
            config.decoder_depth, dim, config.decoder_num_heads, config.decoder_mlp_dim
        )
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.output_upscaling = _upscaler(dim, dim // 4, dim // 8, final_gelu=True)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            dim, config.iou_head_hidden_dim, self.num_mask_tokens, config.iou_head_depth
        )
        if config.hq:
            self.hf_token = nn.Embedding(1, dim)
            self.hf_mlp = MLP(dim, dim, dim // 8, 3)
            self.compress_vit_feat = _upscaler(config.early_feature_dim, dim, dim // 8, False)
            self.embedding_encoder = _upscaler(dim, dim // 4, dim // 8, False)
            self.embedding_maskfeature = nn.Sequential(
                nn.Conv2d(dim // 8, dim // 4, 3, 1, 1),
                LayerNorm2d(dim // 4),
                nn.GELU(),
                nn.Conv2d(dim // 4, dim // 8, 3, 1, 1),
            )
        if config.sum_tokens:
            self.task_prompt_tokens = _zero_tables(
                config.num_task_tokens, self.num_mask_tokens, dim
            )
            self.hf_type_tokens = _zero_tables(config.num_task_tokens, 1, dim)
            self.task_prompt_embeddings = _zero_tables(config.num_task_embeddings, 1, dim)

    def hq_features(self, image_embedding: torch.Tensor, early: torch.Tensor) -> torch.Tensor:
        """Fuse the final and early encoder features (once per image).

        Parameters
        ----------
        image_embedding : torch.Tensor
            ``B×256×E×E`` image embedding.
        early : torch.Tensor
            ``B×E×E×C`` early encoder feature.

        Returns
        -------
        torch.Tensor
            ``B×32×L×L`` HQ features.

        Raises
        ------
        InvalidInputError
            If the decoder has no HQ layers.
        """
        if not self.hq:
            raise InvalidInputError("hq_features: this is a plain SAM decoder (config.hq=False)")
        return self.embedding_encoder(image_embedding) + self.compress_vit_feat(
            early.permute(0, 3, 1, 2)
        )

    def _check_inputs(
        self,
        image_embeddings: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        hq_features: torch.Tensor | None,
        task: int | torch.Tensor | None,
    ) -> None:
        batch = sparse.shape[0]
        if dense.shape[0] != batch:
            raise InvalidInputError(
                f"dense_prompt_embeddings has batch {dense.shape[0]}, expected {batch} "
                "(the batch of sparse_prompt_embeddings)"
            )
        if image_embeddings.shape[0] not in (1, batch):
            raise InvalidInputError(
                f"image_embeddings has batch {image_embeddings.shape[0]}, expected 1 or {batch}"
            )
        if self.hq:
            if hq_features is None:
                raise InvalidInputError("hq_features is required by an HQ decoder, got None")
            if hq_features.shape[0] not in (1, batch):
                raise InvalidInputError(
                    f"hq_features has batch {hq_features.shape[0]}, expected 1 or {batch}"
                )
        if task is not None:
            if not self.sum_tokens:
                raise InvalidInputError(
                    f"task={task!r} needs a SUM model (config.sum_tokens=True); use task=None"
                )
            if isinstance(task, torch.Tensor):
                return  # an exported graph's task input: its values cannot be checked while tracing
            if not 0 <= task < self.num_task_tokens:
                raise InvalidInputError(
                    f"task={task!r} is out of range; valid tasks are 0..{self.num_task_tokens - 1}"
                )

    @staticmethod
    def _task_row(tables: nn.ModuleList, task: int | torch.Tensor, count: int) -> torch.Tensor | None:
        """``tables[task].weight``; None for a task without a table (``task >= len(tables)``).

        ``task`` may be a 0-d int64 tensor (an exported graph's input, ``count`` tasks): the
        tables, padded with zero rows for tasks without one, are indexed by it.
        """
        if not isinstance(task, torch.Tensor):
            return tables[task].weight if task < len(tables) else None
        stacked = torch.stack([table.weight for table in tables])
        missing = count - len(tables)
        if missing:
            stacked = torch.cat([stacked, stacked.new_zeros(missing, *stacked.shape[1:])])
        return stacked[task]

    def _output_tokens(self, task: int | torch.Tensor | None) -> torch.Tensor:
        mask_tokens = self.mask_tokens.weight
        count = self.num_task_tokens
        if task is not None:
            mask_tokens = mask_tokens + self._task_row(self.task_prompt_tokens, task, count)
        tokens = [self.iou_token.weight, mask_tokens]
        if self.hq:
            hf_token = self.hf_token.weight
            if task is not None:
                hf_token = hf_token + self._task_row(self.hf_type_tokens, task, count)
            tokens.append(hf_token)
        return torch.cat(tokens, dim=0)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        hq_features: torch.Tensor | None = None,
        task: int | torch.Tensor | None = None,
    ) -> DecoderOutput:
        """Decode ``B`` prompts.

        Parameters
        ----------
        image_embeddings : torch.Tensor
            ``1×256×E×E`` (broadcast over prompts) or ``B×256×E×E``.
        image_pe : torch.Tensor
            ``1×256×E×E`` dense positional encoding.
        sparse_prompt_embeddings : torch.Tensor
            ``B×K×256`` prompt tokens.
        dense_prompt_embeddings : torch.Tensor
            ``B×256×E×E`` dense prompt embedding.
        hq_features : torch.Tensor, optional
            ``1×32×L×L`` or ``B×32×L×L`` output of :meth:`hq_features`; required by HQ
            decoders.
        task : int or torch.Tensor, optional
            SUM task (0 SAM / unlabeled, 1 salient object, 2 entity); None adds no task offsets.
            A 0-d int64 tensor selects the tables inside an exported graph (values unchecked).

        Returns
        -------
        DecoderOutput
            All raw token outputs.

        Raises
        ------
        InvalidInputError
            On mismatched batches, missing ``hq_features`` or an invalid ``task``.
        """
        self._check_inputs(
            image_embeddings, sparse_prompt_embeddings, dense_prompt_embeddings, hq_features, task
        )
        batch = sparse_prompt_embeddings.shape[0]
        output_tokens = self._output_tokens(task)
        tokens = torch.cat(
            [output_tokens.unsqueeze(0).expand(batch, -1, -1), sparse_prompt_embeddings], dim=1
        )
        src = image_embeddings + dense_prompt_embeddings
        task_embedding = None
        if task is not None:
            task_embedding = self._task_row(self.task_prompt_embeddings, task, self.num_task_tokens)
        if task_embedding is not None:
            src = src + task_embedding.reshape(1, -1, 1, 1)
        b, c, h, w = src.shape

        hs, keys = self.transformer(src, image_pe, tokens)
        iou_out = hs[:, 0]
        mask_out = hs[:, 1 : 1 + self.num_mask_tokens]

        upscaled = self.output_upscaling(keys.transpose(1, 2).reshape(b, c, h, w))
        hyper = torch.stack(
            [mlp(mask_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        up_c, up_h, up_w = upscaled.shape[1:]
        sam_logits = (hyper @ upscaled.flatten(2)).view(b, -1, up_h, up_w)
        iou = self.iou_prediction_head(iou_out)

        hq_logits = None
        if self.hq:
            hq_up = self.embedding_maskfeature(upscaled) + hq_features
            hq_hyper = self.hf_mlp(hs[:, 1 + self.num_mask_tokens]).unsqueeze(1)
            hq_logits = (hq_hyper @ hq_up.reshape(b, up_c, up_h * up_w)).view(b, 1, up_h, up_w)
        return DecoderOutput(sam_logits, iou, hq_logits)

    @staticmethod
    def select_outputs(
        out: DecoderOutput, multimask: bool, hq_token_only: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Choose the returned masks as the reference decoders do.

        Parameters
        ----------
        out : DecoderOutput
            Raw outputs of :meth:`forward`.
        multimask : bool
            Plain SAM: return tokens 1.. (3 masks) instead of token 0. HQ: use the best of
            tokens 1.. by predicted IoU instead of token 0.
        hq_token_only : bool
            HQ only: return the HQ logits alone instead of SAM + HQ (ignored by plain SAM).

        Returns
        -------
        logits : torch.Tensor
            ``B×C×L×L`` (C = 3 or 1 for plain SAM, 1 for HQ).
        iou : torch.Tensor
            ``B×C`` predicted IoU of the chosen SAM tokens.
        sam_logits : torch.Tensor
            ``B×C×L×L`` logits of the chosen SAM tokens.
        """
        if multimask:
            sam_logits, iou = out.sam_logits[:, 1:], out.iou[:, 1:]
        else:
            sam_logits, iou = out.sam_logits[:, :1], out.iou[:, :1]
        if out.hq_logits is None:
            return sam_logits, iou, sam_logits
        if multimask:
            iou, best = iou.max(dim=1, keepdim=True)
            rows = torch.arange(sam_logits.shape[0], device=sam_logits.device)
            sam_logits = sam_logits[rows, best[:, 0]].unsqueeze(1)
        logits = out.hq_logits if hq_token_only else sam_logits + out.hq_logits
        return logits, iou, sam_logits
