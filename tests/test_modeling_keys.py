"""State-dict keys and shapes of real-size models against the reference implementations.

Everything is built on the meta device, so no memory is allocated and no time is spent.
"""

from __future__ import annotations

import pytest
import torch

from reference_impl import sam as ref_sam
from reference_impl import sam_hq as ref_sam_hq
from sum_core.errors import InvalidInputError
from sum_core.modeling import PRESETS, SamModel, build_from_config, build_model

# (parameters, state-dict keys) from sam-hq-architecture.md section 1.2.
EXPECTED = {
    ("vit_b", False): (93_735_472, 314),
    ("vit_b", True): (94_806_576, 339),
    ("vit_l", False): (312_342_832, 482),
    ("vit_l", True): (313_676_080, 507),
    ("vit_h", False): (641_090_608, 594),
    ("vit_h", True): (642_686_000, 619),
}
SUM_SHAPES = {
    **{f"mask_decoder.task_prompt_tokens.{i}.weight": (4, 256) for i in range(3)},
    **{f"mask_decoder.hf_type_tokens.{i}.weight": (1, 256) for i in range(3)},
    **{f"mask_decoder.task_prompt_embeddings.{i}.weight": (1, 256) for i in range(2)},
}


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _reference_model(model_type: str, hq: bool) -> torch.nn.Module:
    """The reference builder's module tree (sam-hq's Sam with SAM's or HQ-SAM's decoder)."""
    hq_pkg = ref_sam_hq()
    modeling = hq_pkg.modeling
    cfg = PRESETS[model_type]
    encoder = modeling.ImageEncoderViT(
        depth=cfg.depth,
        embed_dim=cfg.embed_dim,
        img_size=1024,
        mlp_ratio=4,
        norm_layer=lambda d: torch.nn.LayerNorm(d, eps=1e-6),
        num_heads=cfg.num_heads,
        patch_size=16,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=list(cfg.global_attn_indexes),
        window_size=14,
        out_chans=256,
    )
    prompt = modeling.PromptEncoder(
        embed_dim=256,
        image_embedding_size=(64, 64),
        input_image_size=(1024, 1024),
        mask_in_chans=16,
    )
    transformer = modeling.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8)
    if hq:
        decoder = modeling.MaskDecoderHQ(
            num_multimask_outputs=3,
            transformer=transformer,
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
            vit_dim=cfg.embed_dim,
        )
    else:
        decoder = ref_sam().modeling.MaskDecoder(
            num_multimask_outputs=3,
            transformer=transformer,
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        )
    return modeling.Sam(image_encoder=encoder, prompt_encoder=prompt, mask_decoder=decoder)


@pytest.mark.parametrize(("model_type", "hq"), sorted(EXPECTED))
def test_keys_and_shapes_match_reference(model_type: str, hq: bool) -> None:
    with torch.device("meta"):
        ours = build_model(model_type, hq=hq)
        ref = _reference_model(model_type, hq)
    assert _shapes(ours) == _shapes(ref)
    params, keys = EXPECTED[(model_type, hq)]
    assert sum(p.numel() for p in ours.parameters()) == params
    assert len(ours.state_dict()) == keys


def test_vit_b_official_shapes() -> None:
    with torch.device("meta"):
        shapes = _shapes(build_model("vit_b"))
    assert shapes["image_encoder.pos_embed"] == (1, 64, 64, 768)
    assert shapes["image_encoder.blocks.0.attn.rel_pos_h"] == (27, 64)
    assert shapes["image_encoder.blocks.2.attn.rel_pos_w"] == (127, 64)
    assert shapes["image_encoder.neck.0.weight"] == (256, 768, 1, 1)
    assert shapes["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] == (2, 128)
    assert shapes["mask_decoder.compress_vit_feat.0.weight"] == (768, 256, 2, 2)
    assert shapes["mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight"] == (
        128,
        256,
    )
    assert "pixel_mean" not in shapes and "pixel_std" not in shapes


def test_sum_keys_are_hq_keys_plus_task_tables() -> None:
    with torch.device("meta"):
        hq = _shapes(build_model("vit_b", hq=True))
        sum_model = _shapes(build_model("vit_b", hq=True, sum_tokens=True))
    assert {k: v for k, v in sum_model.items() if k not in hq} == SUM_SHAPES
    assert set(hq) <= set(sum_model)


def test_sum_tables_start_at_zero() -> None:
    config = PRESETS["vit_b"].replace(
        model_type="custom", embed_dim=32, depth=1, num_heads=2, global_attn_indexes=(0,),
        sum_tokens=True,
    )
    model = build_from_config(config)
    sd = model.state_dict()
    for key in SUM_SHAPES:
        assert torch.count_nonzero(sd[key]) == 0, key


def test_build_model_returns_eval_float32_samodel() -> None:
    with torch.device("meta"):
        model = build_model("vit_b", hq=False)
    assert isinstance(model, SamModel)
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.config.hq is False and not hasattr(model.mask_decoder, "hf_token")


def test_sum_without_hq_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match="sum_tokens=True requires hq=True"):
        build_model("vit_b", hq=False, sum_tokens=True)


def test_unknown_preset_and_option_are_rejected() -> None:
    with pytest.raises(InvalidInputError, match="model_type='vit_x'"):
        build_model("vit_x")
    with pytest.raises(InvalidInputError, match="unknown model option"):
        build_model("vit_b", depthh=3)


def test_empty_global_attention_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match="global_attn_indexes"):
        with torch.device("meta"):
            build_model("vit_b", global_attn_indexes=())
