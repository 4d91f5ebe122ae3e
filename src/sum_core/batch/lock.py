"""The lock of a batch target folder: one job writes a target at a time (:func:`target_lock`)."""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import zarr
import zarr.storage

from ..errors import InvalidInputError

LOCK_NAME = ".sum-hq-batch.lock"


def location(node: Any) -> Path | None:
    """The local file or folder of a source or target, or None when it has none.

    A path as given; a zarr array or group (or a zarr store) by the root of its local
    (:class:`zarr.storage.LocalStore`) or zip (:class:`zarr.storage.ZipStore`) store: the whole
    store is the source, whichever array of it is read.
    """
    if isinstance(node, (str, os.PathLike)):
        return Path(node)
    store = node.store if isinstance(node, (zarr.Array, zarr.Group)) else node
    if isinstance(store, zarr.storage.LocalStore):
        return Path(store.root)
    if isinstance(store, zarr.storage.ZipStore):
        return Path(store.path)
    return None


class LockHold:
    """What the body of :func:`target_lock` may ask of the lock."""

    def __init__(self) -> None:
        self.kept = False

    def keep(self) -> None:
        """Leave the lock file when the ``with`` block ends (the job's tasks may still write): it
        stays until this process has ended, and is then taken over as stale by a rerun."""
        self.kept = True


@contextmanager
def target_lock(target: Any) -> Iterator[LockHold]:
    """Hold the lock of a folder target (a path or a :class:`zarr.storage.LocalStore`) while a job writes it.

    The lock is the file :data:`LOCK_NAME` inside the target folder, created exclusively
    (``O_CREAT | O_EXCL``) with this process's pid, host name and start time, and removed when
    the ``with`` block ends, also by an error or ``KeyboardInterrupt``, unless the block called
    :meth:`LockHold.keep` on the object it was given. A lock left by a process
    of this host that is gone (killed) is taken over with a warning, so a killed job resumes.
    Other targets (in-memory stores) are not locked.

    Call :func:`sum_core.batch.writer.check_target` first: what no job may write is refused
    before a lock (and a folder) is made.

    Parameters
    ----------
    target : str, path or zarr store
        The job's target.

    Raises
    ------
    InvalidInputError
        A target folder that cannot be created, another job holds the lock
        (naming its pid and host, and the file to delete if that job is in fact gone), or the
        lock file cannot be created.
    """
    hold = LockHold()
    folder = location(target) if isinstance(target, (str, os.PathLike, zarr.storage.LocalStore)) else None
    if folder is None:
        yield hold
        return
    created = not folder.exists()
    lock = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InvalidInputError(
            f"target: cannot create the folder {folder} ({err.strerror}); choose a writable location"
        ) from None
    try:
        _acquire(lock, target)
    except OSError as err:
        raise InvalidInputError(f"target: cannot create the lock file {lock} ({err})") from None
    try:
        yield hold
    finally:
        if not hold.kept:
            lock.unlink(missing_ok=True)
        if created and not any(folder.iterdir()):
            folder.rmdir()


@contextmanager
def folder_lock(folder: Path, timeout: float = 60.0) -> Iterator[None]:
    """Hold the lock file :data:`LOCK_NAME` of an existing ``folder`` for a short read-modify-write of a
    file in it (such as an OME-Zarr ``labels`` listing), waiting while another job or thread holds it.

    The lock is taken as :func:`target_lock` takes a target's (exclusive creation, a stale lock of a
    process that is gone taken over) and removed when the block ends.

    Raises
    ------
    InvalidInputError
        The lock was still held after ``timeout`` seconds (naming the file to delete if its holder is
        gone), or it cannot be created.
    """
    lock = folder / LOCK_NAME
    deadline = time.monotonic() + timeout
    while True:
        try:
            _acquire(lock, folder)
            break
        except InvalidInputError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
        except OSError as err:
            raise InvalidInputError(f"cannot create the lock file {lock} ({err})") from None
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _acquire(lock: Path, target: Any) -> None:
    """Create ``lock`` for this process, taking over a stale one (see :func:`target_lock`)."""
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": _start_time(os.getpid())}
    for _ in range(2):  # a second attempt after a stale lock was set aside
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            if holder is None or not _stale(holder):
                break
            aside = lock.with_name(f"{LOCK_NAME}.stale-{os.getpid()}")
            try:
                os.replace(lock, aside)  # atomic: of two jobs taking it over, one moves it
            except FileNotFoundError:
                continue
            if _holder(aside) != holder:  # another job took it over meanwhile: give its lock back
                os.link(aside, lock)
                aside.unlink()
                holder = _holder(lock)
                break
            aside.unlink()
            warnings.warn(
                f"target: taking over the stale lock {lock} of pid {holder['pid']} on {holder['host']} "
                "(that process is gone: its job was interrupted; resuming it)",
                stacklevel=4,
            )
            continue
        with os.fdopen(descriptor, "w") as file:
            json.dump(record, file)
        return
    who = "an unreadable lock" if holder is None else f"pid {holder['pid']} on {holder['host']}"
    raise InvalidInputError(
        f"target: {target} is being written by another job ({who}); wait for it to end, or choose another "
        f"target. If no job is running there any more (a crashed machine), delete {lock} and rerun to resume"
    )


def _holder(lock: Path) -> dict[str, Any] | None:
    """The pid / host / start record of a lock file, or None when it cannot be read."""
    try:
        holder = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int):
        return None
    if not isinstance(holder.get("host"), str):
        return None
    return holder


def _stale(holder: dict[str, Any]) -> bool:
    """Whether the process holding a lock is gone: on this host, its pid is not alive or was reused."""
    if holder["host"] != socket.gethostname() or os.name != "posix":
        return False  # cannot be checked: the user decides (the error says how)
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    started = _start_time(holder["pid"])
    return started is not None and holder.get("started") is not None and started != holder["started"]


def _start_time(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks after boot (Linux ``/proc``), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[19])
