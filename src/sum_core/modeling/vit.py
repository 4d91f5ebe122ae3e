"""SAM's ViT image encoder (windowed + global attention, decomposed relative positions).

Key layout matches ``image_encoder.*`` of the official SAM / HQ-SAM checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError
from .common import MLPBlock, encoder_neck
from .config import ModelConfig
from .workspace import Workspace, workspace_for


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

    def forward(self, x: torch.Tensor, workspace: Workspace | None = None) -> torch.Tensor:
        """``x``: ``B×H×W×C`` -> ``B×H×W×C``; large transients go in ``workspace`` if given.

        Windowed attention pads *after* the qkv projection, with the projection of a
        zero token (its bias), and projects only the real tokens: the same result as
        padding the input, without projecting the padding (about 20 % of the tokens
        at 64×64 with 14×14 windows). Cutting into windows and splitting heads is one
        copy each way.
        """
        b, h, w, c = x.shape
        heads = self.num_heads
        qkv = _linear(x, self.qkv, workspace, "qkv").view(b, h, w, 3, heads, c // heads)
        tracing = torch.jit.is_tracing()  # ONNX export: no writes into views of buffers
        if self.window_size:
            split_windows = _split_windows_traceable if tracing else _split_windows
            q, k, v = split_windows(qkv, self.window_size, self.qkv.bias.view(3, heads, -1), workspace)
            side = self.window_size
        else:
            split = qkv.permute(3, 0, 4, 1, 2, 5)
            if workspace is not None:
                split = workspace.take("heads", tuple(split.shape), x).copy_(split)
            q, k, v = split.reshape(3, b, heads, h * w, -1).unbind(0)
            side = None
        bw = q.shape[0]
        hh, ww = (side, side) if side else (h, w)
        r_q = q.view(bw, heads, hh, ww, -1)
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, _relative_table(hh, hh, self.rel_pos_h))
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, _relative_table(ww, ww, self.rel_pos_w))
        if side:
            merge_windows = _merge_windows_traceable if tracing else _merge_windows
            out = merge_windows(_biased_attention(q, k, v, rel_h, rel_w, workspace=workspace), side, (h, w))
        else:
            out = _biased_attention(q, k, v, rel_h, rel_w, token_major=True, workspace=workspace)
            out = out.view(b, h, w, c)
        return self.proj(out)


#: Upper bound on the relative-position bias materialised at once (bytes of float32).
#: 256 MiB lets a ViT-B/L/H global block run in 4-5 query chunks of 800-1000 queries:
#: CPU fused attention is ~30 % slower per query below ~768 queries per call.
BIAS_CHUNK_BYTES = 256 * 2**20


def _biased_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_h: torch.Tensor,
    rel_w: torch.Tensor,
    token_major: bool = False,
    workspace: Workspace | None = None,
) -> torch.Tensor:
    """Fused attention with the decomposed relative-position bias, in bounded chunks.

    The full bias ``B×heads×N×N`` (800 MB for a global ViT-B block at 64×64 tokens)
    is never built at once: at most :data:`BIAS_CHUNK_BYTES` of it exists at a time,
    for a chunk of batch elements (windows) when one element's bias fits, else for a
    chunk of query rows (chunks of equal size, so no call is left with a handful of
    queries).

    Parameters
    ----------
    q, k, v : torch.Tensor
        ``B×heads×N×D`` with ``N = H·W``.
    rel_h, rel_w : torch.Tensor
        ``B×heads×H×W×H`` and ``B×heads×H×W×W`` relative-position logits.
    token_major : bool
        Return ``B×N×heads×D`` (contiguous) instead of ``B×heads×N×D``.
    workspace : Workspace, optional
        Holds the bias buffer (else a buffer is allocated once for this call; under
        autograd or ``torch.compile`` each chunk's bias is a plain new tensor).
    """
    b, heads, h, w, _ = rel_h.shape
    n = h * w
    item = q.element_size()
    element_bytes = heads * n * n * item
    if torch.jit.is_tracing():  # an exported graph: one call (no writes into an output buffer)
        chunks = [(slice(None), slice(None))]
    elif element_bytes <= BIAS_CHUNK_BYTES:
        per_call = max(1, min(b, BIAS_CHUNK_BYTES // element_bytes))
        calls = -(-b // per_call)
        chunks = [(slice(i * b // calls, (i + 1) * b // calls), slice(None)) for i in range(calls)]
    else:
        rows = max(1, BIAS_CHUNK_BYTES // (b * heads * w * n * item))
        calls = -(-h // rows)
        chunks = [(slice(None), slice(i * h // calls, (i + 1) * h // calls)) for i in range(calls)]
    # out= ops are neither differentiable nor traceable by inductor or the ONNX exporter: a plain add there
    plain = torch.compiler.is_compiling() or torch.jit.is_tracing() or (
        torch.is_grad_enabled() and (rel_h.requires_grad or rel_w.requires_grad)
    )
    if workspace is None and not plain:
        workspace = Workspace()
    out = None
    for batch, rows in chunks:
        bias_h, bias_w = rel_h[batch, :, rows], rel_w[batch, :, rows]
        shape = (bias_h.shape[0], heads, bias_h.shape[2], w, h, w)
        if plain:
            # contiguous inputs (the einsums return permuted layouts), so the sum is contiguous
            # and the reshape below does not copy the whole chunk again
            bias = bias_h.contiguous()[..., :, None] + bias_w.contiguous()[..., None, :]
        else:  # one buffer for every chunk (and, with the encoder's workspace, every block)
            bias = torch.add(bias_h[..., :, None], bias_w[..., None, :], out=workspace.take("bias", shape, q))
        mask = bias.reshape(shape[0], heads, shape[2] * w, n)
        queries = slice(None) if rows == slice(None) else slice(rows.start * w, rows.stop * w)
        result = F.scaled_dot_product_attention(q[batch, :, queries], k[batch], v[batch], attn_mask=mask)
        if len(chunks) == 1:
            return result.transpose(1, 2).contiguous() if token_major else result
        if out is None:
            out = q.new_empty((b, n, heads, q.shape[-1]) if token_major else q.shape)
        if token_major:
            out[batch, queries] = result.transpose(1, 2)
        else:
            out[batch, :, queries] = result
    return out


def _window_segments(size: int, window: int) -> list[tuple[slice, slice, slice]]:
    """Pieces of one axis of ``size`` cut into windows of ``window``.

    Each piece is ``(source, window_index, offset_in_window)``: the full windows, then
    the partial last one (if any). Positions past ``size`` in the last window are padding.
    """
    full = size // window
    pieces = [(slice(0, full * window), slice(0, full), slice(0, window))] if full else []
    if size % window:
        pieces.append((slice(full * window, size), slice(full, full + 1), slice(0, size % window)))
    return pieces


def _window_pieces(
    image: torch.Tensor, grid: torch.Tensor, window: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Matching views of ``image`` (``B×H×W×…``) and of ``grid`` (``B×nH×r×nW×c×…``).

    Together the pairs cover every real cell once (up to four rectangles: the full
    windows and the partial last row / column of windows); copying each pair one way or
    the other cuts the image into windows or puts it back.
    """
    h, w = image.shape[1:3]
    for src_r, win_r, off_r in _window_segments(h, window):
        for src_c, win_c, off_c in _window_segments(w, window):
            piece = image[:, src_r, src_c].unflatten(1, (win_r.stop - win_r.start, -1))
            yield piece.unflatten(3, (win_c.stop - win_c.start, -1)), grid[:, win_r, off_r, win_c, off_c]


def _split_windows(
    qkv: torch.Tensor, window: int, pad_value: torch.Tensor, workspace: Workspace | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``B×H×W×3×heads×D`` projections -> q, k, v of ``(B·nW)×heads×window²×D`` each.

    One copy: every piece of the grid is written straight to its place in the
    (windows, heads, tokens) layout; the padding of partial windows is ``pad_value``
    (``3×heads×D``, the projection of a zero token).
    """
    b, h, w = qkv.shape[:3]
    three, heads, dim = qkv.shape[3:]
    nh, nw = -(-h // window), -(-w // window)
    shape = (three, b, nh, nw, heads, window, window, dim)
    windows = qkv.new_empty(shape) if workspace is None else workspace.take("heads", shape, qkv)
    # the same memory seen as B×nH×r×nW×c×3×heads×D (image order inside each window)
    grid = windows.permute(1, 2, 5, 3, 6, 0, 4, 7)
    if h % window:
        grid[:, -1, h % window :] = pad_value.to(qkv.dtype)
    if w % window:
        grid[:, :, :, -1, w % window :] = pad_value.to(qkv.dtype)
    for piece, place in _window_pieces(qkv, grid, window):
        place.copy_(piece)
    return windows.view(three, b * nh * nw, heads, window * window, dim).unbind(0)


def _split_windows_traceable(
    qkv: torch.Tensor, window: int, pad_value: torch.Tensor, workspace: Workspace | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_split_windows` without in-place writes, for tracing (ONNX export): the same
    q, k, v (padding = ``pad_value``), from a padded copy cut by reshapes."""
    b, h, w, three, heads, dim = qkv.shape
    nh, nw = (h + window - 1) // window, (w + window - 1) // window  # ONNX Div truncates
    padded = pad_value.to(qkv.dtype).expand(b, nh * window, nw * window, three, heads, dim)
    padded = torch.cat([qkv, padded[:, :h, w:]], dim=2) if nw * window > w else qkv
    padded = torch.cat([padded, pad_value.to(qkv.dtype).expand(b, nh * window - h, nw * window, three, heads, dim)], dim=1)
    grid = padded.reshape(b, nh, window, nw, window, three, heads, dim).permute(5, 0, 1, 3, 6, 2, 4, 7)
    return grid.reshape(three, b * nh * nw, heads, window * window, dim).unbind(0)


def _merge_windows_traceable(out: torch.Tensor, window: int, size: tuple[int, int]) -> torch.Tensor:
    """:func:`_merge_windows` without in-place writes, for tracing (ONNX export)."""
    h, w = size
    nh, nw = (h + window - 1) // window, (w + window - 1) // window  # ONNX Div truncates
    _, heads, _, dim = out.shape
    grid = out.reshape(-1, nh, nw, heads, window, window, dim).permute(0, 1, 4, 2, 5, 3, 6)
    image = grid.reshape(-1, nh * window, nw * window, heads * dim)
    return image[:, :h, :w]


def _merge_windows(out: torch.Tensor, window: int, size: tuple[int, int]) -> torch.Tensor:
    """Attention output ``(B·nW)×heads×window²×D`` -> ``B×H×W×(heads·D)``, padding dropped, one copy."""
    h, w = size
    nh, nw = -(-h // window), -(-w // window)
    _, heads, _, dim = out.shape
    b = out.shape[0] // (nh * nw)
    grid = out.view(b, nh, nw, heads, window, window, dim).permute(0, 1, 4, 2, 5, 3, 6)
    image = out.new_empty((b, h, w, heads, dim))
    for piece, place in _window_pieces(image, grid, window):
        piece.copy_(place)
    return image.view(b, h, w, heads * dim)


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

    def forward(self, x: torch.Tensor, workspace: Workspace | None = None) -> torch.Tensor:
        """``B×H×W×C`` -> ``B×H×W×C``; large transients go in ``workspace`` if given."""
        x = x + self.attn(self.norm1(x), workspace)
        if workspace is None:
            return x + self.mlp(self.norm2(x))
        hidden = _linear(self.norm2(x), self.mlp.lin1, workspace, "hidden")
        torch.ops.aten.gelu_(hidden)  # nn.GELU's default (erf) form, in place
        return x + self.mlp.lin2(hidden)


def _linear(x: torch.Tensor, layer: nn.Linear, workspace: Workspace | None, name: str) -> torch.Tensor:
    """``layer(x)``, written into the workspace buffer ``name`` if a workspace is given."""
    if workspace is None:
        return layer(x)
    flat = x.reshape(-1, x.shape[-1])
    out = workspace.take(name, (flat.shape[0], layer.out_features), x)
    torch.addmm(layer.bias, flat, layer.weight.t(), out=out)
    return out.view(*x.shape[:-1], layer.out_features)


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
        workspace = workspace_for(x)
        for i, block in enumerate(self.blocks):
            x = block(x, workspace)
            if i == self.early_index:
                early = x
        return self.neck(x.permute(0, 3, 1, 2)), early
