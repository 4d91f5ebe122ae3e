"""``sum-hq segment``: segment one image from point/box prompts, write mask and uncertainty."""

from __future__ import annotations

import argparse
from pathlib import Path


def _pair(text: str) -> tuple[float, float]:
    try:
        row, col = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROW,COL (two numbers), got {text!r}") from None
    return row, col


def _box(text: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"expected ROW0,COL0,ROW1,COL1 (four numbers), got {text!r}")
    return values  # type: ignore[return-value]


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--precision`` and ``--compile`` (see :class:`sum_core.Predictor`)."""
    from ..options import PRECISIONS

    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="model precision: bf16 on CUDA or CPU, fp16 on CUDA only (default fp32)")
    parser.add_argument("--compile", action="store_true",
                        help="compile the model with torch.compile (slow first call; CUDA graphs on CUDA)")


def add_segment_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``segment`` to the ``sum-hq`` sub-commands."""
    from ..options import TASKS, UNCERTAINTY_METHODS
    from ..zoo import DEFAULT_MODEL

    parser = subparsers.add_parser(
        "segment",
        help="segment one image from clicks and/or a box",
        description="Segment one 2D image (TIFF, PNG, JPEG or zarr) from point and box prompts given in "
        "(row, col) pixels, and write the mask and its per-pixel uncertainty map.",
    )
    parser.add_argument("image", type=Path, help="input image (TIFF, PNG, JPEG, zarr; 'sample' for a bundled one)")
    parser.add_argument("--key", help="array inside a zarr group (default: first array / level 0)")
    parser.add_argument("--point", type=_pair, action="append", default=[], metavar="ROW,COL",
                        help="positive click (repeatable)")
    parser.add_argument("--negative", type=_pair, action="append", default=[], metavar="ROW,COL",
                        help="negative click (repeatable)")
    parser.add_argument("--box", type=_box, action="append", default=[], metavar="ROW0,COL0,ROW1,COL1",
                        help="box prompt (repeatable: one object per box)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"registry name or checkpoint path (default {DEFAULT_MODEL})")
    parser.add_argument("--uncertainty", default="disagreement", choices=UNCERTAINTY_METHODS)
    parser.add_argument("--task", type=int, default=1, choices=sorted(TASKS),
                        help="SUM task prompt: " + ", ".join(f"{k} {v}" for k, v in TASKS.items()))
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: best available)")
    add_speed_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="mask output (.tif or .png)")
    parser.add_argument("--uncertainty-out", type=Path, help="uncertainty map output (.tif)")
    parser.set_defaults(func=run_segment)


def run_segment(args: argparse.Namespace) -> int:
    """Execute ``sum-hq segment``."""
    import numpy as np

    from ..api import segment
    from ..errors import InvalidInputError
    from ..imageio import read_image, write_image
    from ..sample_data import sample_image

    if not (args.point or args.negative or args.box):
        raise InvalidInputError("give at least one prompt: --point ROW,COL, --negative ROW,COL or --box")
    image = sample_image() if str(args.image) == "sample" else read_image(args.image, key=args.key)
    clicks = args.point + args.negative
    points = np.asarray(clicks, dtype=float) if clicks else None
    labels = np.array([1] * len(args.point) + [0] * len(args.negative)) if clicks else None
    box = np.asarray(args.box, dtype=float) if args.box else None
    prediction = segment(image, points=points, labels=labels, box=box, model=args.model,
                         uncertainty=args.uncertainty, task=args.task, device=args.device,
                         precision=args.precision, compile=args.compile)
    mask = prediction.mask
    label_image = mask.astype(np.uint8) if mask.ndim == 2 else _stack_to_labels(mask)
    write_image(args.out, label_image)
    if args.uncertainty_out is not None:
        uncertainty = prediction.uncertainty if mask.ndim == 2 else prediction.uncertainty.max(axis=0)
        write_image(args.uncertainty_out, uncertainty.astype(np.float32))
    print(f"wrote {args.out} ({int((label_image > 0).sum())} foreground pixels, "
          f"score {np.round(prediction.score, 3)})"
          + (f" and {args.uncertainty_out}" if args.uncertainty_out else ""))
    return 0


def _stack_to_labels(masks):
    """(K, H, W) bool masks -> (H, W) uint16 labels 1..K (later boxes on top)."""
    import numpy as np

    labels = np.zeros(masks.shape[1:], dtype=np.uint16)
    for index, mask in enumerate(masks, start=1):
        labels[mask] = index
    return labels
