"""Inference speed options: precision (float32, or bf16 / fp16 autocast) and ``torch.compile``.

Weights stay float32; under ``bf16`` / ``fp16`` the matrix work runs in the lower
precision (``torch.autocast``) and every result handed back to callers is float32.
:func:`compile_model` compiles the model's modules in place (same weights, same
``state_dict`` keys); on CUDA the prompt encoder and mask decoder run as CUDA graphs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
from collections.abc import Iterator

import torch
from torch import nn

from .errors import InvalidInputError
from .options import PRECISIONS
from .validation import check_bool


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


def check_compile(compile: object) -> bool:
    """Validate the ``compile`` switch (a bool); return it.

    Raises
    ------
    InvalidInputError
        If ``compile`` is not True or False.
    """
    return check_bool(compile, "compile")


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


#: Attribute marking a model compiled by :func:`compile_model` (value: the device type).
_COMPILED = "_sum_hq_compiled"


def compile_model(model: nn.Module, device: torch.device) -> None:
    """Compile ``model``'s modules in place with ``torch.compile`` (idempotent).

    The prompt encoder and mask decoder (whose inputs change with the number of prompts)
    are compiled with ``mode="reduce-overhead"`` on CUDA (CUDA graphs: one kernel launch
    replay per call) and in the default mode elsewhere. The image encoder is compiled for
    its one input shape (``dynamic=False``) except on the CPU, where the eager encoder
    (chunked fused attention, reused buffers) measured faster than the compiled one
    (vit_b 9.0 vs 10.8 s, vit_tiny 1.48 vs 1.61 s; benchmarks/README.md) while the
    compiled decoder is faster (111 vs 92 ms per prompt). Compilation happens on the first
    call of each module (tens of seconds on a CPU, again for each new prompt shape until
    torch marks it dynamic); parameters and ``state_dict`` keys are unchanged. A second
    call on the same model does nothing.

    Parameters
    ----------
    model : SamModel
        The model (children ``image_encoder``, ``prompt_encoder``, ``mask_decoder``).
    device : torch.device
        Where the model runs.

    Raises
    ------
    InvalidInputError
        If ``torch.compile`` cannot run on ``device`` here: no C++ compiler for
        inductor's CPU code, or no ``triton`` for its CUDA code.
    """
    device = torch.device(device)
    if getattr(model, _COMPILED, None) is not None:
        return
    _check_compiler(device)
    if device.type != "cpu":
        model.image_encoder.compile(dynamic=False)
    decoder_options = {"mode": "reduce-overhead"} if device.type == "cuda" else {}
    model.prompt_encoder.compile(**decoder_options)
    model.mask_decoder.compile(**decoder_options)
    setattr(model, _COMPILED, device.type)


def uses_cuda_graphs(model: nn.Module) -> bool:
    """Whether :func:`compile_model` compiled ``model``'s decoder into CUDA graphs.

    Outputs of a CUDA graph are overwritten by its next replay: callers clone them.
    """
    return getattr(model, _COMPILED, None) == "cuda"


def _check_compiler(device: torch.device) -> None:
    """Raise a clear error when inductor has no compiler for ``device``."""
    if device.type == "cuda":
        if importlib.util.find_spec("triton") is None:
            raise InvalidInputError(
                "compile=True on device 'cuda' needs the 'triton' package (torch.compile's GPU "
                "code generator); install the torch build that ships it, or use compile=False"
            )
        return
    from torch._inductor import config as inductor_config

    candidates = inductor_config.cpp.cxx
    candidates = candidates if isinstance(candidates, (list, tuple)) else (candidates,)
    if not any(cxx is not None and shutil.which(cxx) for cxx in candidates):
        names = [cxx for cxx in candidates if cxx is not None]
        raise InvalidInputError(
            f"compile=True on device {device.type!r} needs a C++ compiler for torch.compile "
            f"(looked for {names} on PATH); install one (e.g. g++) or use compile=False"
        )
