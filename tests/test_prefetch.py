"""sum_core.prefetch: order, bounded look-ahead, real overlap, errors, clean-up, pinned memory."""

from __future__ import annotations

import contextlib
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import sum_core.prefetch as prefetch_module
from sum_core.errors import InvalidInputError
from sum_core.prefetch import (
    THREAD_NAME,
    pin_for_transfer,
    prefetch,
    to_device,
    uses_pinned_memory,
)

# Handshakes wait at most this long; reaching it means the overlap did not happen.
TIMEOUT = 10.0


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME)]


@pytest.fixture(autouse=True)
def no_thread_left():
    before = set(threading.enumerate())
    yield
    assert set(threading.enumerate()) - before == set()
    assert prefetch_threads() == []


class Pulled:
    """An iterable that counts how many items the pipeline has taken from it."""

    def __init__(self, n: int) -> None:
        self.n, self.count = n, 0

    def __iter__(self):
        for i in range(self.n):
            self.count += 1
            yield i


def square(i: int) -> dict[str, int]:
    return {"item": i, "value": i * i}


@pytest.mark.parametrize("lookahead", [1, 2])
def test_same_results_in_order_with_bounded_lookahead(lookahead):
    items = Pulled(7)
    prepared: list[int] = []

    def prepare(i):
        prepared.append(i)
        return square(i)

    got = []
    for i, result in enumerate(prefetch(prepare, items, lookahead=lookahead)):
        # While the caller holds result i, only items up to i + lookahead have been taken.
        assert items.count == min(i + 1 + lookahead, 7)
        assert set(prepared) <= set(range(items.count))
        got.append(result)
    assert got == [square(i) for i in range(7)]
    assert prepared == list(range(7))  # each item prepared once, in order


def test_the_next_item_is_prepared_while_the_current_one_is_consumed():
    producing = {i: threading.Event() for i in range(4)}
    consuming = {i: threading.Event() for i in range(4)}
    overlapped = []

    def prepare(i):
        producing[i].set()
        if i > 0:
            # Item i is prepared while result i - 1 is being consumed (handshake, no sleeps).
            overlapped.append(consuming[i - 1].wait(TIMEOUT))
        return i

    for i in prefetch(prepare, range(4)):
        consuming[i].set()
        if i < 3:
            assert producing[i + 1].wait(TIMEOUT), f"item {i + 1} was not started while {i} was consumed"
    assert overlapped == [True, True, True]


def test_first_item_on_the_callers_thread_and_one_item_starts_no_thread():
    threads = []

    def prepare(i):
        threads.append(threading.current_thread())
        return i

    assert list(prefetch(prepare, [5])) == [5]
    assert threads == [threading.main_thread()]
    assert list(prefetch(prepare, [])) == []
    assert list(prefetch(prepare, [1, 2, 3])) == [1, 2, 3]
    assert threads[1] is threading.main_thread()
    assert [t.name.startswith(THREAD_NAME) for t in threads[2:]] == [True, True]


def failing_prepare(bad: int):
    def prepare(i):
        if i == bad:
            raise ValueError(f"cannot read tile {i}")
        return i

    return prepare


@pytest.mark.parametrize("bad", [0, 2])
def test_a_producer_error_surfaces_when_its_item_is_due_and_names_it(bad):
    got = []
    with pytest.raises(ValueError, match=f"cannot read tile {bad}") as info:
        for result in prefetch(failing_prepare(bad), range(5)):
            got.append(result)
    assert got == list(range(bad))  # the results before it were delivered
    assert info.value.__notes__ == [f"while preparing item {bad} ({bad}) in sum_core.prefetch"]
    # The traceback reaches into the producer, wherever it ran.
    assert "prepare" in [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]


def test_breaking_out_cancels_pending_items_and_awaits_the_running_one(monkeypatch):
    release = threading.Event()
    started, finished = [], []

    class Executor(ThreadPoolExecutor):
        """Lets the running item finish only once the pending ones are cancelled."""

        def shutdown(self, wait=True, *, cancel_futures=False):
            super().shutdown(wait=False, cancel_futures=cancel_futures)
            release.set()
            super().shutdown(wait=wait)

    monkeypatch.setattr(prefetch_module, "ThreadPoolExecutor", Executor)

    def prepare(i):
        started.append(i)
        if i == 1:
            assert release.wait(TIMEOUT)
        finished.append(i)
        return i

    items = Pulled(10)
    with contextlib.closing(prefetch(prepare, items, lookahead=3)) as results:
        for result in results:
            assert result == 0
            break
    assert items.count == 4  # items 0..3 taken, never more
    assert started == finished == [0, 1]  # 1 was awaited, 2 and 3 were cancelled


def test_closing_the_generator_or_an_error_in_the_consumer_stops_the_work():
    results = prefetch(square, range(100))
    assert next(results) == square(0)
    results.close()
    with pytest.raises(StopIteration):
        next(results)

    with pytest.raises(KeyboardInterrupt):
        with contextlib.closing(prefetch(square, range(100))) as results:
            for result in results:
                if result["item"] == 3:
                    raise KeyboardInterrupt


def test_lookahead_is_validated():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidInputError, match="lookahead must be an integer >= 1"):
            prefetch(square, range(3), lookahead=bad)


def test_pinned_memory_only_for_cuda_devices():
    assert uses_pinned_memory(torch.device("cuda")) and uses_pinned_memory("cuda:1")
    for device in ("cpu", torch.device("cpu"), "mps", "meta"):
        assert not uses_pinned_memory(device)


def test_cpu_path_never_pins_and_copies_blocking(monkeypatch):
    def no_pin(self, *args, **kwargs):
        raise AssertionError("pin_memory called for a CPU device")

    monkeypatch.setattr(torch.Tensor, "pin_memory", no_pin)
    x = torch.arange(6.0)
    assert pin_for_transfer(x, "cpu") is x
    calls = []
    original_to = torch.Tensor.to

    def recording_to(self, *args, **kwargs):
        calls.append((args, kwargs))
        return original_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", recording_to)
    y = to_device(x, torch.device("cpu"))
    assert torch.equal(y, x)
    assert calls == [((torch.device("cpu"),), {"non_blocking": False})]


def test_cuda_path_pins_and_copies_non_blocking(monkeypatch):
    # No GPU here: a fake "cuda" device drives the decision; pin_memory / to are recorded.
    pinned, copies = [], []

    def fake_pin(self):
        pinned.append(self)
        return self.clone()

    def fake_to(self, *args, **kwargs):
        copies.append((args, kwargs))
        return self

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    monkeypatch.setattr(torch.Tensor, "to", fake_to)
    x = torch.arange(6.0)
    staged = pin_for_transfer(x, "cuda")
    assert len(pinned) == 1 and pinned[0] is x and staged is not x and torch.equal(staged, x)
    assert to_device(staged, "cuda:0") is staged
    assert copies == [(("cuda:0",), {"non_blocking": True})]
