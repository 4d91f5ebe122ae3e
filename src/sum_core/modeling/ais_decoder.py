"""The AIS decoder: micro-sam's UNETR decoder for automatic instance segmentation.

micro-sam segments all objects of an image in one pass (AIS) with a convolutional
decoder on the SAM image embedding: torch-em's ``UNETR`` built with the SAM image
encoder, ``use_skip_connection=False``, ``out_channels=3`` and a sigmoid, applied by
micro-sam's ``DecoderAdapter`` to the precomputed embedding. :class:`AISDecoder` has
the same modules under the same names, so a micro-sam ``*_decoder.pt`` file (the
UNETR state without its ``encoder.*`` keys) loads into it strictly, key for key. The
upsampling of the two variants micro-sam publishes is told apart by the keys (see
:func:`sum_core.checkpoint.infer_ais_config`): bilinear interpolation + 1x1 convolution
(``...conv.*``) or a 2x2 transposed convolution (``...block.*``).

The decoder takes the ``B×256×E×E`` embedding and returns ``B×3×16E×16E`` maps at
the encoder input size (1024 for every SAM model), after a sigmoid on every channel
(:data:`AIS_CHANNELS`). :func:`decode_ais_maps` is the one post-encoder step:
embedding in, the three maps at the original image (or tile window) size out; its
differentiable core :func:`ais_map_tensor` is what training (``--scheme ais``) runs.

A :class:`~sum_core.modeling.SamModel` carries its decoder as the sub-module
``ais_decoder`` (:func:`attach_ais_decoder`, read with :func:`ais_decoder_of`), so it
moves with the model (``.to(device)``) and its state dict holds the decoder's keys
under ``ais_decoder.``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError
from .embedding import ImageEmbedding
from .sam import SamModel

#: What the three output channels hold, in order (all in 0..1 after the sigmoid):
#: foreground probability, distance to the object centre and distance to the object
#: boundary (torch-em's normalised distance targets).
AIS_CHANNELS = ("foreground", "center_distance", "boundary_distance")

#: State-dict prefix of the decoder inside a model (``SamModel.state_dict()``).
AIS_PREFIX = "ais_decoder."

#: Decoder levels below the embedding (each doubles the resolution), as in torch-em's UNETR.
_DEPTH = 3


@dataclass(frozen=True)
class AISDecoderConfig:
    """Sizes of an AIS decoder (micro-sam's are the defaults).

    Parameters
    ----------
    embed_dim : int
        Channels of the image embedding it reads (SAM's neck: 256).
    initial_features : int
        Channels at the finest level; the levels have ``initial_features * 2**i``
        (64 -> 512, 256, 128, 64).
    conv_transpose : bool
        Upsample with 2x2 transposed convolutions instead of bilinear interpolation
        followed by a 1x1 convolution (torch-em's ``use_conv_transpose``).
    """

    embed_dim: int = 256
    initial_features: int = 64
    conv_transpose: bool = False

    @property
    def features(self) -> tuple[int, ...]:
        """Channels per level, coarsest first (``(512, 256, 128, 64)`` by default)."""
        return tuple(self.initial_features * 2**i for i in range(_DEPTH + 1))[::-1]


class _ConvBlock(nn.Module):
    """Two (InstanceNorm, 3x3 conv, ReLU) layers; torch-em's ``ConvBlock2d`` (keys ``block.1`` / ``block.4``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.InstanceNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.InstanceNorm2d(out_channels),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class _Interpolate2x(nn.Module):
    """Bilinear 2x upsampling, then a 1x1 convolution; torch-em's ``Upsampler2d`` (key ``conv``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))


class _TransposedConv2x(nn.Module):
    """A 2x2 stride-2 transposed convolution; torch-em's ``SingleDeconv2DBlock`` (key ``block``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


def _upsampler(in_channels: int, out_channels: int, conv_transpose: bool) -> nn.Module:
    return (_TransposedConv2x if conv_transpose else _Interpolate2x)(in_channels, out_channels)


class _Conv3x3(nn.Module):
    """A padded 3x3 convolution under the key ``block``; torch-em's ``SingleConv2DBlock``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class _UpBlock(nn.Module):
    """Upsample 2x, 3x3 conv, BatchNorm, ReLU; torch-em's ``Deconv2DBlock``."""

    def __init__(self, in_channels: int, out_channels: int, conv_transpose: bool) -> None:
        super().__init__()
        self.block = nn.Sequential(
            _upsampler(in_channels, out_channels, conv_transpose),
            _Conv3x3(out_channels),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


def _centre_crop(x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The centre of ``x`` with ``shape`` in every axis but the batch axis (torch-em's ``Decoder._crop``).

    The crop runs over the channel axis too: a level that upsamples to ``c`` channels keeps
    the middle ``c`` channels of its ``2c``-channel skip feature.
    """
    starts = [(have - want) // 2 for have, want in zip(x.shape[1:], shape[1:])]
    return x[(slice(None),) + tuple(slice(s, s + want) for s, want in zip(starts, shape[1:]))]


class _Decoder(nn.Module):
    """The UNet decoder levels: upsample, append the (centre-cropped) skip feature, convolve.

    torch-em's ``Decoder``; each skip feature is cropped to the upsampled feature's shape
    (:func:`_centre_crop`) before the concatenation.
    """

    def __init__(self, features: tuple[int, ...], conv_transpose: bool) -> None:
        super().__init__()
        pairs = list(zip(features[:-1], features[1:]))
        self.blocks = nn.ModuleList(_ConvBlock(inc, outc) for inc, outc in pairs)
        self.samplers = nn.ModuleList(_upsampler(inc, outc, conv_transpose) for inc, outc in pairs)

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for block, sampler, skip in zip(self.blocks, self.samplers, skips):
            x = sampler(x)
            x = block(torch.cat([x, _centre_crop(skip, x.shape)], dim=1))
        return x


class AISDecoder(nn.Module):
    """micro-sam's AIS decoder (torch-em's UNETR decoder without skip connections).

    Parameters
    ----------
    config : AISDecoderConfig
        Sizes and upsampling variant; ``AISDecoderConfig()`` is micro-sam's decoder
        with interpolation.

    Notes
    -----
    The "skip" features are not the encoder's: ``deconv1..4`` upsample the embedding
    itself 2x, 4x, 8x and 16x, and the decoder levels and the head concatenate them.
    As in torch-em, a decoder level keeps only the middle half of its skip feature's
    channels (the crop to the upsampled feature's shape includes the channel axis).
    """

    def __init__(self, config: AISDecoderConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or AISDecoderConfig()
        features, transpose = config.features, config.conv_transpose
        self.decoder = _Decoder(features, transpose)
        ins = (config.embed_dim,) + features[:-1]
        self.deconv1, self.deconv2, self.deconv3, self.deconv4 = (
            _UpBlock(inc, outc, transpose) for inc, outc in zip(ins, features)
        )
        self.base = _ConvBlock(config.embed_dim, features[0])
        self.out_conv = nn.Conv2d(features[-1], len(AIS_CHANNELS), 1)
        self.deconv_out = _upsampler(features[-1], features[-1], transpose)
        self.decoder_head = _ConvBlock(2 * features[-1], features[-1])

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """The three maps at 16x the embedding size (the encoder input frame), after the sigmoid.

        Parameters
        ----------
        embedding : torch.Tensor
            ``B×embed_dim×E×E`` image embeddings.

        Returns
        -------
        torch.Tensor
            ``B×3×16E×16E`` maps in 0..1 (:data:`AIS_CHANNELS`). Differentiable.
        """
        z9 = self.deconv1(embedding)
        z6 = self.deconv2(z9)
        z3 = self.deconv3(z6)
        z0 = self.deconv4(z3)
        x = self.decoder(self.base(embedding), [z9, z6, z3])
        x = self.decoder_head(torch.cat([self.deconv_out(x), z0], dim=1))
        return torch.sigmoid(self.out_conv(x))


def attach_ais_decoder(model: SamModel, decoder: AISDecoder | None) -> SamModel:
    """Give ``model`` its AIS decoder (the sub-module ``ais_decoder``), or remove it (``None``).

    The decoder is moved to the model's device and put in the model's train / eval mode.

    Parameters
    ----------
    model : SamModel
        The SAM model whose image embeddings the decoder reads.
    decoder : AISDecoder or None

    Returns
    -------
    SamModel
        ``model`` itself.

    Raises
    ------
    InvalidInputError
        If the decoder reads embeddings of another width than the model produces.
    """
    if decoder is not None:
        width = model.config.prompt_embed_dim
        if decoder.config.embed_dim != width:
            raise InvalidInputError(
                f"the AIS decoder reads {decoder.config.embed_dim}-channel embeddings but the model "
                f"produces {width}-channel ones; use the decoder trained with this model"
            )
        decoder = decoder.to(model.pixel_mean.device).train(model.training)
    model.add_module(AIS_PREFIX[:-1], decoder)
    return model


def ais_decoder_of(model: SamModel) -> AISDecoder | None:
    """The AIS decoder carried by ``model``, or None."""
    return getattr(model, AIS_PREFIX[:-1], None)


def _require_decoder(model: SamModel) -> AISDecoder:
    decoder = ais_decoder_of(model)
    if decoder is None:
        raise InvalidInputError(
            f"the {model.config.model_type} model has no AIS decoder; load one that has it with "
            "sum_core.load_model(name, ais_decoder=True) (e.g. 'vit_b_lm'), or use the point-grid "
            "automatic mode (AMG)"
        )
    return decoder


def ais_map_tensor(
    model: SamModel,
    embedding: torch.Tensor,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
) -> torch.Tensor:
    """The differentiable core of :func:`decode_ais_maps`: decoder, then micro-sam's resize.

    Inference (:func:`decode_ais_maps`) and training (``training``'s ``ais`` scheme) both
    run it; gradients follow the caller's mode.

    Parameters
    ----------
    model : SamModel
        A model with an AIS decoder (see :func:`ais_decoder_of`).
    embedding : torch.Tensor
        ``B×C×E×E`` image embeddings of images that share ``input_size`` and
        ``original_size`` (cast to the decoder's device and dtype).
    input_size : (int, int)
        The resized images' size inside the encoder frame.
    original_size : (int, int)
        The size the maps are returned at.

    Returns
    -------
    torch.Tensor
        ``B×3×H×W`` float32 maps (:data:`AIS_CHANNELS`), ``H×W = original_size``:
        the decoder's output resized to the encoder input, cropped to ``input_size`` and
        bilinearly resized (:meth:`SamModel.postprocess_masks`).

    Raises
    ------
    InvalidInputError
        If ``model`` has no AIS decoder.
    """
    decoder = _require_decoder(model)
    weight = decoder.out_conv.weight
    maps = decoder(embedding.to(device=weight.device, dtype=weight.dtype))
    return model.postprocess_masks(maps.float(), input_size, original_size)


def decode_ais_maps(model: SamModel, image: ImageEmbedding) -> np.ndarray:
    """The one post-encoder step of AIS: an image embedding in, the three maps out.

    The decoder's maps are brought to the image exactly as micro-sam's decoder does
    (:func:`ais_map_tensor`: resized to the encoder input, cropped to the resized image,
    bilinearly resized to ``image.original_size``), without gradients.

    Parameters
    ----------
    model : SamModel
        A model with an AIS decoder (see :func:`ais_decoder_of`).
    image : ImageEmbedding
        The encoded image or tile window.

    Returns
    -------
    np.ndarray
        ``3×H×W`` float32 (``H×W = image.original_size``): foreground probability,
        centre distance, boundary distance (:data:`AIS_CHANNELS`), each in 0..1.

    Raises
    ------
    InvalidInputError
        If ``model`` has no AIS decoder.
    """
    with torch.no_grad():
        maps = ais_map_tensor(model, image.embedding, image.input_size, image.original_size)
    return maps[0].cpu().numpy()
