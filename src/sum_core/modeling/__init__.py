"""SAM / HQ-SAM / SUM model definitions with the official state-dict layout, and micro-sam's AIS decoder."""

from .ais_decoder import (
    AIS_CHANNELS,
    AIS_PREFIX,
    AISDecoder,
    AISDecoderConfig,
    ais_decoder_of,
    attach_ais_decoder,
    decode_ais_maps,
)
from .build import build_from_config, build_model
from .config import PRESETS, ModelConfig, preset_config
from .embedding import DecodedMasks, ImageEmbedding
from .mask_decoder import DecoderOutput
from .sam import SamModel

__all__ = [
    "AIS_CHANNELS",
    "AIS_PREFIX",
    "AISDecoder",
    "AISDecoderConfig",
    "PRESETS",
    "DecodedMasks",
    "DecoderOutput",
    "ImageEmbedding",
    "ModelConfig",
    "SamModel",
    "ais_decoder_of",
    "attach_ais_decoder",
    "build_from_config",
    "build_model",
    "decode_ais_maps",
    "preset_config",
]
