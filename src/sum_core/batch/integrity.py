"""Integrity of a batch target: damage found when a job resumes or returns, repair, :func:`verify_target`.

What is checked (layout: :mod:`sum_core.batch.writer`):

- the metadata of ``labels``, ``uncertainty`` and (format 2) ``checksums/<array>``: missing or
  unreadable metadata is recreated by a repair (the chunks are kept and then verified; a
  format 1 target, without checksums, then redoes every slice);
- the ``done/<stage>`` flags of an unfinished job: an unreadable chunk or a value other than
  0 / 1 damages the flag's slice;
- the object ``counts`` of the planned slices (automatic jobs with sequential ids): a missing or
  unreadable count damages its slice (its plane is redone, finding the same count again; a plane
  redone with another count is refused, see :meth:`~sum_core.batch.writer.Target.set_count`);
- every output chunk with a recorded checksum: an unreadable chunk, or values whose checksum
  differs (a deleted chunk, zeros, NaN, another chunk's bytes), damages its slice. A chunk
  without a checksum (0) is damage when its unit is finished (format 3: every chunk of a complete
  target, the chunks of set ``done`` flags of an unfinished one), so a chunk deleted together
  with its checksum is found; in a complete format 2 target such a chunk must read as zeros.

Intermediate records (``work/``; the AIS maps blocks against their checksums) are checked by
:meth:`Target.get` against their digest, and up front by :func:`record_damage` when an automatic
job resumes and by :func:`verify_target`. The per-object table (``objects/``) is
checked slice by slice against its recorded row checksums
(:func:`sum_core.batch.objects.table_damage`).

A repair (``repair=True``, ``--repair``) redoes only the damaged slices: the target is marked
incomplete, then the slices' flags and intermediate records are removed, then their checksums,
then their output chunks, and the job recomputes them. In this order a repair interrupted at any
write leaves a target whose rerun (or second repair) ends as an uninterrupted job, never one
that passes its checks with chunks zeroed. In automatic
mode the unit is the whole plane (the chunk stage needs the plane's tile records, removed when
the job completes); in prompts mode the slice's objects.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import zarr
from zarr.core.sync import sync

from ..errors import InvalidInputError
from . import ais_stages, auto
from .objects import table_damage
from .writer import ATTR, Target, chunk_checksum

Damage = list[tuple[int, str]]  # (slice index, what is damaged)
_STAGES = ("tile", "objects", "plan", "chunk", "slice")  # the done/<stage> flags of all modes (see job.py)


def find_damage(target: Target, repair: bool = False) -> Damage:
    """The damaged slices of a target of this job (see the module docstring).

    With ``repair``, missing or unreadable array metadata is recreated first (so the chunks
    can be checked); without it, such a target raises at once.

    Raises
    ------
    DamagedTargetError
        Missing or unreadable array metadata, without ``repair``.
    """
    reference = _reference_array(target)
    outputs = target.outputs
    names = [name for name, _ in outputs] + ([f"checksums/{n}" for n, _ in outputs] if target.checksummed else [])
    broken = [(name, problem) for name in names if (problem := _metadata_problem(target, name, reference))]
    if broken and not repair:
        raise target.damaged([f"{name}/zarr.json {problem}" for name, problem in broken])
    for name, _ in broken:
        _recreate(target, name, reference)
    n_slices = 1 if target.slice_axis is None else target.labels.shape[target.slice_axis]
    damage: Damage = []
    if any(name.startswith("checksums/") for name, _ in broken) or (broken and not target.checksummed):
        damage += [(s, f"slice {s} cannot be verified (array metadata was lost)") for s in range(n_slices)]
    complete = bool(target.info.get("complete"))
    if not complete:
        unreadable = _stages(target)[1]
        if unreadable and not repair:
            raise target.damaged([f"done/{stage}/zarr.json is unreadable" for stage in unreadable])
        for stage in unreadable:  # the flags are lost: the stage's units are redone (same bytes)
            sync(target.group.store.delete_dir(f"{target.group.path}/done/{stage}".lstrip("/")))
        damage += _flag_damage(target)
    if target.checksummed:
        damage += _chunk_damage(target, complete)
    return damage + _count_damage(target, complete) + table_damage(target)


def record_damage(target: Target) -> Damage:
    """Missing or damaged intermediate records that the pending work of an unfinished automatic job needs
    (:func:`sum_core.batch.auto.record_damage`, :func:`sum_core.batch.ais_stages.record_damage` by the
    job's mode); none for a complete target or a prompts job."""
    if target.info.get("complete"):
        return []
    mode = target.info["signature"].get("mode")
    if mode == "ais":
        return ais_stages.record_damage(target)
    return auto.record_damage(target) if mode in ("auto", "amg") else []


def settle(target: Target, damage: Damage, repair: bool) -> None:
    """Raise for ``damage``, or with ``repair`` clear the damaged slices so the job redoes them.

    Raises
    ------
    DamagedTargetError
        ``damage`` without ``repair``: naming what is damaged and how to proceed.
    """
    if not damage:
        return
    if not repair:
        raise target.damaged([problem for _, problem in damage])
    slices = sorted({s for s, _ in damage})
    warnings.warn(
        f"target: repairing {target.where}: redoing slice(s) {slices} ({damage[0][1]}"
        + (f" and {len(damage) - 1} more problem(s))" if len(damage) > 1 else ")"),
        stacklevel=3,
    )
    target.group.attrs[ATTR] = {**target.info, "complete": False}  # first: see the module docstring
    for s in slices:
        _clear_slice(target, s)


def verify_target(target: Any) -> int:
    """Verify a batch target against the checksums recorded while it was written.

    Cheap relative to the job: it reads the output once (and the small ``checksums`` and
    ``done`` arrays), nothing is recomputed.

    Parameters
    ----------
    target : str, path or zarr store
        A target written by :func:`sum_core.batch.segment_zarr` (complete, or an unfinished job:
        then the finished units are verified).

    Returns
    -------
    int
        The number of output chunks verified.

    Raises
    ------
    InvalidInputError
        Not a batch target, or a target written before checksums existed (format 1: it cannot
        be verified).
    DamagedTargetError
        A damaged target (an ``InvalidInputError`` naming the damaged chunks, flags or metadata
        and ``repair=True`` / ``--repair``).

    Examples
    --------
    >>> import zarr
    >>> store = zarr.storage.MemoryStore()
    >>> verify_target(store)  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    InvalidInputError: target: ... is not a sum-hq batch target ...
    """
    try:
        group = zarr.open_group(target, mode="r", zarr_format=3)
        info = group.attrs.get(ATTR)
    except Exception as err:  # noqa: BLE001 - any unreadable group
        raise InvalidInputError(
            f"target: {target} is not a sum-hq batch target ({type(err).__name__}: {err})"
        ) from None
    if info is None:
        raise InvalidInputError(f"target: {target} is not a sum-hq batch target (no {ATTR} attributes)")
    out = Target(group, target)
    if not out.checksummed:
        raise InvalidInputError(
            f"target: {target} was written before batch targets recorded checksums (format {info.get('format', 1)}); "
            "it cannot be verified. Rerun its job with overwrite=True (--overwrite) to rewrite it with checksums"
        )
    damage = find_damage(out) + record_damage(out)
    if damage:
        raise out.damaged([problem for _, problem in damage])
    recorded, _ = _cells(out.group[f"checksums/{out.outputs[0][0]}"])
    return int(recorded.size if out.info.get("complete") else np.count_nonzero(recorded))


def _reference_array(target: Target) -> dict[str, Any]:
    """Shape, chunks, axis names and attributes of the output arrays, from whichever of them is readable."""
    for name, _ in target.outputs:
        try:
            array = target.group[name]
        except Exception:  # noqa: BLE001 - try the other one
            continue
        return {"shape": array.shape, "chunks": array.chunks, "dimension_names": array.metadata.dimension_names,
                "attributes": array.attrs.asdict()}
    raise target.damaged(["the metadata of both labels and uncertainty (zarr.json) is missing or unreadable"])


def _metadata_problem(target: Target, name: str, reference: dict[str, Any]) -> str | None:
    """Why the metadata of array ``name`` is unusable, or None."""
    try:
        array = target.group[name]
    except KeyError:
        return "is missing"
    except Exception as err:  # noqa: BLE001 - any unreadable metadata
        return f"is unreadable ({type(err).__name__})"
    expected = dict(target.outputs).get(name)
    if expected is not None and (array.shape, array.chunks, str(array.dtype)) != (
        reference["shape"], reference["chunks"], expected
    ):
        return "does not match the job's arrays"
    return None


def _recreate(target: Target, name: str, reference: dict[str, Any]) -> None:
    """Write fresh metadata for array ``name``, keeping its chunks (they are verified next)."""
    store = target.group.store
    key = f"{target.group.path}/{name}/zarr.json".lstrip("/")
    sync(store.delete(key))
    if name.startswith("checksums/"):
        cells = target.labels.cdata_shape
        target.group.create_array(name, shape=cells, dtype="uint64", chunks=(1,) * len(cells), fill_value=0)
        return
    target.group.create_array(name, dtype=dict(target.outputs)[name], fill_value=0, **reference)


def _cells(array: zarr.Array) -> tuple[np.ndarray, np.ndarray]:
    """The values of an array whose every value is its own chunk, and the mask of the unreadable ones."""
    try:
        return np.asarray(array[...]), np.zeros(array.shape, dtype=bool)
    except Exception:  # noqa: BLE001 - find the damaged chunks one by one
        values, bad = np.zeros(array.shape, dtype=array.dtype), np.zeros(array.shape, dtype=bool)
        for index in np.ndindex(*array.shape):
            try:
                values[index] = array[index]
            except Exception:  # noqa: BLE001 - any decoding failure is damage
                bad[index] = True
        return values, bad


def _stages(target: Target) -> tuple[dict[str, zarr.Array], list[str]]:
    """The ``done/<stage>`` flag arrays of a target, and the stages whose metadata cannot be read."""
    arrays, unreadable = {}, []
    levels = tuple(f"level{level}" for level in range(1, int(target.info.get("levels", 1))))  # OME-Zarr pyramid
    for stage in _STAGES + levels:
        try:
            arrays[stage] = target.group[f"done/{stage}"]
        except KeyError:
            continue
        except Exception:  # noqa: BLE001 - any unreadable metadata
            unreadable.append(stage)
    return arrays, unreadable


def _flag_damage(target: Target) -> Damage:
    """Unreadable ``done`` flags, or flags other than 0 / 1."""
    damage = []
    for stage, array in _stages(target)[0].items():
        values, bad = _cells(array)
        for index in zip(*np.nonzero(bad | (values > 1))):
            index = tuple(int(i) for i in index)
            damage.append((index[0], f"done/{stage} flag {index} is unreadable"))
    return damage


def _chunk_damage(target: Target, complete: bool) -> Damage:
    """Output chunks that cannot be read or do not match their checksum (see :func:`find_damage`)."""
    damage = []
    zeros: dict[tuple[tuple[int, ...], str], int] = {}
    finished = _finished_chunks(target, complete) if target.fully_checksummed else None
    for name, dtype in target.outputs:
        array = target.group[name]
        recorded, bad = _cells(target.group[f"checksums/{name}"])
        for coords in np.ndindex(*recorded.shape):
            if bad[coords]:
                damage.append((target.slice_of(coords), f"checksums/{name} of chunk {coords} is unreadable"))
                continue
            expected = int(recorded[coords])
            if expected == 0 and finished is not None:
                if finished[coords]:
                    damage.append((target.slice_of(coords), f"checksums/{name} of chunk {coords} is missing"))
                continue  # else not written yet
            if expected == 0 and not complete:
                continue  # not written yet
            region = target.chunk_selection(coords)
            try:
                data = array[region]
            except Exception as err:  # noqa: BLE001 - any decoding failure is damage
                damage.append((target.slice_of(coords), f"{name} chunk {coords} is unreadable ({type(err).__name__})"))
                continue
            if expected == 0:
                key = (data.shape, dtype)
                expected = zeros.setdefault(key, chunk_checksum(np.zeros(data.shape, dtype=dtype)))
            if chunk_checksum(data) != expected:
                damage.append((target.slice_of(coords), f"{name} chunk {coords} does not match its checksum"))
    return damage


def _count_damage(target: Target, complete: bool) -> Damage:
    """Planned slices (all of a complete target, else those with a set ``done/plan`` flag) whose object
    count, which the ids of the later slices follow, is missing or unreadable (sequential ids only)."""
    if target.id_stride is not None or target.info["signature"].get("mode") == "prompts":
        return []
    n_slices = 1 if target.slice_axis is None else target.labels.shape[target.slice_axis]
    planned = np.ones(n_slices, dtype=bool)
    if not complete:
        plans = _stages(target)[0].get("plan")
        planned = _cells(plans)[0] == 1 if plans is not None else ~planned
    return [(int(s), f"counts of slice {int(s)} is missing or unreadable") for s in np.nonzero(planned)[0]
            if target.count(int(s)) < 0]


def _finished_chunks(target: Target, complete: bool) -> np.ndarray:
    """Which output chunks (over the chunk grid) belong to finished units: all of a complete
    target, else those of set ``done/chunk`` (automatic) or ``done/slice`` (prompts) flags."""
    finished = np.full(target.layout[2], complete, dtype=bool)
    if complete:
        return finished
    stages = _stages(target)[0]
    for stage in ("chunk", "slice"):
        if stage not in stages:
            continue
        flags, bad = _cells(stages[stage])
        for index in zip(*np.nonzero((flags == 1) & ~bad)):
            chunks = target.slice_chunks(int(index[0]))
            for coords in chunks if stage == "slice" else [chunks[int(index[1])]]:
                finished[coords] = True
    return finished


def _clear_slice(target: Target, slice_index: int) -> None:
    """Unset a slice's flags and drop its intermediate records, then forget its checksums and zero its
    output chunks (:meth:`Target.clear_slice`), in this order (see the module docstring)."""
    for array in _stages(target)[0].values():
        array[slice_index] = 0
    if f"work/s{slice_index}" in target.group:
        del target.group[f"work/s{slice_index}"]
    target.forget_unreadable_count(slice_index)
    target.clear_slice(slice_index)
