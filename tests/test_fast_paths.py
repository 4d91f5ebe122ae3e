"""Every fast path against the plain float32 computation it replaces."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sum_core.modeling import tiny_vit, vit
from sum_core.modeling.vit import ViTEncoder
from sum_core.modeling.workspace import Workspace, workspace_for
from small_models import small_tiny_vit_config, small_vit_config


def _reference_attention(q, k, v, rel_h, rel_w):
    b, heads, h, w, _ = rel_h.shape
    bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, heads, h * w, h * w)
    attn = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5 + bias
    return attn.softmax(-1) @ v


def _attention_inputs(b, heads, h, w, d, seed=0):
    generator = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, heads, h * w, d, generator=generator) for _ in range(3))
    rel_h = torch.randn(b, heads, h, w, h, generator=generator)
    rel_w = torch.randn(b, heads, h, w, w, generator=generator)
    return q, k, v, rel_h, rel_w


@pytest.mark.parametrize("token_major", [False, True])
def test_chunked_attention_equals_full_bias_attention(monkeypatch, token_major):
    b, heads, h, w, d = 3, 2, 12, 10, 8
    q, k, v, rel_h, rel_w = _attention_inputs(b, heads, h, w, d)
    expected = _reference_attention(q, k, v, rel_h, rel_w)
    if token_major:
        expected = expected.transpose(1, 2)
    element = heads * (h * w) ** 2 * 4
    row = b * heads * w * h * w * 4
    # all at once, two batch elements per call (ragged), one element per call, 1 row, 5 rows (ragged)
    for budget in (10**12, 2 * element, element, 1, 5 * row):
        monkeypatch.setattr(vit, "BIAS_CHUNK_BYTES", budget)
        got = vit._biased_attention(q, k, v, rel_h, rel_w, token_major=token_major)
        assert got.is_contiguous()
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def _spy_mask_shapes(monkeypatch):
    shapes = []
    real_sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kwargs):
        shapes.append(tuple(attn_mask.shape))
        return real_sdpa(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(vit.F, "scaled_dot_product_attention", spy)
    return shapes


def test_row_chunks_are_balanced_and_bound_the_bias(monkeypatch):
    shapes = _spy_mask_shapes(monkeypatch)
    b, heads, h, w, d = 1, 2, 8, 8, 4
    q, k, v, rel_h, rel_w = _attention_inputs(b, heads, h, w, d)
    budget = 3 * b * heads * w * h * w * 4  # 3 rows fit: 8 rows go in 3 calls of 2, 3, 3 rows (not 3, 3, 2)
    monkeypatch.setattr(vit, "BIAS_CHUNK_BYTES", budget)
    vit._biased_attention(q, k, v, rel_h, rel_w)
    assert shapes == [(1, 2, 16, 64), (1, 2, 24, 64), (1, 2, 24, 64)]
    assert all(4 * s[0] * s[1] * s[2] * s[3] <= budget for s in shapes)


def test_windows_are_chunked_by_batch_with_every_query_in_one_call(monkeypatch):
    shapes = _spy_mask_shapes(monkeypatch)
    b, heads, h, w, d = 5, 2, 7, 7, 4
    q, k, v, rel_h, rel_w = _attention_inputs(b, heads, h, w, d)
    monkeypatch.setattr(vit, "BIAS_CHUNK_BYTES", 2 * heads * (h * w) ** 2 * 4)
    vit._biased_attention(q, k, v, rel_h, rel_w)
    assert shapes == [(1, 2, 49, 49), (2, 2, 49, 49), (2, 2, 49, 49)]


def _reference_windows(x, window, pad_value):
    """Pad with ``pad_value`` then cut ``B×H×W×C`` into ``(B·nW)×window×window×C`` (SAM's order)."""
    b, h, w, c = x.shape
    hp, wp = -(-h // window) * window, -(-w // window) * window
    padded = pad_value.expand(b, hp, wp, c).clone()
    padded[:, :h, :w] = x
    return padded.view(b, hp // window, window, wp // window, window, c).permute(0, 1, 3, 2, 4, 5).reshape(
        -1, window, window, c
    )


@pytest.mark.parametrize("size", [(14, 14), (16, 19), (5, 5), (28, 13)])
def test_split_and_merge_windows_equal_pad_and_permute(size):
    h, w = size
    b, heads, d, window = 2, 3, 4, 7
    generator = torch.Generator().manual_seed(1)
    qkv = torch.randn(b, h, w, 3, heads, d, generator=generator)
    pad = torch.randn(3, heads, d, generator=generator)
    q, k, v = vit._split_windows(qkv, window, pad)
    expected = _reference_windows(qkv.reshape(b, h, w, -1), window, pad.reshape(-1))
    expected = expected.reshape(-1, window * window, 3, heads, d).permute(2, 0, 3, 1, 4)
    for got, want in zip((q, k, v), expected):
        assert got.is_contiguous()
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    merged = vit._merge_windows(q, window, (h, w))
    assert merged.is_contiguous()
    torch.testing.assert_close(merged, qkv[:, :, :, 0].reshape(b, h, w, heads * d), rtol=0, atol=0)


def test_workspace_reuses_memory_per_name_and_grows():
    like = torch.zeros(1)
    ws = Workspace()
    a = ws.take("a", (2, 3), like)
    again = ws.take("a", (3, 2), like)
    assert again.data_ptr() == a.data_ptr() and again.shape == (3, 2)
    assert ws.take("b", (2, 3), like).data_ptr() != a.data_ptr()
    grown = ws.take("a", (4, 4), like)
    assert grown.shape == (4, 4) and grown.is_contiguous()
    assert ws.take("a", (2, 2), torch.zeros(1, dtype=torch.float64)).dtype == torch.float64


def test_workspace_only_for_plain_cpu_inference():
    x = torch.zeros(1)
    with torch.inference_mode():
        assert isinstance(workspace_for(x), Workspace)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert workspace_for(x) is None
    assert workspace_for(x) is None  # autograd on: out= ops are not differentiable


def test_encoder_with_workspace_equals_plain_forward_and_backward_still_works():
    config = small_vit_config()
    encoder = ViTEncoder(config).eval()
    generator = torch.Generator().manual_seed(0)
    for parameter in encoder.parameters():
        parameter.data.normal_(0, 0.05, generator=generator)
    image = torch.randn(1, 3, 1024, 1024, generator=generator)
    taken = []
    real_take = Workspace.take

    def spy(self, name, shape, like):
        taken.append(name)
        return real_take(self, name, shape, like)

    with torch.inference_mode():
        Workspace.take = spy
        try:
            fast, fast_early = encoder(image)
        finally:
            Workspace.take = real_take
    assert {"qkv", "heads", "bias", "hidden"} <= set(taken)
    plain, plain_early = encoder(image)  # autograd on: no workspace
    torch.testing.assert_close(fast, plain.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast_early, plain_early.detach(), rtol=1e-5, atol=1e-5)
    plain.sum().backward()
    assert encoder.blocks[0].attn.qkv.weight.grad is not None


@pytest.mark.slow
def test_vit_encoder_compiles_with_inductor_and_matches_eager():
    """The workspace and out= paths must step aside under torch.compile (inductor cannot view them)."""
    encoder = ViTEncoder(small_vit_config()).eval()
    generator = torch.Generator().manual_seed(2)
    for parameter in encoder.parameters():
        parameter.data.normal_(0, 0.05, generator=generator)
    image = torch.randn(1, 3, 1024, 1024, generator=generator)
    with torch.inference_mode():
        eager, eager_early = encoder(image)
        encoder.compile(dynamic=False)
        compiled, compiled_early = encoder(image)
    assert encoder._compiled_call_impl is not None
    for got, want in ((compiled, eager), (compiled_early, eager_early)):
        assert ((got - want).norm() / want.norm()).item() < 1e-4


def test_conv_bn_folds_batchnorm_in_eval_and_uses_batch_statistics_in_training():
    generator = torch.Generator().manual_seed(3)
    layer = tiny_vit.Conv2dBN(4, 6, kernel_size=3, groups=2)
    layer.bn.weight.data.normal_(generator=generator)
    layer.bn.bias.data.normal_(generator=generator)
    layer.bn.running_mean.normal_(generator=generator)
    layer.bn.running_var.uniform_(0.5, 2.0, generator=generator)
    x = torch.randn(2, 4, 9, 9, generator=generator)
    layer.eval()
    expected = layer.bn(layer.c(x))
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    layer.train()
    torch.testing.assert_close(layer(x), F.batch_norm(layer.c(x), None, None, layer.bn.weight, layer.bn.bias, True))


def test_tiny_vit_inference_path_equals_autograd_path_and_backward_works():
    encoder = tiny_vit.TinyViTEncoder(small_tiny_vit_config()).eval()
    generator = torch.Generator().manual_seed(4)
    for parameter in encoder.parameters():
        parameter.data.normal_(0, 0.05, generator=generator)
    image = torch.randn(1, 3, 1024, 1024, generator=generator)
    with torch.inference_mode():  # in-place GELU, folded BatchNorm
        fast, fast_early = encoder(image)
    plain, plain_early = encoder(image)
    torch.testing.assert_close(fast, plain.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast_early, plain_early.detach(), rtol=1e-5, atol=1e-5)
    plain.sum().backward()
    assert encoder.layers[0].blocks[0].conv1.c.weight.grad is not None
    assert encoder.layers[1].blocks[0].attn.attention_biases.grad is not None


def test_bias_chunks_share_one_buffer_without_autograd_and_stay_differentiable_with_it(monkeypatch):
    pointers = []
    real_sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kwargs):
        pointers.append(attn_mask.data_ptr())
        return real_sdpa(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(vit.F, "scaled_dot_product_attention", spy)
    b, heads, h, w, d = 1, 2, 8, 8, 4
    q, k, v, rel_h, rel_w = _attention_inputs(b, heads, h, w, d)
    monkeypatch.setattr(vit, "BIAS_CHUNK_BYTES", 2 * b * heads * w * h * w * 4)  # 4 chunks of 2 rows
    with torch.inference_mode():
        vit._biased_attention(q, k, v, rel_h, rel_w)
    assert len(pointers) == 4 and len(set(pointers)) == 1
    rel_h.requires_grad_(True)
    got = vit._biased_attention(q, k, v, rel_h, rel_w)
    got.sum().backward()
    assert rel_h.grad is not None and rel_h.grad.abs().sum() > 0
    torch.testing.assert_close(got.detach(), _reference_attention(q, k, v, rel_h.detach(), rel_w), rtol=1e-5, atol=1e-5)
