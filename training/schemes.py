"""Which parameters train in each fine-tuning scheme, and their optimiser / scheduler.

Schemes
-------
``hq``
    HQ-SAM's lightweight recipe (also SUM's HQ-SAM variant): only the HQ
    modules (``hf_token``, ``hf_mlp``, ``compress_vit_feat``,
    ``embedding_encoder``, ``embedding_maskfeature``) and SUM's task token
    tables (``task_prompt_tokens``, ``hf_type_tokens``) train; Adam, lr 1e-3,
    StepLR.  The dense ``task_prompt_embeddings`` are set to zero and stay
    there, as in the authors' command (``--use_task_prompt_embedding`` off: the
    reference does not add them at all, which zero tables reproduce).
``decoder``
    Prompt encoder + mask decoder; AdamW, lr 1e-5.
``full``
    Everything, the image encoder with layer-wise lr decay (0.8 in SUM).
``ais``
    micro-sam's instance-segmentation training: the AIS decoder (``ais_decoder``) on
    foreground / centre / boundary distance targets, optionally the image encoder too
    (``train_encoder``, with the layer-wise lr decay); AdamW, lr 1e-5 as micro-sam.  The
    prompt encoder and mask decoder stay as they are.

An AIS decoder carried by the model trains only in the ``ais`` scheme.  In every scheme the task-0 tables ``task_prompt_tokens.0`` and
``task_prompt_embeddings.0`` stay frozen at zero (the reference's
``zero_token_no_grad``): task 0 then behaves exactly like the base model.
"""

from __future__ import annotations

import re
import warnings

import torch
from torch import nn

from sum_core.errors import InvalidInputError
from sum_core.modeling import AIS_PREFIX, SamModel, ais_decoder_of

from .config import FinetuneConfig

HQ_MODULES = ("hf_token", "hf_mlp", "compress_vit_feat", "embedding_encoder", "embedding_maskfeature")
#: SUM tables that train in the ``hq`` scheme (the dense task embeddings are off in the reference).
HQ_SCHEME_TABLES = ("task_prompt_tokens", "hf_type_tokens")
_NO_DECAY_PARTS = ("token", "pos_embed", "rel_pos", "task_prompt", "hf_type")
ZERO_TABLES = ("mask_decoder.task_prompt_tokens.0.weight", "mask_decoder.task_prompt_embeddings.0.weight")


def _trains(name: str, scheme: str, train_encoder: bool) -> bool:
    if name in ZERO_TABLES:
        return False
    module, _, rest = name.partition(".")
    if scheme == "ais":
        return module == AIS_PREFIX[:-1] or (train_encoder and module == "image_encoder")
    if module == AIS_PREFIX[:-1]:
        return False
    if scheme == "full":
        return True
    if scheme == "decoder":
        return module in ("prompt_encoder", "mask_decoder")
    if scheme == "hq":
        return module == "mask_decoder" and rest.split(".", 1)[0] in HQ_MODULES + HQ_SCHEME_TABLES
    raise InvalidInputError(f"scheme={scheme!r} is not known; choose 'hq', 'decoder', 'full' or 'ais'")


def set_trainable(model: SamModel, scheme: str, train_encoder: bool = False) -> list[str]:
    """Set ``requires_grad`` per the scheme; return the names of the trainable parameters.

    In the ``hq`` scheme the dense ``task_prompt_embeddings`` are also set to zero (with a
    warning when the base model had trained values there), since that scheme does not use them.

    Parameters
    ----------
    model : SamModel
    scheme : {"hq", "decoder", "full", "ais"}
    train_encoder : bool
        ``ais`` scheme: train the image encoder with the AIS decoder.

    Raises
    ------
    InvalidInputError
        For an unknown scheme, the ``hq`` scheme on a model without HQ layers, or the
        ``ais`` scheme on a model without an AIS decoder.
    """
    if scheme == "hq" and not model.config.hq:
        raise InvalidInputError("scheme='hq' needs an HQ-SAM / SUM model (config.hq=True)")
    if scheme == "ais" and ais_decoder_of(model) is None:
        raise InvalidInputError(
            "scheme='ais' needs a model with an AIS decoder (training.checkpointing.load_ais_base attaches one)"
        )
    if scheme == "hq":
        _zero_dense_task_embeddings(model)
    names = []
    for name, param in model.named_parameters():
        param.requires_grad_(_trains(name, scheme, train_encoder))
        if param.requires_grad:
            names.append(name)
    return names


def _zero_dense_task_embeddings(model: SamModel) -> None:
    """Zero ``mask_decoder.task_prompt_embeddings`` (the ``hq`` scheme's reference leaves them out)."""
    tables = [p for n, p in model.named_parameters() if n.startswith("mask_decoder.task_prompt_embeddings.")]
    if any(bool(p.detach().ne(0).any()) for p in tables):
        warnings.warn(
            "scheme='hq': the base model's dense task embeddings (mask_decoder.task_prompt_embeddings) are "
            "not zero; they are set to zero, since the hq scheme does not use them (as SUM's HQ-SAM recipe)",
            stacklevel=3,
        )
    with torch.no_grad():
        for table in tables:
            table.zero_()


def encoder_layer_id(name: str, model: SamModel) -> tuple[int, int]:
    """``(layer id, number of layers)`` of an image-encoder parameter for lr decay.

    Patch embedding / position embedding are layer 0, the transformer blocks
    (ViT ``blocks.i``; TinyViT blocks counted across stages) follow, the neck
    is the last layer.
    """
    config = model.config
    if config.encoder == "vit":
        count = config.depth + 1
        match = re.match(r"image_encoder\.blocks\.(\d+)\.", name)
        if match:
            return int(match.group(1)) + 1, count
    else:
        depths = config.tiny_depths
        count = sum(depths) + 1
        match = re.match(r"image_encoder\.layers\.(\d+)\.(?:blocks\.(\d+)\.)?", name)
        if match:
            stage = int(match.group(1))
            block = int(match.group(2)) if match.group(2) is not None else depths[stage] - 1
            return sum(depths[:stage]) + block + 1, count
    if name.startswith(("image_encoder.patch_embed", "image_encoder.pos_embed")):
        return 0, count
    return count, count


def parameter_groups(model: SamModel, config: FinetuneConfig) -> list[dict]:
    """Optimiser parameter groups: one per lr scale, no weight decay on 1-D tensors / tables."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        scale = 1.0
        if name.startswith("image_encoder."):
            layer, count = encoder_layer_id(name, model)
            scale = config.layer_decay ** (count - layer)
        no_decay = param.ndim <= 1 or any(part in name for part in _NO_DECAY_PARTS)
        decay = 0.0 if no_decay else config.weight_decay
        groups.setdefault((scale, decay), []).append(param)
    return [
        {"params": params, "lr": config.lr * scale, "lr_scale": scale, "weight_decay": decay}
        for (scale, decay), params in sorted(groups.items(), key=lambda item: (-item[0][0], item[0][1]))
    ]


def build_optimizer(model: SamModel, config: FinetuneConfig) -> torch.optim.Optimizer:
    """Adam (``hq``) or AdamW (``decoder``, ``full``, ``ais``) over the trainable parameters, with
    layer-wise lr decay of the image encoder."""
    groups = parameter_groups(model, config)
    if not groups:
        raise InvalidInputError(f"scheme={config.scheme!r} leaves no trainable parameter in this model")
    kwargs = {"lr": config.lr, "betas": tuple(config.betas), "eps": config.eps}
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, **kwargs)
    return torch.optim.AdamW(groups, **kwargs)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: FinetuneConfig
) -> torch.optim.lr_scheduler.StepLR | None:
    """Per-epoch StepLR (HQ-SAM: lr / 10 at epoch 10), or None when ``lr_step`` is 0."""
    if config.lr_step <= 0:
        return None
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step, gamma=config.lr_gamma)
