"""Reference (PyPI segment-anything / segment-anything-hq) models with our weights."""

from __future__ import annotations

from functools import partial

import torch

import reference_impl
from sum_core.modeling import SamModel
from sum_core.modeling.config import ModelConfig

PIXEL_MEAN = [123.675, 116.28, 103.53]
PIXEL_STD = [58.395, 57.12, 57.375]


def reference_sam(config: ModelConfig) -> torch.nn.Module:
    """Build the reference model of ``config`` (HQ from sam-hq, plain SAM from segment-anything)."""
    package = reference_impl.sam_hq() if config.hq else reference_impl.sam()
    modeling = package.modeling
    grid = config.embedding_size
    if config.encoder == "vit":
        encoder = modeling.ImageEncoderViT(
            depth=config.depth,
            embed_dim=config.embed_dim,
            img_size=config.image_size,
            mlp_ratio=config.mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=config.num_heads,
            patch_size=config.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=list(config.global_attn_indexes),
            window_size=config.window_size,
            out_chans=config.prompt_embed_dim,
        )
    else:
        encoder = reference_impl.sam_hq().modeling.TinyViT(
            img_size=config.image_size, in_chans=3, num_classes=1000,
            embed_dims=list(config.tiny_embed_dims), depths=list(config.tiny_depths),
            num_heads=list(config.tiny_num_heads), window_sizes=list(config.tiny_window_sizes),
            mlp_ratio=config.tiny_mlp_ratio, drop_rate=0.0, drop_path_rate=0.0, use_checkpoint=False,
            mbconv_expand_ratio=4.0, local_conv_size=3, layer_lr_decay=0.8,
        )
    transformer = modeling.TwoWayTransformer(
        depth=config.decoder_depth,
        embedding_dim=config.prompt_embed_dim,
        mlp_dim=config.decoder_mlp_dim,
        num_heads=config.decoder_num_heads,
    )
    decoder_args = dict(
        num_multimask_outputs=config.num_multimask_outputs,
        transformer=transformer,
        transformer_dim=config.prompt_embed_dim,
        iou_head_depth=config.iou_head_depth,
        iou_head_hidden_dim=config.iou_head_hidden_dim,
    )
    decoder = (
        modeling.MaskDecoderHQ(**decoder_args, vit_dim=config.early_feature_dim)
        if config.hq
        else modeling.MaskDecoder(**decoder_args)
    )
    prompt_encoder = modeling.PromptEncoder(
        embed_dim=config.prompt_embed_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(config.image_size, config.image_size),
        mask_in_chans=config.mask_in_chans,
    )
    return modeling.Sam(
        image_encoder=encoder,
        prompt_encoder=prompt_encoder,
        mask_decoder=decoder,
        pixel_mean=PIXEL_MEAN,
        pixel_std=PIXEL_STD,
    )


def reference_with_weights(model: SamModel) -> torch.nn.Module:
    """The reference model carrying ``model``'s weights (loaded strictly), in eval mode."""
    reference = reference_sam(model.config)
    reference.load_state_dict(model.state_dict(), strict=True)
    return reference.eval()


def randomize_(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Fill every parameter and buffer of ``model`` with random values (in place).

    Zero-initialised tensors (relative positions, SUM tables) would otherwise
    hide bugs; norms get weights near 1 and running variances stay positive.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if not tensor.is_floating_point():
                continue
            if "pixel_" in name:
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.copy_(1.0 + scale * noise.abs())
            elif ("norm" in name or name.endswith("bn.weight")) and name.endswith("weight"):
                tensor.copy_(1.0 + scale * noise)
            elif tensor.dim() >= 2:
                tensor.copy_(noise / tensor[0].numel() ** 0.5)
            else:
                tensor.copy_(scale * noise)
    return model
