"""TinyViTEncoder against the reference TinyViT of ``segment_anything_hq`` (vit_tiny)."""

from __future__ import annotations

import pytest
import torch

import reference_impl
from sum_core.errors import InvalidInputError
from sum_core.modeling.config import ModelConfig, preset_config
from sum_core.modeling.tiny_vit import TinyViTEncoder, attention_bias_index

# The reference picks the stride of a merge from its output width (stride 1 only
# for 320 / 448 / 576), so a comparable small model must end with 320 channels.
REFERENCE_SMALL = dict(
    tiny_embed_dims=(16, 32, 40, 320),
    tiny_depths=(2, 1, 2, 1),
    tiny_num_heads=(1, 2, 2, 4),
)
NARROW = dict(
    tiny_embed_dims=(16, 32, 40, 64),
    tiny_depths=(1, 1, 1, 1),
    tiny_num_heads=(1, 2, 2, 2),
)


def _config(**overrides) -> ModelConfig:
    return preset_config("vit_tiny").replace(model_type="custom", **overrides)


def _reference_encoder(config: ModelConfig) -> torch.nn.Module:
    """The reference TinyViT with the arguments its vit_tiny builder uses."""
    reference_impl.sam_hq()
    from segment_anything_hq.modeling.tiny_vit_sam import TinyViT

    return TinyViT(
        img_size=config.image_size,
        in_chans=3,
        num_classes=1000,
        embed_dims=list(config.tiny_embed_dims),
        depths=list(config.tiny_depths),
        num_heads=list(config.tiny_num_heads),
        window_sizes=list(config.tiny_window_sizes),
        mlp_ratio=config.tiny_mlp_ratio,
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
        layer_lr_decay=0.8,
    )


@torch.no_grad()
def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Give every parameter and BatchNorm running statistic a non-trivial random value."""
    gen = torch.Generator().manual_seed(seed)

    def rand(t: torch.Tensor) -> torch.Tensor:
        return torch.randn(t.shape, generator=gen)

    for name, p in model.named_parameters():
        if name.endswith("attention_biases"):
            p.copy_(rand(p))
        elif p.ndim > 1:
            p.copy_(rand(p) / (p[0].numel() ** 0.5))
        elif name.endswith("weight"):
            p.copy_(1.0 + 0.3 * rand(p))
        else:
            p.copy_(0.1 * rand(p))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(0.1 * rand(module.running_mean))
            module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=gen))
            module.num_batches_tracked.fill_(7)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_matches_reference_on_random_weights():
    config = _config(**REFERENCE_SMALL)
    ours = TinyViTEncoder(config)
    _randomise(ours, seed=0)
    ref = _reference_encoder(config)
    ref.load_state_dict(ours.state_dict(), strict=True)
    ours.eval()
    ref.eval()  # after loading: the reference caches the gathered bias in eval()
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        emb, early = ours(x)
        ref_emb, ref_interm = ref(x)
    assert emb.shape == (1, 256, 64, 64)
    assert early.shape == (1, 64, 64, 40)
    assert len(ref_interm) == 1
    assert _rel_err(emb, ref_emb) < 1e-4
    assert _rel_err(early, ref_interm[0]) < 1e-4
    # The comparison is not trivial: the outputs vary across positions and channels.
    assert emb.std() > 0.1 and early.std() > 0.1


def test_real_size_key_layout_and_parameter_count():
    config = preset_config("vit_tiny")
    with torch.device("meta"):
        ours = TinyViTEncoder(config)
    # The reference's constructor calls Tensor.item(), which meta tensors refuse, so it
    # is built on the CPU (6M parameters, cheap).
    ref = _reference_encoder(config)
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert ours_shapes == ref_shapes
    assert len(ours_shapes) == 302
    assert sum(p.numel() for p in ours.parameters()) == 6_065_532
    assert ours_shapes["layers.1.blocks.0.attn.attention_biases"] == (4, 49)
    assert ours_shapes["layers.2.blocks.0.attn.attention_biases"] == (5, 196)
    assert ours_shapes["layers.3.blocks.0.attn.attention_biases"] == (10, 49)
    assert ours_shapes["head.weight"] == (1000, 320)
    assert ours_shapes["neck.0.weight"] == (256, 320, 1, 1)
    # The last merge keeps the resolution (stride 1), the others halve it.
    assert ours.layers[2].downsample.conv2.c.stride == (1, 1)
    assert ours.layers[1].downsample.conv2.c.stride == (2, 2)


def test_loading_new_weights_changes_the_output():
    config = _config(**NARROW)
    model = TinyViTEncoder(config)
    _randomise(model, seed=2)
    model.eval()
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before, _ = model(x)
    state = model.state_dict()
    gen = torch.Generator().manual_seed(4)
    for key in state:
        if key.endswith("attention_biases"):
            state[key] = torch.randn(state[key].shape, generator=gen)
    model.load_state_dict(state)  # still in eval mode: nothing may be cached from before
    fresh = TinyViTEncoder(config)
    fresh.load_state_dict(state)
    fresh.eval()
    with torch.no_grad():
        after, early = model(x)
        expected, expected_early = fresh(x)
    assert _rel_err(after, before) > 1e-2
    torch.testing.assert_close(after, expected)
    torch.testing.assert_close(early, expected_early)


def test_narrow_model_shapes_and_batch_independence():
    config = _config(**NARROW)
    model = TinyViTEncoder(config)
    _randomise(model, seed=5)
    model.eval()
    x = torch.randn(2, 3, 1024, 1024, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        emb, early = model(x)
        emb1, early1 = model(x[1:])
    assert emb.shape == (2, 256, 64, 64)
    assert early.shape == (2, 64, 64, 40)
    torch.testing.assert_close(emb[1:], emb1, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(early[1:], early1, rtol=1e-4, atol=1e-5)


def test_attention_bias_index_uses_absolute_offsets():
    idx = attention_bias_index(3)
    assert idx.shape == (9, 9)
    assert idx[0].tolist() == list(range(9))  # from (0, 0) every offset appears once
    # token (1, 2) = 5 to token (2, 0) = 6: offset (1, 2) -> column 1 * 3 + 2
    assert idx[5, 6] == 5 and idx[6, 5] == 5
    assert torch.equal(idx.diagonal(), torch.zeros(9, dtype=torch.long))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(tiny_depths=(1, 1, 1)), "tiny_depths"),
        (dict(tiny_num_heads=(2, 4, 3, 10)), "tiny_embed_dims\\[2\\]=160 must be divisible"),
        (dict(image_size=1000), "image_size=1000"),
        (dict(patch_size=8), "patch_size=8"),
    ],
)
def test_invalid_config_is_rejected(overrides, message):
    with pytest.raises(InvalidInputError, match=message):
        TinyViTEncoder(_config(**overrides))
