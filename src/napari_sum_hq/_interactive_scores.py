"""Per-object scores of the interactive widget's committed objects: the committed Labels layer's ``features``.

Every commit adds (or, for a refined id, replaces) one row per committed object **and slice** (a 2D image's
objects have ``slice`` 0; in a stack the object of each slice has its own row, keyed ``(slice, index)`` as the
automatic widget's layers are), with the columns :data:`FEATURE_COLUMNS`:

- ``index`` (napari's key: the label id), ``slice`` (the plane's number in the stack, C order over its leading
  axes; 0 for a 2D image), ``area``;
- ``predicted_iou`` and ``stability``: those of the prediction the object came from (the segmentation's or the
  propagated slice's mask score, and :func:`sum_core.mask_ops.stability_score` of its logits); NaN for pixels
  only painted by hand;
- ``mean_uncertainty`` and ``boundary_uncertainty``: :func:`sum_core.object_scores.object_scores` of the
  object **as committed** and the prediction's uncertainty (max over the objects of one segmentation),
  computed in the object's window (its bounding box grown by the boundary band) only: by the worker that
  made the object (:func:`piece_score`), or, when the commit writes other pixels (the commit mode left
  some to earlier objects, the user painted), again at the commit from the ``<image> uncertainty`` layer;
- the bounding box ``bbox_row0 / bbox_col0 / bbox_row1 / bbox_col1`` (half-open), so the review queue lists
  the objects from these rows without scanning the layer.

**Overwrite.** Objects a commit took pixels from (commit mode ``overwrite``, a refined id) are scored
again as they are left; rows of ids with no pixel left on their slice are dropped.

**Undo.** Undoing a commit (Ctrl+Z in the widget) restores the score columns of the rows that commit wrote
or dropped as they were before it (:func:`restore`); other columns (the review queue's ``reviewed``) and
other rows are kept. The layer's ``metadata[FEATURES_EDIT]`` names the undo-history step the rows describe
(:func:`mark_features_current`): an edit the widget did not make (napari's own undo or redo of the layer,
the brush) leaves them stale, and the review queue then scans the layer (keeping these columns).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from napari.layers import Labels
from sum_core.object_scores import BAND_WIDTH, object_scores
from sum_core.tiling import Region

from ._batch_jobs import FEATURE_COLUMNS as RESULT_COLUMNS
from ._interactive_history import last_edit
from ._session import ObjectPiece, SliceKey, UncertaintyPiece

#: The features columns of the committed objects, in order: those of automatic and batch results, then the bbox.
FEATURE_COLUMNS = (*RESULT_COLUMNS, "bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1")
#: The columns that describe an object's pixels (all but its id and slice).
SCORE_COLUMNS = FEATURE_COLUMNS[2:]
#: ``Labels.metadata`` key: a :class:`FeaturesMark`, the undo-history step the layer's features describe
#: (:func:`features_current`).
FEATURES_EDIT = "sum_features_edit"


@dataclass(frozen=True)
class ObjectScore:
    """The scores of one current object: its prediction's predicted IoU and stability and, computed in the
    worker that made it, the uncertainties of its pixels ``mask`` in ``region`` (a commit that writes exactly
    those pixels reuses them; any other pixels are scored again at the commit).

    Attributes
    ----------
    predicted_iou, stability : float
        NaN when unknown.
    region : Region
        The object's bounding box on its slice.
    mask : numpy.ndarray
        bool ``region.shape``: its pixels.
    mean_uncertainty, boundary_uncertainty : float
        :func:`sum_core.object_scores.object_scores` of those pixels and the prediction's uncertainty.
    """

    predicted_iou: float
    stability: float
    region: Region
    mask: np.ndarray
    mean_uncertainty: float
    boundary_uncertainty: float


#: :class:`ObjectScore` per ``(slice key, current object index)``.
CurrentScores = Mapping[tuple[SliceKey, int], ObjectScore]


def plane_number(slice_key: SliceKey, stack_shape: tuple[int, ...]) -> int:
    """The ``slice`` value of a plane: its C-order number among the stack's planes (0 for a 2D image)."""
    return int(np.ravel_multi_index(slice_key, stack_shape)) if slice_key else 0


def uncertainties(
    mask: np.ndarray, box: Region, plane_shape: tuple[int, int], read: Callable[[Region], np.ndarray]
) -> tuple[float, float]:
    """``(mean, boundary)`` uncertainty of the object ``mask`` (bool ``box.shape``) of a plane, computed in its
    window (``box`` grown by :data:`~sum_core.object_scores.BAND_WIDTH`): ``read(window)`` gives the uncertainty
    there. Equal to :func:`sum_core.object_scores.object_scores` on the whole plane."""
    h, w = plane_shape
    window = Region(max(box.row0 - BAND_WIDTH, 0), max(box.col0 - BAND_WIDTH, 0),
                    min(box.row1 + BAND_WIDTH, h), min(box.col1 + BAND_WIDTH, w))  # fmt: skip
    inside = np.zeros(window.shape, np.uint8)
    r, c = box.row0 - window.row0, box.col0 - window.col0
    inside[r : r + box.shape[0], c : c + box.shape[1]] = mask
    u = np.clip(np.asarray(read(window), dtype=np.float32), 0.0, 1.0)
    table = object_scores(inside, u)
    return float(table.mean_uncertainty[0]), float(table.boundary_uncertainty[0])


def piece_score(
    piece: ObjectPiece, predicted_iou: float, stability: float, uncertainty: UncertaintyPiece | None,
    plane_shape: tuple[int, int],
) -> ObjectScore:  # fmt: skip
    """The :class:`ObjectScore` of a result's object (worker thread): ``uncertainty`` is zero outside its window."""

    def read(window: Region) -> np.ndarray:
        values = np.zeros(window.shape, np.float32)
        if uncertainty is not None:
            u = uncertainty.region
            r0, c0 = max(u.row0, window.row0), max(u.col0, window.col0)
            r1, c1 = min(u.row1, window.row1), min(u.col1, window.col1)
            if r0 < r1 and c0 < c1:
                values[r0 - window.row0 : r1 - window.row0, c0 - window.col0 : c1 - window.col0] = (
                    uncertainty.values[r0 - u.row0 : r1 - u.row0, c0 - u.col0 : c1 - u.col0]
                )
        return values

    mean, boundary = uncertainties(piece.mask, piece.region, plane_shape, read)
    return ObjectScore(float(predicted_iou), float(stability), piece.region, piece.mask, mean, boundary)


def object_rows(
    uncertainty: np.ndarray,
    objects: Iterable[tuple[SliceKey, int, int, Region, np.ndarray]],
    scores: CurrentScores,
) -> pd.DataFrame:
    """The :data:`FEATURE_COLUMNS` rows of committed objects.

    Parameters
    ----------
    uncertainty : numpy.ndarray
        The current objects' per-pixel uncertainty (full stack shape), in [0, 1]; read only in the windows of
        objects whose pixels differ from their :class:`ObjectScore`'s.
    objects : iterable of (slice key, label id, current index, bounding box, mask)
        The objects as committed: their id, the current object they came from, their bounding box on that slice
        and their pixels there (bool, the box's shape).
    scores : mapping
        :class:`ObjectScore` by ``(slice key, current index)``; a missing one gives NaN predicted IoU and
        stability.

    Returns
    -------
    pandas.DataFrame
        One row per object, in the order given.
    """
    shape = uncertainty.shape
    rows = []
    for key, label_id, index, box, mask in objects:
        known = scores.get((key, index))
        if known is not None and known.region == box and np.array_equal(known.mask, mask):
            mean, boundary = known.mean_uncertainty, known.boundary_uncertainty
        else:
            def read(window: Region, key: SliceKey = key) -> np.ndarray:
                return uncertainty[key + window.slices]

            mean, boundary = uncertainties(mask, box, shape[-2:], read)
        predicted_iou, stability = (np.nan, np.nan) if known is None else (known.predicted_iou, known.stability)
        rows.append((label_id, plane_number(key, shape[:-2]), int(np.count_nonzero(mask)), predicted_iou, stability,
                     mean, boundary, box.row0, box.col0, box.row1, box.col1))  # fmt: skip
    frame = pd.DataFrame(rows, columns=list(FEATURE_COLUMNS))
    return frame.astype({"index": np.int64, "slice": np.int64, "area": np.int64})


def merged_features(features: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """``features`` with the rows of the ``(slice, index)`` pairs of ``rows`` replaced by ``rows``, sorted by
    slice then index (other columns of ``features`` are kept; new rows have NaN there; features without an
    ``index`` column describe no object and are replaced)."""
    kept = features if "index" in features else features.iloc[:0]
    if len(kept):  # rows without a slice (a plane's) are slice 0
        if "slice" not in kept:
            kept = kept.assign(slice=0)
        keys = pd.MultiIndex.from_frame(rows[["slice", "index"]])
        old = pd.MultiIndex.from_frame(kept[["slice", "index"]].astype(np.int64))
        kept = kept[~old.isin(keys)]
    parts = [part for part in (kept, rows) if len(part)]
    if not parts:
        return rows
    return pd.concat(parts, ignore_index=True).sort_values(["slice", "index"], ignore_index=True)


class FeaturesMark:
    """What ``metadata[FEATURES_EDIT]`` holds: the layer and its undo-history step that its features describe.

    It holds the step itself (compared with ``is``), so a freed step's memory cannot be taken for it, and the
    layer weakly (a copy of the metadata, e.g. a duplicated layer, describes another layer: not current).
    """

    __slots__ = ("_layer", "_edit")

    def __init__(self, layer: Labels) -> None:
        self._layer = weakref.ref(layer)
        self._edit = last_edit(layer)

    def current(self, layer: Labels | None = None) -> bool:
        """Whether the marked layer (``layer``, when given, must be it) still has the marked step last."""
        marked = self._layer()
        return marked is not None and (layer is None or layer is marked) and last_edit(marked) is self._edit

    def __deepcopy__(self, memo: dict) -> FeaturesMark:
        return self  # names the original layer: a copy's data has no history of its own yet


def mark_features_current(layer: Labels) -> None:
    """Record that ``layer.features`` describe its data after its last undo-history step."""
    layer.metadata[FEATURES_EDIT] = FeaturesMark(layer)


def features_current(layer: Labels) -> bool:
    """Whether ``layer.features`` were marked current (:func:`mark_features_current`) at its last edit."""
    mark = layer.metadata.get(FEATURES_EDIT)
    return isinstance(mark, FeaturesMark) and mark.current(layer)


def marked_stale(metadata: Mapping[str, Any]) -> bool:
    """Whether a layer's ``metadata`` (e.g. of napari's layer data tuple) carries a mark that is no longer
    current: its features' scores describe pixels that have changed since (a layer without a mark: False)."""
    mark = metadata.get(FEATURES_EDIT)
    return FEATURES_EDIT in metadata and not (isinstance(mark, FeaturesMark) and mark.current())


@dataclass(frozen=True)
class FeaturesUndo:
    """What undoing one commit puts back into the committed layer's features (:func:`restore`).

    Attributes
    ----------
    keys : set of (int, int)
        The ``(slice, index)`` rows the commit wrote or dropped.
    rows : pandas.DataFrame
        Those rows as they were before the commit (the ones that existed).
    mark : FeaturesMark or None
        The layer's mark before the commit.
    """

    keys: frozenset
    rows: pd.DataFrame
    mark: Any


def _row_keys(features: pd.DataFrame) -> list[tuple[int, int]]:
    """The ``(slice, index)`` of each row (slice 0 without a ``slice`` column; none without ``index``)."""
    if "index" not in features:
        return []
    slices = features["slice"] if "slice" in features else pd.Series(0, index=features.index)
    return list(zip(slices.astype(np.int64).tolist(), features["index"].astype(np.int64).tolist(), strict=True))


def _touched(features: pd.DataFrame, keys: frozenset) -> np.ndarray:
    """bool per row of ``features``: its ``(slice, index)`` is one of ``keys``."""
    if "index" not in features:
        return np.zeros(len(features), dtype=bool)
    return np.array([key in keys for key in _row_keys(features)], dtype=bool).reshape(len(features))


def replace_rows(
    layer: Labels, rows: pd.DataFrame, dropped: Iterable[tuple[int, int]] = (), current: bool = True
) -> FeaturesUndo:
    """Put ``rows`` into the layer's features (:func:`merged_features`), drop the ``(slice, index)`` rows
    ``dropped`` (objects with no pixel left), mark the features current when they were before this edit
    (``current``: the other rows describe the layer), and return how to undo that."""
    features = layer.features
    keys = frozenset(_row_keys(rows)) | frozenset(dropped)
    before = features[_touched(features, keys)].copy()
    undo = FeaturesUndo(keys, before, layer.metadata.get(FEATURES_EDIT))
    merged = merged_features(features, rows)
    gone = frozenset(dropped)
    if gone:
        merged = merged[~_touched(merged, gone)].reset_index(drop=True)
    layer.features = merged
    if current:
        mark_features_current(layer)
    return undo


def restore(layer: Labels, undo: FeaturesUndo) -> None:
    """Undo one commit's rows: the rows it wrote or dropped get back their :data:`FEATURE_COLUMNS` values of
    before it (rows it added go); their other columns (e.g. the review queue's ``reviewed``) and all other
    rows stay as they are now; the mark of before the commit is put back."""
    features = layer.features if "index" in layer.features else layer.features.iloc[:0, :0]
    touched = _touched(features, undo.keys)
    now, kept = features[touched], features[~touched]
    old = undo.rows.reset_index(drop=True)
    other = [c for c in features.columns if c not in FEATURE_COLUMNS]  # e.g. the review queue's "reviewed"
    if len(old) and other and len(now):
        later = now.set_index(pd.MultiIndex.from_tuples(_row_keys(now)))[other]
        at = pd.MultiIndex.from_tuples(_row_keys(old))
        present = at.isin(later.index)
        for column in other:
            values = old[column].to_numpy(dtype=object) if column in old else np.full(len(old), np.nan, object)
            values[present] = later.loc[at[present], column].to_numpy(dtype=object)
            old[column] = pd.Series(values).infer_objects()
    parts = [part for part in (kept, old) if len(part)]
    table = pd.concat(parts, ignore_index=True) if parts else features.iloc[:0]
    if len(table):
        table = table.sort_values(["slice", "index"], ignore_index=True)
    layer.features = table
    layer.metadata[FEATURES_EDIT] = undo.mark
