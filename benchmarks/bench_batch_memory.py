"""Peak memory of ``sum_core.batch.segment_zarr`` for a 16k x 16k vs a 4k x 4k plane.

The batch job must be bounded by tile and chunk size, not by the image: the peak for the 16k
plane (16x the pixels) should stay within 1.25x the 4k peak. Each size runs in its own
process (``ru_maxrss`` is a process-lifetime maximum) on a zarr source written chunk by chunk.

By default the model is replaced by a fast fake (bright connected components of each window
become masks), so the numbers measure the pipeline: reading windows, storing instances,
planning, painting and writing chunks. ``--real`` runs a small random-weight SAM instead (slow
on CPU; use it with ``--sizes 4096``).

Usage::

    python benchmarks/bench_batch_memory.py               # 4096 and 16384, fake model
    python benchmarks/bench_batch_memory.py --sizes 4096 --real --points-per-side 8
    python benchmarks/bench_batch_memory.py --sizes 4096 8192 --stages  # traced peak per stage
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import peak_rss_mib  # noqa: E402  (also puts tests/ on sys.path)


def make_source(path: Path, size: int, chunk: int = 1024, seed: int = 0) -> None:
    """A uint8 zarr plane with bright discs, written chunk by chunk (never whole in memory)."""
    import zarr

    arr = zarr.create_array(str(path), shape=(size, size), dtype="uint8", chunks=(chunk, chunk), fill_value=0)
    rng = np.random.default_rng(seed)
    rows, cols = np.ogrid[:chunk, :chunk]
    for r0 in range(0, size, chunk):
        for c0 in range(0, size, chunk):
            block = rng.integers(0, 40, size=(chunk, chunk), dtype=np.uint8)
            for _ in range(40):
                r, c, radius = rng.integers(20, chunk - 20), rng.integers(20, chunk - 20), rng.integers(5, 15)
                block[(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] = 220
            arr[r0 : r0 + chunk, c0 : c0 + chunk] = block


_RECORDS_PER_WINDOW = 20


def fake_window_records(prepared, model, device, options, cancel=None):
    """Fast stand-in for the encoder + decoder: masks of the first bright components of the window."""
    from scipy import ndimage

    from sum_core.automatic import MaskRecord

    components, n = ndimage.label(prepared[..., 0] > 128)
    records = []
    # A fixed number of records per window: like generate_masks' records, each holds
    # full-window maps, so a variable count would measure the densest window, not the pipeline.
    for k, found in enumerate(ndimage.find_objects(components)[:_RECORDS_PER_WINDOW], start=1):
        mask = components == k
        unc = mask.astype(np.float32) * 0.5
        records.append(MaskRecord(mask=mask, logits=unc, score=0.9, stability=1.0,
                                  point=(float(found[0].start), float(found[1].start)),
                                  box=(found[0].start, found[1].start, found[0].stop - 1, found[1].stop - 1),
                                  area=int(mask.sum()), uncertainty=unc))
    return records


class StagePeaks:
    """Traced memory and RSS per batch stage: the most held when a task starts and its peak.

    Wraps ``run_tile`` / ``run_plan`` / ``run_chunk`` of :mod:`sum_core.batch.auto` (the
    synchronous scheduler runs one task at a time); tracemalloc's peak is reset at each task
    start, so :attr:`overall` keeps the job's peak. The resident set size (``psutil``) is
    sampled when each task ends: memory outside tracemalloc (allocator arenas, torch, zarr
    buffers) that grows with the plane shows up there.
    """

    def __init__(self, module) -> None:
        import psutil

        self._process = psutil.Process()
        self.stages: dict[str, dict[str, float]] = {}
        self.overall = 0
        for name in ("run_tile", "run_plan", "run_chunk"):
            setattr(module, name, self._wrap(name, getattr(module, name)))

    def _wrap(self, name, function):
        def wrapped(*args):
            current, peak = tracemalloc.get_traced_memory()
            self.overall = max(self.overall, peak)
            tracemalloc.reset_peak()
            try:
                return function(*args)
            finally:
                peak = tracemalloc.get_traced_memory()[1]
                self.overall = max(self.overall, peak)
                stage = self.stages.setdefault(name, {"tasks": 0, "held_at_start_mib": 0.0, "peak_mib": 0.0,
                                                      "rss_first_mib": 0.0, "rss_last_mib": 0.0})
                stage["tasks"] += 1
                stage["held_at_start_mib"] = max(stage["held_at_start_mib"], current / 2**20)
                stage["peak_mib"] = max(stage["peak_mib"], peak / 2**20)
                rss = self._process.memory_info().rss / 2**20
                stage["rss_first_mib"] = stage["rss_first_mib"] or rss
                stage["rss_last_mib"] = rss

        return wrapped


def measure(size: int, real: bool, points_per_side: int, stages: bool = False) -> dict:
    """Run one job in this process; return peak traced / RSS memory and time."""
    import torch

    from sum_core.batch import auto as batch_auto
    from sum_core.batch import segment_zarr

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "src.zarr"
        make_source(source, size)
        from small_models import small_vit_config

        from sum_core.auto_options import AutoOptions
        from sum_core.modeling import build_from_config

        torch.manual_seed(0)
        model = build_from_config(small_vit_config())  # the fake uses only its input size (the tiling)
        if not real:
            batch_auto.window_records = fake_window_records
        rss_before = peak_rss_mib()
        peaks = StagePeaks(batch_auto) if stages else None
        tracemalloc.start()
        start = time.perf_counter()
        group = segment_zarr(source, Path(tmp) / "out.zarr", model=model, scheduler="synchronous",
                             progress=False, options=AutoOptions(points_per_side=points_per_side))
        seconds = time.perf_counter() - start
        # The job's peak, before the check below reads the labels back.
        rss_peak = peak_rss_mib()
        traced_peak = max(tracemalloc.get_traced_memory()[1], peaks.overall if peaks else 0)
        tracemalloc.stop()
        n_objects = sum(int((group["labels"][r : r + 1024, c : c + 1024] > 0).sum())
                        for r in range(0, size, 1024) for c in range(0, size, 1024))
    return {
        "size": size,
        "model": "small random ViT" if real else "fake",
        "traced_peak_mib": traced_peak / 2**20,
        "rss_peak_mib": rss_peak,
        "rss_before_mib": rss_before,
        "seconds": seconds,
        "foreground_pixels": n_objects,
        "stages": peaks.stages if peaks else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--real", action="store_true", help="small random-weight model instead of the fake")
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--stages", action="store_true", help="also report the traced peak of each stage")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child process: run one size
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.one, args.real, args.points_per_side, args.stages)))
        return
    results = []
    for size in args.sizes:
        cmd = [sys.executable, __file__, "--one", str(size), "--points-per-side", str(args.points_per_side)]
        cmd += (["--real"] if args.real else []) + (["--stages"] if args.stages else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"{r['size']:>6} px ({r['model']}): traced peak {r['traced_peak_mib']:.1f} MiB, "
              f"RSS before / peak {r['rss_before_mib']:.1f} / {r['rss_peak_mib']:.1f} MiB, {r['seconds']:.1f} s")
        for name, stage in (r["stages"] or {}).items():
            print(f"    {name}: {stage['tasks']} tasks, held at start <= {stage['held_at_start_mib']:.1f} MiB, "
                  f"peak <= {stage['peak_mib']:.1f} MiB; RSS after first / last task "
                  f"{stage['rss_first_mib']:.1f} / {stage['rss_last_mib']:.1f} MiB")
    if len(results) > 1:
        first, last = results[0], results[-1]
        print(f"ratio {last['size']} / {first['size']}: traced {last['traced_peak_mib'] / first['traced_peak_mib']:.2f}x, "
              f"RSS {last['rss_peak_mib'] / first['rss_peak_mib']:.2f}x (target <= 1.25x)")


if __name__ == "__main__":
    main()
