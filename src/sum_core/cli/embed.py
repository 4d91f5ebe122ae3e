"""``sum-hq embed``: precompute the tiled embedding cache of an image or stack (:func:`sum_core.embed`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .arguments import non_negative, parse_tile


def add_embed_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``embed`` to the ``sum-hq`` sub-commands."""
    from ..options import PRECISIONS
    from ..zoo import DEFAULT_MODEL

    parser = subparsers.add_parser(
        "embed",
        help="precompute the embedding cache of an image or stack (resumable)",
        description="Encode every tile of every slice of an image or stack (TIFF, PNG, zarr, OME-Zarr) once "
        "and store the embeddings in a zarr cache folder (sum_core.embed). sum_core.TiledPredictor, "
        "TiledEmbeddings and sum_core.embed with the same cache, model, tiling and slice axis then read them "
        "instead of encoding again. The cache records what it was made from (the data's hash, the model's "
        "weights, the tiling, the slice axis, the intensity window, the precision): a cache made from anything "
        "else is refused (--overwrite starts it again), and so is a non-empty folder that is not an embedding "
        "cache. Rerun the same command to resume an interrupted run at its missing tiles.",
    )
    parser.add_argument("source", type=Path, help="input image or stack (zarr, OME-Zarr, TIFF, PNG)")
    parser.add_argument("cache", type=Path, help="embedding cache folder (created; resumed if made for the same input)")
    parser.add_argument("--key", help="array inside a zarr group (default: OME-Zarr level 0 / the only array)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"registry name or checkpoint path (default {DEFAULT_MODEL})")
    parser.add_argument("--tile", type=parse_tile, metavar="R,C", help="inner tile size (default: automatic)")
    parser.add_argument("--halo", type=non_negative, metavar="N", help="context around each tile (with --tile)")
    parser.add_argument("--axis", help="slice axis of a stack, by name (e.g. z, t) or index; every slice is encoded "
                        "(default: the first axis of a 3D grayscale source)")
    parser.add_argument("--batch-size", type=int, default=1, metavar="N", help="tiles per encoder call (default 1; "
                        "more on a GPU)")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                        help="storage type of the embeddings (float16: half the disk; default float32)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start again a cache made for other data, model, tiling or preprocessing (only a "
                        "folder holding an embedding cache is ever cleared)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: best available)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="encoder precision, part of the cache's signature (default fp32)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_embed)


def run_embed(args: argparse.Namespace) -> int:
    """Execute ``sum-hq embed``: the source and axis are checked before the model is loaded."""
    from ..batch.volume import open_volume
    from ..errors import InvalidInputError
    from ..sources import open_image
    from ..tiled_embedding import embed

    if args.batch_size < 1:
        raise InvalidInputError(f"--batch-size must be >= 1, got {args.batch_size}")
    axis = int(args.axis) if args.axis is not None and args.axis.lstrip("-").isdigit() else args.axis
    volume = open_volume(args.source, key=args.key, axis=axis)  # the slice axis rule of sum-hq batch
    if volume.has_channels and volume.channel_axis != len(volume.names) - 1:
        raise InvalidInputError(
            f"source: {args.source} has its channel axis {volume.names[volume.channel_axis]!r} before the plane; "
            "the embedding cache reads channels last (y, x, c): save the image channels-last first"
        )
    tiled = embed(
        open_image(args.source, key=args.key),
        model=args.model,
        tile_shape=args.tile,
        halo=args.halo,
        cache=args.cache,
        batch_size=args.batch_size,
        stack_axis=volume.slice_axis,
        dtype=args.dtype,
        overwrite=args.overwrite,
        device=args.device,
        progress=not args.no_progress,
        precision=args.precision,
    )
    tiles = tiled.n_slices * len(tiled.grid)
    axis_text = "" if volume.slice_axis is None else f" along axis {volume.slice_axis} ({volume.names[volume.slice_axis]})"
    print(f"wrote {args.cache}: {tiles} tile embedding(s) of {tiled.n_slices} slice(s){axis_text}, tiles "
          f"{tuple(tiled.grid.tile_shape)} with halo {tuple(tiled.grid.halo)}; {tiled.tiles_encoded} encoded now, "
          f"{tiles - tiled.tiles_encoded} already in the cache")
    return 0
