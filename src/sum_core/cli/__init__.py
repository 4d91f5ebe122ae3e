"""``sum-hq`` command line: model zoo, segmentation and batch jobs.

Sub-command modules are imported only when their command runs, so that
``sum-hq --help`` answers without importing torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .batch import add_batch_parser
from .models import add_models_parser
from .segment import add_segment_parser


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sum-hq``; return the exit code (errors from sum_core print one clear line)."""
    args = build_parser().parse_args(argv)
    from ..errors import SumError

    try:
        return int(args.func(args) or 0)
    except SumError as error:
        print(f"sum-hq {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sum-hq {args.command}: interrupted", file=sys.stderr)
        return 130
