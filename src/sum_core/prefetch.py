"""Overlap preparing the next batch with consuming the current one.

:func:`prefetch` is ``map(prepare, items)`` with ``prepare`` of the next item(s) running on
one background thread while the caller works on the current result, e.g. reading and
resizing the next batch of tiles (I/O, numpy, PIL: they release the GIL) while the encoder
runs on the current one.

- Order: results come in the order of ``items``, one per item.
- Bounded look-ahead: while the caller holds result ``i``, at most ``lookahead`` later
  items are being (or have been) prepared, so at most ``1 + lookahead`` results exist at
  once (two with the default). The first item is prepared on the caller's thread (nothing
  could overlap with it), so a single item never starts a thread.
- Errors: an exception raised by ``prepare`` surfaces in the caller when that item's result
  is due, as the same exception object (same type, traceback from the background thread)
  with a PEP 678 note naming the item's position and value.
- Clean-up: when the generator finishes, raises, or is closed early (``break`` inside
  ``with contextlib.closing(prefetch(...))``, ``KeyboardInterrupt``), preparations not
  started yet are cancelled and the one running is awaited; no thread outlives it.

Host-to-device copies: :func:`pin_for_transfer` (call it inside ``prepare``, on the
background thread) puts a CPU tensor in page-locked memory when the target is a CUDA
device, and :func:`to_device` (call it in the consumer) copies it with
``non_blocking=True`` there. Elsewhere both leave the tensor alone apart from a plain
``.to(device)``. :func:`uses_pinned_memory` is the one place deciding this.
"""

from __future__ import annotations

import collections
import reprlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import torch

from .validation import check_int

__all__ = ["prefetch", "uses_pinned_memory", "pin_for_transfer", "to_device"]

T = TypeVar("T")
R = TypeVar("R")

#: Name prefix of the background thread (visible in ``threading.enumerate()``).
THREAD_NAME = "sum-prefetch"


def prefetch(
    prepare: Callable[[T], R], items: Iterable[T], *, lookahead: int = 1
) -> Iterator[R]:
    """``prepare(item)`` for each item, preparing the next ones in the background.

    Parameters
    ----------
    prepare : callable
        Called once per item; all calls but the first run on one background thread, one
        at a time, in order.
    items : iterable
        Consumed lazily, on the caller's thread.
    lookahead : int
        How many items may be prepared ahead of the one the caller holds (>= 1).

    Yields
    ------
    object
        ``prepare(item)``, in the order of ``items``.

    Raises
    ------
    InvalidInputError
        If ``lookahead`` is not an int >= 1.
    Exception
        Whatever ``prepare`` raised, when its item's result is due, with a note naming the
        item.

    Notes
    -----
    Close the generator when leaving a loop early (``contextlib.closing``) so the
    background work stops at once rather than when the generator is garbage-collected.
    """
    check_int(lookahead, "lookahead", 1)
    return _pipeline(prepare, items, lookahead)


def _pipeline(prepare: Callable[[T], R], items: Iterable[T], lookahead: int) -> Iterator[R]:
    numbered = enumerate(items)
    first = next(numbered, None)
    if first is None:
        return
    pending: collections.deque[tuple[int, T, Future[R]]] = collections.deque()
    executor: ThreadPoolExecutor | None = None
    try:
        index, item = first
        try:
            result = prepare(item)
        except Exception as exc:
            _name_item(exc, index, item)
            raise
        while True:
            # Start the next item(s) before handing out this result, so they overlap with it.
            while len(pending) < lookahead:
                following = next(numbered, None)
                if following is None:
                    break
                if executor is None:
                    executor = ThreadPoolExecutor(1, thread_name_prefix=THREAD_NAME)
                pending.append((*following, executor.submit(prepare, following[1])))
            yield result
            del result  # do not keep it alive while waiting for the next one
            if not pending:
                return
            index, item, future = pending.popleft()
            try:
                result = future.result()
            except Exception as exc:
                _name_item(exc, index, item)
                raise
    finally:
        if executor is not None:
            # Cancel what has not started, wait for what has: no thread outlives the pipeline.
            executor.shutdown(wait=True, cancel_futures=True)


def _name_item(exc: BaseException, index: int, item: object) -> None:
    exc.add_note(f"while preparing item {index} ({reprlib.repr(item)}) in sum_core.prefetch")


def uses_pinned_memory(device: str | torch.device) -> bool:
    """Whether copies to ``device`` go through pinned host memory (CUDA devices only)."""
    return torch.device(device).type == "cuda"


def pin_for_transfer(tensor: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """``tensor`` in page-locked memory if it is bound for a CUDA ``device``, else unchanged.

    Call it where the tensor is prepared (the background thread of :func:`prefetch`), so
    the pinning copy overlaps with the caller's work too.
    """
    return tensor.pin_memory() if uses_pinned_memory(device) else tensor


def to_device(tensor: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """Copy ``tensor`` to ``device``; asynchronous (``non_blocking``) on CUDA.

    The copy is ordered on the current CUDA stream before any kernel that uses it; the
    pinned source stays valid until the copy is done (PyTorch's pinned-memory allocator
    holds the block until then).
    """
    return tensor.to(device, non_blocking=uses_pinned_memory(device))
