"""Choice of the torch device that models run on."""

from __future__ import annotations

import torch

from .errors import InvalidInputError

#: Device types the models run on (others, e.g. ``meta`` or ``xla``, are refused by name).
SUPPORTED_DEVICE_TYPES = ("cpu", "cuda", "mps")


def default_device() -> torch.device:
    """Return the best available device: CUDA, then Apple MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Turn a user's device choice into an available :class:`torch.device`.

    Parameters
    ----------
    device : str, torch.device or None
        ``None`` picks :func:`default_device`; otherwise a device such as
        ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"mps"``.

    Returns
    -------
    torch.device

    Raises
    ------
    InvalidInputError
        If ``device`` is not a valid device string, or names a backend that
        is not available on this machine.
    """
    if device is None:
        return default_device()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInputError(
            f"device={device!r} is not a valid torch device (use e.g. 'cpu', 'cuda', 'mps')"
        ) from exc
    if resolved.type not in SUPPORTED_DEVICE_TYPES:
        raise InvalidInputError(
            f"device={device!r}: sum_core runs on {', '.join(SUPPORTED_DEVICE_TYPES)} devices, not {resolved.type!r}"
        )
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInputError(f"device={device!r} was requested but CUDA is not available")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise InvalidInputError(
                f"device={device!r} does not exist: only {torch.cuda.device_count()} CUDA "
                "device(s) are visible"
            )
    if resolved.type == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise InvalidInputError(f"device={device!r} was requested but MPS is not available")
    return resolved
