"""Pieces shared by the benchmarks: timing, matmul rate, FLOP counts, reference models,
memory peaks, synthetic inputs and a description of the machine.

The reference implementation (PyPI ``segment-anything-hq``) is reached only through
``tests/reference_impl.py`` (via ``tests/reference_models.py``), which stubs torchvision
and timm; importing this module puts ``tests/`` on ``sys.path`` for that.
"""

from __future__ import annotations

import datetime
import functools
import os
import platform
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

TESTS = Path(__file__).resolve().parents[1] / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from reference_models import reference_sam, reference_with_weights  # noqa: E402

from sum_core.modeling import SamModel, build_from_config  # noqa: E402
from sum_core.modeling.config import ModelConfig  # noqa: E402

#: Matmul dtypes by precision name (the spelling of ``sum_core.acceleration.PRECISIONS``).
MATMUL_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def synchronize(device: torch.device | str) -> None:
    """Wait for queued GPU work on ``device`` (no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    fn: Callable[[], Any], repeats: int, device: torch.device | str = "cpu", warmup: bool = True
) -> tuple[float, Any]:
    """Median wall time of ``fn()`` over ``repeats`` runs (after one untimed warm-up run
    unless ``warmup`` is False), and the last result.

    GPU work queued by ``fn`` is waited for before each clock reading.
    """
    if warmup:
        fn()
        synchronize(device)
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def matmul_gflops(device: torch.device | str = "cpu", precision: str = "fp32", repeats: int = 10) -> tuple[float, int]:
    """Peak square matmul rate on ``device`` at ``precision``: (GFLOP/s, side of the matrices).

    The fastest of ``repeats`` products: the machine's attainable rate, the ceiling that
    "fraction of matmul" refers to (a median would let a busy moment lower the ceiling and
    inflate every fraction).

    The side doubles from 256 until one product takes 50 ms or the side reaches 2048 (CPU)
    / 8192 (GPU), so a precision the hardware only emulates (bf16 on a CPU without bf16
    instructions: well under 1 GFLOP/s) costs seconds, not minutes.
    """
    max_size = 8192 if torch.device(device).type == "cuda" else 2048
    dtype = MATMUL_DTYPES[precision]
    size = 256
    while True:
        a = torch.randn(size, size, device=device).to(dtype)
        b = torch.randn(size, size, device=device).to(dtype)
        seconds = min(timed(lambda: a @ b, 1, device, warmup=i == 0)[0] for i in range(repeats))
        if seconds >= 0.05 or size >= max_size:
            return 2 * size**3 / seconds / 1e9, size
        size *= 2


@functools.lru_cache
def encoder_gflop(config: ModelConfig) -> float:
    """GFLOP of one image through the encoder of ``config`` (matmuls, convolutions, attention).

    Counted with :class:`torch.utils.flop_counter.FlopCounterMode` on the meta device (no
    weights, no arithmetic). ViT: the reference encoder, i.e. the work the architecture
    defines, including the window padding that our encoder does not project; so the achieved
    rate of both sides is measured against the same count. TinyViT: our encoder (the
    reference's constructor reads tensor values, which the meta device cannot); both do the
    same work there.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build_from_config(config) if config.encoder == "tiny_vit" else reference_sam(config)
        pixels = torch.empty(1, 3, config.image_size, config.image_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.image_encoder(pixels)
    return counter.get_total_flops() / 1e9


def reference_model(ours: SamModel, device: torch.device | str) -> torch.nn.Module:
    """The reference HQ-SAM carrying ``ours``'s weights (strict load), in eval mode on ``device``."""
    return reference_with_weights(ours).to(device)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (a process-lifetime maximum), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mib() -> float:
    """Current resident set size of this process, MiB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


class PeakMemory:
    """Peak memory inside a ``with`` block: host RSS (sampled) and, on CUDA, allocated GPU memory.

    ``ru_maxrss`` is a process-lifetime maximum, useless after earlier sections of the same
    process; a thread samples the resident set size every ``interval`` seconds instead (a
    spike shorter than that can be missed).

    Attributes
    ----------
    rss_before_mib, rss_peak_mib : float
        Resident set size when the block starts, and the largest sample inside it.
    gpu_peak_mib : float or None
        ``torch.cuda.max_memory_allocated`` inside the block (None off CUDA).
    """

    def __init__(self, device: torch.device | str = "cpu", interval: float = 0.005) -> None:
        self.device = torch.device(device)
        self.interval = interval
        self.rss_before_mib = 0.0
        self.rss_peak_mib = 0.0
        self.gpu_peak_mib: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.rss_peak_mib = max(self.rss_peak_mib, _rss_mib())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self.rss_before_mib = self.rss_peak_mib = _rss_mib()
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        synchronize(self.device)
        self._stop.set()
        self._thread.join()
        self.rss_peak_mib = max(self.rss_peak_mib, _rss_mib())
        if self.device.type == "cuda":
            self.gpu_peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20


def synthetic_rgb(size: int = 1024, seed: int = 0) -> np.ndarray:
    """``size × size`` uint8 RGB: noise plus bright discs of a few colours."""
    rng = np.random.default_rng(seed)
    image = rng.normal(40.0, 10.0, (size, size, 3))
    rows, cols = np.ogrid[:size, :size]
    for _ in range(60):
        r, c, radius = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(8, 60) * size / 1024
        image[(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] = rng.uniform(120, 250, 3)
    return np.clip(image, 0, 255).astype(np.uint8)


def synthetic_zarr(path: Path, size: int, seed: int = 0, chunk: int = 1024):
    """Write a ``size × size`` uint16 zarr image (noise around 1000 plus bright discs), chunk by chunk.

    Only one chunk is ever in memory, and readers then read the image lazily from disk like
    any large source, so neither making nor reading the input shows in the peak memory or in
    the timings (a dask array computing its chunks on demand would regenerate a chunk on
    every read, and the cache signature hashes every element once).
    """
    import zarr

    array = zarr.create_array(str(path), shape=(size, size), dtype="uint16", chunks=(chunk, chunk))
    for r0 in range(0, size, chunk):
        for c0 in range(0, size, chunk):
            rng = np.random.default_rng([seed, r0, c0])
            h, w = min(chunk, size - r0), min(chunk, size - c0)
            block = rng.normal(1000.0, 60.0, (h, w))
            for _ in range(h * w // 20000):
                r, c, radius = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(4, 25)
                window = (slice(max(int(r - radius), 0), min(int(r + radius) + 1, h)),
                          slice(max(int(c - radius), 0), min(int(c + radius) + 1, w)))
                rows, cols = np.ogrid[window]
                block[window][(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] += rng.uniform(1500, 4000)
            array[r0 : r0 + h, c0 : c0 + w] = np.clip(block, 0, 65535).astype(np.uint16)
    return zarr.open_array(str(path), mode="r")


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what :mod:`platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description(device: torch.device | str) -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, memory, torch, threads, GPU, date."""
    device = torch.device(device)
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory_gib = float("nan")
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "device": str(device),
        "date": datetime.datetime.now().isoformat(timespec="minutes"),
        "python": platform.python_version(),
    }
