"""Small building blocks shared by the encoder, prompt encoder and decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a ``B×C×H×W`` tensor.

    Parameters
    ----------
    num_channels : int
        Number of channels ``C``.
    eps : float
        Added to the variance for numerical stability.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.num_channels = num_channels  # a constant (an exported graph's layer_norm needs one)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused layer_norm over the channel axis (channels-last view) instead of five passes
        # over the tensor; same statistics (biased variance) as SAM's formula.
        channels_last = F.layer_norm(x.permute(0, 2, 3, 1), (self.num_channels,), self.weight, self.bias, self.eps)
        return channels_last.permute(0, 3, 1, 2)


def encoder_neck(in_dim: int, out_dim: int) -> nn.Sequential:
    """SAM's encoder neck (keys ``neck.{0..3}``): 1×1 conv, LayerNorm2d, 3×3 conv, LayerNorm2d."""
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, kernel_size=1, bias=False),
        LayerNorm2d(out_dim),
        nn.Conv2d(out_dim, out_dim, kernel_size=3, padding=1, bias=False),
        LayerNorm2d(out_dim),
    )


class MLPBlock(nn.Module):
    """Transformer feed-forward block: ``lin2(act(lin1(x)))``.

    Parameters
    ----------
    embedding_dim : int
        Input and output width.
    mlp_dim : int
        Hidden width.
    act : type of nn.Module
        Activation class (GELU in the ViT, ReLU in the two-way transformer).
    """

    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class MLP(nn.Module):
    """Plain MLP with ReLU between layers (SAM's hypernetwork and IoU heads).

    Parameters
    ----------
    input_dim, hidden_dim, output_dim : int
        Layer widths.
    num_layers : int
        Number of linear layers (children ``layers.{i}``).
    sigmoid_output : bool
        Apply a sigmoid to the output.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        widths_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        widths_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(widths_in, widths_out))
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


def autocast_active(device: torch.device) -> bool:
    """Whether autocast is on for ``device``'s type (False for types without autocast, e.g. meta)."""
    try:
        return torch.is_autocast_enabled(torch.device(device).type)
    except RuntimeError:
        return False
