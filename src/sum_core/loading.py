"""Model loading: :func:`load_model` (always loads) and :func:`resolve_model` (loads once).

Both take a registry name, a checkpoint path or a BioImage.IO package (zip or folder), resolved by
:func:`sum_core.zoo.locate`
(the package's one precedence: registry names win over files of the same name). With
``ais_decoder=True`` the model comes with its AIS decoder (micro-sam's automatic instance
segmentation; :func:`sum_core.modeling.ais_decoder_of`): a registry model's decoder file
(its entry's ``decoder`` field) is fetched and loaded onto it; a file must hold one.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

import torch

from . import zoo
from .bioimageio_package import is_package, load_package
from .checkpoint import load_checkpoint
from .device import resolve_device
from .errors import InvalidInputError
from .modeling import SamModel, ais_decoder_of

__all__ = ["load_model", "resolve_model"]

#: Models kept by :func:`resolve_model`, most recently used last.
MAX_RESOLVED_MODELS = 2

_RESOLVED: OrderedDict[tuple, SamModel] = OrderedDict()
_RESOLVE_LOCK = threading.Lock()


def _load(
    name_or_path: str | os.PathLike,
    path: Path,
    device: torch.device,
    base: str | os.PathLike | SamModel | None,
    ais_decoder: bool,
) -> SamModel:
    """:func:`load_model` of ``name_or_path``, located at ``path``, on a resolved device."""
    # locate returns a file path as given, a registry name's file from the cache.
    registered = isinstance(name_or_path, str) and path != Path(name_or_path).expanduser()
    fetch = ais_decoder and registered and base is None
    decoder_file = zoo.fetch_decoder(name_or_path) if fetch else None
    if not registered and is_package(path):
        if base is not None:
            raise InvalidInputError(f"base={base!r} was given but {path} is a BioImage.IO package (a full model)")
        model = load_package(path, device=device)
    elif decoder_file is not None:
        model = load_checkpoint(decoder_file, base=path, device=device)
    else:
        model = load_checkpoint(path, base=base, device=device)
    if ais_decoder and ais_decoder_of(model) is None:
        raise InvalidInputError(
            f"model {str(name_or_path)!r} has no AIS decoder (ais_decoder=True): use a registry model "
            "with one (see `sum-hq models list`), a file that holds one, or a decoder file "
            "(*_decoder.pt) with base= its SAM model; or segment with the point-grid mode (AMG)"
        )
    return model


def _locate(name_or_path: str | os.PathLike) -> Path:
    """:func:`sum_core.zoo.locate`, and a BioImage.IO package folder (registry names still win)."""
    path = Path(name_or_path).expanduser() if isinstance(name_or_path, (str, os.PathLike)) else None
    if path is not None and path.is_dir() and is_package(path):
        if not (isinstance(name_or_path, str) and name_or_path in zoo.list_models(decoders=True)):
            return path
    return zoo.locate(name_or_path)


def load_model(
    name_or_path: str | os.PathLike,
    device: str | torch.device | None = None,
    base: str | os.PathLike | SamModel | None = None,
    ais_decoder: bool = False,
) -> SamModel:
    """Load a model from the registry (downloading it if needed) or from a file.

    Parameters
    ----------
    name_or_path : str or PathLike
        A registry name (see :func:`sum_core.zoo.list_models`; registry names
        win over files of the same name), the path of a checkpoint file, or a
        BioImage.IO model package (``.zip`` or folder; its state-dict weights,
        sha256-checked, see :func:`sum_core.bioimageio_package.load_package`).
    device : str, torch.device or None
        Target device; ``None`` picks CUDA, then MPS, then CPU.
    base : str, PathLike, SamModel or None
        For decoder-only files (an HQ-SAM / SUM decoder, or micro-sam's AIS
        decoder ``*_decoder.pt``): the full model (path, registry name or
        loaded model) that supplies the encoders.
    ais_decoder : bool
        Load the model with its AIS decoder: for a registry model, the decoder
        file its entry names is fetched (hash-checked) and loaded onto it; a
        file must hold one (or be a decoder file given with ``base``). Without
        it a registry model is loaded without its decoder (nothing extra is
        downloaded); a file's decoder is always loaded.

    Returns
    -------
    SamModel
        In eval mode on ``device``, carrying the AIS decoder the files hold
        (:func:`sum_core.modeling.ais_decoder_of`).

    Raises
    ------
    InvalidInputError
        If ``name_or_path`` is neither a registry name nor an existing file
        (the message lists the registry), ``device`` is not available, or
        ``ais_decoder`` is set and the model has no AIS decoder.
    DownloadError
        If the registry file cannot be fetched.
    CheckpointError
        If the file cannot be loaded or cannot be trusted: corrupted (zip
        checksum), unsafe, NaN / inf or non-float weights, an architecture
        beyond any SAM-family size, mismatched keys (see
        :func:`sum_core.checkpoint.load_checkpoint`).
    """
    target = resolve_device(device)
    return _load(name_or_path, _locate(name_or_path), target, base, ais_decoder)


def resolve_model(
    model: str | os.PathLike | SamModel,
    device: str | torch.device | None = None,
    ais_decoder: bool = False,
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
    ais_decoder : bool
        The model must carry its AIS decoder (see :func:`load_model`); a model
        loaded with it also serves calls without.

    Raises
    ------
    InvalidInputError, DownloadError, CheckpointError
        As :func:`load_model` (also for a ``SamModel`` without an AIS decoder
        when ``ais_decoder`` is set).
    """
    if isinstance(model, SamModel):
        if ais_decoder and ais_decoder_of(model) is None:
            raise InvalidInputError(
                f"the {model.config.model_type} model has no AIS decoder (ais_decoder=True); load one "
                "with sum_core.load_model(..., ais_decoder=True) or attach one "
                "(sum_core.modeling.attach_ais_decoder)"
            )
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise InvalidInputError(
            f"model must be a registry name, a checkpoint path or a SamModel, got {type(model).__name__}"
        )
    target = resolve_device(device)
    with _RESOLVE_LOCK:
        path = _locate(model)
        stat = path.stat()  # a file rewritten in place (a retrained checkpoint) is loaded again
        file_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, str(target))
        # A model loaded with its decoder (or from a file holding one) serves both kinds of call.
        usable = [
            file_key + (flag,)
            for flag in (True, False)
            if file_key + (flag,) in _RESOLVED
            and (not ais_decoder or ais_decoder_of(_RESOLVED[file_key + (flag,)]) is not None)
        ]
        key = usable[0] if usable else file_key + (ais_decoder,)
        if key not in _RESOLVED:
            _RESOLVED[key] = _load(model, path, target, None, ais_decoder)
            while len(_RESOLVED) > MAX_RESOLVED_MODELS:
                _RESOLVED.popitem(last=False)
        _RESOLVED.move_to_end(key)
        return _RESOLVED[key]
