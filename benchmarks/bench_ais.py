"""Cost of automatic instance segmentation (AIS) against one encoder pass and against AMG, and our
watershed against torch-em's, in one process (issue 13).

On a 1024 x 1024 image (one window, no tiling) with a vit_b-size SAM and micro-sam's full-size AIS
decoder, both with random weights:

- ``encoder``: one encoder pass (``sum_core.encoding.encode_image``);
- ``decoder``: the AIS decoder on that embedding (``sum_core.modeling.decode_ais_maps``);
- ``ais``: the whole AIS pass, ``auto_segment(image, mode="ais")`` (encode + decoder + watershed +
  uncertainty);
- ``amg``: ``auto_segment(image, AutoOptions(points_per_side=N), mode="amg")`` (encode + point grid);
- ``watershed``: ``sum_core.ais_postprocess.instances_from_distance_maps`` against micro-sam's
  post-processing (bioimage-cpp's Gaussian, then torch-em's
  ``watershed_from_center_and_boundary_distances``, reached through ``tests/reference_impl.py``) on
  the same maps: decoder-like maps of 400 touching cells (the random decoder's maps hold no cells).

Times are medians of ``--repeats`` runs after one warm-up run (the warm-up is skipped for AMG with
``--repeats 1``). Ratios are against one encoder pass of the same run.

    python benchmarks/bench_ais.py                          # vit_b, AMG at 32 x 32 points
    python benchmarks/bench_ais.py --points-per-side 16 --repeats 1 --json out.json
    python benchmarks/bench_ais.py --quick                  # smoke run: small model, 256 px
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

import reference_impl  # noqa: E402  (on sys.path through common)
from small_models import small_vit_config  # noqa: E402

from sum_core.ais_postprocess import instances_from_distance_maps  # noqa: E402
from sum_core.auto_options import AutoOptions  # noqa: E402
from sum_core.automatic import auto_segment  # noqa: E402
from sum_core.encoding import encode_image  # noqa: E402
from sum_core.modeling import (  # noqa: E402
    AISDecoder,
    AISDecoderConfig,
    SamModel,
    attach_ais_decoder,
    build_from_config,
    decode_ais_maps,
)
from sum_core.modeling.config import preset_config  # noqa: E402


def ais_model(quick: bool) -> SamModel:
    """vit_b (or the tests' small ViT) with a random micro-sam-size AIS decoder (a small one when quick)."""
    torch.manual_seed(0)
    config = small_vit_config(hq=False) if quick else preset_config("vit_b", hq=False)
    decoder = AISDecoder(AISDecoderConfig(initial_features=8 if quick else 64))
    return attach_ais_decoder(build_from_config(config), decoder).eval()


def cell_maps(size: int, cells: int, seed: int = 0) -> np.ndarray:
    """Decoder-like maps of touching cells: each pixel to its nearest of ``cells`` random centres within
    a radius, foreground 1 there, centre and boundary distances normalised per cell, plus smooth noise."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, size, (cells, 2))
    radius = 1.2 * size / np.sqrt(cells)
    yy, xx = np.indices((size, size), dtype=np.float32)
    best = np.full((size, size), np.inf, np.float32)
    owner = np.zeros((size, size), np.int32)
    for i, (cy, cx) in enumerate(centres, start=1):
        r0, r1 = int(max(cy - radius, 0)), int(min(cy + radius + 1, size))
        c0, c1 = int(max(cx - radius, 0)), int(min(cx + radius + 1, size))
        d = np.hypot(yy[r0:r1, c0:c1] - cy, xx[r0:r1, c0:c1] - cx) / radius
        take = (d < 1) & (d < best[r0:r1, c0:c1])
        best[r0:r1, c0:c1][take] = d[take]
        owner[r0:r1, c0:c1][take] = i
    fg = (owner > 0).astype(np.float32)
    center = np.where(owner > 0, best, 1).astype(np.float32)
    boundary = np.where(owner > 0, best ** 0.5, 1).astype(np.float32)
    noise = rng.normal(0, 0.05, (3, size, size)).astype(np.float32)
    return np.clip(np.stack([fg, center, boundary]) + noise, 0, 1)


def torch_em_instances(maps: np.ndarray) -> np.ndarray:
    """micro-sam 1.8.14's untiled post-processing with its defaults (bioimage-cpp Gaussian + torch-em)."""
    import bioimage_cpp

    reference_impl.torch_em()
    from torch_em.util.segmentation import watershed_from_center_and_boundary_distances

    return watershed_from_center_and_boundary_distances(
        center_distances=maps[1],
        boundary_distances=maps[2],
        foreground_map=bioimage_cpp.filters.gaussian_smoothing(maps[0], 1.0),
        center_distance_threshold=0.5,
        boundary_distance_threshold=0.5,
        foreground_threshold=0.5,
        distance_smoothing=1.6,
        min_size=0,
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--points-per-side", type=int, default=32, help="AMG grid (SAM's default 32)")
    parser.add_argument("--quick", action="store_true", help="small model at 256 px (smoke run)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    size = 256 if args.quick else 1024
    model = ais_model(args.quick)
    image = common.synthetic_rgb(size)
    repeats = args.repeats
    results: dict = {"machine": common.machine_description("cpu"), "image": f"{size}x{size} RGB uint8"}
    results["model"] = "small ViT (tests)" if args.quick else "vit_b SAM + micro-sam AIS decoder (random weights)"

    encode_s, embedding = common.timed(lambda: encode_image(model, image), repeats)
    decode_s, _ = common.timed(lambda: decode_ais_maps(model, embedding), repeats)
    ais_s, (labels, _) = common.timed(
        lambda: auto_segment(image, mode="ais", model=model, device="cpu", progress=False), repeats
    )
    options = AutoOptions(points_per_side=args.points_per_side)
    amg_s, (amg_labels, _) = common.timed(
        lambda: auto_segment(image, options, mode="amg", model=model, device="cpu", progress=False),
        repeats,
        warmup=repeats > 1,
    )
    maps = cell_maps(size, 400 if size >= 1024 else 25)
    ours_s, ours = common.timed(lambda: instances_from_distance_maps(*maps), repeats)
    results["seconds"] = {
        "encoder": encode_s,
        "ais_decoder": decode_s,
        "ais_pass": ais_s,
        f"amg_pass_{args.points_per_side}x{args.points_per_side}": amg_s,
        "watershed_ours": ours_s,
    }
    results["ratios"] = {
        "ais_pass / encoder": ais_s / encode_s,
        "ais_decoder / encoder": decode_s / encode_s,
        "amg_pass / encoder": amg_s / encode_s,
        "amg_pass / ais_pass": amg_s / ais_s,
    }
    results["objects"] = {"ais_random_weights": int(labels.max()), "amg_random_weights": int(amg_labels.max())}
    try:
        ref_s, ref = common.timed(lambda: torch_em_instances(maps), repeats)
    except ImportError as error:
        results["watershed_reference"] = f"not run: {error}"
    else:
        results["seconds"]["watershed_torch_em"] = ref_s
        results["ratios"]["watershed ours / torch-em"] = ours_s / ref_s
        results["objects"]["cells_ours"] = int(ours.max())
        results["objects"]["cells_torch_em"] = int(np.asarray(ref).max())
        results["objects"]["cells_pixels_labelled_differently"] = int((ours != np.asarray(ref)).sum())
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
