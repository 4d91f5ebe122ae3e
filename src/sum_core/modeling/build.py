"""Build randomly initialised models from presets or a :class:`ModelConfig`."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import InvalidInputError
from .config import ModelConfig, preset_config
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import SamModel
from .vit import ViTEncoder


def build_from_config(config: ModelConfig) -> SamModel:
    """Build a float32 model in eval mode with random weights (SUM tables zero).

    Parameters
    ----------
    config : ModelConfig
        Architecture description.

    Returns
    -------
    SamModel

    Raises
    ------
    InvalidInputError
        If ``config.sum_tokens`` is set without ``config.hq``, or the encoder kind is unknown.
    """
    if config.sum_tokens and not config.hq:
        raise InvalidInputError("sum_tokens=True requires hq=True (SUM tokens extend HQ-SAM)")
    encoder: nn.Module
    if config.encoder == "vit":
        encoder = ViTEncoder(config)
    elif config.encoder == "tiny_vit":
        from .tiny_vit import TinyViTEncoder

        encoder = TinyViTEncoder(config)
    else:
        raise InvalidInputError(
            f"encoder={config.encoder!r} is not known; choose 'vit' or 'tiny_vit'"
        )
    model = SamModel(config, encoder, PromptEncoder(config), MaskDecoder(config))
    return model.float().eval()


def build_model(
    model_type: str = "vit_b", hq: bool = True, sum_tokens: bool = False, **overrides: Any
) -> SamModel:
    """Build a preset model with random weights.

    Parameters
    ----------
    model_type : str
        Preset name (``"vit_b"``, ``"vit_l"``, ``"vit_h"``, ``"vit_tiny"``).
    hq : bool
        Include the HQ-SAM token and fusion layers.
    sum_tokens : bool
        Include SUM's task tables (requires ``hq``).
    **overrides
        Further :class:`ModelConfig` fields.

    Returns
    -------
    SamModel
        In eval mode, float32.

    Raises
    ------
    InvalidInputError
        For an unknown preset or option, or ``sum_tokens`` without ``hq``.
    """
    return build_from_config(preset_config(model_type, hq=hq, sum_tokens=sum_tokens, **overrides))
