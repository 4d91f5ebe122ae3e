"""Argument types and groups shared by the ``sum-hq`` subcommands (one parser per kind of value)."""

from __future__ import annotations

import argparse

__all__ = ["add_speed_arguments", "non_negative", "numbers", "parse_tile"]


def numbers(text: str, count: int, names: str, kind: type = float) -> tuple:
    """``count`` comma-separated numbers of type ``kind`` (argparse type helper)."""
    try:
        values = tuple(kind(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count:
        raise argparse.ArgumentTypeError(f"expected {names} ({count} numbers), got {text!r}")
    return values


def parse_tile(text: str) -> tuple[int, int]:
    """argparse type of a tile size: ``N`` (square) or ``R,C``, integers >= 1."""
    values = numbers(text, 2 if "," in text else 1, "R,C or N (integers >= 1)", int)
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"tile sizes must be >= 1, got {text!r}")
    return values * 2 if len(values) == 1 else values  # type: ignore[return-value]


def non_negative(text: str) -> int:
    """argparse type of an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--precision`` and ``--compile`` (see :class:`sum_core.Predictor`)."""
    from ..options import PRECISIONS

    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="model precision: bf16 on CUDA or CPU, fp16 on CUDA only (default fp32)")
    parser.add_argument("--compile", action="store_true",
                        help="compile the model with torch.compile (slow first call; CUDA graphs on CUDA)")
