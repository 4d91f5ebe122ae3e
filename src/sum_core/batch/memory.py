"""Hand the memory freed by a task back to the operating system (glibc ``malloc_trim``).

A tile task allocates and frees about 100 MiB of window-sized maps (the model's per-mask
maps, the tile's instances). glibc serves such blocks from ``mmap`` only up to its
*dynamic* threshold: once a large mmapped block is freed the threshold rises to its size,
later blocks of that size come from the heap, and freed heap pages stay resident. Over the
hundreds of tiles of a 16k x 16k plane the resident set then creeps up (measured with the
fake model of ``benchmarks/bench_batch_memory.py``: 310 -> 395 MiB between the first and
the last of 361 tiles; at 8k a fixed mmap threshold kept it flat, 290 -> 291 MiB).
Trimming after each tile keeps the resident set bounded by one tile's work. Elsewhere than
glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None when the C library has none (macOS, Windows, musl)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None)
    except OSError:
        return None


def release_freed_memory() -> bool:
    """Return the C heap's free pages (all threads' arenas) to the operating system.

    Returns
    -------
    bool
        Whether ``malloc_trim`` was available and ran.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
