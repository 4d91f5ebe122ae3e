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

Writes go to distinct chunks only, so tasks can run in threads or processes concurrently.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.storage

from ..errors import InvalidInputError

ATTR = "sum_hq_batch"
FORMAT = 1


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
    group = zarr.open_group(store, mode="w", zarr_format=3)
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
        if path.is_dir() and any(path.iterdir()) and not (path / "zarr.json").exists():
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
