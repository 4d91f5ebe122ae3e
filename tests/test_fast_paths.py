"""Every fast path against the plain float32 computation it replaces."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sum_core.modeling import vit


def _reference_attention(q, k, v, rel_h, rel_w):
    b, heads, h, w, _ = rel_h.shape
    bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, heads, h * w, h * w)
    attn = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5 + bias
    return attn.softmax(-1) @ v


def test_row_chunked_attention_equals_full_bias_attention(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    b, heads, h, w, d = 2, 3, 12, 10, 8
    q, k, v = (torch.randn(b, heads, h * w, d, generator=generator) for _ in range(3))
    rel_h = torch.randn(b, heads, h, w, h, generator=generator)
    rel_w = torch.randn(b, heads, h, w, w, generator=generator)
    expected = _reference_attention(q, k, v, rel_h, rel_w)
    row_bytes = b * heads * w * h * w * 4
    for budget in (1, row_bytes, 5 * row_bytes, 10**12):  # 1 row, 1 row, 5 rows (ragged), all rows
        monkeypatch.setattr(vit, "BIAS_CHUNK_BYTES", budget)
        got = vit._attention_by_row_chunks(q, k, v, rel_h, rel_w)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_chunk_size_bounds_the_bias(monkeypatch):
    shapes = []
    real_sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kwargs):
        shapes.append(tuple(attn_mask.shape))
        return real_sdpa(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(vit.F, "scaled_dot_product_attention", spy)
    b, heads, h, w, d = 1, 2, 8, 8, 4
    q = k = v = torch.randn(b, heads, h * w, d)
    rel_h, rel_w = torch.randn(b, heads, h, w, h), torch.randn(b, heads, h, w, w)
    monkeypatch.setattr(vit, "BIAS_CHUNK_BYTES", 3 * b * heads * w * h * w * 4)
    vit._attention_by_row_chunks(q, k, v, rel_h, rel_w)
    assert shapes == [(1, 2, 24, 64), (1, 2, 24, 64), (1, 2, 16, 64)]
