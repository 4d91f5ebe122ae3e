"""Peak memory of AIS on a large plane: ``sum-hq batch --mode ais`` (``segment_zarr``) vs ``auto_segment``.

``auto_segment(mode="ais")`` holds the plane's three float32 decoder maps, its labels and
uncertainty (20 B/px) and the whole-plane watershed's working memory; the batch job holds a tile's
maps, one chunk's objects window and one output chunk at a time. Each run is its own process
(``ru_maxrss`` is a process-lifetime maximum) on a uint8 zarr source written chunk by chunk.

The decoder is replaced by a fast window-local fake (``fake_window_maps``: foreground = bright
pixels, both distances from the distance transform), so the numbers measure the pipeline (reading
windows, storing maps, smoothing, watershed, painting, writing), not an encoder.

Usage::

    python benchmarks/bench_batch_ais_memory.py                 # 8192, batch and auto_segment
    python benchmarks/bench_batch_ais_memory.py --sizes 4096 8192 --only batch
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_batch_memory import make_source  # noqa: E402
from common import peak_rss_mib  # noqa: E402  (also puts tests/ on sys.path)


def fake_window_maps(model, window, precision="fp32"):
    """Window-local stand-in for encoder + AIS decoder: ``3×h×w`` maps in [0, 1]."""
    from scipy import ndimage

    foreground = window[..., 0] > 128
    inside = ndimage.distance_transform_edt(foreground)
    distance = np.clip(1.0 - inside / 8.0, 0.0, 1.0).astype(np.float32)
    return np.stack([foreground.astype(np.float32), distance, distance])


def measure(size: int, path: str) -> dict:
    """Run one job (``path``: "batch" or "auto_segment") in this process; return peak RSS and time."""
    import torch

    from sum_core import ais
    from sum_core.automatic import auto_segment
    from sum_core.batch import object_table, segment_zarr
    from sum_core.modeling import AISDecoder, AISDecoderConfig, attach_ais_decoder, build_from_config
    from small_models import small_vit_config

    ais.window_maps = fake_window_maps
    torch.manual_seed(0)
    model = attach_ais_decoder(build_from_config(small_vit_config()), AISDecoder(AISDecoderConfig(initial_features=8)))
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "src.zarr"
        make_source(source, size)
        rss_before = peak_rss_mib()
        start = time.perf_counter()
        if path == "batch":
            group = segment_zarr(source, Path(tmp) / "out.zarr", mode="ais", model=model, scheduler="synchronous",
                                 progress=False, device="cpu")
            seconds, rss_peak = time.perf_counter() - start, peak_rss_mib()
            objects = len(object_table(group)["label"])
        else:
            labels, _ = auto_segment(source, mode="ais", model=model, progress=False, device="cpu")
            seconds, rss_peak = time.perf_counter() - start, peak_rss_mib()
            objects = int(labels.max())
    return {"size": size, "path": path, "rss_before_mib": rss_before, "rss_peak_mib": rss_peak,
            "seconds": seconds, "objects": objects}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8192])
    parser.add_argument("--only", choices=("batch", "auto_segment"))
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # child process: SIZE PATH
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(int(args.one[0]), args.one[1])))
        return
    for size in args.sizes:
        for path in [args.only] if args.only else ["batch", "auto_segment"]:
            out = subprocess.run([sys.executable, __file__, "--one", str(size), path], capture_output=True, text=True,
                                 check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{r['size']:>6} px {r['path']:>12}: RSS before / peak {r['rss_before_mib']:.0f} / "
                  f"{r['rss_peak_mib']:.0f} MiB, {r['seconds']:.1f} s, {r['objects']} objects")


if __name__ == "__main__":
    main()
