"""Model loading: :func:`load_model` (always loads) and :func:`resolve_model` (loads once).

Both take a registry name or a checkpoint path, resolved by :func:`sum_core.zoo.locate`
(the package's one precedence: registry names win over files of the same name).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import torch

from . import zoo
from .checkpoint import load_checkpoint
from .device import resolve_device
from .errors import InvalidInputError
from .modeling import SamModel

__all__ = ["load_model", "resolve_model"]

#: Models kept by :func:`resolve_model`, most recently used last.
MAX_RESOLVED_MODELS = 2

_RESOLVED: OrderedDict[tuple[str, str], SamModel] = OrderedDict()
_RESOLVE_LOCK = threading.Lock()


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
        If the file cannot be loaded or cannot be trusted: corrupted (zip
        checksum), unsafe, NaN / inf or non-float weights, an architecture
        beyond any SAM-family size, mismatched keys (see
        :func:`sum_core.checkpoint.load_checkpoint`).
    """
    target = resolve_device(device)
    return load_checkpoint(zoo.locate(name_or_path), base=base, device=target)


def resolve_model(
    model: str | os.PathLike | SamModel, device: str | torch.device | None = None
) -> SamModel:
    """A loaded model for a registry name, a checkpoint path or a model (returned as is).

    Names and paths are loaded once per device and file version (size and modification time:
    a checkpoint rewritten in place is loaded again) and kept (the last
    :data:`MAX_RESOLVED_MODELS`), so repeated calls (``segment`` in a loop, the tasks
    of a batch job on several threads) share one model. Thread-safe: concurrent calls
    for the same model load it once.

    Parameters
    ----------
    model : str, PathLike or SamModel
        See :func:`sum_core.zoo.locate` for the precedence of names and paths.
    device : str, torch.device or None
        Where to load it; ignored for a ``SamModel``.

    Raises
    ------
    InvalidInputError, DownloadError, CheckpointError
        As :func:`load_model`.
    """
    if isinstance(model, SamModel):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise InvalidInputError(
            f"model must be a registry name, a checkpoint path or a SamModel, got {type(model).__name__}"
        )
    target = resolve_device(device)
    with _RESOLVE_LOCK:
        path = zoo.locate(model)
        stat = path.stat()  # a file rewritten in place (a retrained checkpoint) is loaded again
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, str(target))
        if key not in _RESOLVED:
            _RESOLVED[key] = load_checkpoint(path, device=target)
            while len(_RESOLVED) > MAX_RESOLVED_MODELS:
                _RESOLVED.popitem(last=False)
        _RESOLVED.move_to_end(key)
        return _RESOLVED[key]
