"""Cost of the exact data hash (``sum_core.embedding_cache.data_hash``) per source kind and size.

Every cache and batch-job signature hashes every element of its source once when it is opened.
This measures MB/s of that hash for in-memory numpy arrays, zarr v3 stores on disk (blosc/zstd,
512 x 512 chunks, written once to a temporary folder) and dask arrays over those stores, at
camera and slide sizes, with the default thread pool and with one thread, plus the peak memory
of hashing the slide (it is read in bounded blocks, never whole). The cost is stated
against encoding the source's tiles with vit_b (``--encode-s`` per 1024-pixel tile, default
10 s: this 2-core CPU, see README.md).

    python benchmarks/bench_data_hash.py                       # every case (writes ~1.3 GB to a temp dir)
    python benchmarks/bench_data_hash.py --only camera --json out.json
    python benchmarks/bench_data_hash.py --tmp /fast/disk      # where the zarr stores go
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from sum_core.embedding_cache import data_hash  # noqa: E402
from sum_core.tiling import tile_grid  # noqa: E402

#: name -> (shape, dtype, zarr chunks); the last two axes (or the two before RGB) are the plane.
CASES = {
    "camera": {
        "2048x2048 uint16": ((2048, 2048), "uint16", (512, 512)),
        "2160x2560 uint16": ((2160, 2560), "uint16", (512, 512)),
    },
    "stack": {"50x2048x2048 uint16": ((50, 2048, 2048), "uint16", (1, 512, 512))},
    "slide": {"16384x16384x3 uint8 RGB": ((16384, 16384, 3), "uint8", (512, 512, 3))},
}
MIB = 2**20


def _block(shape: tuple[int, ...], dtype: str, rng: np.random.Generator) -> np.ndarray:
    """Image-like content: a smooth background, low noise and bright squares (compresses like a
    fluorescence image, not like white noise)."""
    high = 4000 if dtype == "uint16" else 200
    rows = np.linspace(0, 1, shape[0])[:, None]
    base = (high * 0.1 * (1 + rows)).astype(dtype)
    block = np.broadcast_to(base.reshape(shape[0], 1, *([1] * (len(shape) - 2))), shape).copy()
    block += rng.integers(0, high // 50, size=shape, dtype=dtype)
    for _ in range(8):
        r, c = rng.integers(0, shape[0] - 32), rng.integers(0, shape[1] - 32)
        block[r : r + 32, c : c + 32] = high
    return block


def write_zarr(path: Path, shape: tuple[int, ...], dtype: str, chunks: tuple[int, ...]):
    """A zarr v3 array compressed with blosc/zstd, written chunk row by chunk row."""
    import zarr
    from zarr.codecs import BloscCodec

    array = zarr.create_array(str(path), shape=shape, dtype=dtype, chunks=chunks,
                              compressors=BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"))
    rng = np.random.default_rng(0)
    plane_axis = 1 if len(chunks) == 3 and chunks[0] == 1 else 0  # a stack: one plane at a time
    for lead in range(shape[0]) if plane_axis else [None]:
        for r0 in range(0, shape[plane_axis], chunks[plane_axis]):
            rows = slice(r0, min(r0 + chunks[plane_axis], shape[plane_axis]))
            if lead is None:
                array[rows] = _block((rows.stop - r0, *shape[1:]), dtype, rng)
            else:
                array[lead, rows] = _block((rows.stop - r0, *shape[2:]), dtype, rng)
    return zarr.open_array(str(path), mode="r")


def n_tiles(shape: tuple[int, ...]) -> int:
    """vit_b tiles (1024-pixel encoder input, default tiling) to encode the whole source."""
    rgb = shape[-1] == 3
    plane = shape[-3:-1] if rgb else shape[-2:]
    planes = math.prod(shape[: len(shape) - len(plane) - rgb])
    return planes * len(tile_grid(tuple(plane), 1024))


def measure(name: str, source, kind: str, repeats: int, encode_s: float) -> dict:
    nbytes = math.prod(source.shape) * np.dtype(source.dtype).itemsize
    row = {"source": f"{kind} {name}", "MB": round(nbytes / 1e6, 1)}
    for label, workers in (("default threads", None), ("1 thread", 1)):
        seconds, _ = common.timed(lambda: data_hash(source, workers=workers), repeats)
        row[f"{label}: s"] = round(seconds, 3)
        row[f"{label}: MB/s"] = round(nbytes / 1e6 / seconds)
    tiles = n_tiles(tuple(source.shape))
    row["vit_b tiles"] = tiles
    row["hash / one vit_b tile encode"] = round(row["default threads: s"] / encode_s, 4)
    row["hash / encoding every tile"] = round(row["default threads: s"] / (encode_s * tiles), 5)
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def peak_memory(source, label: str) -> dict:
    """Memory while hashing ``source``: the traced peak of Python and numpy allocations (the
    blocks read, the leaves in flight) and the sampled RSS, before and at its peak."""
    tracemalloc.start()
    with common.PeakMemory() as peak:
        data_hash(source)
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"source": label, "traced_peak_mib": round(traced / MIB), "rss_before_mib": round(peak.rss_before_mib),
            "rss_peak_mib": round(peak.rss_peak_mib)}


def run(groups: list[str], tmp: Path, repeats: int, encode_s: float) -> dict:
    import dask.array as da

    rows, memory = [], None
    for group in groups:
        for name, (shape, dtype, chunks) in CASES[group].items():
            start = time.perf_counter()
            stored = write_zarr(tmp / f"{group}.zarr", shape, dtype, chunks)
            written = time.perf_counter() - start
            on_disk = sum(f.stat().st_size for f in (tmp / f"{group}.zarr").rglob("*") if f.is_file())
            print(f"wrote {name}: {on_disk / 1e6:.0f} MB on disk in {written:.0f} s", file=sys.stderr, flush=True)
            big = group in ("stack", "slide")
            reps = 1 if big else repeats
            if group != "slide":  # 805 MB in memory is not how a slide is opened
                rows.append(measure(name, stored[...], "numpy", reps, encode_s))
            rows.append(measure(name, stored, "zarr", reps, encode_s))
            rows.append(measure(name, da.from_zarr(stored), "dask", reps, encode_s))
            if group == "slide":
                memory = peak_memory(stored, f"zarr {name}")
            shutil.rmtree(tmp / f"{group}.zarr")
    return {"rows": rows, "memory while hashing": memory, "encode_s per vit_b tile": encode_s}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(CASES), help=f"comma-separated subset of {tuple(CASES)}")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the camera sizes (after a warm-up)")
    parser.add_argument("--encode-s", type=float, default=10.0, help="seconds of one vit_b tile encode here")
    parser.add_argument("--tmp", type=Path, help="folder for the zarr stores (default: the system temp dir)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results: dict = {"machine": common.machine_description("cpu")}
    with tempfile.TemporaryDirectory(dir=args.tmp) as folder:
        results.update(run(args.only.split(","), Path(folder), args.repeats, args.encode_s))
    text = json.dumps(results, indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text)
    return results


if __name__ == "__main__":
    main()
