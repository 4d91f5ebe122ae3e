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

    list_parser = commands.add_parser(
        "list",
        help="show the registered models: what they are for, licence, AIS decoder, whether cached",
    )
    list_parser.set_defaults(func=run_list)

    download_parser = commands.add_parser("download", help="download (and verify) model checkpoints")
    download_parser.add_argument("names", nargs="+", metavar="NAME", help="registry name(s)")
    download_parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="do not show a progress bar"
    )
    download_parser.add_argument(
        "--no-decoder",
        dest="decoder",
        action="store_false",
        help="do not fetch a model's AIS decoder file with it (needed only for automatic instance segmentation)",
    )
    download_parser.set_defaults(func=run_download)

    path_parser = commands.add_parser("path", help="print where a model's file is cached")
    path_parser.add_argument("name", metavar="NAME", help="registry name")
    path_parser.set_defaults(func=run_path)
    return parser


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _ais_column(entry: zoo.ModelEntry, decoders: set[str]) -> str:
    """``yes`` (the model has an AIS decoder), ``decoder`` (the entry is one) or ``no``."""
    if entry.decoder is not None:
        return "yes"
    return "decoder" if entry.name in decoders else "no"


def run_list(args: argparse.Namespace) -> int:
    """Print a table of registered models.

    Columns: name, architecture, purpose (the images the weights are for), AIS
    (``yes``: the model has an automatic-instance-segmentation decoder, fetched
    with it; ``decoder``: the entry is such a decoder file), cached, description,
    licence.
    """
    try:
        entries = list(zoo.registry().values())
    except SumError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    decoders = {entry.decoder for entry in entries if entry.decoder is not None}
    rows = [("NAME", "TYPE", "PURPOSE", "AIS", "CACHED", "DESCRIPTION", "LICENCE")]
    for entry in entries:
        rows.append(
            (
                entry.name,
                entry.model_type or "-",
                entry.purpose or "-",
                _ais_column(entry, decoders),
                "yes" if zoo.is_cached(entry.name) else "no",
                entry.description or "-",
                entry.licence or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    print(f"\ncache folder: {zoo.cache_dir()}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    """Fetch each named model (and its AIS decoder file), printing the paths; report failures and go on."""
    status = 0
    for name in args.names:
        try:
            print(zoo.fetch(name, progress=args.progress))
            decoder = zoo.fetch_decoder(name, progress=args.progress) if args.decoder else None
        except SumError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
            continue
        if decoder is not None:
            print(decoder)
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
