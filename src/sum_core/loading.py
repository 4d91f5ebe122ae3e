"""``load_model``: one entry point for registry names and checkpoint paths."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from . import zoo
from .checkpoint import load_checkpoint
from .device import resolve_device
from .errors import InvalidInputError
from .modeling import SamModel


def load_model(
    name_or_path: str | os.PathLike,
    device: str | torch.device | None = None,
    base: str | os.PathLike | SamModel | None = None,
) -> SamModel:
    """Load a model from the registry (downloading it if needed) or from a file.

    Parameters
    ----------
    name_or_path : str or PathLike
        A registry name (see :func:`sum_core.zoo.list_models`; registry names
        win over files of the same name) or the path of a checkpoint file.
    device : str, torch.device or None
        Target device; ``None`` picks CUDA, then MPS, then CPU.
    base : str, PathLike, SamModel or None
        For decoder-only files: the full model (path, registry name or
        loaded model) that supplies the encoders.

    Returns
    -------
    SamModel
        In eval mode on ``device``.

    Raises
    ------
    InvalidInputError
        If ``name_or_path`` is neither a registry name nor an existing file
        (the message lists the registry), or ``device`` is not available.
    DownloadError
        If the registry file cannot be fetched.
    CheckpointError
        If the file cannot be loaded (see :func:`sum_core.checkpoint.load_checkpoint`).
    """
    target = resolve_device(device)
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise InvalidInputError(
            f"name_or_path={name_or_path!r} must be a registry name or a file path, "
            f"not {type(name_or_path).__name__}"
        )
    names = zoo.list_models()
    if isinstance(name_or_path, str) and name_or_path in names:
        return load_checkpoint(zoo.fetch(name_or_path), base=base, device=target)
    if Path(name_or_path).exists():
        return load_checkpoint(name_or_path, base=base, device=target)
    raise InvalidInputError(
        f"name_or_path={str(name_or_path)!r} is neither a registry model nor an existing file; "
        f"known models: {', '.join(names)}"
    )
