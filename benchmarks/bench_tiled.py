"""Tiled embedding throughput, cache reopen time and peak memory of ``sum_core.tiled_embedding.embed``.

A real-size HQ model with random weights (``vit_tiny`` by default: Light HQ-SAM's TinyViT,
so the numbers stay short on CPU) embeds square synthetic uint16 images (noise + bright
blobs, written chunk by chunk to a zarr array and read lazily, so the input costs no memory)
with the default tiling (:func:`sum_core.tiling.default_tiling`) into a zarr cache in a
temporary folder. The cache is then reopened with the same signature: that must encode no
tile (asserted) and is timed. Each size runs in its own process, because ``ru_maxrss`` is a
process-lifetime maximum. A float32 matmul rate measured in the same run gives the scale.

    python benchmarks/bench_tiled.py                # 1024 and 4096
    python benchmarks/bench_tiled.py --full         # also 16384 (361 tiles: long on CPU)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_CHUNK = 1024


def synthetic_image(path: Path, size: int, seed: int = 0):
    """Write a ``size × size`` uint16 zarr image (noise around 1000 plus bright discs), chunk by chunk.

    Only one 1024² chunk is ever in memory, and the embedding then reads the image lazily
    from disk like any large source, so neither making nor reading the input shows in the
    peak memory or in the timings (a dask array computing its chunks on demand would
    regenerate a chunk on every read, and the cache signature samples dozens of windows).
    """
    import zarr

    array = zarr.create_array(str(path), shape=(size, size), dtype="uint16", chunks=(_CHUNK, _CHUNK))
    for r0 in range(0, size, _CHUNK):
        for c0 in range(0, size, _CHUNK):
            rng = np.random.default_rng([seed, r0, c0])
            h, w = min(_CHUNK, size - r0), min(_CHUNK, size - c0)
            block = rng.normal(1000.0, 60.0, (h, w))
            for _ in range(h * w // 20000):
                r, c, radius = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(4, 25)
                window = (slice(max(int(r - radius), 0), min(int(r + radius) + 1, h)),
                          slice(max(int(c - radius), 0), min(int(c + radius) + 1, w)))
                rows, cols = np.ogrid[window]
                block[window][(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] += rng.uniform(1500, 4000)
            array[r0 : r0 + h, c0 : c0 + w] = np.clip(block, 0, 65535).astype(np.uint16)
    return zarr.open_array(str(path), mode="r")


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(size: int, model_type: str, batch_size: int) -> dict:
    """Embed one ``size × size`` image into a fresh cache, reopen it; return the numbers."""
    import torch

    from sum_core import build_model
    from sum_core.tiled_embedding import embed
    from sum_core.tiling import encoded_pixel_ratio

    torch.manual_seed(0)
    model = build_model(model_type, hq=True)
    with tempfile.TemporaryDirectory() as tmp:
        image = synthetic_image(Path(tmp) / "image.zarr", size)
        rss_before = peak_rss_mib()
        cache = Path(tmp) / "cache.zarr"
        start = time.perf_counter()
        tiled = embed(image, model=model, cache=cache, batch_size=batch_size, progress=False)
        seconds = time.perf_counter() - start
        assert tiled.tiles_encoded == len(tiled.grid), "first run must encode every tile"
        peak = peak_rss_mib()
        start = time.perf_counter()
        reopened = embed(image, model=model, cache=cache, batch_size=batch_size, progress=False)
        reopen = time.perf_counter() - start
        assert reopened.tiles_encoded == 0, f"reopen encoded {reopened.tiles_encoded} tiles"
    return {
        "size": size,
        "tiles": len(tiled.grid),
        "tile_shape": list(tiled.grid.tile_shape),
        "halo": list(tiled.grid.halo),
        "ratio": encoded_pixel_ratio(tiled.grid),
        "seconds": seconds,
        "reopen": reopen,
        "rss_before": rss_before,
        "peak_rss": peak,
    }


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """float32 matmul rate of this machine, GFLOP/s (median of ``repeats`` after a warm-up)."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / float(np.median(times)) / 1e9


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_tiny", choices=["vit_tiny", "vit_b", "vit_l", "vit_h"])
    parser.add_argument("--full", action="store_true", help="also 16384 x 16384 (long on CPU)")
    parser.add_argument("--sizes", type=int, nargs="+", help="image sides (overrides the defaults)")
    parser.add_argument("--batch-size", type=int, default=1, help="tiles per encoder call")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker is not None:
        print(json.dumps(measure(args.worker, args.model, args.batch_size)))
        return

    import torch

    sizes = args.sizes or ([1024, 4096, 16384] if args.full else [1024, 4096])
    rate = matmul_gflops()
    rows = []
    for size in sizes:
        command = [sys.executable, __file__, "--worker", str(size), "--model", args.model,
                   "--batch-size", str(args.batch_size)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))

    print(f"machine: {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"float32 matmul {rate:.0f} GFLOP/s")
    print(f"model: {args.model} HQ, random weights; default tiling; zarr cache (float32); "
          f"batch size {args.batch_size}; synthetic uint16 zarr image")
    print()
    print("| image | tiles (tile + halo) | encoded-pixel ratio | s | tiles/s | Mpixel/s | "
          "RSS before / peak (MiB) | cache reopen, s (0 tiles encoded) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        side = r["size"]
        tile = "x".join(str(n) for n in r["tile_shape"])
        print(f"| {side}x{side} | {r['tiles']} ({tile} + {r['halo'][0]}) | {r['ratio']:.3f} | "
              f"{r['seconds']:.1f} | {r['tiles'] / r['seconds']:.2f} | "
              f"{side * side / 1e6 / r['seconds']:.2f} | {r['rss_before']:.0f} / {r['peak_rss']:.0f} | "
              f"{r['reopen']:.3f} |")


if __name__ == "__main__":
    main()
