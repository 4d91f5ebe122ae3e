"""``sum-hq`` command line: model zoo, segmentation, batch jobs, embedding caches and model export.

Sub-command modules are imported only when their command runs, so that
``sum-hq --help`` answers without importing torch.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence

from .batch import add_batch_parser
from .embed import add_embed_parser
from .export import add_export_parser
from .models import add_models_parser
from .segment import add_segment_parser

#: What Ctrl+C prints, by command (default "interrupted").
_INTERRUPTED = {"batch": "interrupted; rerun the same command to resume",
                "embed": "interrupted; rerun the same command to resume"}
#: A value that starts with "-" and a digit or ".": a negative number or list such as -1,-1.
_NEGATIVE_VALUE = re.compile(r"-\.?\d")


def build_parser() -> argparse.ArgumentParser:
    """Return the ``sum-hq`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="sum-hq",
        description="Segment images with SAM / HQ-SAM / SUM models, with per-pixel uncertainty maps.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_models_parser(subparsers)
    add_segment_parser(subparsers)
    add_batch_parser(subparsers)
    add_embed_parser(subparsers)
    add_export_parser(subparsers)
    return parser


def attach_negative_values(argv: Sequence[str]) -> list[str]:
    """``--point -1,-1`` -> ``--point=-1,-1``: argparse takes a token that starts with ``-`` for an
    option unless it is one plain negative number, so a negative coordinate list after its
    option would be refused as "expected one argument". No ``sum-hq`` option starts with ``-``
    and a digit, so such a token after a ``--option`` is always that option's value.

    Examples
    --------
    >>> attach_negative_values(["segment", "a.tif", "--point", "-1,-1", "--box", "1,2,3,4"])
    ['segment', 'a.tif', '--point=-1,-1', '--box', '1,2,3,4']
    """
    out: list[str] = []
    positional_only = False  # after a bare "--" every token is positional
    for token in argv:
        previous = out[-1] if out else ""
        if not positional_only and _NEGATIVE_VALUE.match(token) and previous.startswith("--") and "=" not in previous:
            out[-1] = f"{previous}={token}"
        else:
            out.append(token)
            positional_only = positional_only or token == "--"
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sum-hq``; return the exit code.

    Errors from sum_core print one clear line (exit code 2). Ctrl+C prints one line,
    ``interrupted`` (exit code 130). This function always returns, whoever calls it; the
    program itself is :func:`run`.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default: ``sys.argv[1:]``).
    """
    command = None
    try:
        args = build_parser().parse_args(attach_negative_values(sys.argv[1:] if argv is None else argv))
        command = args.command
        return _run(args)
    except KeyboardInterrupt:
        print(f"sum-hq {command or ''}".rstrip() + f": {_INTERRUPTED.get(command, 'interrupted')}", file=sys.stderr)
        return 130


def run() -> None:
    """The ``sum-hq`` program (also ``python -m sum_core.cli``): :func:`main` on ``sys.argv``,
    then exit with its code. After Ctrl+C (code 130) the process ends at once, without waiting
    for non-daemon background threads of libraries (a batch job has already stopped its own
    tile tasks and released its target before :func:`main` returns)."""
    code = main()
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)  # not sys.exit: that would wait for any background thread still at work
    sys.exit(code)


def _run(args: argparse.Namespace) -> int:
    """Execute the parsed command; a :class:`~sum_core.errors.SumError` prints one line (code 2)."""
    from ..errors import SumError

    try:
        return int(args.func(args) or 0)
    except SumError as error:
        print(f"sum-hq {args.command}: error: {error}", file=sys.stderr)
        return 2
