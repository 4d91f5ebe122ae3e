"""TinyViT image encoder of MobileSAM / Light HQ-SAM (``vit_tiny``).

The module tree reproduces the ``image_encoder.*`` key layout of the official
MobileSAM and Light HQ-SAM checkpoints (302 keys for the real size, BatchNorm
buffers included), so those files load strictly.

Structure (real size, 1024 input): a two-conv patch embedding (stride 4,
256×256), one stage of MBConv blocks, then three stages of windowed-attention
TinyViT blocks. Each stage but the last ends with a patch merging; the merges
take 256 → 128 → 64 → 64 (the last one keeps the resolution, so the encoder's
total stride is 16). The neck maps the last stage to ``prompt_embed_dim``
channels. The classifier ``norm_head`` / ``head`` is unused but kept because it
is in the checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError
from .common import autocast_active, encoder_neck
from .config import ModelConfig

MBCONV_EXPAND_RATIO = 4.0
"""Hidden width of an MBConv block over its input width."""

LOCAL_CONV_SIZE = 3
"""Kernel of the depth-wise convolution between attention and MLP."""

NUM_CLASSES = 1000
"""Width of the unused ImageNet classifier that the checkpoints still hold."""

TOTAL_STRIDE = 16
"""Input pixels per embedding cell (4 in the patch embedding, 2 per stride-2 merge)."""


class Conv2dBN(nn.Sequential):
    """Bias-free convolution followed by BatchNorm (children ``c`` and ``bn``).

    Parameters
    ----------
    in_chans, out_chans : int
        Channel counts.
    kernel_size, stride, groups : int
        Convolution settings; the padding is ``kernel_size // 2``.
    bn_weight_init : float
        Initial BatchNorm scale (0 makes a residual branch start as identity).
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.c = nn.Conv2d(
            in_chans,
            out_chans,
            kernel_size,
            stride,
            kernel_size // 2,
            groups=groups,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(out_chans)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolution then BatchNorm.

        In eval mode without autocast, one convolution with the BatchNorm folded in (a
        pass over the output fewer). Under autocast the BatchNorm stays separate, in
        float32: folded into a bf16 convolution it doubles the bf16 error of the logits.
        """
        if self.training or autocast_active(x.device):
            return self.bn(self.c(x))
        bn = self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        weight = self.c.weight * scale.view(-1, 1, 1, 1)
        bias = bn.bias - bn.running_mean * scale
        conv = self.c
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU, in place when autograd is off (``x`` must be a fresh intermediate)."""
    if torch.is_grad_enabled():
        return F.gelu(x)
    return torch.ops.aten.gelu_(x)


class PatchEmbed(nn.Module):
    """Two stride-2 3×3 Conv+BN layers with GELU between (child ``seq``): 3 -> dim // 2 -> dim."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            Conv2dBN(3, dim // 2, kernel_size=3, stride=2),
            nn.GELU(),
            Conv2dBN(dim // 2, dim, kernel_size=3, stride=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``B×3×S×S`` -> ``B×dim×S/4×S/4`` (channels-last memory)."""
        conv1, _, conv2 = self.seq
        return conv2(_gelu(conv1(x.contiguous(memory_format=torch.channels_last))))


class MBConv(nn.Module):
    """Inverted-residual block: 1×1 expand, 3×3 depth-wise, 1×1 project, residual, GELU.

    Parameters
    ----------
    dim : int
        Input and output channels.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        hidden = int(dim * MBCONV_EXPAND_RATIO)
        self.conv1 = Conv2dBN(dim, hidden)
        self.conv2 = Conv2dBN(hidden, hidden, kernel_size=3, groups=hidden)
        self.conv3 = Conv2dBN(hidden, dim, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``B×C×H×W`` -> ``B×C×H×W``."""
        y = _gelu(self.conv1(x))
        y = _gelu(self.conv2(y))
        y = self.conv3(y)
        return _gelu(y.add_(x) if not torch.is_grad_enabled() else y + x)


class PatchMerging(nn.Module):
    """1×1 conv, 3×3 depth-wise conv (stride 1 or 2), 1×1 conv, with GELU between.

    Parameters
    ----------
    dim, out_dim : int
        Input and output channels.
    stride : int
        Stride of the depth-wise convolution.
    """

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = Conv2dBN(dim, out_dim)
        self.conv2 = Conv2dBN(out_dim, out_dim, kernel_size=3, stride=stride, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``B×C×H×W`` -> ``B×H'×W'×C'`` (channels last, for the attention stages)."""
        x = _gelu(self.conv1(x))
        x = _gelu(self.conv2(x))
        return self.conv3(x).permute(0, 2, 3, 1).contiguous()


def attention_bias_index(window_size: int) -> torch.Tensor:
    """Index of the learned bias for every (query, key) pair of a window.

    A pair of tokens at ``(r1, c1)`` and ``(r2, c2)`` (row-major in the window)
    shares the bias of the offset ``(|r1 - r2|, |c1 - c2|)``, stored in column
    ``|r1 - r2| * window_size + |c1 - c2|`` of ``attention_biases``.

    Parameters
    ----------
    window_size : int
        Window side.

    Returns
    -------
    torch.Tensor
        ``N×N`` int64 with ``N = window_size ** 2``.
    """
    coords = torch.arange(window_size)
    rows = coords.repeat_interleave(window_size)
    cols = coords.repeat(window_size)
    d_row = (rows[:, None] - rows[None, :]).abs()
    d_col = (cols[:, None] - cols[None, :]).abs()
    return d_row * window_size + d_col


class Attention(nn.Module):
    """Pre-norm multi-head self-attention inside a window, with a learned offset bias.

    Parameters
    ----------
    dim : int
        Token width (also the total query/key/value width).
    num_heads : int
        Number of heads.
    window_size : int
        Window side; the tokens of one call must be the ``window_size²`` cells of a window.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size * window_size))
        self.register_buffer(
            "attention_bias_idxs", attention_bias_index(window_size), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``B×N×C`` windows -> ``B×N×C``."""
        b, n, c = x.shape
        # The checkpoint's qkv output is laid out head by head, each head as [q | k | v].
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3 * self.head_dim)
        q, k, v = qkv.permute(0, 2, 1, 3).split(self.head_dim, dim=-1)
        # Gathered on every call, so it always reflects the current parameter values.
        bias = self.attention_biases[:, self.attention_bias_idxs]
        # Explicit attention: for windows of <= 196 tokens it is ~35 % faster on CPU than
        # SDPA, which falls back to its unfused path (with NaN guards) for a float mask here.
        scores = torch.matmul(q, k.transpose(-2, -1)).mul_(self.head_dim**-0.5).add_(bias)
        out = torch.matmul(scores.softmax(dim=-1), v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class MLP(nn.Module):
    """Pre-norm feed-forward block: ``fc2(gelu(fc1(norm(x))))``.

    Parameters
    ----------
    dim, hidden_dim : int
        Token and hidden widths.
    """

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(_gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention, depth-wise local conv, then MLP, with residuals.

    Parameters
    ----------
    dim, num_heads, window_size : int
        Width, heads and attention window side.
    mlp_ratio : float
        MLP hidden width over ``dim``.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float) -> None:
        super().__init__()
        self.window_size = window_size
        self.attn = Attention(dim, num_heads, window_size)
        self.mlp = MLP(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2dBN(dim, dim, kernel_size=LOCAL_CONV_SIZE, groups=dim)

    def _windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad ``B×H×W×C`` to whole windows, attend per window, crop back."""
        b, h, w, c = x.shape
        ws = self.window_size
        pad_h, pad_w = (-h) % ws, (-w) % ws
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        nh, nw = (h + pad_h) // ws, (w + pad_w) // ws
        windows = x.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
        windows = self.attn(windows)
        x = windows.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, nh * ws, nw * ws, c)
        return x[:, :h, :w] if pad_h or pad_w else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``B×H×W×C`` -> ``B×H×W×C``."""
        x = x + self._windowed_attention(x)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    """First stage: MBConv blocks on ``B×C×H×W``, then a patch merging."""

    def __init__(self, dim: int, depth: int, downsample: PatchMerging) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``B×C×H×W`` -> ``B×H'×W'×C'``."""
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class AttentionStage(nn.Module):
    """TinyViT blocks on ``B×H×W×C``, then an optional patch merging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        downsample: PatchMerging | None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, num_heads, window_size, mlp_ratio) for _ in range(depth)
        )
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``B×H×W×C`` -> ``B×H'×W'×C'``."""
        for block in self.blocks:
            x = block(x)
        if self.downsample is not None:
            x = self.downsample(x.permute(0, 3, 1, 2))
        return x


def _validate(config: ModelConfig) -> None:
    """Raise :class:`InvalidInputError` if ``config`` cannot describe a TinyViT encoder."""
    fields = {
        "tiny_embed_dims": config.tiny_embed_dims,
        "tiny_depths": config.tiny_depths,
        "tiny_num_heads": config.tiny_num_heads,
        "tiny_window_sizes": config.tiny_window_sizes,
    }
    for name, value in fields.items():
        if len(value) != 4 or min(value) < 1:
            raise InvalidInputError(
                f"{name}={value!r} must hold 4 positive integers (one per stage)"
            )
    for stage in range(1, 4):
        dim, heads = config.tiny_embed_dims[stage], config.tiny_num_heads[stage]
        if dim % heads:
            raise InvalidInputError(
                f"tiny_embed_dims[{stage}]={dim} must be divisible by "
                f"tiny_num_heads[{stage}]={heads}"
            )
    if config.tiny_embed_dims[0] % 2:
        raise InvalidInputError(
            f"tiny_embed_dims[0]={config.tiny_embed_dims[0]} must be even (the patch embedding "
            "goes through half that width)"
        )
    grid = config.image_size // TOTAL_STRIDE
    if config.image_size % TOTAL_STRIDE or grid != config.embedding_size:
        raise InvalidInputError(
            f"image_size={config.image_size} must be a multiple of {TOTAL_STRIDE} with "
            f"image_size // patch_size == image_size // {TOTAL_STRIDE} for the TinyViT encoder "
            f"(patch_size={config.patch_size})"
        )


class TinyViTEncoder(nn.Module):
    """TinyViT-5M image encoder with the MobileSAM / Light HQ-SAM key layout.

    The last patch merging always uses stride 1, so the output grid is
    ``image_size // 16``. (The reference decides the stride from the output
    width, 320 / 448 / 576; for every official model the two rules agree.)

    Parameters
    ----------
    config : ModelConfig
        Uses ``image_size``, ``patch_size`` (must give the same grid as the
        total stride 16), ``tiny_embed_dims``, ``tiny_depths``, ``tiny_num_heads``,
        ``tiny_window_sizes``, ``tiny_mlp_ratio`` and ``prompt_embed_dim``.

    Raises
    ------
    InvalidInputError
        If the TinyViT fields do not hold 4 positive values, a stage width is not
        divisible by its heads, the first width is odd, or the image size does not
        match the embedding grid.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        _validate(config)
        dims = config.tiny_embed_dims
        out = config.prompt_embed_dim
        self.patch_embed = PatchEmbed(dims[0])
        self.layers = nn.ModuleList(
            [ConvStage(dims[0], config.tiny_depths[0], PatchMerging(dims[0], dims[1], stride=2))]
        )
        for stage in range(1, 4):
            downsample = None
            if stage < 3:  # the last merge (after stage 2) keeps the resolution
                stride = 1 if stage == 2 else 2
                downsample = PatchMerging(dims[stage], dims[stage + 1], stride=stride)
            self.layers.append(
                AttentionStage(
                    dims[stage],
                    config.tiny_depths[stage],
                    config.tiny_num_heads[stage],
                    config.tiny_window_sizes[stage],
                    config.tiny_mlp_ratio,
                    downsample,
                )
            )
        self.norm_head = nn.LayerNorm(dims[3])
        self.head = nn.Linear(dims[3], NUM_CLASSES)
        self.apply(_init_weights)
        self.neck = encoder_neck(dims[3], out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode normalised, padded images.

        Parameters
        ----------
        x : torch.Tensor
            ``B×3×S×S`` normalised images (``S = config.image_size``).

        Returns
        -------
        embedding : torch.Tensor
            ``B×prompt_embed_dim×E×E`` image embedding (``E = S // 16``).
        early : torch.Tensor
            ``B×E×E×tiny_embed_dims[2]`` output of ``layers[1]`` (HQ-SAM's early feature).
        """
        x = self.layers[0](self.patch_embed(x))
        x = self.layers[1](x)
        early = x
        for layer in self.layers[2:]:
            x = layer(x)
        return self.neck(x.permute(0, 3, 1, 2)), early


def _init_weights(module: nn.Module) -> None:
    """TinyViT's initialisation: truncated-normal linear weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
