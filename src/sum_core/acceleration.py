"""Inference precision: float32, or bf16 / fp16 autocast.

Weights stay float32; under ``bf16`` / ``fp16`` the matrix work runs in the lower
precision (``torch.autocast``) and every result handed back to callers is float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .errors import InvalidInputError

#: Accepted ``precision`` values (the same spelling as ``training.config``).
PRECISIONS = ("fp32", "bf16", "fp16")

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> str:
    """Validate ``precision`` for ``device``.

    Parameters
    ----------
    precision : {"fp32", "bf16", "fp16"}
        Inference precision.
    device : torch.device
        Where the model runs.

    Returns
    -------
    str
        ``precision``, unchanged.

    Raises
    ------
    InvalidInputError
        If ``precision`` is not one of :data:`PRECISIONS`, or is ``"fp16"`` off CUDA
        (float16 matrix work on a CPU is slow and loses range; use ``"bf16"``).
    """
    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision={precision!r} is not one of {PRECISIONS}")
    if precision == "fp16" and torch.device(device).type != "cuda":
        raise InvalidInputError(
            f"precision='fp16' needs a CUDA device, got device {torch.device(device).type!r}; "
            "use precision='bf16' or 'fp32' there"
        )
    return precision


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Context running the model at ``precision`` on ``device`` (no-op for ``"fp32"``).

    Parameters
    ----------
    device : torch.device
        Where the model runs.
    precision : {"fp32", "bf16", "fp16"}
        See :func:`check_precision`.
    """
    check_precision(precision, device)
    if precision == "fp32":
        yield
        return
    with torch.autocast(torch.device(device).type, dtype=_DTYPES[precision]):
        yield
