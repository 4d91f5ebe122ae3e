"""Small architectures for fast tests (random weights, official key layout).

The input stays 1024 x 1024 with a 64 x 64 embedding, like every official
model, so pre/post-processing is exercised at the real sizes; only the encoder
is narrow and shallow.
"""

from __future__ import annotations

from sum_core.modeling.config import ModelConfig, preset_config


def small_vit_config(hq: bool = True, sum_tokens: bool = False) -> ModelConfig:
    """A 2-block ViT (32 wide, 2 heads, block 1 global) with the real decoder."""
    return preset_config(
        "vit_b",
        model_type="custom",
        embed_dim=32,
        depth=2,
        num_heads=2,
        global_attn_indexes=(1,),
        hq=hq,
        sum_tokens=sum_tokens,
    )


def small_tiny_vit_config(hq: bool = True, sum_tokens: bool = False) -> ModelConfig:
    """A TinyViT with one block per stage and narrow stages.

    The last stage keeps 320 channels: the reference keeps the 64 x 64 grid in
    its last patch merging only for widths 320/448/576.
    """
    return preset_config(
        "vit_tiny",
        model_type="custom",
        tiny_embed_dims=(16, 32, 40, 320),
        tiny_depths=(1, 1, 1, 1),
        tiny_num_heads=(1, 2, 2, 4),
        hq=hq,
        sum_tokens=sum_tokens,
    )
