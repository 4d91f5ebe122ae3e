"""Checkpoints of a fine-tuning run: base-model loading, per-epoch files, resumable state.

Files in the run folder::

    epoch_N.pth         decoder-only: the mask decoder's state dict, keys without
                        the ``mask_decoder.`` prefix (as HQ-SAM's epoch_N.pth)
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

from sum_core import zoo
from sum_core.checkpoint import infer_config, load_state_dict_file, meta_model
from sum_core.errors import CheckpointError
from sum_core.modeling import SamModel, build_from_config

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


def load_base_model(checkpoint: str | os.PathLike) -> SamModel:
    """Load the base model as a SUM model, adding zero task tables if it has none.

    The architecture is inferred from the file; the SUM configuration is that
    architecture with ``sum_tokens=True``.  The base weights are loaded
    strictly into the matching subset: the only keys allowed to be missing are
    the new SUM tables (which stay zero, so the model behaves as the base).

    Parameters
    ----------
    checkpoint : str or PathLike
        A full SAM / HQ-SAM / SUM checkpoint file or a registry name.

    Raises
    ------
    CheckpointError
        If the file is unreadable, has unexpected keys, or lacks any key other
        than the SUM tables; or the base is plain SAM (SUM tables need HQ).
    """
    path = zoo.locate(checkpoint)
    state = load_state_dict_file(path)
    config = infer_config(state)
    if not config.hq:
        raise CheckpointError(
            f"{path} is a plain SAM checkpoint; SUM fine-tuning needs an HQ-SAM or SUM base"
        )
    config = config.replace(sum_tokens=True)
    meta_model(config, str(path))  # an oversized architecture is refused before anything is allocated
    model = build_from_config(config)
    result = model.load_state_dict(state, strict=False)
    not_sum = [key for key in result.missing_keys if not key.startswith(SUM_TABLE_PREFIXES)]
    if not_sum or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: base weights do not match the SUM model: missing {not_sum}, "
            f"unexpected {list(result.unexpected_keys)}"
        )
    return model


def decoder_state_dict(model: SamModel) -> dict[str, torch.Tensor]:
    """The mask decoder's weights, keys without prefix, on the CPU."""
    return {key: value.detach().cpu().clone() for key, value in model.mask_decoder.state_dict().items()}


def merged_state_dict(model: SamModel) -> dict[str, torch.Tensor]:
    """The full model state dict (SUM / HQ-SAM merged layout), on the CPU."""
    return {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}


def save_epoch(model: SamModel, run_dir: str | os.PathLike, epoch: int) -> tuple[Path, Path]:
    """Write ``epoch_N.pth`` (decoder-only) and ``sum_epoch_N.pth`` (merged); N = ``epoch``."""
    run_dir = Path(run_dir)
    decoder = atomic_save(decoder_state_dict(model), run_dir / f"epoch_{epoch}.pth")
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
