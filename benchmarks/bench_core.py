"""Encoder and decoder latency of sum_core against the reference implementation.

Both models carry the same random weights (ours are copied into the reference
with ``strict=True``), run in the same process, on the same input, one after
the other, and the ratio reference / ours is printed (> 1 means we are faster).
Achieved FLOP/s is compared with a float32 matrix multiply measured in the same run.

    python benchmarks/bench_core.py --model vit_b --repeats 3

Needs the test dependencies (``segment-anything-hq``); torchvision/timm are stubbed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import reference_impl  # noqa: E402

from sum_core.modeling import build_model  # noqa: E402
from sum_core.predictor import Predictor  # noqa: E402

ENCODER_GFLOP = {"vit_b": 972.0, "vit_l": 2986.0, "vit_h": 5961.0, "vit_tiny": 77.5}


def timed(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """float32 matmul rate of this machine, GFLOP/s."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    seconds = timed(lambda: a @ b, repeats)
    return 2 * size**3 / seconds / 1e9


def reference_model(model_type: str, ours: torch.nn.Module) -> torch.nn.Module:
    """The reference HQ-SAM of ``model_type`` carrying ``ours``'s weights."""
    sam_hq = reference_impl.sam_hq()
    reference = sam_hq.sam_model_registry[model_type](checkpoint=None)
    reference.load_state_dict(ours.state_dict(), strict=True)
    return reference.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_b", choices=sorted(ENCODER_GFLOP))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=20, help="decoder calls to average")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    ours = build_model(args.model, hq=True)
    reference = reference_model(args.model, ours)
    sam_hq = reference_impl.sam_hq()

    ours_predictor = Predictor(ours, device="cpu")
    ref_predictor = sam_hq.SamPredictor(reference)

    rate = matmul_gflops()
    t_enc_ours = timed(lambda: ours_predictor.set_image(image), args.repeats)
    t_enc_ref = timed(lambda: ref_predictor.set_image(image), args.repeats)

    points = rng.uniform(0, 1024, (args.prompts, 2))

    def decode_ours():
        for point in points:
            ours_predictor.predict(points=point[None], labels=[1])

    def decode_ref():
        for point in points:
            ref_predictor.predict(point_coords=point[None, ::-1], point_labels=np.array([1]), multimask_output=False)

    t_dec_ours = timed(decode_ours, 1) / args.prompts
    t_dec_ref = timed(decode_ref, 1) / args.prompts

    gflop = ENCODER_GFLOP[args.model]
    print(f"machine: {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"float32 matmul {rate:.0f} GFLOP/s")
    print()
    print("| measurement | reference | sum_core | speed-up (ref / ours) |")
    print("|---|---|---|---|")
    print(f"| {args.model} encoder, 1024x1024, s/image | {t_enc_ref:.2f} | {t_enc_ours:.2f} | "
          f"{t_enc_ref / t_enc_ours:.2f}x |")
    print(f"| {args.model} encoder, fraction of matmul rate | {gflop / t_enc_ref / rate:.0%} | "
          f"{gflop / t_enc_ours / rate:.0%} | |")
    print(f"| HQ decoder + postprocess, ms/prompt (point, 1024x1024 image) | {1e3 * t_dec_ref:.1f} | "
          f"{1e3 * t_dec_ours:.1f} | {t_dec_ref / t_dec_ours:.2f}x |")


if __name__ == "__main__":
    main()
