"""SAM / HQ-SAM / SUM model definitions with the official state-dict layout."""

from .build import build_from_config, build_model
from .config import PRESETS, ModelConfig, preset_config
from .embedding import DecodedMasks, ImageEmbedding
from .mask_decoder import DecoderOutput
from .sam import SamModel

__all__ = [
    "PRESETS",
    "DecodedMasks",
    "DecoderOutput",
    "ImageEmbedding",
    "ModelConfig",
    "SamModel",
    "build_from_config",
    "build_model",
    "preset_config",
]
