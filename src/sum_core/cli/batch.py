"""``sum-hq batch``: resumable segmentation of a large image or stack into a zarr v3 group, or of
many images (a folder, glob pattern or list file) into an output folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from .arguments import (
    add_ais_option_arguments,
    add_auto_option_arguments,
    add_channel_argument,
    add_speed_arguments,
    ais_options_from_args,
    auto_options_from_args,
    non_negative,
    option_flags,
    parse_tile,
)

_MODES = ("auto", "ais", "amg")


def add_batch_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``batch`` to the ``sum-hq`` sub-commands."""
    from ..zoo import DEFAULT_MODEL

    parser = subparsers.add_parser(
        "batch",
        help="segment a large image, 3D stack or time series into a zarr group (resumable)",
        description="Segment an image (zarr, OME-Zarr, TIFF) slice by slice and tile by tile into a zarr v3 "
        "group with 'labels' (uint32, unique ids) and 'uncertainty' (float16). Automatic segmentation by "
        "default (--mode: AIS with the model's AIS decoder, or AMG, SAM's point grid); --prompts segments one "
        "object per prompt of a CSV table. Every mode writes a per-object table 'objects/'. Rerun the same "
        "command to resume an interrupted job. Many images in one job: SOURCE a folder, a quoted glob pattern "
        "('images/*.tif') or a list file (.txt, one path per line) and TARGET an output folder: one zarr group per "
        "image (named from its file name), a summary table TARGET/summary.csv (file, output, status, objects, "
        "slices, seconds, error); a file that fails is recorded and the others go on (exit code 1 naming it).",
    )
    parser.add_argument("source", type=Path,
                        help="input image or stack (zarr, OME-Zarr, TIFF, PNG), or a folder / 'glob*' / list.txt of them")
    parser.add_argument("target", type=Path,
                        help="output zarr v3 group (created; resumed if from the same job), or a folder for many inputs")
    parser.add_argument("--key", help="array inside a zarr group (default: OME-Zarr level 0 / the only array)")
    parser.add_argument("--prompts", type=Path, metavar="TABLE.csv",
                        help="prompt table: object_id,slice,kind(point|box),row,col,row1,col1,label")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"registry name or checkpoint path (default {DEFAULT_MODEL})")
    parser.add_argument("--tile", type=parse_tile, metavar="R,C", help="inner tile size (default: automatic)")
    parser.add_argument("--halo", type=non_negative, metavar="N", help="context around each tile (with --tile)")
    parser.add_argument("--axis", help="slice axis name (e.g. z, t) or index; needed for 4D+ sources")
    add_channel_argument(parser)
    parser.add_argument("--format", choices=("zarr", "ome-zarr"), default="zarr",
                        help="zarr: a zarr v3 group with 'labels' and 'uncertainty' (default); ome-zarr: NGFF 0.5 "
                        "labels (inside an OME-Zarr source when TARGET is SOURCE/labels/NAME, else a new OME-Zarr "
                        "image; many inputs: one NAME.ome.zarr each)")
    parser.add_argument("--mode", choices=_MODES, default=None,
                        help="automatic mode: ais (the model's AIS decoder), amg (SAM's point grid) or auto (default: "
                        "the mode of the options given, else ais when the model has an AIS decoder)")
    add_auto_option_arguments(parser)
    add_ais_option_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace a target written by another job")
    parser.add_argument("--repair", action="store_true",
                        help="redo only the damaged slices of a target of this job (damage is reported on resume)")
    parser.add_argument("--verify", action="store_true",
                        help="only verify TARGET against its recorded chunk checksums (nothing is computed)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: best available)")
    add_speed_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_batch)


def run_batch(args: argparse.Namespace) -> int:
    """Execute ``sum-hq batch``."""
    from ..batch import segment_zarr, verify_target
    from ..batch.many import is_many
    from ..batch.objects import COLUMNS
    from ..batch.writer import Target

    from ..ais_options import AisOptions
    from ..auto_options import AutoOptions
    from ..errors import InvalidInputError

    amg, ais = auto_options_from_args(args), ais_options_from_args(args)
    many = is_many(args.source)
    if many and (args.verify or args.prompts is not None):
        flag = "--verify" if args.verify else "--prompts"
        raise InvalidInputError(f"{flag}: works on one image; {args.source} names many (a folder, pattern or list file)")
    if args.verify:
        _check_verify_alone(args, {**amg, **ais})
        chunks = verify_target(args.target)
        print(f"verified {args.target}: {chunks} chunk(s) of labels and uncertainty intact")
        return 0
    if args.prompts is not None and (amg or ais or args.mode is not None):
        flags = option_flags({**amg, **ais}) or f"--mode {args.mode}"
        raise InvalidInputError(f"{flags}: automatic mode options do not apply with --prompts")
    mode = args.mode or "auto"
    if amg and ais:
        raise InvalidInputError(
            f"{option_flags(amg)} (AMG) and {option_flags(ais)} (AIS): options of both automatic modes; give those "
            "of one (--mode amg or --mode ais)"
        )
    for flags, kind, other in ((amg, "AMG", "ais"), (ais, "AIS", "amg")):
        if flags and mode == other:
            raise InvalidInputError(f"{option_flags(flags)}: {kind} options do not apply with --mode {other}")
    options = None
    if args.prompts is None and (amg or mode == "amg"):
        options = AutoOptions.from_dict(amg)
    elif args.prompts is None and (ais or mode == "ais"):
        options = AisOptions(**ais)
    axis = int(args.axis) if args.axis is not None and args.axis.lstrip("-").isdigit() else args.axis
    kwargs = dict(
        mode=mode if args.prompts is None else "prompts",
        model=args.model,
        tile_shape=args.tile,
        halo=args.halo,
        axis=axis,
        key=args.key,
        channel=args.channel,
        format=args.format,
        overwrite=args.overwrite,
        repair=args.repair,
        device=args.device,
        progress=not args.no_progress,
        precision=args.precision,
        compile=args.compile,
        options=options,
    )
    if many:
        return _run_many(args, kwargs)
    group = segment_zarr(args.source, args.target, prompts=args.prompts, **kwargs)
    labels, uncertainty = (_local(array.store_path) for array in (Target(group).labels, Target(group).uncertainty))
    print(f"wrote {args.target}: labels {labels} (uint32, shape {Target(group).labels.shape}), "
          f"uncertainty {uncertainty} (float16)")
    if "objects" in group:
        columns = ", ".join(name for name, _ in COLUMNS if name in group["objects"])
        print(f"per-object table: {_local(group['objects'].store_path)} ({group['objects/label'].shape[0]} objects; "
              f"columns {columns}; sum_core.batch.object_table reads it)")
    return 0


def _local(store_path: object) -> str:
    """A zarr store path as a user types it (``file:///a/b`` -> ``/a/b``)."""
    text = str(store_path)
    return text.removeprefix("file://")


def _run_many(args: argparse.Namespace, kwargs: dict) -> int:
    """``sum-hq batch FOLDER|GLOB|LIST OUT_DIR``: one job per image; exit code 1 when a file failed."""
    import sys

    from ..batch import segment_many
    from ..batch.many import SUMMARY

    results = segment_many(args.source, args.target, **kwargs)
    failed = [r for r in results if r.status != "done"]
    done = len(results) - len(failed)
    print(f"wrote {args.target}: {done} of {len(results)} file(s) segmented, one zarr group each; "
          f"summary {args.target / SUMMARY}")
    for result in failed:
        print(f"sum-hq batch: failed: {result.file}: {result.error}", file=sys.stderr)
    if failed:
        print(f"sum-hq batch: {len(failed)} file(s) failed (see above and {args.target / SUMMARY}); fix them and rerun "
              "the same command: the finished files are not recomputed", file=sys.stderr)
    return 1 if failed else 0


def _check_verify_alone(args: argparse.Namespace, given: dict) -> None:
    """Refuse ``--verify`` with options of a job, which it would ignore.

    Raises
    ------
    InvalidInputError
        Naming the options given and what to run instead.
    """
    from ..errors import InvalidInputError

    flags = [flag for flag, on in (("--repair", args.repair), ("--overwrite", args.overwrite),
                                   ("--prompts", args.prompts is not None)) if on]
    flags += [f"--mode {args.mode}"] if args.mode is not None else []
    flags += [option_flags(given)] if given else []
    if flags:
        raise InvalidInputError(
            f"--verify: only checks TARGET and cannot be combined with {', '.join(flags)}; run --verify alone, "
            "then (if it reports damage) the job's command with --repair to redo the damaged slices"
        )
