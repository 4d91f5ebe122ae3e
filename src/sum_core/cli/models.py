"""``sum-hq models list | download | path``: manage the checkpoint cache.

Each sub-command stores its handler in ``args.func``; the handler takes the
parsed arguments and returns the process exit code (0 on success, 1 when a
model could not be resolved or fetched).
"""

from __future__ import annotations

import argparse
import sys

from .. import zoo
from ..errors import SumError


def add_models_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``models`` command and its sub-commands to ``subparsers``.

    Parameters
    ----------
    subparsers
        The object returned by ``ArgumentParser.add_subparsers()`` of ``sum-hq``.

    Returns
    -------
    argparse.ArgumentParser
        The ``models`` parser.
    """
    parser = subparsers.add_parser(
        "models",
        help="list, download or locate model checkpoints",
        description=(
            "Manage the checkpoint cache (folder: $SUM_HQ_CACHE or the user cache). "
            "Add your own models with a YAML/JSON file named by $SUM_HQ_MODELS."
        ),
    )
    parser.set_defaults(func=lambda args: _print_help(parser))
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    list_parser = commands.add_parser("list", help="show the registered models and whether they are cached")
    list_parser.set_defaults(func=run_list)

    download_parser = commands.add_parser("download", help="download (and verify) model checkpoints")
    download_parser.add_argument("names", nargs="+", metavar="NAME", help="registry name(s)")
    download_parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="do not show a progress bar"
    )
    download_parser.set_defaults(func=run_download)

    path_parser = commands.add_parser("path", help="print where a model's file is cached")
    path_parser.add_argument("name", metavar="NAME", help="registry name")
    path_parser.set_defaults(func=run_path)
    return parser


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def run_list(args: argparse.Namespace) -> int:
    """Print a table of registered models (name, type, cached, description)."""
    try:
        entries = list(zoo.registry().values())
    except SumError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rows = [("NAME", "TYPE", "CACHED", "DESCRIPTION")]
    for entry in entries:
        cached = "yes" if zoo.is_cached(entry.name) else "no"
        rows.append((entry.name, entry.model_type or "-", cached, entry.description))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
    print(f"\ncache folder: {zoo.cache_dir()}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    """Fetch each named model, printing its path; report failures and go on."""
    status = 0
    for name in args.names:
        try:
            path = zoo.fetch(name, progress=args.progress)
        except SumError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
            continue
        print(path)
    return status


def run_path(args: argparse.Namespace) -> int:
    """Print the cache path of a model (a note on stderr if it is not downloaded)."""
    try:
        path = zoo.cached_path(args.name)
    except SumError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    if not path.is_file():
        print(
            f"note: not downloaded yet; run `sum-hq models download {args.name}`",
            file=sys.stderr,
        )
    return 0
