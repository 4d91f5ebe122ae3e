"""The zarr v3 target group of a batch job: results, completion markers, job signature.

Layout
------
- ``labels``: uint32, the source's shape without its channel axis, chunked one slice by one
  tile (:meth:`Volume.out_chunks`), 0 = background; ``dimension_names`` the source's axis names,
  attributes ``scale`` and ``units`` its physical pixel size (:func:`axes_attributes`).
- ``uncertainty``: float16, same shape and chunks, in [0, 1]. In an OME-Zarr label image target
  (``format="ome-zarr"``, :mod:`sum_core.batch.ngff`) the two arrays lie at ``0`` and
  ``uncertainty/0`` (attribute ``paths``; :attr:`Target.outputs`), with the pyramid levels ``1``...
  and ``uncertainty/1``..., the rest of the layout as here. A folder whose group metadata is lost is
  still recognised as a target in either layout (:func:`provably_ours`).
- ``checksums/labels``, ``checksums/uncertainty`` (format 2 and later): uint64, one value per
  output chunk (shape = the arrays' chunk grid, each value its own chunk), the
  :func:`chunk_checksum` (64-bit BLAKE2b, :func:`sum_core.checksums.checksum`) of the chunk's
  decoded values, recorded when the chunk is written (automatic mode) or when its slice is
  finished (prompts mode), before the unit's
  ``done`` flag; 0 = not recorded yet. When the job completes, the chunks no task writes (slices
  without prompts, empty by design) get the checksum of zeros, so in a complete format 3 target
  every chunk has its checksum and a 0 is damage (a checksum deleted with its chunk); format 2
  targets (0 = never written, must read as zeros) are upgraded when a job completes them.
  Verified by :func:`~sum_core.batch.integrity.verify_target` and whenever a job resumes or
  returns a completed target.
- ``done/<stage>``: uint8 flags, one per unit of work and stage, each flag its own chunk. A flag
  is set only after the data of its unit was written, so a unit is either complete or redone.
- ``work/<name>``: intermediate per-tile results (1D uint8 arrays holding ``.npz`` bytes, with
  their BLAKE2b digest in the array attribute ``blake2b``; AIS jobs also ``work/s<slice>/maps``,
  the raw decoder maps, with a checksum per tile block), removed when the job completes.
- ``objects/`` (every mode): the per-object table, see :mod:`sum_core.batch.objects`.
- ``counts`` (automatic jobs with sequential ids): int64, one value per slice (each its own
  chunk), the number of objects of the slice, set by its plan stage before its ``done`` flag
  (-1 = not planned yet). Slice ``s``'s ids are ``offset + 1 .. offset + counts[s]`` with
  ``offset = counts[:s].sum()`` (see :func:`sum_core.batch.segment_zarr`, **Label ids**).
- attributes ``sum_hq_batch``: ``{"format", "signature", "complete", "axes", "ids", ...}`` (see
  :func:`sum_core.batch.segment_zarr`). Format 1 targets (written before checksums existed) are
  resumed and returned as before, unverified. ``"ids": "sequential"`` marks the id rule of
  automatic jobs (1..N over the volume, ``counts``); targets of older versions hold
  ``"id_stride"`` instead (plane ``s`` numbered from ``s * id_stride + 1``) and resume with that rule.
- ``.sum-hq-batch.lock`` (:data:`~sum_core.batch.lock.LOCK_NAME`): while a job runs on a folder
  target, the pid, host and process start time of the job (see
  :func:`~sum_core.batch.lock.target_lock`); one job writes a target at a time.

Writes go to distinct chunks only, so tasks can run in threads or processes concurrently. A target
never overlaps its source (:func:`check_apart`). zarr's local store writes each file atomically
(a temporary file renamed), so an interrupted write (killed job, full disk) leaves the old file
or none, never half of one.
"""

from __future__ import annotations

import errno
import io
import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.storage
from zarr.core.sync import sync

from ..checksums import checksum
from ..errors import DamagedTargetError, InvalidInputError, SumError
from ..imageio import remove_entries
from .lock import LOCK_NAME, location

ATTR = "sum_hq_batch"
FORMAT = 3  # 3: a checksum for every chunk of a complete target (2: for written chunks only; 1: none)
SEQUENTIAL_IDS = "sequential"  # the "ids" attribute of targets numbered 1..N over the volume (see counts)
COUNTS = "counts"
OUTPUTS = (("labels", "uint32"), ("uncertainty", "float16"))
#: Where the outputs lie in an OME-Zarr label image target (``"paths"`` attribute, see :mod:`sum_core.batch.ngff`).
NGFF_PATHS = {"labels": "0", "uncertainty": "uncertainty/0"}
# The nodes of a target folder (node type, data type): what proves a folder without readable group metadata ours.
_NODES = {"labels": ("array", "uint32"), "uncertainty": ("array", "float16"), "checksums": ("group", None),
          "done": ("group", None), "work": ("group", None), "objects": ("group", None),
          COUNTS: ("array", "int64")}


class Target:
    """An opened target group (see :func:`open_target`)."""

    def __init__(self, group: zarr.Group, where: Any = None) -> None:
        self.group = group
        self.where = group.store if where is None else where  # the target as the user gave it, for messages

    @cached_property
    def outputs(self) -> tuple[tuple[str, str], ...]:
        """``(path, dtype)`` of the labels and uncertainty arrays in the group (:data:`OUTPUTS`, or in an
        OME-Zarr target :data:`NGFF_PATHS`)."""
        paths = self.group.attrs.get(ATTR, {}).get("paths") or {}
        return tuple((paths.get(name, name), dtype) for name, dtype in OUTPUTS)

    @property
    def labels(self) -> zarr.Array:
        """The ``labels`` array."""
        return self.group[self.outputs[0][0]]

    @property
    def uncertainty(self) -> zarr.Array:
        """The ``uncertainty`` array."""
        return self.group[self.outputs[1][0]]

    @property
    def info(self) -> dict[str, Any]:
        """The ``sum_hq_batch`` attributes."""
        return dict(self.group.attrs[ATTR])

    @cached_property
    def checksummed(self) -> bool:
        """Whether the target records per-chunk checksums (format 2 and later)."""
        return int(self.info.get("format", 1)) >= 2

    @cached_property
    def fully_checksummed(self) -> bool:
        """Whether every finished chunk has a recorded checksum, so 0 means "not finished" (format 3)."""
        return int(self.info.get("format", 1)) >= 3

    @cached_property
    def slice_axis(self) -> int | None:
        """Axis of the output arrays iterated over by the job (None for a single plane)."""
        info = self.info
        axis = info["signature"].get("axis")
        return None if axis is None else list(info["axes"]).index(axis)

    @cached_property
    def layout(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """Shape, chunk shape and chunk grid shape of the output arrays."""
        labels = self.labels
        return labels.shape, labels.chunks, labels.cdata_shape

    def chunk_selection(self, coords: tuple[int, ...]) -> tuple[slice, ...]:
        """The region of the output arrays held by the chunk at grid position ``coords``."""
        shape, chunks, _ = self.layout
        return tuple(slice(c * k, min((c + 1) * k, n)) for c, k, n in zip(coords, chunks, shape))

    def slice_chunks(self, slice_index: int) -> list[tuple[int, ...]]:
        """Grid positions of the output chunks of one slice (all chunks for a single plane)."""
        axis = self.slice_axis
        grid = list(self.layout[2])
        if axis is not None:
            grid[axis] = 1
        return [
            tuple(slice_index if a == axis else c for a, c in enumerate(coords)) for coords in np.ndindex(*grid)
        ]

    def slice_of(self, coords: tuple[int, ...]) -> int:
        """The slice holding the output chunk at ``coords``."""
        axis = self.slice_axis
        return 0 if axis is None else int(coords[axis])

    @cached_property
    def id_stride(self) -> int | None:
        """The id range per plane of a target numbered by older versions (plane ``s``'s ids from
        ``s * id_stride + 1``), or None (sequential ids, see :meth:`count`)."""
        stride = self.info.get("id_stride")
        return None if self.info.get("ids") == SEQUENTIAL_IDS or stride is None else int(stride)

    def create_counts(self, n_slices: int) -> None:
        """Create the ``counts`` array (all -1: no plane planned yet) unless it exists."""
        if COUNTS not in self.group:
            self.group.create_array(COUNTS, shape=(n_slices,), dtype="int64", chunks=(1,), fill_value=-1)

    def count(self, slice_index: int) -> int:
        """The number of objects of a planned slice; -1 when not planned yet, missing or unreadable."""
        try:
            return int(self.group[COUNTS][slice_index])
        except Exception:  # noqa: BLE001 - any unreadable value is unknown (damage where it is needed)
            return -1

    def set_count(self, slice_index: int, n: int) -> None:
        """Record the number of objects of a slice (its plan stage, before the stage's flag).

        Raises
        ------
        DamagedTargetError
            The slice had another count before (a plane redone by a repair found another number of
            objects: the later planes' ids, numbered after it, would be wrong).
        """
        before = self.count(slice_index)
        if before >= 0 and before != n:
            raise DamagedTargetError(
                f"target: {self.where}: slice {slice_index} was redone with {n} objects where it had {before}; the ids "
                "of the later slices were numbered after it. Rerun with overwrite=True (--overwrite) to start again"
            )
        self.group[COUNTS][slice_index] = n

    def forget_unreadable_count(self, slice_index: int) -> None:
        """Unset a slice's count when it cannot be read (before a repair redoes the slice)."""
        try:
            counts = self.group[COUNTS]
        except KeyError:
            return
        except Exception:  # noqa: BLE001 - unreadable array metadata: dropped, the job creates it again
            sync(self.group.store.delete_dir(f"{self.group.path}/{COUNTS}".lstrip("/")))
            return
        if self.count(slice_index) < 0:
            counts[slice_index] = -1  # the fill value: an unreadable chunk is deleted

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

    def write_chunk(self, index: tuple[slice | int, ...], labels: np.ndarray, uncertainty: np.ndarray) -> None:
        """Write one whole output chunk (``index`` as :meth:`Volume.out_index`) and record its checksums."""
        self.labels[index] = labels
        self.uncertainty[index] = uncertainty
        if self.checksummed:
            chunks = self.layout[1]
            coords = tuple(i.start // k if isinstance(i, slice) else int(i) for i, k in zip(index, chunks))
            for (name, _), data in zip(self.outputs, (labels, uncertainty)):
                self.group[f"checksums/{name}"][coords] = chunk_checksum(data)

    def seal_slice(self, slice_index: int) -> None:
        """Record the checksums of every output chunk of one slice, as written (prompts mode)."""
        if not self.checksummed:
            return
        arrays = [(self.group[name], self.group[f"checksums/{name}"]) for name, _ in self.outputs]
        for coords in self.slice_chunks(slice_index):
            region = self.chunk_selection(coords)
            for array, checksums in arrays:
                checksums[coords] = chunk_checksum(array[region])

    def clear_slice(self, slice_index: int) -> None:
        """Forget the checksums of one slice's output chunks, then zero the chunks (before the slice is redone).

        In this order an interrupted clear leaves chunks that are either verified as before or
        unrecorded (redone, their flags being unset first: see
        :func:`sum_core.batch.integrity.settle`), never zeros that pass as written.
        """
        chunks = self.slice_chunks(slice_index)
        if self.checksummed:
            for name, _ in self.outputs:
                checksums = self.group[f"checksums/{name}"]
                for coords in chunks:
                    checksums[coords] = 0
        for name, _ in self.outputs:
            array = self.group[name]
            for coords in chunks:
                array[self.chunk_selection(coords)] = 0  # a chunk equal to the fill value is deleted

    def put(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        """Store intermediate arrays under ``work/<name>`` (replacing an earlier attempt), with their digest."""
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        data = np.frombuffer(buffer.getvalue(), dtype=np.uint8)
        self.group.create_array(
            f"work/{name}", shape=data.shape, dtype="uint8", chunks=data.shape, overwrite=True,
            attributes={"blake2b": _digest(data)},
        )[...] = data

    def get(self, name: str) -> Any:
        """Intermediate arrays stored by :meth:`put` (an ``NpzFile``, members read on access).

        Raises
        ------
        DamagedTargetError
            The record is missing, unreadable or does not match its digest (naming it and
            ``repair=True`` / ``--repair``).
        """
        try:
            data = self._record(name)
        except _DamagedRecord as err:
            raise self.damaged([str(err)]) from None
        return np.load(io.BytesIO(data.tobytes()))

    def record_problem(self, name: str) -> str | None:
        """What is wrong with the intermediate record ``work/<name>`` (missing, unreadable, altered), or None."""
        try:
            self._record(name)
        except _DamagedRecord as err:
            return str(err)
        return None

    def _record(self, name: str) -> np.ndarray:
        """The bytes of ``work/<name>``, checked against their digest."""
        try:
            array = self.group[f"work/{name}"]
            data = array[...]
            expected = array.attrs.get("blake2b")
        except KeyError:
            raise _DamagedRecord(f"intermediate record work/{name} is missing") from None
        except Exception as err:  # noqa: BLE001 - any decoding failure of a stored record is damage
            raise _DamagedRecord(f"intermediate record work/{name} cannot be read ({_short(err)})") from None
        if expected is not None and _digest(data) != expected:
            raise _DamagedRecord(f"intermediate record work/{name} does not match its checksum")
        return data

    def damaged(self, problems: list[str]) -> DamagedTargetError:
        """The error for a damaged target: what is damaged and how to proceed."""
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        return DamagedTargetError(
            f"target: {self.where} is damaged: {shown}. Rerun with repair=True (--repair), which redoes only "
            "the damaged slices (in automatic mode, the whole planes holding them), or with overwrite=True "
            "(--overwrite) to start again"
        )

    def finish(self, attributes: dict[str, Any] | None = None) -> None:
        """Record the checksum of zeros for the chunks no task wrote, drop the intermediate results and mark
        the job complete (format 3: every chunk of a complete target has its checksum), writing
        ``attributes`` (an OME-Zarr target's ``ome``) into the group in the same write."""
        info = self.info
        if self.checksummed:
            for name, dtype in self.outputs:
                checksums = self.group[f"checksums/{name}"]
                for coords in zip(*np.nonzero(checksums[...] == 0)):
                    coords = tuple(int(c) for c in coords)
                    shape = tuple(s.stop - s.start for s in self.chunk_selection(coords))
                    checksums[coords] = chunk_checksum(np.zeros(shape, dtype=dtype))
            info["format"] = FORMAT
        if "work" in self.group:
            del self.group["work"]
        self.group.attrs.update({**(attributes or {}), ATTR: {**info, "complete": True}})


class _DamagedRecord(Exception):
    """An intermediate record that cannot be used (message: what is wrong)."""


def chunk_checksum(data: np.ndarray) -> int:
    """64-bit :func:`~sum_core.checksums.checksum` (BLAKE2b) of an output chunk's values (never 0,
    which means "not recorded")."""
    return int.from_bytes(checksum(data, size=8), "little") | 1


def _digest(data: np.ndarray) -> str:
    """Hex digest of an intermediate record's bytes (its ``blake2b`` attribute)."""
    return checksum(data, size=8).hex()


def _short(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:200]


def check_target(target: Any, overwrite: bool = False) -> None:
    """Everything about a target that can be checked before the job's model is loaded.

    The job's signature needs the model, so only :func:`open_target` can compare it; this check
    refuses what no job may write, whatever its signature: a file, a read-only target, a zarr
    array, a non-empty folder or group that is not provably a sum-hq batch target (another
    program's data, never replaced, also not with ``overwrite``), and (without ``overwrite``) a
    target of ours whose group metadata is missing or damaged.

    A folder is provably ours when its group ``zarr.json`` holds the ``sum_hq_batch`` attributes
    or, when that file is missing or unreadable, when every entry is one of the target's nodes
    (``labels``, ``uncertainty``, ``checksums``, ``done``, ``work``) and each of them is a zarr
    node of its kind (``labels`` a uint32 array...). Only such a folder is ever cleared.

    Raises
    ------
    InvalidInputError
        Naming the target and what to do (a :class:`~sum_core.errors.DamagedTargetError` for a
        damaged target of ours).
    """
    store = _store(target, overwrite)
    if local_folder(store) is not None and local_folder(store).is_dir():
        return  # checked by _store (it reads the metadata itself: zarr may not be able to)
    try:
        group = zarr.open_group(store, mode="r", zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        if _store_entries(store):  # a store holding other things than a zarr group
            raise _foreign(target) from None
        return  # a new target
    except zarr.errors.ContainsArrayError:
        raise _array_refused(target) from None
    except Exception as err:  # noqa: BLE001 - any unreadable group metadata
        raise DamagedTargetError(
            f"target: {target} cannot be opened as a zarr v3 group (its zarr.json is damaged: {_short(err)}); "
            "choose a new target"
        ) from None
    if group.attrs.get(ATTR) is None and (not _empty(group) or _store_entries(store) - {"zarr.json"}):
        raise _foreign(target)


def open_target(
    target: Any,
    signature: dict[str, Any],
    info: dict[str, Any],
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dimension_names: tuple[str, ...],
    overwrite: bool = False,
    restart: bool = False,
    aliases: tuple[dict[str, Any], ...] = (),
    attributes: dict[str, Any] | None = None,
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
        Replace a target of ours written by another job (or whose group metadata is damaged).
    restart : bool
        Replace a target of this job too (with ``overwrite``: a damaged target started again).
    aliases : tuple of dict
        Other signatures of the same job (as older versions wrote them): such a target is resumed
        with the signature it holds.
    attributes : dict, optional
        Attributes of the ``labels`` / ``uncertainty`` arrays (see :func:`axes_attributes`).

    Returns
    -------
    Target
        A new target, or the existing one of the same job (its integrity is checked by
        :func:`sum_core.batch.integrity.find_damage`).

    Raises
    ------
    InvalidInputError
        What :func:`check_target` refuses, and a target of another job (without ``overwrite``).
    """
    signature = json.loads(json.dumps(signature))
    accepted = [signature, *json.loads(json.dumps(list(aliases)))]
    check_target(target, overwrite)
    store = _store(target, overwrite)
    try:
        group = zarr.open_group(store, mode="a", zarr_format=3)
    except Exception as err:  # noqa: BLE001 - group metadata zarr cannot read, of a folder check_target proved ours
        if not overwrite:
            raise DamagedTargetError(
                f"target: {target} is a damaged sum-hq batch target: its group metadata cannot be read "
                f"({_short(err)}); rerun with overwrite=True (--overwrite) to start again"
            ) from None
        group = None
    existing = None if group is None else group.attrs.get(ATTR)
    if existing is not None and existing.get("signature") in accepted and not (restart and overwrite):
        return Target(group, target)
    if existing is not None and not overwrite:
        if _sampled_source_hash(existing.get("signature", {})):
            reason = ("was written by an older version of sum-hq, whose source hash sampled the data, so it "
                      "may hold results for other data")
        else:
            differ = sorted(k for k in set(signature) | set(existing.get("signature", {}))
                            if signature.get(k) != existing.get("signature", {}).get(k))
            reason = f"holds the results of a different job (differs in {', '.join(differ)})"
        raise InvalidInputError(
            f"target: {target} {reason}; choose a new target or pass overwrite=True (--overwrite)"
        )
    levels = max(int((existing or {}).get("levels", 0)), int(info.get("levels", 0)))  # OME-Zarr levels "0", "1"...
    group = _cleared(store, tuple(str(level) for level in range(levels)))
    paths = info.get("paths") or {}
    for name, dtype in ((paths.get(name, name), dtype) for name, dtype in OUTPUTS):
        array = group.create_array(
            name, shape=shape, dtype=dtype, chunks=chunks, fill_value=0, dimension_names=dimension_names,
            attributes=attributes,
        )
        group.create_array(
            f"checksums/{name}", shape=array.cdata_shape, dtype="uint64", chunks=(1,) * len(shape), fill_value=0
        )
    group.attrs[ATTR] = {"format": FORMAT, "signature": signature, "complete": False, **info}
    return Target(group, target)


def axes_attributes(scale: tuple[float, ...], units: tuple[str | None, ...]) -> dict[str, Any]:
    """The attributes of the output arrays that carry the source's physical pixel size: ``scale``
    (one float per output axis, 1.0 when unknown) and ``units`` (one NGFF unit name such as
    ``"micrometer"`` per axis, null when unknown); the axis names are the arrays' ``dimension_names``."""
    return {"scale": [float(v) for v in scale], "units": [None if u is None else str(u) for u in units]}


def _empty(group: zarr.Group) -> bool:
    """Whether a group holds no node and no attribute (the lock file of a running job is no node)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=f"Object at {LOCK_NAME} is not recognized")
        return not list(group.keys()) and not group.attrs.asdict()


def _foreign(target: Any) -> InvalidInputError:
    return InvalidInputError(
        f"target: {target} holds data that was not written by a sum-hq batch job; choose a new target "
        "(another program's data is never replaced, also not with overwrite=True / --overwrite)"
    )


def _array_refused(target: Any) -> InvalidInputError:
    return InvalidInputError(
        f"target: {target} is a zarr array, not a group; choose a new target (an existing array is never "
        "replaced, also not with overwrite=True / --overwrite)"
    )


def _sampled_source_hash(signature: dict[str, Any]) -> bool:
    """Whether a stored job signature has the source hash of versions before the exact one
    (``"sample:"`` / ``"full:"`` prefixes, see :func:`sum_core.embedding_cache.data_hash`)."""
    data = signature.get("source", {}).get("data") if isinstance(signature.get("source"), dict) else None
    return isinstance(data, str) and data.startswith(("sample:", "full:"))


def local_folder(store: Any) -> Path | None:
    """The folder of a local store, else None."""
    return Path(store.root) if isinstance(store, zarr.storage.LocalStore) else None


def _store(target: Any, overwrite: bool = False) -> Any:
    """A writable zarr store for ``target``, with a clear error when it is read-only or a folder
    that is not provably ours (see :func:`check_target`)."""
    if isinstance(target, (str, os.PathLike)):
        path = Path(target)
        if path.exists() and not path.is_dir():
            raise InvalidInputError(f"target: {path} is a file; give a folder path for a zarr group")
        existing = path if path.exists() else next((p for p in path.parents if p.exists()), Path("."))
        if not existing.is_dir():
            raise InvalidInputError(f"target: cannot create {path}: {existing} is a file; choose another path")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise InvalidInputError(f"target: {path} is read-only (no write permission on {existing})")
        target = zarr.storage.LocalStore(str(path))
    if not isinstance(target, zarr.abc.store.Store):
        raise InvalidInputError(f"target must be a folder path or a zarr store, got {type(target).__name__}")
    if target.read_only:
        raise InvalidInputError(f"target: the store {target} is read-only")
    folder = local_folder(target)
    if folder is not None and folder.is_dir():
        _check_folder(folder, overwrite)
    return target


def _check_folder(path: Path, overwrite: bool) -> None:
    """Refuse a folder target that is not provably ours, or a damaged one of ours without ``overwrite``."""
    entries = {p.name for p in path.iterdir()} - {LOCK_NAME}
    if not entries:
        return
    metadata = zarr_metadata(path)
    if metadata is not None and metadata.get("node_type") == "array":
        raise _array_refused(path)
    if metadata is not None and metadata.get("node_type") == "group":
        attributes = metadata.get("attributes") or {}
        if ATTR in attributes or (entries == {"zarr.json"} and not attributes):
            return  # ours (its signature is compared by open_target), or an empty group
        if attributes or not _provably_ours(path, entries - {"zarr.json"}):
            raise _foreign(path)
        state = "without the job's attributes (its job was interrupted while starting)"
    elif not (path / "zarr.json").exists():
        state = "missing"
    else:
        state = "unreadable"
    if not _provably_ours(path, entries - {"zarr.json"}):
        raise InvalidInputError(
            f"target: {path} is a non-empty folder that is not a zarr v3 group (its zarr.json is {state}) and "
            "not a sum-hq batch target; choose a new path (nothing in it is deleted, also not with "
            "overwrite=True / --overwrite)"
        )
    if not overwrite:
        raise DamagedTargetError(
            f"target: {path} is a damaged sum-hq batch target: its group metadata {path / 'zarr.json'} is {state}, "
            "and with it the job's signature; rerun with overwrite=True (--overwrite) to start again"
        )


def provably_ours(path: Path) -> bool:
    """Whether the folder ``path`` holds nothing but the nodes of a batch target (its group metadata aside),
    in either layout (see :func:`check_target`)."""
    return _provably_ours(path, {p.name for p in path.iterdir()} - {LOCK_NAME, "zarr.json"})


def _provably_ours(path: Path, entries: set[str]) -> bool:
    """Whether every entry is one of a target's nodes, each a zarr node of its kind (see :func:`check_target`):
    :data:`_NODES`, or in an OME-Zarr label image target (:mod:`sum_core.batch.ngff`) the label levels
    ``0``, ``1``... (uint32 arrays) and ``uncertainty/`` (a group of float16 levels) in place of the
    ``labels`` and ``uncertainty`` arrays."""
    levels = {e for e in entries if e.isdigit()}
    names = entries - levels
    if not entries or not names <= set(_NODES):
        return False
    if levels:  # the OME-Zarr layout
        if "0" not in levels or "labels" in names or not _levels_of(path, levels, "uint32"):
            return False
        uncertainty = path / "uncertainty"
        inner = {p.name for p in uncertainty.iterdir()} - {"zarr.json"} if uncertainty.is_dir() else set()
        group = zarr_metadata(uncertainty)
        if not inner or not _levels_of(uncertainty, inner, "float16"):
            return False
        if group is not None and group.get("node_type") != "group":
            return False
        names = names - {"uncertainty"}
    elif not names & {"labels", "uncertainty"}:
        return False
    for name in names:
        node_type, dtype = _NODES[name]
        metadata = zarr_metadata(path / name)
        if metadata is None or metadata.get("node_type") != node_type:
            return False
        if dtype is not None and metadata.get("data_type") != dtype:
            return False
    return True


def _levels_of(path: Path, names: set[str], dtype: str) -> bool:
    """Whether ``names`` are all pyramid levels (``0``, ``1``...) of ``path``, each an array of ``dtype``."""
    for name in names:
        metadata = zarr_metadata(path / name)
        if not name.isdigit() or metadata is None or metadata.get("node_type") != "array":
            return False
        if metadata.get("data_type") != dtype:
            return False
    return True


def zarr_metadata(folder: Path) -> dict[str, Any] | None:
    """The zarr v3 ``zarr.json`` of ``folder`` as a dict, or None when missing or unreadable."""
    try:
        metadata = json.loads((folder / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return metadata if isinstance(metadata, dict) and metadata.get("zarr_format") == 3 else None


@contextmanager
def no_space_left(target: Any) -> Iterator[None]:
    """Turn a full disk or quota while writing ``target`` into a clear :class:`~sum_core.errors.SumError`.

    Raises
    ------
    SumError
        ``ENOSPC`` / ``EDQUOT``: what to do (free space, rerun the same command: finished work
        is kept, each file being written atomically).
    """
    try:
        yield
    except OSError as err:
        if err.errno not in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise
        raise SumError(
            f"target: no space left on {target} ({err.strerror}); free space (or raise the quota) and rerun the "
            "same command to resume (finished work is kept)"
        ) from err


def _cleared(store: Any, levels: tuple[str, ...] = ()) -> zarr.Group:
    """A new group in ``store`` after deleting only what a job writes there: the group's ``zarr.json``
    first (an interrupted clear leaves no signature behind), then the job's nodes (:data:`_NODES`, and
    the pyramid ``levels`` of an OME-Zarr target). Anything else (the lock file held by this job, a
    user's files) is left as it is."""
    nodes = (*_NODES, *levels)
    if isinstance(store, zarr.storage.LocalStore):
        remove_entries(Path(store.root), ("zarr.json", *nodes))
    else:
        sync(store.delete("zarr.json"))
        for name in nodes:
            sync(store.delete_dir(name))
    return zarr.open_group(store, mode="a", zarr_format=3)


def _store_entries(store: Any) -> set[str]:
    """The top-level names in ``store`` (files and node folders), the lock file left out."""

    async def keys() -> list[str]:
        return [key async for key in store.list()]

    return {key.split("/", 1)[0] for key in sync(keys())} - {LOCK_NAME}


def check_apart(source: Any, target: Any, inside: Path | None = None) -> None:
    """Refuse a target that is, contains or lies inside the source (with or without overwrite), except
    exactly ``inside``: the one group inside the source a job may write (an OME-Zarr label image
    ``<image>/labels/<name>``, see :func:`sum_core.batch.ngff.labels_inside`).

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
    if inside is not None and os.path.realpath(target_path) == os.path.realpath(inside):
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
