"""The interactive widget's commits, their undo, and the annotation file they are saved to.

A commit writes the current objects into the committed objects as the *commit mode* allows
(:func:`napari_sum_hq._commit.plan_commit`), as one step of napari's undo history, and adds the
committed objects' scores to that layer's ``features`` (:mod:`napari_sum_hq._interactive_scores`; objects
it took pixels from are scored again; an undo restores the rows it changed as they were before it); every
commit and undo saves a snapshot to the annotation file in the saver thread (:class:`napari_sum_hq._annotation_saver.AnnotationSaver`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from napari.utils.notifications import show_info
from sum_core.errors import SumError
from sum_core.tiling import Region

from ._annotation_file import CommitPrompts, ImageIdentity, load_annotations, load_objects
from ._commit import SlicePixels, plan_commit
from ._interactive_scores import (
    FeaturesUndo,
    features_current,
    mark_features_current,
    object_rows,
    plane_number,
    replace_rows,
    restore,
)
from ._interactive_segment import RememberedLogits
from ._interactive_history import last_edit
from ._layers import BOXES_NAME, COMMITTED_NAME, CURRENT_NAME, POINTS_NAME, UNCERTAINTY_NAME
from ._session import SliceKey

#: Committed objects whose low-resolution logits are remembered for refinement.
REMEMBERED_OBJECTS = 32


class CommitPart:
    """Part of :class:`~napari_sum_hq._interactive_widget.InteractiveSegmentationWidget`: commit,
    undo, save and load."""

    def commit(self) -> None:
        """Add the current objects to the committed objects as one step of napari's undo history,
        as the *commit mode* allows (:func:`napari_sum_hq._commit.plan_commit`), and clear the prompts.

        When the mode leaves nothing to write (every object matches a committed one, or lies on
        committed pixels), nothing changes and the current objects stay."""
        state = self.state
        current = self.layers.existing(CURRENT_NAME) if self.layers else None
        pieces = [] if current is None else self._current_pixels(current)
        if not pieces:
            self._status("Nothing to commit: segment an object first (S).", error=True)
            return
        committed = self.layers.committed()
        refine_id, mode = self.refine_spin.value(), self.commit_mode_combo.currentText()
        plan = plan_commit(pieces, committed.data, mode, self.match_spin.value(), refine_id)
        kept = sorted({int(i) for piece in plan.pixels for i in np.unique(piece.ids)})
        base = 0 if refine_id else state.max_label.value()
        new_ids = {index: refine_id or base + n for n, index in enumerate(kept, start=1)}
        notes = plan.notes(mode)
        if not kept:
            self._status(f"Nothing committed{notes}. The current object(s) stay.")
            return
        lut = np.zeros(max(kept) + 1, dtype=np.int64)
        lut[kept] = [new_ids[i] for i in kept]
        where: list[tuple[np.ndarray, ...]] = []
        values: list[np.ndarray] = []
        for piece in plan.pixels:
            where.append((*(np.full(piece.rows.size, i) for i in piece.slice_key), piece.rows, piece.cols))
            values.append(lut[piece.ids])
        if refine_id:  # the refined object replaces the old one on the slices it covers
            for piece in pieces:
                old = np.asarray(committed.data[piece.slice_key]) == refine_id
                for written in plan.pixels:
                    if written.slice_key == piece.slice_key:
                        old[written.rows, written.cols] = False
                old_rows, old_cols = np.nonzero(old)
                where.append((*(np.full(old_rows.size, i) for i in piece.slice_key), old_rows, old_cols))
                values.append(np.zeros(old_rows.size, dtype=np.int64))
        index = tuple(np.concatenate(axis) for axis in zip(*where, strict=True))
        before, overwritten = last_edit(committed), np.asarray(committed.data[index])
        current = features_current(committed) or state.max_label.value() == 0  # other rows describe the layer
        committed.data_setitem(index, np.concatenate(values).astype(committed.data.dtype))
        edit = last_edit(committed)
        if edit is not before:
            state.commit_atoms.extend(edit)
            undo = self._score_commit(committed, new_ids, plan.pixels, _ids_at(index, overwritten), current)
            state.feature_snapshots.append((edit, undo))
        self._remember_logits(new_ids, plan.pixels)
        points, boxes = self.layers.existing(POINTS_NAME), self.layers.existing(BOXES_NAME)
        state.commit_prompts.add(
            sorted(set(new_ids.values())),
            np.empty((0, self.layers.ndim)) if points is None else points.data,
            np.empty(0) if points is None else points.features["label"].to_numpy(),
            [] if boxes is None else boxes.data,
        )
        self._clear_prompts()
        self._status(f"Committed object id(s) {sorted(set(new_ids.values()))}{notes}.")
        self._autosave()

    def _score_commit(
        self, committed, new_ids: dict[int, int], written: list[SlicePixels],
        overwritten: set[tuple[SliceKey, int]], current: bool,
    ) -> FeaturesUndo:  # fmt: skip
        """Add the rows of the objects just committed to the committed layer's features
        (:mod:`napari_sum_hq._interactive_scores`), from the current objects' scores; score again the
        ``overwritten`` objects (``(slice key, id)`` that lost pixels to the commit) and drop the rows of those
        left with none; mark the features current when they were before the commit (``current``). Returns
        how to undo that."""
        found: dict[tuple, tuple[int, np.ndarray, np.ndarray]] = {}  # (slice key, new id) -> (index, rows, cols)
        for piece in written:
            for index in np.unique(piece.ids).tolist():
                chosen = piece.ids == index
                key = (piece.slice_key, new_ids[index])
                if key in found:  # several current objects refine one id: scored as the first
                    index, rows, cols = found[key]
                    found[key] = (index, np.concatenate([rows, piece.rows[chosen]]),
                                  np.concatenate([cols, piece.cols[chosen]]))  # fmt: skip
                else:
                    found[key] = (index, piece.rows[chosen], piece.cols[chosen])
        objects = []
        for (slice_key, label_id), (index, rows, cols) in found.items():
            box = Region(int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)
            mask = np.zeros(box.shape, dtype=bool)
            mask[rows - box.row0, cols - box.col0] = True
            objects.append((slice_key, label_id, index, box, mask))
        uncertainty = self.layers.existing(UNCERTAINTY_NAME)
        u = np.zeros(committed.data.shape, np.float32) if uncertainty is None else uncertainty.data
        rows = object_rows(u, objects, self.state.current_scores)
        shrunk, gone = _left_objects(committed, overwritten - set(found))
        if shrunk:
            rows = pd.concat([rows, _with_prediction(object_rows(u, shrunk, {}), committed.features)],
                             ignore_index=True)  # fmt: skip
        stack = committed.data.shape[:-2]
        dropped = [(plane_number(key, stack), label_id) for key, label_id in gone]
        return replace_rows(committed, rows, dropped, current)

    def _current_pixels(self, current) -> list[SlicePixels]:
        """The pixels of the current objects, per slice window written or painted."""
        pieces = []
        for key, region in self.state.current_windows.items():
            ids = np.asarray(current.data[key + region.slices])
            rows, cols = np.nonzero(ids)
            if rows.size:
                values = ids[rows, cols].astype(np.int64)
                pieces.append(SlicePixels(key, rows + region.row0, cols + region.col0, values))
        return pieces

    def _remember_logits(self, new_ids: dict[int, int], written: list[SlicePixels]) -> None:
        """Keep SAM's low-resolution logits of a single committed object (for refinement)."""
        result = self._last_result
        if result is None or result.low_res_logits is None or len(result.objects) != 1 or len(written) != 1:
            return
        index = result.objects[0].index
        if index not in new_ids:
            return
        label_id = new_ids[index]
        (piece,) = written
        rows, cols = piece.rows, piece.cols
        region = Region(int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)
        mask = np.zeros(region.shape, dtype=bool)
        mask[rows - region.row0, cols - region.col0] = True
        logits = result.low_res_logits[index - 1]
        remembered = self.state.remembered
        remembered[label_id] = RememberedLogits(piece.slice_key, region, mask, logits)
        remembered.move_to_end(label_id)
        while len(remembered) > REMEMBERED_OBJECTS:
            remembered.popitem(last=False)

    def undo_commit(self) -> None:
        """Undo the last commit through napari's undo history of the committed objects."""
        committed = self.layers.existing(COMMITTED_NAME) if self.layers else None
        edit = None if committed is None else last_edit(committed)
        if edit is None:
            show_info("No commit to undo.")
            return
        if not all(any(atom is mine for mine in self.state.commit_atoms) for atom in edit):
            show_info(
                "The last change of 'committed objects' is not a commit (painting?): "
                "select that layer and press Ctrl+Z to undo it."
            )
            return
        committed.undo()
        saved = [saved for step, saved in self.state.feature_snapshots if step is edit]
        if saved:
            restore(committed, saved[-1])
        self.state.commit_prompts.drop_last()
        self._status("Last commit undone.")
        self._autosave()

    def _on_annotation_path_edited(self) -> None:
        if self.state is not None:
            self.state.annotation_path = self.annotation_edit.text().strip()

    def _autosave(self) -> None:
        """Save a snapshot of the committed objects and their prompts to the annotation file (when
        one is set) in the saver thread; saves are written in the order of the commits."""
        state = self.state
        if not state.annotation_path:
            return
        prompts = state.commit_prompts
        saved = CommitPrompts(prompts.ndim, prompts.points, prompts.boxes, [list(c) for c in prompts.commits])
        committed = self.layers.committed()
        labels = np.array(committed.data)
        objects = {str(name): column.to_numpy(copy=True) for name, column in committed.features.items()}
        self._saver.submit(state.annotation_path, labels, saved, self._image_identity(), objects,
                           features_current(committed))  # fmt: skip

    def _on_saved(self, message: str, error: bool) -> None:
        self._status(message if error else f"{self.status_label.text()} {message}", error=error)

    def flush_saves(self) -> None:
        """Wait until every annotation-file save started so far is written."""
        self._saver.flush()

    def _image_identity(self) -> ImageIdentity:
        return ImageIdentity.of_layer(self.image_layer, self.layers.shape)

    def load_annotations(self) -> None:
        """Replace the committed objects (one undo step) and their prompts by the annotation file's."""
        self._on_annotation_path_edited()
        path = None if self.state is None else self.state.annotation_path
        if not path:
            self._status("Load: type the annotation file's path first.", error=True)
            return
        self._saver.flush()  # a save still being written is complete before the file is read
        try:
            labels, prompts = load_annotations(path, self.layers.shape, self._image_identity())
            objects = load_objects(path)
        except SumError as exc:
            self._status(f"Load failed: {exc}", error=True)
            return
        committed = self.layers.committed()
        where = np.nonzero(np.asarray(committed.data) != labels)
        if where[0].size:
            committed.data_setitem(where, labels[where])
        if objects is not None:  # the scores saved with the objects (older files have none)
            table, current = objects
            committed.features = pd.DataFrame(table)
            if current:
                mark_features_current(committed)
        self.state.commit_prompts = prompts
        self._status(f"Loaded {len(np.unique(labels)) - 1 if labels.any() else 0} object(s) from {path}.")


def _ids_at(index: tuple[np.ndarray, ...], ids: np.ndarray) -> set[tuple[SliceKey, int]]:
    """The ``(slice key, id)`` of the objects (id > 0) that had pixels at ``index`` (slice axes, rows, cols)."""
    if not ids.size:
        return set()
    found = np.unique(np.stack([*index[:-2], ids.astype(np.int64)], axis=1), axis=0)
    return {(tuple(int(i) for i in row[:-1]), int(row[-1])) for row in found if row[-1]}


def _left_objects(committed, objects: set[tuple[SliceKey, int]]) -> tuple[list, list[tuple[SliceKey, int]]]:
    """The ``objects`` (``(slice key, id)``) as the committed layer has them now: ``object_rows`` inputs of
    those with pixels left (bounding box and mask found in their plane), and those with none."""
    left, gone = [], []
    planes: dict[SliceKey, np.ndarray] = {}
    for key, label_id in sorted(objects):
        plane = planes.setdefault(key, np.asarray(committed.data[key]))
        rows, cols = np.nonzero(plane == label_id)
        if not rows.size:
            gone.append((key, label_id))
            continue
        box = Region(int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)
        left.append((key, label_id, -1, box, plane[box.slices] == label_id))
    return left, gone


def _with_prediction(rows: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """``rows`` (objects scored again) with the predicted IoU and stability of their rows in ``features``: the
    prediction they came from (NaN when they have no row)."""
    if not len(features) or "index" not in features:
        return rows
    old = features.assign(slice=features["slice"] if "slice" in features else 0).set_index(["slice", "index"])
    at = pd.MultiIndex.from_frame(rows[["slice", "index"]])
    for column in ("predicted_iou", "stability"):
        if column in old:
            rows[column] = old[column].reindex(at).to_numpy(dtype=float)
    return rows
