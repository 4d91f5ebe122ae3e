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
  object **as committed** (the commit mode may have left some of its pixels to earlier objects) and the
  prediction's uncertainty (the ``<image> uncertainty`` layer, max over the objects of one segmentation),
  computed in the object's window (its bounding box grown by the boundary band) only;
- the bounding box ``bbox_row0 / bbox_col0 / bbox_row1 / bbox_col1`` (half-open), so the review queue lists
  the objects from these rows without scanning the layer.

**Undo.** Undoing a commit (Ctrl+Z in the widget) restores the rows as they were before that commit.
The layer's ``metadata[FEATURES_EDIT]`` names the undo-history step the rows describe
(:func:`mark_features_current`): an edit the widget did not make (napari's own undo or redo of the layer,
the brush) leaves them stale, and the review queue then scans the layer (keeping these columns).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from napari.layers import Labels
from sum_core.object_scores import BAND_WIDTH, object_scores
from sum_core.tiling import Region

from ._interactive_history import last_edit
from ._session import SliceKey

#: The features columns of the committed objects, in order.
FEATURE_COLUMNS = ("index", "slice", "area", "predicted_iou", "stability", "mean_uncertainty",
                   "boundary_uncertainty", "bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1")  # fmt: skip
#: ``Labels.metadata`` key: the undo-history step the layer's features describe (:func:`features_current`).
FEATURES_EDIT = "sum_features_edit"

#: ``(predicted IoU, stability)`` per ``(slice key, current object index)``.
CurrentScores = Mapping[tuple[SliceKey, int], tuple[float, float]]


def plane_number(slice_key: SliceKey, stack_shape: tuple[int, ...]) -> int:
    """The ``slice`` value of a plane: its C-order number among the stack's planes (0 for a 2D image)."""
    return int(np.ravel_multi_index(slice_key, stack_shape)) if slice_key else 0


def object_rows(
    committed: np.ndarray,
    uncertainty: np.ndarray,
    objects: Iterable[tuple[SliceKey, int, int, Region]],
    scores: CurrentScores,
) -> pd.DataFrame:
    """The :data:`FEATURE_COLUMNS` rows of committed objects, each computed in its own window.

    Parameters
    ----------
    committed : numpy.ndarray
        The committed objects (full stack shape), the objects already written.
    uncertainty : numpy.ndarray
        The prediction's per-pixel uncertainty, same shape, in [0, 1].
    objects : iterable of (slice key, label id, current index, bounding box)
        The objects to score: the id they were committed as, the current object they came from and their
        bounding box on that slice (they have no pixel outside it).
    scores : mapping
        ``(predicted IoU, stability)`` by ``(slice key, current index)``; missing ones are NaN.

    Returns
    -------
    pandas.DataFrame
        One row per object, in the order given.
    """
    shape = committed.shape
    rows = []
    for key, label_id, index, box in objects:
        window = Region(max(box.row0 - BAND_WIDTH, 0), max(box.col0 - BAND_WIDTH, 0),
                        min(box.row1 + BAND_WIDTH, shape[-2]), min(box.col1 + BAND_WIDTH, shape[-1]))  # fmt: skip
        where = key + window.slices
        inside = (np.asarray(committed[where]) == label_id).astype(np.uint8)
        u = np.clip(np.asarray(uncertainty[where], dtype=np.float32), 0.0, 1.0)
        predicted_iou, stability = scores.get((key, index), (np.nan, np.nan))
        table = object_scores(inside, u, predicted_iou={1: predicted_iou}, stability={1: stability})
        if not len(table):
            continue
        rows.append((label_id, plane_number(key, shape[:-2]), int(table.area[0]), float(table.predicted_iou[0]),
                     float(table.stability[0]), float(table.mean_uncertainty[0]),
                     float(table.boundary_uncertainty[0]), box.row0, box.col0, box.row1, box.col1))  # fmt: skip
    frame = pd.DataFrame(rows, columns=list(FEATURE_COLUMNS))
    return frame.astype({"index": np.int64, "slice": np.int64, "area": np.int64})


def merged_features(features: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """``features`` with the rows of the ``(slice, index)`` pairs of ``rows`` replaced by ``rows``, sorted by
    slice then index (other columns of ``features`` are kept; new rows have NaN there)."""
    if len(features) and {"index", "slice"} <= set(features.columns):
        keys = pd.MultiIndex.from_frame(rows[["slice", "index"]])
        old = pd.MultiIndex.from_frame(features[["slice", "index"]].astype(np.int64))
        kept = features[~old.isin(keys)]
    else:
        kept = features.iloc[:0]
    parts = [part for part in (kept, rows) if len(part)]
    if not parts:
        return rows
    return pd.concat(parts, ignore_index=True).sort_values(["slice", "index"], ignore_index=True)


def _edit_token(layer: Labels) -> int:
    edit = last_edit(layer)
    return 0 if edit is None else id(edit)  # the step is kept by the history while it is the last


def mark_features_current(layer: Labels) -> None:
    """Record that ``layer.features`` describe its data after its last undo-history step."""
    layer.metadata[FEATURES_EDIT] = _edit_token(layer)


def features_current(layer: Labels) -> bool:
    """Whether ``layer.features`` were marked current (:func:`mark_features_current`) at its last edit."""
    return layer.metadata.get(FEATURES_EDIT) == _edit_token(layer)


def snapshot(layer: Labels) -> tuple[pd.DataFrame, Any]:
    """The layer's features and their mark, to put back with :func:`restore` (undo)."""
    return layer.features.copy(), layer.metadata.get(FEATURES_EDIT)


def restore(layer: Labels, saved: tuple[pd.DataFrame, Any]) -> None:
    """Put back a :func:`snapshot` (the mark only if it was current then, i.e. it still names an edit)."""
    features, mark = saved
    layer.features = features
    layer.metadata[FEATURES_EDIT] = mark
