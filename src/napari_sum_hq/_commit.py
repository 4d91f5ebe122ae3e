"""What a commit may write into the committed objects (Qt-free): micro-sam's commit choice.

A commit takes the pixels of the current objects (ids 1..K) and writes them into the committed
objects. Where they overlap objects committed before, the mode decides:

``protect objects`` (the default)
    Committed objects never lose a pixel: the new objects only take background pixels. On top of
    that, a new object that covers at least ``threshold`` (0.75) of a committed object on the
    slices it touches is that object segmented again: it is not committed at all (micro-sam's
    ``objects`` matching; micro-sam then lets the new object take the pixels of the objects it does
    *not* match, which can shrink them, so here pixels stay protected as well).
``protect pixels``
    The new objects only take background pixels (micro-sam's ``pixels``).
``overwrite``
    The new objects win every pixel they cover (micro-sam's ``none``; earlier objects shrink).

When an object is being refined (``refine_id``), its own old pixels count as background.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._session import SliceKey

#: The commit modes offered by the widget, with their one-line explanation.
COMMIT_MODES: dict[str, str] = {
    "protect objects": "new objects take only background pixels; one covering most of a committed object "
    "(at least the match threshold) is that object again and is not committed",
    "protect pixels": "new objects take only background pixels",
    "overwrite": "new objects take every pixel they cover (committed objects there shrink)",
}
DEFAULT_COMMIT_MODE = "protect objects"
#: micro-sam's default preservation threshold of its ``objects`` mode.
DEFAULT_MATCH_THRESHOLD = 0.75


@dataclass(frozen=True)
class SlicePixels:
    """The pixels of the current objects on one slice: positions and current ids (1..K)."""

    slice_key: SliceKey
    rows: np.ndarray
    cols: np.ndarray
    ids: np.ndarray

    def select(self, keep: np.ndarray) -> SlicePixels:
        """The pixels where ``keep`` is True."""
        return SlicePixels(self.slice_key, self.rows[keep], self.cols[keep], self.ids[keep])


@dataclass(frozen=True)
class CommitPlan:
    """What a commit writes.

    Attributes
    ----------
    pixels : list of SlicePixels
        The pixels to write, per slice (current ids).
    matched : dict
        Current id -> the committed id it matched (``protect objects``): not committed.
    protected : int
        Pixels of the (unmatched) current objects left to the committed objects they lie on.
    """

    pixels: list[SlicePixels]
    matched: dict[int, int]
    protected: int

    def notes(self, mode: str) -> str:
        """What ``mode`` kept from being written, for the status line ('' when nothing)."""
        notes = []
        if self.matched:
            pairs = ", ".join(f"{new} = committed {old}" for new, old in sorted(self.matched.items()))
            notes.append(f"current object(s) matching committed ones not committed again ({pairs})")
        if self.protected:
            notes.append(f"{self.protected} px on committed objects left to them")
        return f" ({mode}: {'; '.join(notes)})" if notes else ""


def plan_commit(
    pieces: Sequence[SlicePixels],
    committed: Any,
    mode: str = DEFAULT_COMMIT_MODE,
    threshold: float = DEFAULT_MATCH_THRESHOLD,
    refine_id: int = 0,
) -> CommitPlan:
    """Decide which pixels of the current objects a commit writes (see the module docstring).

    Parameters
    ----------
    pieces : sequence of SlicePixels
        The current objects' pixels, one entry per slice.
    committed : array-like
        The committed objects (full stack shape); only the pixels under the current objects
        are read, and for ``protect objects`` the planes of the slices where they overlap an
        object.
    mode : str
        One of :data:`COMMIT_MODES`.
    threshold : float
        Match threshold of ``protect objects`` (fraction of a committed object covered).
    refine_id : int
        The committed id being refined (0: none).

    Returns
    -------
    CommitPlan
    """
    if mode not in COMMIT_MODES:
        raise ValueError(f"commit mode must be one of {list(COMMIT_MODES)}, got {mode!r}")
    if mode == "overwrite":
        return CommitPlan(list(pieces), {}, 0)
    under = [np.asarray(committed[piece.slice_key + (piece.rows, piece.cols)]) for piece in pieces]
    matched = _matches(pieces, under, committed, threshold, refine_id) if mode == "protect objects" else {}
    kept, protected = [], 0
    for piece, old in zip(pieces, under, strict=True):
        free = (old == 0) | (old == refine_id) if refine_id else old == 0
        unmatched = ~np.isin(piece.ids, list(matched))
        keep = free & unmatched
        protected += int(np.count_nonzero(~free & unmatched))
        if keep.any():
            kept.append(piece.select(keep))
    return CommitPlan(kept, matched, protected)


def _matches(
    pieces: Sequence[SlicePixels], under: list[np.ndarray], committed: Any, threshold: float, refine_id: int
) -> dict[int, int]:
    """Current id -> committed id, for every committed object a current object covers by at
    least ``threshold`` of its pixels on the slices that current object touches."""
    overlap: dict[tuple[int, int], int] = {}  # (current id, committed id) -> shared pixels
    slices: dict[int, set[SliceKey]] = {}  # current id -> slices it touches
    for piece, old in zip(pieces, under, strict=True):
        for new_id in np.unique(piece.ids):
            slices.setdefault(int(new_id), set()).add(piece.slice_key)
        hit = (old != 0) & (old != refine_id)
        pairs, counts = np.unique(np.stack([piece.ids[hit], old[hit]]), axis=1, return_counts=True)
        for (new_id, old_id), count in zip(pairs.T.tolist(), counts.tolist(), strict=True):
            overlap[new_id, old_id] = overlap.get((new_id, old_id), 0) + count
    sizes: dict[tuple[int, SliceKey], int] = {}  # (committed id, slice) -> its pixels there
    wanted = {(old_id, key) for (new_id, old_id) in overlap for key in slices[new_id]}
    for key in {key for _, key in wanted}:
        plane = np.asarray(committed[key]) if key else np.asarray(committed)
        for old_id in {old_id for old_id, k in wanted if k == key}:
            sizes[old_id, key] = int(np.count_nonzero(plane == old_id))
    matched = {}
    for (new_id, old_id), count in overlap.items():
        size = sum(sizes[old_id, key] for key in slices[new_id])
        if size and count >= threshold * size:
            matched[new_id] = old_id
    return matched
