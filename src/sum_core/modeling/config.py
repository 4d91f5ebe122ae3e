"""Architecture description shared by the model builder and the checkpoint loader.

A :class:`ModelConfig` fully determines the module tree and therefore the
state-dict keys and shapes. The presets reproduce the official SAM / HQ-SAM
sizes (see ``shared/reference/sam-hq-architecture.md`` section 1.2).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import InvalidInputError

EncoderKind = Literal["vit", "tiny_vit"]


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a SAM / HQ-SAM / SUM model.

    Parameters
    ----------
    model_type : str
        Preset name (``"vit_b"``, ``"vit_l"``, ``"vit_h"``, ``"vit_tiny"``) or
        ``"custom"`` for non-standard sizes.
    encoder : {"vit", "tiny_vit"}
        Image encoder family.
    image_size : int
        Side of the square encoder input (1024 for every official model).
    patch_size : int
        ViT patch size; the embedding grid is ``image_size // patch_size``.
    embed_dim, depth, num_heads : int
        ViT width, number of blocks and attention heads.
    global_attn_indexes : tuple of int
        ViT blocks with global attention; the others use windowed attention.
        The output of the first one is HQ-SAM's early feature.
    window_size : int
        Window side of the windowed ViT blocks.
    mlp_ratio : float
        ViT MLP hidden width over ``embed_dim``.
    tiny_embed_dims, tiny_depths, tiny_num_heads, tiny_window_sizes : tuple of int
        TinyViT stage widths, depths, heads and window sizes.
    tiny_mlp_ratio : float
        TinyViT MLP hidden width over the stage width.
    prompt_embed_dim : int
        Width of the image embedding, prompt tokens and decoder.
    mask_in_chans : int
        Hidden channels of the prompt encoder's mask down-scaling.
    decoder_depth, decoder_num_heads, decoder_mlp_dim : int
        Two-way transformer depth, heads and MLP width.
    num_multimask_outputs : int
        Number of multimask tokens (SAM uses 3, so 4 mask tokens in total).
    iou_head_depth, iou_head_hidden_dim : int
        IoU prediction head size.
    hq : bool
        Add HQ-SAM's output token, its MLP and the feature-fusion layers.
    sum_tokens : bool
        Add SUM's task-prompt tokens (requires ``hq``).
    num_task_tokens : int
        Number of SUM task-token tables (tasks 0 .. n-1).
    num_task_embeddings : int
        Number of SUM dense task-prompt embeddings.
    """

    model_type: str = "vit_b"
    encoder: EncoderKind = "vit"
    image_size: int = 1024
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    mlp_ratio: float = 4.0
    tiny_embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    tiny_depths: tuple[int, ...] = (2, 2, 6, 2)
    tiny_num_heads: tuple[int, ...] = (2, 4, 5, 10)
    tiny_window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    tiny_mlp_ratio: float = 4.0
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    hq: bool = True
    sum_tokens: bool = False
    num_task_tokens: int = 3
    num_task_embeddings: int = 2

    @property
    def embedding_size(self) -> int:
        """Side of the image-embedding grid (64 for official models)."""
        return self.image_size // self.patch_size

    @property
    def low_res_size(self) -> int:
        """Side of the decoder's low-resolution logits (256 for official models)."""
        return 4 * self.embedding_size

    @property
    def early_feature_dim(self) -> int:
        """Channels of the early encoder feature that HQ-SAM fuses."""
        return self.tiny_embed_dims[2] if self.encoder == "tiny_vit" else self.embed_dim

    def replace(self, **changes: Any) -> "ModelConfig":
        """Return a copy with ``changes`` applied (unknown names are an error)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise InvalidInputError(
                f"unknown model option(s) {unknown}; valid options are {sorted(known)}"
            )
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, ModelConfig] = {
    "vit_b": ModelConfig(model_type="vit_b"),
    "vit_l": ModelConfig(
        model_type="vit_l",
        embed_dim=1024,
        depth=24,
        num_heads=16,
        global_attn_indexes=(5, 11, 17, 23),
    ),
    "vit_h": ModelConfig(
        model_type="vit_h",
        embed_dim=1280,
        depth=32,
        num_heads=16,
        global_attn_indexes=(7, 15, 23, 31),
    ),
    "vit_tiny": ModelConfig(model_type="vit_tiny", encoder="tiny_vit"),
}


def preset_config(model_type: str, /, **overrides: Any) -> ModelConfig:
    """Return the preset ``model_type`` with ``overrides`` applied.

    ``overrides`` may include ``model_type`` itself (e.g. ``"custom"`` for a
    resized preset).

    Raises
    ------
    InvalidInputError
        If ``model_type`` is not a preset or an override is unknown.
    """
    if model_type not in PRESETS:
        raise InvalidInputError(
            f"model_type={model_type!r} is not known; choose one of {sorted(PRESETS)}"
        )
    config = PRESETS[model_type]
    return config.replace(**overrides) if overrides else config
