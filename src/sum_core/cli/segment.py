"""``sum-hq segment``: segment one image from point/box prompts, write mask and uncertainty."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .arguments import add_channel_argument, add_speed_arguments, non_negative, numbers, parse_tile


def _pair(text: str) -> tuple[float, float]:
    return numbers(text, 2, "ROW,COL")  # type: ignore[return-value]


def _box(text: str) -> tuple[float, float, float, float]:
    return numbers(text, 4, "ROW0,COL0,ROW1,COL1")  # type: ignore[return-value]


def add_segment_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``segment`` to the ``sum-hq`` sub-commands."""
    from ..options import TASKS, UNCERTAINTY_METHODS
    from ..zoo import DEFAULT_MODEL

    parser = subparsers.add_parser(
        "segment",
        help="segment one image from clicks and/or boxes",
        description="Segment one 2D image (TIFF, PNG, JPEG or zarr; or one plane of a stack with --slice) "
        "from point and box prompts given in (row, col) pixels, and write a mask and its per-pixel "
        "uncertainty map at the image's full size. One object per --box (clicks apply to every box; "
        "clicks alone give one object). --out is a label image: 0 background, k for the object of the "
        "k-th box (1 for a single object; where objects overlap the later box wins), uint8 up to 255 "
        "objects, uint16 up to 65535, else uint32. --uncertainty-out is float32 (H, W): the highest "
        "uncertainty of any object at each pixel. Images larger than the model input (1024 px) are "
        "cut into windows of at most 1024 px, of which only those the objects reach are encoded (no "
        "downscaling); --no-tiling resizes the whole image into one window instead (SAM's behaviour: "
        "faster, coarser). Every argument is checked before the model is loaded; an output that is the "
        "input, the other output or (without --overwrite) an existing file is refused, and both "
        "outputs are written all or nothing. An --out or --uncertainty-out ending in .ome.tif(f) is an OME-TIFF "
        "carrying the input's physical pixel size (OME-Zarr, OME-TIFF or ImageJ TIFF input).",
    )
    parser.add_argument("image", type=Path, help="input image (TIFF, PNG, JPEG, zarr; 'sample' for a bundled one)")
    parser.add_argument("--key", help="array inside a zarr group (default: first array / level 0)")
    parser.add_argument("--slice", type=non_negative, metavar="N",
                        help="segment plane N of a 3D or time stack (along --axis)")
    parser.add_argument("--axis", metavar="A",
                        help="slice axis of the stack, a name (z, t; any case) or an index (default: the "
                        "first axis besides the plane and channels; with --slice)")
    add_channel_argument(parser)
    parser.add_argument("--point", type=_pair, action="append", default=[], metavar="ROW,COL",
                        help="positive click (repeatable)")
    parser.add_argument("--negative", type=_pair, action="append", default=[], metavar="ROW,COL",
                        help="negative click (repeatable)")
    parser.add_argument("--box", type=_box, action="append", default=[], metavar="ROW0,COL0,ROW1,COL1",
                        help="box prompt (repeatable: one object per box, labelled 1, 2, ... in order)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"registry name or checkpoint path (default {DEFAULT_MODEL})")
    parser.add_argument("--uncertainty", default="auto", choices=["auto", *UNCERTAINTY_METHODS],
                        help="uncertainty map (default auto: disagreement for HQ-SAM / SUM, entropy for SAM)")
    parser.add_argument("--task", type=int, default=1, choices=sorted(TASKS),
                        help="SUM task prompt: " + ", ".join(f"{k} {v}" for k, v in TASKS.items()))
    intensity = parser.add_mutually_exclusive_group()
    intensity.add_argument("--percentiles", type=_pair, metavar="LOW,HIGH",
                           help="intensity window from these percentiles of the pixel values (default for "
                           "non-uint8 images 0.5,99.5; given, it applies to uint8 images too)")
    intensity.add_argument("--limits", type=_pair, metavar="VMIN,VMAX",
                           help="fixed intensity window, e.g. 0,4095 for 12-bit data (applies to uint8 too)")
    tiling = parser.add_mutually_exclusive_group()
    tiling.add_argument("--tile", type=parse_tile, metavar="R,C",
                        help="inner tile size (default: automatic: one window up to the model input, "
                        "else windows of at most the model input)")
    tiling.add_argument("--no-tiling", action="store_true",
                        help="encode the whole image as one window, resized to the model input")
    parser.add_argument("--halo", type=non_negative, metavar="N",
                        help="context around each tile in pixels (default: model input / 16)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: best available)")
    add_speed_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="label image output (.tif, .ome.tif or .png)")
    parser.add_argument("--uncertainty-out", type=Path, help="uncertainty map output (.tif or .ome.tif)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out / --uncertainty-out if they exist (never the input)")
    parser.set_defaults(func=run_segment)


def _volume(args: argparse.Namespace) -> Any:
    """The input opened lazily as a :class:`~sum_core.volume.Volume` (one plane, or the stack of --slice)."""
    from ..volume import open_volume
    from ..errors import InvalidInputError
    from ..sample_data import sample_image

    if args.axis is not None and args.slice is None:
        raise InvalidInputError("--axis chooses the slice axis of a stack: give --slice N with it")
    source = sample_image() if str(args.image) == "sample" else args.image
    volume = open_volume(source, key=args.key, axis=args.axis, channel=args.channel)
    shape = tuple(volume.array.shape)
    if args.slice is None and volume.slice_axis is not None:
        raise InvalidInputError(
            f"image: {args.image} has shape {shape}, a stack; choose one plane with --slice N "
            "(and --axis A for the slice axis)"
        )
    if args.slice is not None and volume.slice_axis is None:
        raise InvalidInputError(f"--slice: {args.image} has shape {shape}, one plane, not a stack")
    if args.slice is not None and args.slice >= volume.n_slices:
        axis = volume.slice_axis
        raise InvalidInputError(
            f"--slice {args.slice}: the stack has {volume.n_slices} slices along axis {axis} "
            f"({volume.names[axis]}; shape {shape}); choose 0..{volume.n_slices - 1}"
        )
    return volume


def _image(volume: Any, slice_index: int | None) -> Any:
    """What :func:`sum_core.segment` segments: the lazy source when it reads as the plane itself
    (tiles are then read as they are needed), else the plane read into memory (a slice, channels
    moved last or chosen)."""
    planes = volume.planes
    as_is = planes.channel_axis in (None, len(volume.array.shape) - 1) and planes.channels is None
    return volume.array if slice_index is None and as_is else planes.read(slice_index or 0)


def _physical_size(volume: Any) -> list[tuple[float, str | None]]:
    """Pixel size and OME-XML unit of the plane's two axes (for an OME-TIFF output)."""
    from ..source_axes import ome_unit

    axes = [a for a in range(len(volume.out_shape)) if a != volume.out_slice_axis]
    return [(volume.scale[a], ome_unit(volume.units[a])) for a in axes]


def _check_outputs(args: argparse.Namespace, shape: tuple[int, int], label_dtype: Any) -> None:
    """Refuse outputs that would replace the input, each other or an existing file (without
    --overwrite), and any the writer cannot write, before the model is loaded."""
    import os

    import numpy as np

    from ..errors import InvalidInputError
    from ..imageio import check_image_target

    source = None if str(args.image) == "sample" else args.image
    taken: dict[Path, str] = {}  # resolved path -> "--flag PATH"
    outputs = (("--out", args.out, label_dtype), ("--uncertainty-out", args.uncertainty_out, np.float32))
    for flag, path, dtype in outputs:
        if path is None:
            continue
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError) as error:  # RuntimeError: a symlink loop (Python < 3.13)
            raise InvalidInputError(f"{flag}: cannot resolve {path}: {error}") from None
        if source is not None:
            if resolved == source.resolve() or (path.exists() and os.path.samefile(path, source)):
                raise InvalidInputError(f"{flag}: {path} is the input image; write the result to another file")
            if source.is_dir() and source.resolve() in resolved.parents:
                raise InvalidInputError(f"{flag}: {path} lies inside the input {source}; write the result outside it")
        if resolved in taken:
            raise InvalidInputError(f"{flag}: {path} is the same file as {taken[resolved]}; give two different files")
        check_image_target(path, shape, dtype, name=flag)
        if os.path.lexists(path) and not args.overwrite:
            raise InvalidInputError(f"{flag}: {path} exists; add --overwrite to replace it")
        taken[resolved] = f"{flag} {path}"


def run_segment(args: argparse.Namespace) -> int:
    """Execute ``sum-hq segment``: every argument is checked before the model is loaded."""
    import numpy as np

    from ..api import segment
    from ..errors import InvalidInputError
    from ..image import Normalization
    from ..imageio import write_images
    from ..prompts import validate_prompts

    if not (args.point or args.negative or args.box):
        raise InvalidInputError("give at least one prompt: --point ROW,COL, --negative ROW,COL or --box")
    if args.halo is not None and args.no_tiling:
        raise InvalidInputError("--halo sets the context of tiles; it has no use with --no-tiling")
    normalization = None
    if args.limits is not None:
        normalization = Normalization(limits=args.limits)
    elif args.percentiles is not None:
        normalization = Normalization(low=args.percentiles[0], high=args.percentiles[1])
    volume = _volume(args)
    planes = volume.planes
    clicks = args.point + args.negative
    points = np.asarray(clicks, dtype=float) if clicks else None
    labels = np.array([1] * len(args.point) + [0] * len(args.negative)) if clicks else None
    box = np.asarray(args.box, dtype=float) if args.box else None
    validate_prompts(points, labels, box, image_shape=planes.plane_shape, default_positive=True)
    _check_outputs(args, planes.plane_shape, _label_dtype(max(len(args.box), 1)))
    image = _image(volume, args.slice)
    tile_shape = planes.plane_shape if args.no_tiling else args.tile
    prediction = segment(image, points=points, labels=labels, box=box, model=args.model,
                         uncertainty=args.uncertainty, task=args.task, device=args.device,
                         precision=args.precision, compile=args.compile, normalization=normalization,
                         tile_shape=tile_shape, halo=args.halo)  # fmt: skip
    label_image = _to_labels(prediction.masks)
    outputs = [(args.out, label_image)]
    if args.uncertainty_out is not None:
        outputs.append((args.uncertainty_out, prediction.uncertainties.max(axis=0)))
    write_images(outputs, _physical_size(volume))  # both to temporary files, then both into place
    scores = ", ".join(f"{s:.3f}" for s in prediction.scores)
    print(f"wrote {args.out} ({label_image.shape[0]}x{label_image.shape[1]}, {len(prediction)} object(s), "
          f"{int((label_image > 0).sum())} foreground pixels, score {scores})"
          + (f" and {args.uncertainty_out}" if args.uncertainty_out else ""))
    return 0


def _label_dtype(n_objects: int) -> Any:
    """The smallest unsigned dtype that holds labels 0..n_objects."""
    import numpy as np

    return np.min_scalar_type(max(n_objects, 1))


def _to_labels(masks):
    """(K, H, W) bool masks -> (H, W) labels 1..K (later objects on top) of :func:`_label_dtype`."""
    import numpy as np

    labels = np.zeros(masks.shape[1:], dtype=_label_dtype(len(masks)))
    for index, mask in enumerate(masks, start=1):
        labels[mask] = index
    return labels
