"""SAM's ViT image encoder (windowed + global attention, decomposed relative positions).

Key layout matches ``image_encoder.*`` of the official SAM / HQ-SAM checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError
from .common import MLPBlock, encoder_neck
from .config import ModelConfig


def _relative_table(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Gather the relative-position embeddings for every (query, key) pair on one axis.

    Parameters
    ----------
    q_size, k_size : int
        Query and key lengths along the axis.
    rel_pos : torch.Tensor
        ``L×C`` table; linearly resampled to ``2·max(q_size, k_size) − 1`` rows if needed.

    Returns
    -------
    torch.Tensor
        ``q_size×k_size×C``.
    """
    length = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != length:
        rel_pos = F.interpolate(rel_pos.T.unsqueeze(0), size=length, mode="linear").squeeze(0).T
    q_scale = max(k_size / q_size, 1.0)
    k_scale = max(q_size / k_size, 1.0)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * q_scale
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * k_scale
    index = (q_coords - k_coords) + (k_size - 1) * k_scale
    return rel_pos[index.long()]


class Attention(nn.Module):
    """Multi-head self-attention with a decomposed relative-position bias.

    Parameters
    ----------
    dim : int
        Token width.
    num_heads : int
        Number of heads.
    input_size : int
        Side of the (square) token grid it attends over; sets the table lengths.
    window_size : int
        0 for global attention; else attention within non-overlapping windows of
        this side, the grid zero-padded to a multiple of it (as SAM does).
    """

    def __init__(self, dim: int, num_heads: int, input_size: int, window_size: int = 0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``B×H×W×C`` -> ``B×H×W×C``.

        Windowed attention pads *after* the qkv projection, with the projection of a
        zero token (its bias), and projects only the real tokens: the same result as
        padding the input, without projecting the padding (about 20 % of the tokens
        at 64×64 with 14×14 windows).
        """
        b, h, w, c = x.shape
        qkv = self.qkv(x)
        if self.window_size:
            qkv, padded = _window_partition(qkv, self.window_size, self.qkv.bias)
        bw, hh, ww, _ = qkv.shape
        qkv = qkv.reshape(bw, hh * ww, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).contiguous()
        q, k, v = qkv.unbind(0)  # each B×heads×N×head_dim, contiguous (SDPA would copy per call)
        r_q = q.reshape(bw, self.num_heads, hh, ww, -1)
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, _relative_table(hh, hh, self.rel_pos_h))
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, _relative_table(ww, ww, self.rel_pos_w))
        out = _attention_by_row_chunks(q, k, v, rel_h, rel_w).transpose(1, 2).reshape(bw, hh, ww, c)
        if self.window_size:
            out = _window_unpartition(out, self.window_size, padded, (h, w))
        return self.proj(out)


#: Upper bound on the relative-position bias materialised at once (bytes of float32).
BIAS_CHUNK_BYTES = 32 * 2**20


def _attention_by_row_chunks(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor
) -> torch.Tensor:
    """Fused attention with the decomposed bias, a few query rows at a time.

    The full bias ``B×heads×N×N`` (800 MB for a global ViT-B block at 64×64 tokens)
    is never built: each chunk of query rows gets its ``rows·W×N`` slice of
    ``rel_h[..., :, None] + rel_w[..., None, :]``, at most :data:`BIAS_CHUNK_BYTES`.
    Besides bounding memory this is faster on CPU (the slice stays in cache).

    Parameters
    ----------
    q, k, v : torch.Tensor
        ``B×heads×N×D`` with ``N = H·W``.
    rel_h, rel_w : torch.Tensor
        ``B×heads×H×W×H`` and ``B×heads×H×W×W`` relative-position logits.
    """
    b, heads, h, w, _ = rel_h.shape
    n = h * w
    bytes_per_row = b * heads * w * n * q.element_size()
    rows = max(1, min(h, BIAS_CHUNK_BYTES // bytes_per_row))
    out = q.new_empty(q.shape) if rows < h else None
    buffer = None
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        # One contiguous buffer, reused: a fresh tensor per chunk would follow the strides of the
        # einsum outputs (then reshape copies) and pay page faults for every large allocation.
        if buffer is None or buffer.shape[2] != r1 - r0:
            buffer = q.new_empty((b, heads, r1 - r0, w, h, w))
        torch.add(rel_h[:, :, r0:r1, :, :, None], rel_w[:, :, r0:r1, :, None, :], out=buffer)
        bias = buffer.view(b, heads, (r1 - r0) * w, n)
        if out is None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        queries = slice(r0 * w, r1 * w)
        out[:, :, queries] = F.scaled_dot_product_attention(q[:, :, queries], k, v, attn_mask=bias)
    return out


def _window_partition(
    x: torch.Tensor, window: int, pad_value: torch.Tensor | None = None
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad ``B×H×W×C`` to multiples of ``window``; cut into ``(B·nW)×w×w×C`` windows.

    The padding is zero, or the per-channel vector ``pad_value``.
    """
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        if pad_value is None:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        else:
            filled = pad_value.to(x.dtype).expand(b, h + pad_h, w + pad_w, c).clone()
            filled[:, :h, :w] = x
            x = filled
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c), (hp, wp)


def _window_unpartition(
    windows: torch.Tensor, window: int, padded: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`_window_partition`, cropping the padding away."""
    hp, wp = padded
    h, w = size
    c = windows.shape[-1]
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.view(b, hp // window, wp // window, window, window, c)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
    return x[:, :h, :w, :] if (hp, wp) != (h, w) else x


class Block(nn.Module):
    """Pre-norm transformer block with windowed (``window_size > 0``) or global attention.

    Parameters
    ----------
    dim, num_heads : int
        Width and heads.
    mlp_ratio : float
        MLP hidden width over ``dim``.
    window_size : int
        Window side, or 0 for global attention.
    grid_size : int
        Side of the full token grid.
    """

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, window_size: int, grid_size: int
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, window_size if window_size > 0 else grid_size, window_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding (``proj`` conv), output ``B×H×W×C``."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class ViTEncoder(nn.Module):
    """SAM's ViT image encoder.

    Parameters
    ----------
    config : ModelConfig
        Uses ``image_size``, ``patch_size``, ``embed_dim``, ``depth``, ``num_heads``,
        ``global_attn_indexes``, ``window_size``, ``mlp_ratio`` and ``prompt_embed_dim``.

    Raises
    ------
    InvalidInputError
        If ``config.global_attn_indexes`` is empty or names blocks outside ``0..depth-1``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        indexes = tuple(config.global_attn_indexes)
        if not indexes or min(indexes) < 0 or max(indexes) >= config.depth:
            raise InvalidInputError(
                f"global_attn_indexes={indexes!r} must name at least one block in "
                f"0..{config.depth - 1}"
            )
        grid = config.embedding_size
        dim = config.embed_dim
        out = config.prompt_embed_dim
        self.early_index = min(indexes)
        self.patch_embed = PatchEmbed(config.patch_size, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, dim))
        self.blocks = nn.ModuleList(
            Block(
                dim,
                config.num_heads,
                config.mlp_ratio,
                0 if i in indexes else config.window_size,
                grid,
            )
            for i in range(config.depth)
        )
        self.neck = encoder_neck(dim, out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode normalised, padded images.

        Parameters
        ----------
        x : torch.Tensor
            ``B×3×S×S`` normalised images.

        Returns
        -------
        embedding : torch.Tensor
            ``B×256×E×E`` image embedding.
        early : torch.Tensor
            ``B×E×E×C`` output of the first global-attention block (HQ-SAM's early feature).
        """
        x = self.patch_embed(x) + self.pos_embed
        early = x
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.early_index:
                early = x
        return self.neck(x.permute(0, 3, 1, 2)), early
