"""Peak memory of ``sum_core.results.export_result`` on large results stored as zarr on disk.

Two results like a batch target's (``labels`` uint32 and ``uncertainty`` float16, chunks of 1 x 1024 x 1024):
a 16384 x 16384 plane and a stack of 20 slices of 2048 x 2048, with synthetic discs on a 96 px grid (radius
up to 30, jittered, so objects cross the chunk borders; every 7th has a hole). The sources are written chunk
by chunk in the parent process; each export runs in its own process (``ru_maxrss`` is a process-lifetime
maximum) and reports its RSS after the imports and the peak. The whole label volume is 1 GiB (plane) and
320 MiB (stack): an export that loaded it would show it.

Usage::

    python benchmarks/bench_export_memory.py                      # both results, csv and geojson
    python benchmarks/bench_export_memory.py --cases stack --formats csv coco imagej-roi geojson
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

CASES = {"plane": (1, 16384, 16384), "stack": (20, 2048, 2048)}
CHUNK = 1024
PERIOD, RADIUS = 96, 30


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic(s: int, rows: slice, cols: slice, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and uncertainty of one window, from a global formula (so chunks agree at their borders)."""
    r, c = np.mgrid[rows, cols]
    cell_r, cell_c = r // PERIOD, c // PERIOD
    seed = (cell_r * 7919 + cell_c * 104729 + s * 15485863) % 1000
    centre_r = cell_r * PERIOD + PERIOD // 2 + seed % 13 - 6
    centre_c = cell_c * PERIOD + PERIOD // 2 + (seed // 13) % 13 - 6
    radius = RADIUS - seed % 10
    distance = (r - centre_r) ** 2 + (c - centre_c) ** 2
    inside = (distance < radius ** 2) & ~((seed % 7 == 0) & (distance < 25))
    ids = (s * (width // PERIOD + 1) ** 2 + cell_r * (width // PERIOD + 1) + cell_c + 1).astype(np.uint32)
    labels = np.where(inside, ids, 0).astype(np.uint32)
    uncertainty = (((r * 7 + c * 13 + s) % 101) / 100).astype(np.float16)
    return labels, uncertainty


def make_result(path: Path, shape: tuple[int, int, int]) -> None:
    import zarr

    n, height, width = shape
    stored = shape if n > 1 else shape[1:]  # a single plane is stored 2D
    group = zarr.open_group(path, mode="w", zarr_format=3)
    arrays = [group.create_array(name, shape=stored, dtype=dtype, chunks=(1, CHUNK, CHUNK)[-len(stored):],
                                 fill_value=0)
              for name, dtype in (("labels", "uint32"), ("uncertainty", "float16"))]
    for s in range(n):
        for r0 in range(0, height, CHUNK):
            for c0 in range(0, width, CHUNK):
                rows, cols = slice(r0, min(r0 + CHUNK, height)), slice(c0, min(c0 + CHUNK, width))
                for array, values in zip(arrays, synthetic(s, rows, cols, width)):
                    array[(s, rows, cols)[-len(stored):]] = values


def measure(path: str, fmt: str) -> dict:
    """One export in this process: RSS after imports and opening, peak RSS, time, objects."""
    import zarr

    from sum_core.results import export_result, open_result
    from sum_core.results.choices import FORMATS

    group = zarr.open_group(path, mode="r")
    result = open_result(group["labels"], group["uncertainty"])
    rss_before = peak_rss_mib()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = export_result(result, Path(tmp) / f"out{FORMATS[fmt][0]}", to=fmt)
        size = out.stat().st_size
    return {"path": path, "format": fmt, "rss_before_mib": rss_before, "rss_peak_mib": peak_rss_mib(),
            "seconds": time.perf_counter() - start, "bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--formats", nargs="+", default=["csv", "geojson"])
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # child process: PATH FORMAT
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.one[0], args.one[1])))
        return
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            path = Path(tmp) / f"{case}.zarr"
            start = time.perf_counter()
            make_result(path, CASES[case])
            print(f"{case}: {CASES[case]} written in {time.perf_counter() - start:.0f} s", flush=True)
            for fmt in args.formats:
                out = subprocess.run([sys.executable, __file__, "--one", str(path), fmt],
                                     capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{case:>6} {fmt:>10}: RSS after imports / peak {r['rss_before_mib']:.0f} / "
                      f"{r['rss_peak_mib']:.0f} MiB, {r['seconds']:.1f} s, {r['bytes'] / 2**20:.1f} MiB written",
                      flush=True)


if __name__ == "__main__":
    main()
