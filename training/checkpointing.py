"""Checkpoints of a fine-tuning run: base-model loading, per-epoch files, resumable state.

Files in the run folder::

    epoch_N.pth         decoder-only: the mask decoder's state dict, keys without
                        the ``mask_decoder.`` prefix (as HQ-SAM's epoch_N.pth); in
                        the ``ais`` scheme the AIS decoder's, keys without the
                        ``ais_decoder.`` prefix (as micro-sam's ``*_decoder.pt``)
    sum_epoch_N.pth     merged SUM model: the full state dict (image encoder,
                        prompt encoder, decoder under ``mask_decoder.``)
    final.pth           merged model after the last epoch
    training_state.pth  optimiser, scheduler, grad scaler, RNG states, position
                        in the data order and the trainable weights (``--resume``)

Every write goes to a temporary file first and is moved into place with
``os.replace``, so an interrupted save never leaves a truncated file.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sum_core import zoo
from sum_core.checkpoint import infer_config, load_checkpoint, load_state_dict_file, meta_model
from sum_core.errors import CheckpointError, InvalidInputError
from sum_core.loading import load_model
from sum_core.modeling import (
    AIS_PREFIX,
    AISDecoder,
    AISDecoderConfig,
    SamModel,
    ais_decoder_of,
    attach_ais_decoder,
    build_from_config,
)
from sum_core.modeling.common import LayerNorm2d

from .schemes import HQ_MODULES

STATE_FILE = "training_state.pth"
FINAL_FILE = "final.pth"
SUM_TABLE_PREFIXES = (
    "mask_decoder.task_prompt_tokens.",
    "mask_decoder.hf_type_tokens.",
    "mask_decoder.task_prompt_embeddings.",
)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_base_model(checkpoint: str | os.PathLike, seed: int = 0) -> SamModel:
    """Load the base model as a SUM model, adding what a SUM model has and the base lacks.

    The architecture is inferred from the file; the SUM configuration is that
    architecture with ``hq=True`` and ``sum_tokens=True``.  The base weights
    are loaded strictly into the matching subset: the only keys allowed to be
    missing are the ones added here.

    * An HQ-SAM base gets the SUM task tables, all zero, so every task first
      behaves as the base.
    * A plain SAM base (for example micro-sam's ``vit_b_lm``) also gets the
      HQ-SAM modules (:data:`training.schemes.HQ_MODULES`), initialised by
      :func:`init_hq_modules` as HQ-SAM initialises them when it starts from
      SAM.  Its SAM weights are kept bit for bit, but its masks are not plain
      SAM's before training: the HQ token joins the decoder's attention (so
      the SAM tokens' outputs shift) and the HQ logits come from untrained
      layers.  Train before segmenting with it.

    Parameters
    ----------
    checkpoint : str or PathLike
        A full SAM / HQ-SAM / SUM checkpoint file or a registry name.
    seed : int
        Seed of the HQ modules' initialisation (plain SAM bases only).

    Returns
    -------
    SamModel
        The SUM model (``config.hq`` and ``config.sum_tokens`` set), on the CPU.

    Raises
    ------
    CheckpointError
        If the file is unreadable, too large for any SAM-family architecture,
        has unexpected keys, or lacks any key other than the added ones.
    """
    path = zoo.locate(checkpoint)
    state = load_state_dict_file(path)
    has_ais = any(key.startswith(AIS_PREFIX) for key in state)
    state = {key: value for key, value in state.items() if not key.startswith(AIS_PREFIX)}
    base = infer_config(state)
    config = base.replace(hq=True, sum_tokens=True)
    meta_model(config, str(path))  # an oversized architecture is refused before anything is allocated
    model = build_from_config(config)
    added = SUM_TABLE_PREFIXES
    if not base.hq:
        init_hq_modules(model, seed)
        added += tuple(f"mask_decoder.{name}." for name in HQ_MODULES)
    result = model.load_state_dict(state, strict=False)
    missing = [key for key in result.missing_keys if not key.startswith(added)]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: base weights do not match the SUM model: missing {missing}, "
            f"unexpected {list(result.unexpected_keys)}; pass a full SAM / HQ-SAM / SUM checkpoint"
        )
    if has_ais:  # the core's checked loading of the decoder (only files that hold one load twice)
        attach_ais_decoder(model, ais_decoder_of(load_checkpoint(path, device="cpu")))
    return model


def load_ais_base(checkpoint: str | os.PathLike, features: int = 64, seed: int = 0) -> SamModel:
    """Load the base model of the ``ais`` scheme: the SAM model as it is, with an AIS decoder.

    The model keeps its architecture and weights (a plain SAM stays plain SAM, so its
    interactive segmentation is unchanged). Its AIS decoder is, in this order: the one in
    the file (torch_em's training layout with ``decoder_state``, or this package's
    ``ais_decoder.`` keys), the registry entry's decoder file (``vit_b_lm`` ->
    ``vit_b_lm_decoder``, fetched and hash-checked), else a new one (:func:`new_ais_decoder`).

    Parameters
    ----------
    checkpoint : str or PathLike
        A full SAM / HQ-SAM / SUM checkpoint file or a registry name.
    features : int
        ``initial_features`` of a new decoder (micro-sam's: 64); unused when the base has one.
    seed : int
        Seed of a new decoder's initialisation.

    Returns
    -------
    SamModel
        On the CPU, carrying its AIS decoder (:func:`sum_core.modeling.ais_decoder_of`).

    Raises
    ------
    CheckpointError, InvalidInputError, DownloadError
        As :func:`sum_core.load_model`.
    """
    model = load_model(checkpoint, device="cpu", ais_decoder=_registry_decoder(checkpoint))
    if ais_decoder_of(model) is None:
        config = AISDecoderConfig(embed_dim=model.config.prompt_embed_dim, initial_features=features)
        attach_ais_decoder(model, new_ais_decoder(config, seed))
    return model


def _registry_decoder(checkpoint: str | os.PathLike) -> bool:
    """Whether ``checkpoint`` is a registry name whose entry names an AIS decoder file."""
    try:
        return bool(zoo.has_decoder(str(checkpoint)))
    except InvalidInputError:  # a malformed SUM_HQ_MODELS file: load_model reports it if it matters
        return False


def new_ais_decoder(config: AISDecoderConfig, seed: int) -> AISDecoder:
    """A new AIS decoder, initialised as micro-sam's ``get_unetr`` builds one without a decoder state.

    torch-em's ``UNETR`` applies no initialisation of its own, so every layer has PyTorch's
    default: ``Conv2d`` / ``ConvTranspose2d`` weights Kaiming-uniform (a = sqrt(5)), biases
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)); ``BatchNorm2d`` weight 1, bias 0, running mean 0 and
    variance 1 (``InstanceNorm2d`` has no parameters). The draws come from torch's RNG
    seeded with ``seed`` (the caller's RNG state is left as it was), so they depend on
    ``seed`` only.

    Parameters
    ----------
    config : AISDecoderConfig
        Sizes (micro-sam's new decoders use interpolation, ``conv_transpose=False``).
    seed : int
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AISDecoder(config)


def init_hq_modules(model: SamModel, seed: int) -> None:
    """Initialise the HQ-SAM modules of ``model`` as HQ-SAM does when it starts from SAM.

    HQ-SAM copies nothing into its new modules: ``MaskDecoderHQ`` builds
    ``hf_token``, ``hf_mlp``, ``compress_vit_feat``, ``embedding_encoder`` and
    ``embedding_maskfeature`` (in that order) with PyTorch's default
    initialisation and loads only the SAM decoder's weights over the rest.  So
    here each layer is reset in that order from torch's RNG seeded with
    ``seed`` (the caller's RNG state is left as it was): ``nn.Embedding``
    N(0, 1); ``nn.Linear`` / ``nn.Conv2d`` / ``nn.ConvTranspose2d`` weights
    Kaiming-uniform (a = sqrt(5)), biases U(-1/sqrt(fan_in), 1/sqrt(fan_in));
    ``LayerNorm2d`` weight 1, bias 0.  The values equal those of sam-hq's
    ``MaskDecoderHQ`` when its RNG is seeded with ``seed`` just before it
    builds ``hf_token``.

    Parameters
    ----------
    model : SamModel
        A model with HQ layers (``config.hq``).
    seed : int
        Seed of the draws.
    """
    decoder = model.mask_decoder
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for name in HQ_MODULES:
            for layer in getattr(decoder, name).modules():
                if isinstance(layer, LayerNorm2d):
                    layer.weight.fill_(1.0)
                    layer.bias.zero_()
                elif isinstance(layer, (nn.Embedding, nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                    layer.reset_parameters()


def decoder_state_dict(model: SamModel) -> dict[str, torch.Tensor]:
    """The mask decoder's weights, keys without prefix, on the CPU."""
    return {key: value.detach().cpu().clone() for key, value in model.mask_decoder.state_dict().items()}


def merged_state_dict(model: SamModel) -> dict[str, torch.Tensor]:
    """The full model state dict (SUM / HQ-SAM merged layout), on the CPU."""
    return {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}


def ais_decoder_state_dict(model: SamModel) -> dict[str, torch.Tensor]:
    """The AIS decoder's weights, keys without prefix (micro-sam's ``*_decoder.pt`` layout), on the CPU."""
    decoder = ais_decoder_of(model)
    return {key: value.detach().cpu().clone() for key, value in decoder.state_dict().items()}


def save_epoch(
    model: SamModel, run_dir: str | os.PathLike, epoch: int, ais: bool = False
) -> tuple[Path, Path]:
    """Write ``epoch_N.pth`` (decoder-only: the AIS decoder if ``ais``, else the mask decoder)
    and ``sum_epoch_N.pth`` (merged); N = ``epoch``."""
    run_dir = Path(run_dir)
    weights = ais_decoder_state_dict(model) if ais else decoder_state_dict(model)
    decoder = atomic_save(weights, run_dir / f"epoch_{epoch}.pth")
    merged = atomic_save(merged_state_dict(model), run_dir / f"sum_epoch_{epoch}.pth")
    return decoder, merged


def save_final(model: SamModel, run_dir: str | os.PathLike) -> Path:
    """Write the merged model as ``final.pth`` (loads with :func:`sum_core.load_model`)."""
    return atomic_save(merged_state_dict(model), Path(run_dir) / FINAL_FILE)


def rng_states() -> dict[str, Any]:
    """RNG states of python, numpy and torch (CPU and every CUDA device), tensors only."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore the states returned by :func:`rng_states`."""
    random.setstate(_as_tuples(states["python"]))
    np_state = states["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached"],
        )
    )
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _as_tuples(value: Any) -> Any:
    """Nested lists back to tuples (``random.setstate`` needs tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuples(item) for item in value)
    return value


def save_training_state(state: dict[str, Any], run_dir: str | os.PathLike) -> Path:
    """Write ``training_state.pth`` atomically."""
    return atomic_save(state, Path(run_dir) / STATE_FILE)


def load_training_state(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read ``training_state.pth`` of a run (tensors and plain values only).

    Raises
    ------
    CheckpointError
        If the run folder has no state file or it cannot be read.
    """
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir} has no {STATE_FILE}: nothing to resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any read failure is a checkpoint problem
        raise CheckpointError(f"{path} cannot be read: {exc}") from exc
