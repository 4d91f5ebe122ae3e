"""Argument types and groups shared by the ``sum-hq`` subcommands (one parser per kind of value)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

__all__ = [
    "add_ais_option_arguments",
    "add_auto_option_arguments",
    "add_channel_argument",
    "add_speed_arguments",
    "ais_options_from_args",
    "auto_options_from_args",
    "non_negative",
    "numbers",
    "option_flags",
    "parse_channel",
    "parse_tile",
]


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


def parse_channel(text: str) -> int | tuple[int, int, int]:
    """argparse type of ``--channel``: ``N`` (one channel, as grayscale) or ``R,G,B`` (three), integers >= 0."""
    values = numbers(text, 3 if "," in text else 1, "N or R,G,B (channel indices >= 0)", int)
    if min(values) < 0:
        raise argparse.ArgumentTypeError(f"channel indices must be >= 0, got {text!r}")
    return values[0] if len(values) == 1 else values  # type: ignore[return-value]


def add_channel_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--channel`` (the ``channel=`` of :func:`sum_core.volume.open_volume`)."""
    parser.add_argument("--channel", type=parse_channel, metavar="N|R,G,B",
                        help="channels fed to the model when the image has a channel axis (S, C, channel, rgb "
                        "in any position): N for that channel as grayscale, R,G,B for three channels as "
                        "colour (default: all of them; needed when there are not 1, 3 or 4)")


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--precision`` and ``--compile`` (see :class:`sum_core.Predictor`)."""
    from ..options import PRECISIONS

    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="model precision: bf16 on CUDA or CPU, fp16 on CUDA only (default fp32)")
    parser.add_argument("--compile", action="store_true",
                        help="compile the model with torch.compile (slow first call; CUDA graphs on CUDA)")


def add_auto_option_arguments(parser: argparse.ArgumentParser, defaults: Any = None) -> None:
    """One ``--option`` per :class:`~sum_core.auto_options.AutoOptions` field.

    Parameters
    ----------
    parser : argparse.ArgumentParser
    defaults : AutoOptions, optional
        The defaults of the command (``training.pseudolabel`` has its own). Without them the
        argparse defaults are None, so that only the options given reach the job
        (:func:`auto_options_from_args`), and the help shows the dataclass's defaults.
    """
    from ..auto_options import AutoOptions
    from ..options import TASKS

    shown = AutoOptions() if defaults is None else defaults
    group = parser.add_argument_group("automatic segmentation options")
    for field in dataclasses.fields(AutoOptions):
        flag = "--" + field.name.replace("_", "-")
        value = getattr(shown, field.name)
        default = None if defaults is None else value
        help_text = f"{field.metadata['help']} (default {value})"
        if field.name == "task":
            group.add_argument(flag, type=int, choices=sorted(TASKS), default=default, help=help_text)
        elif isinstance(field.default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            group.add_argument(flag, type=type(field.default), default=default, help=help_text)


def auto_options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~sum_core.auto_options.AutoOptions` fields given on the command line."""
    from ..auto_options import AutoOptions

    return {name: getattr(args, name) for name in AutoOptions.names() if getattr(args, name) is not None}


def add_ais_option_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--option`` per :class:`~sum_core.ais_options.AisOptions` field (help from the field's metadata).

    The argparse defaults are None, so that only the options given reach the job
    (:func:`ais_options_from_args`); the help shows the dataclass's defaults.
    """
    from ..ais_options import AisOptions

    group = parser.add_argument_group("AIS options (--mode ais)")
    for field in dataclasses.fields(AisOptions):
        group.add_argument(
            "--" + field.name.replace("_", "-"), type=type(field.default), default=None,
            help=f"{field.metadata['help']} (default {field.default})",
        )


def ais_options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~sum_core.ais_options.AisOptions` fields given on the command line."""
    from ..ais_options import AisOptions

    names = (field.name for field in dataclasses.fields(AisOptions))
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def option_flags(given: dict[str, Any]) -> str:
    """The command-line spelling of options given (``--points-per-side, --no-multimask``)."""
    return ", ".join(("--no-" if value is False else "--") + name.replace("_", "-") for name, value in given.items())
