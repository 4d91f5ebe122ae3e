"""The zarr v3 target group of a batch job: results, completion markers, job signature.

Layout
------
- ``labels``: uint32, the source's shape without its channel axis, chunked one slice by one
  tile (:meth:`Volume.out_chunks`), 0 = background.
- ``uncertainty``: float16, same shape and chunks, in [0, 1].
- ``done/<stage>``: uint8 flags, one per unit of work and stage, each flag its own chunk. A flag
  is set only after the data of its unit was written, so a unit is either complete or redone.
- ``work/<name>``: intermediate per-tile results (1D uint8 arrays holding ``.npz`` bytes),
  removed when the job completes.
- attributes ``sum_hq_batch``: ``{"format", "signature", "complete", ...}`` (see
  :func:`sum_core.batch.segment_zarr`).
- ``.sum-hq-batch.lock`` (:data:`LOCK_NAME`): while a job runs on a folder target, the pid, host
  and process start time of the job (see :func:`target_lock`); one job writes a target at a time.

Writes go to distinct chunks only, so tasks can run in threads or processes concurrently. A target
never overlaps its source (:func:`check_apart`).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.storage

from ..errors import InvalidInputError

ATTR = "sum_hq_batch"
FORMAT = 1
LOCK_NAME = ".sum-hq-batch.lock"


class Target:
    """An opened target group (see :func:`open_target`)."""

    def __init__(self, group: zarr.Group) -> None:
        self.group = group

    @property
    def labels(self) -> zarr.Array:
        """The ``labels`` array."""
        return self.group["labels"]

    @property
    def uncertainty(self) -> zarr.Array:
        """The ``uncertainty`` array."""
        return self.group["uncertainty"]

    @property
    def info(self) -> dict[str, Any]:
        """The ``sum_hq_batch`` attributes."""
        return dict(self.group.attrs[ATTR])

    def create_flags(self, stage: str, shape: tuple[int, ...]) -> None:
        """Create the ``done/<stage>`` flags (all unset) unless they exist."""
        if f"done/{stage}" not in self.group:
            self.group.create_array(
                f"done/{stage}", shape=shape, dtype="uint8", chunks=(1,) * len(shape), fill_value=0
            )

    def flags(self, stage: str) -> np.ndarray:
        """All flags of a stage, as bool."""
        return np.asarray(self.group[f"done/{stage}"][...], dtype=bool)

    def mark_done(self, stage: str, index: tuple[int, ...]) -> None:
        """Set one unit's flag (call after its data is written)."""
        self.group[f"done/{stage}"][index] = 1

    def put(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        """Store intermediate arrays under ``work/<name>`` (replacing an earlier attempt)."""
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        data = np.frombuffer(buffer.getvalue(), dtype=np.uint8)
        self.group.create_array(
            f"work/{name}", shape=data.shape, dtype="uint8", chunks=data.shape, overwrite=True
        )[...] = data

    def get(self, name: str) -> Any:
        """Intermediate arrays stored by :meth:`put` (an ``NpzFile``, members read on access)."""
        return np.load(io.BytesIO(self.group[f"work/{name}"][...].tobytes()))

    def finish(self) -> None:
        """Drop the intermediate results and mark the job complete."""
        if "work" in self.group:
            del self.group["work"]
        self.group.attrs[ATTR] = {**self.info, "complete": True}


def open_target(
    target: Any,
    signature: dict[str, Any],
    info: dict[str, Any],
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dimension_names: tuple[str, ...],
    overwrite: bool = False,
) -> Target:
    """Open (resume) or create the target group of a job.

    Parameters
    ----------
    target : str, path or zarr store
        A zarr v3 group to create, or one left by an earlier run of the same job.
    signature : dict
        JSON-able job signature; an existing target must have the same one.
    info : dict
        Further attributes stored next to the signature (id scheme, tiling...).
    shape, chunks, dimension_names
        Of the ``labels`` / ``uncertainty`` arrays.
    overwrite : bool
        Replace a non-empty target written by another job (or by anything else).

    Raises
    ------
    InvalidInputError
        Read-only target, a non-empty target from another job (without ``overwrite``), or a
        path that is a file or a folder that is not a zarr group.
    """
    signature = json.loads(json.dumps(signature))
    store = _store(target)
    try:
        group = zarr.open_group(store, mode="a", zarr_format=3)
    except (PermissionError, ValueError, zarr.errors.ContainsArrayError, zarr.errors.NodeTypeValidationError) as err:
        raise InvalidInputError(f"target: cannot open {target} as a zarr v3 group ({err})") from None
    existing = group.attrs.get(ATTR)
    with warnings.catch_warnings():  # the lock file of a running job is no zarr node
        warnings.filterwarnings("ignore", message=f"Object at {LOCK_NAME} is not recognized")
        empty = not list(group.keys()) and not group.attrs.asdict()
    if existing is not None and existing.get("signature") == signature:
        return Target(group)
    if not empty and not overwrite:
        if existing is None:
            reason = "holds data that was not written by a sum-hq batch job"
        else:
            differ = sorted(k for k in set(signature) | set(existing.get("signature", {}))
                            if signature.get(k) != existing.get("signature", {}).get(k))
            reason = f"holds the results of a different job (differs in {', '.join(differ)})"
        raise InvalidInputError(
            f"target: {target} {reason}; choose a new target or pass overwrite=True (--overwrite)"
        )
    group = _cleared(store)
    for name, dtype in (("labels", "uint32"), ("uncertainty", "float16")):
        group.create_array(
            name, shape=shape, dtype=dtype, chunks=chunks, fill_value=0, dimension_names=dimension_names
        )
    group.attrs[ATTR] = {"format": FORMAT, "signature": signature, "complete": False, **info}
    return Target(group)


def _store(target: Any) -> Any:
    """A writable zarr store for ``target``, with a clear error when it is read-only."""
    if isinstance(target, (str, os.PathLike)):
        path = Path(target)
        if path.exists() and not path.is_dir():
            raise InvalidInputError(f"target: {path} is a file; give a folder path for a zarr group")
        if path.is_dir() and any(p.name != LOCK_NAME for p in path.iterdir()) and not (path / "zarr.json").exists():
            raise InvalidInputError(
                f"target: {path} is a non-empty folder that is not a zarr v3 group; choose a new path"
            )
        existing = path if path.exists() else next((p for p in path.parents if p.exists()), Path("."))
        if not os.access(existing, os.W_OK | os.X_OK):
            raise InvalidInputError(f"target: {path} is read-only (no write permission on {existing})")
        return zarr.storage.LocalStore(str(path))
    if isinstance(target, zarr.abc.store.Store):
        if target.read_only:
            raise InvalidInputError(f"target: the store {target} is read-only")
        return target
    raise InvalidInputError(f"target must be a folder path or a zarr store, got {type(target).__name__}")


def _cleared(store: Any) -> zarr.Group:
    """An empty new group in ``store``; a folder target keeps its lock file (held by this job)."""
    if not isinstance(store, zarr.storage.LocalStore):
        return zarr.open_group(store, mode="w", zarr_format=3)
    for entry in Path(store.root).iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return zarr.open_group(store, mode="a", zarr_format=3)


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


def check_apart(source: Any, target: Any) -> None:
    """Refuse a target that is, contains or lies inside the source (with or without overwrite).

    Paths are compared by the identity (device, inode) of the resolved folders and files, so
    relative paths, ``..``, symlinks, trailing slashes and hard links name the same place. A
    source or target without a local location (numpy, dask, in-memory stores) only overlaps the
    very same store object.

    Raises
    ------
    InvalidInputError
        Naming both paths.
    """
    source_store = source.store if isinstance(source, (zarr.Array, zarr.Group)) else None
    if source_store is not None and source_store is target:
        raise InvalidInputError(f"target: the store {target} is the source's store; choose another target")
    source_path, target_path = location(source), location(target)
    if source_path is None or target_path is None:
        return
    source_chain, target_chain = _identities(source_path), _identities(target_path)
    if not source_chain or source_chain[0][0] != 0:
        return  # the source does not exist (open_image refused it already)
    source_id = source_chain[0][1]
    target_id = target_chain[0][1] if target_chain and target_chain[0][0] == 0 else None
    if target_id == source_id:
        relation = "is"
    elif target_id is not None and target_id in (i for _, i in source_chain[1:]):
        relation = "contains"
    elif source_id in (i for _, i in target_chain):
        relation = "lies inside"
    else:
        return
    raise InvalidInputError(
        f"target: {_described(target_path)} {relation} the source {_described(source_path)}; write the results "
        "to a path outside the source (overwrite=True never replaces or deletes a source)"
    )


def _identities(path: Path) -> list[tuple[int, tuple[int, int]]]:
    """``(depth, (device, inode))`` of the resolved ``path`` (depth 0) and its existing parents."""
    resolved = Path(os.path.realpath(path))
    found = []
    for depth, node in enumerate((resolved, *resolved.parents)):
        try:
            stat = node.stat()
        except OSError:
            continue
        found.append((depth, (stat.st_dev, stat.st_ino)))
    return found


def _described(path: Path) -> str:
    """``path`` as given, followed by its resolved form when that reads differently."""
    resolved = os.path.realpath(path)
    return str(path) if resolved == str(path) else f"{path} ({resolved})"


@contextmanager
def target_lock(target: Any) -> Iterator[None]:
    """Hold the lock of a folder target (a path or a :class:`zarr.storage.LocalStore`) while a job writes it.

    The lock is the file :data:`LOCK_NAME` inside the target folder, created exclusively
    (``O_CREAT | O_EXCL``) with this process's pid, host name and start time, and removed when
    the ``with`` block ends, also by an error or ``KeyboardInterrupt``. A lock left by a process
    of this host that is gone (killed) is taken over with a warning, so a killed job resumes.
    Other targets (in-memory stores) are not locked.

    Raises
    ------
    InvalidInputError
        A target that cannot be written (see :func:`open_target`), another job holds the lock
        (naming its pid and host, and the file to delete if that job is in fact gone), or the
        lock file cannot be created.
    """
    _store(target)  # a file, a foreign folder or a read-only target is refused before the lock is made
    folder = location(target) if isinstance(target, (str, os.PathLike, zarr.storage.LocalStore)) else None
    if folder is None:
        yield
        return
    created = not folder.exists()
    lock = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _acquire(lock, target)
    except OSError as err:
        raise InvalidInputError(f"target: cannot create the lock file {lock} ({err})") from None
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        if created and not any(folder.iterdir()):
            folder.rmdir()


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
