"""Automatic segmentation time per 1024×1024 image: sum_core against the reference generator.

``sum_core.automatic.generate_masks`` on a :class:`~sum_core.predictor.Predictor` and the
reference ``SamAutomaticMaskGenerator`` of ``segment_anything_hq`` run with the same random
weights (ours copied into the reference with ``strict=True``), on the same image, with the
same grid and thresholds, one after the other in the same process. The image encoder is
excluded: each side encodes the image once beforehand (that time is printed for scale), and
only the decode + filter + NMS + output stages are timed (the reference's ``set_image`` /
``reset_image`` are replaced by no-ops on its already encoded predictor). The predicted-IoU
and stability filters are off by default (threshold 0, as SAM: "no filter"), so every mask
goes through every stage. The reference's NMS calls torchvision's ``batched_nms``, which the
test stub lacks; it is replaced by plain NMS from :func:`sum_core.nms.nms` (the generator
passes one category, all zero, so this is the same operation).

    python benchmarks/bench_automatic.py                       # 16 x 16 points
    python benchmarks/bench_automatic.py --points-per-side 32  # SAM's default grid

Needs the test dependencies (``segment-anything-hq``); torchvision/timm are stubbed.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import reference_impl  # noqa: E402
from reference_models import reference_with_weights  # noqa: E402

from sum_core import build_model  # noqa: E402
from sum_core.automatic import generate_masks  # noqa: E402
from sum_core.nms import nms  # noqa: E402
from sum_core.predictor import Predictor  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of ``fn()`` over ``repeats`` runs after one warm-up, and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """float32 matmul rate of this machine, GFLOP/s."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    seconds, _ = timed(lambda: a @ b, repeats)
    return 2 * size**3 / seconds / 1e9


def synthetic_image(size: int = 1024, seed: int = 0) -> np.ndarray:
    """``size × size`` uint8 RGB: noise plus bright discs of a few colours."""
    rng = np.random.default_rng(seed)
    image = rng.normal(40.0, 10.0, (size, size, 3))
    rows, cols = np.ogrid[:size, :size]
    for _ in range(60):
        r, c, radius = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(8, 60)
        image[(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] = rng.uniform(120, 250, 3)
    return np.clip(image, 0, 255).astype(np.uint8)


def plain_batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float):
    """``torchvision.ops.batched_nms`` for a single category (what the generator passes)."""
    if idxs.numel() and bool((idxs != idxs[0]).any()):
        raise NotImplementedError("plain_batched_nms handles one category only")
    return nms(boxes, scores, iou_threshold)


def reference_generator(ours: torch.nn.Module, image: np.ndarray, args: argparse.Namespace):
    """The reference generator on ``ours``'s weights, its predictor already encoded on ``image``.

    Returns the generator and the seconds its encoder took.
    """
    sam_hq = reference_impl.sam_hq()
    amg = importlib.import_module("segment_anything_hq.automatic_mask_generator")
    amg.batched_nms = plain_batched_nms
    generator = sam_hq.SamAutomaticMaskGenerator(
        reference_with_weights(ours),
        points_per_side=args.points_per_side,
        points_per_batch=args.points_per_batch,
        pred_iou_thresh=args.pred_iou_thresh,
        stability_score_thresh=args.stability_thresh,
        stability_score_offset=args.stability_offset,
        box_nms_thresh=args.box_nms_thresh,
        crop_n_layers=0,
        min_mask_region_area=0,
        output_mode="binary_mask",
    )
    start = time.perf_counter()
    generator.predictor.set_image(image)
    encoder = time.perf_counter() - start
    # The generator encodes (and afterwards forgets) the image inside generate(); keep the
    # embedding computed above instead, so only the decode and filter stages are timed.
    generator.predictor.set_image = lambda *a, **k: None
    generator.predictor.reset_image = lambda: None
    return generator, encoder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_tiny", choices=["vit_tiny", "vit_b", "vit_l", "vit_h"])
    parser.add_argument("--points-per-side", type=int, default=16, help="32 is SAM's default")
    parser.add_argument("--points-per-batch", type=int, default=64)
    parser.add_argument("--pred-iou-thresh", type=float, default=0.0, help="0: no filter")
    parser.add_argument("--stability-thresh", type=float, default=0.0, help="0: no filter")
    parser.add_argument("--stability-offset", type=float, default=1.0)
    parser.add_argument("--box-nms-thresh", type=float, default=0.7)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs after one warm-up")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    image = synthetic_image()
    ours = build_model(args.model, hq=True)
    generator, t_enc_ref = reference_generator(ours, image, args)
    predictor = Predictor(ours, device="cpu")
    start = time.perf_counter()
    predictor.set_image(image)
    t_enc_ours = time.perf_counter() - start
    rate = matmul_gflops()

    def run_ours():
        return generate_masks(
            predictor,
            points_per_side=args.points_per_side,
            points_per_batch=args.points_per_batch,
            pred_iou_thresh=args.pred_iou_thresh,
            stability_thresh=args.stability_thresh,
            stability_offset=args.stability_offset,
            box_nms_thresh=args.box_nms_thresh,
            min_area=0,
            multimask=True,
        )

    t_ours, masks_ours = timed(run_ours, args.repeats)
    t_ref, masks_ref = timed(lambda: generator.generate(image, multimask_output=True), args.repeats)

    print(f"machine: {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"float32 matmul {rate:.0f} GFLOP/s")
    print(f"model: {args.model} HQ, random weights; image 1024x1024 RGB; {args.points_per_side}^2 = "
          f"{args.points_per_side**2} points, {args.points_per_batch} per batch; pred_iou_thresh "
          f"{args.pred_iou_thresh}, stability_thresh {args.stability_thresh} (offset "
          f"{args.stability_offset}), box_nms_thresh {args.box_nms_thresh}; median of {args.repeats} "
          f"after a warm-up")
    print()
    print("| measurement | reference | sum_core | speed-up (ref / ours) |")
    print("|---|---|---|---|")
    print(f"| automatic masks, decode + filter + NMS + output, s/image (encoder excluded) | {t_ref:.2f} | "
          f"{t_ours:.2f} | {t_ref / t_ours:.2f}x |")
    print(f"| masks returned | {len(masks_ref)} | {len(masks_ours)} | |")
    print(f"| for scale: encoder, s/image (one run, not part of the row above) | {t_enc_ref:.2f} | "
          f"{t_enc_ours:.2f} | |")


if __name__ == "__main__":
    main()
