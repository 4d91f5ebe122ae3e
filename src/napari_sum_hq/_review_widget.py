"""Review queue: the objects of a Labels layer, least certain first; jump to each, accept, delete or re-segment.

**Rows.** "Load objects" takes the chosen Labels layer (and its uncertainty Image layer when there is one):
the objects are found in a worker (:func:`napari_sum_hq._review_table.scan_rows`: block by block, so a lazily
opened large result is never read whole; the features' values and columns are kept) and the rows become the
layer's ``features``; a lazily opened layer whose ``features`` already hold one row per object with its
bounding box (the reader's, or an earlier load's) is not read at all, nor is the interactive widget's
``<image> committed objects`` while its features are the ones its commits wrote (their scores: predicted IoU,
stability, mean and boundary uncertainty). The reviewed state is
their ``reviewed`` column, so it stays with the layer.

**Queue.** Sorted by any numeric column (highest or lowest first), optionally only the objects above a
threshold; at most :data:`SHOWN_ROWS` rows are listed. Choosing a row (click, arrow keys) centres the canvas
on the object and zooms to it (:data:`FILL` of the canvas), moving to its slice in a stack.

**Actions** (buttons, or keys while the table has the focus): **A** accept (mark reviewed, go to the next
object not reviewed), **Delete** / **Backspace** delete (its pixels set to 0 through ``Labels.data_setitem``:
Ctrl+Z on the layer restores it, and the row comes back), **R** re-segment: the object's mask becomes the prompt
of the interactive widget (:func:`sum_core.prompts.prompts_from_mask`, the rule propagation uses too): its
bounding box in ``<image> box prompts`` (selected) and its deepest point as a positive point in ``<image> point
prompts``; press S there. A lazily
opened (dask / zarr) layer is read-only here: deleting says so and changes nothing.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from napari.layers import Image, Labels
from qtpy.QtCore import QEvent, Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from sum_core.errors import SumError

from ._job_widget import JobWidget
from ._interactive_scores import features_current
from ._review_resegment import add_mask_prompt, mask_prompt
from ._review_table import (
    BBOX,
    REVIEWED,
    object_index,
    object_present,
    queue,
    rows_from_features,
    scan_rows,
    score_columns,
)
from ._widget_parts import sole_image

__all__ = ["FILL", "SHOWN_ROWS", "ReviewQueueWidget"]

#: The most rows the table lists (the first of the queue); the counts cover the whole queue.
SHOWN_ROWS = 200
#: Fraction of the canvas an object (its bounding box, at least :data:`MIN_VIEW` px) fills after a jump.
FILL = 0.5
#: Smallest side, in pixels, of the view around an object (a one-pixel object is not zoomed in endlessly).
MIN_VIEW = 32
#: Name endings of a result's Labels layer -> those of its uncertainty Image layer (the reader's and batch
#: widget's "<stem> labels" / "<stem> uncertainty", the automatic widget's "<image> auto labels" / "<image> auto
#: uncertainty"; the interactive widget's "<image> uncertainty" is the current object's, not the committed ones').
_UNCERTAINTY_NAMES = ((" labels", " uncertainty"),)
#: Name endings of a result's Labels layer after its image's name.
_IMAGE_SUFFIXES = (" committed objects", " current object", " auto labels", " labels")
_NO_UNCERTAINTY = "(none)"


def _level0(layer: Any) -> Any:
    return layer.data[0] if layer.multiscale else layer.data


def _camera(viewer: Any) -> Any:
    scene = getattr(viewer, "scene", None)  # napari 0.9 moved the camera there
    return viewer.camera if scene is None else scene.camera


class ReviewQueueWidget(JobWidget):
    """Dock widget of the review queue (see the module docstring).

    Parameters
    ----------
    viewer : napari.Viewer
    """

    def __init__(self, viewer: Any) -> None:
        super().__init__("Load objects")
        self.viewer = viewer
        self.run_button.setToolTip("List the objects of the chosen Labels layer (found in the background when "
                                   "its features do not say where they are).")
        self.labels_combo = QComboBox()
        self.labels_combo.setToolTip("The Labels layer to review.")
        self.labels_combo.currentTextChanged.connect(self._pick_uncertainty)
        self.uncertainty_combo = QComboBox()
        self.uncertainty_combo.setToolTip("Its per-pixel uncertainty (an Image layer of the same shape): the "
                                          "objects' uncertainties are computed from it when unknown.")
        self.column_combo = QComboBox()
        self.column_combo.setToolTip("The column the queue is sorted by.")
        self.order_combo = QComboBox()
        self.order_combo.addItems(["highest first", "lowest first"])
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(-1e12, 1e12)
        self.threshold.setDecimals(4)
        self.threshold.setSingleStep(0.05)
        self.threshold.setSpecialValueText("none")
        self.threshold.setValue(self.threshold.minimum())
        self.threshold.setToolTip("List only the objects whose value is above this ('none': all of them).")
        for signal in (self.column_combo.currentTextChanged, self.order_combo.currentIndexChanged,
                       self.threshold.valueChanged):
            signal.connect(self.refresh_table)
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["id", "slice", "value", "area", "reviewed"])
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.currentCellChanged.connect(self._on_current_cell)
        self.accept_button = QPushButton("Accept (A)")
        self.accept_button.setToolTip("Mark the object reviewed and go to the next one.")
        self.delete_button = QPushButton("Delete (Del)")
        self.delete_button.setToolTip("Set the object's pixels to 0 (Ctrl+Z on the layer restores it).")
        self.resegment_button = QPushButton("Re-segment (R)")
        self.resegment_button.setToolTip("Prompt the interactive widget with the object's mask: its bounding box "
                                         "('<image> box prompts') and its deepest point (a positive point in "
                                         "'<image> point prompts'); then press S there.")
        self.accept_button.clicked.connect(self.accept_current)
        self.delete_button.clicked.connect(self.delete_current)
        self.resegment_button.clicked.connect(self.resegment_current)
        self._keys = {Qt.Key_A: self.accept_current, Qt.Key_Delete: self.delete_current,
                      Qt.Key_Backspace: self.delete_current, Qt.Key_R: self.resegment_current}
        self.table.installEventFilter(self)
        self.counts_label = QLabel("No objects loaded.")
        self.counts_label.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Labels", self.labels_combo)
        form.addRow("Uncertainty", self.uncertainty_combo)
        form.addRow("Sort by", self.column_combo)
        form.addRow("Order", self.order_combo)
        form.addRow("Only above", self.threshold)
        actions = QGridLayout()
        actions.addWidget(self.accept_button, 0, 0)
        actions.addWidget(self.delete_button, 0, 1)
        actions.addWidget(self.resegment_button, 1, 0, 1, 2)
        layout = QVBoxLayout(self.body)
        layout.addLayout(form)
        layout.addLayout(self.job_row)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.table, 1)
        layout.addLayout(actions)
        layout.addWidget(self.counts_label)
        layout.addLayout(self.status_row)

        self.layer: Labels | None = None
        self._frame: pd.DataFrame | None = None  # the layer's features the row positions refer to
        self.shown = np.zeros(0, dtype=np.int64)
        self.deleted: set[int] = set()
        self.run_button.clicked.connect(self.load)
        viewer.layers.events.inserted.connect(self._refresh_layers)
        viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    def eventFilter(self, watched: Any, event: Any) -> bool:  # noqa: N802 - Qt's name
        """The table's keys: A accept, Delete / Backspace delete, R re-segment (no modifier)."""
        if watched is self.table and event.type() == QEvent.KeyPress and event.modifiers() == Qt.NoModifier:
            slot = self._keys.get(event.key())
            if slot is not None:
                slot()
                return True
        return super().eventFilter(watched, event)

    # ------------------------------------------------------------------ layers

    def _refresh_layers(self, _event: Any = None) -> None:
        chosen = self.labels_combo.currentText()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Labels)]
        self.labels_combo.blockSignals(True)
        self.labels_combo.clear()
        self.labels_combo.addItems(names)
        self.labels_combo.blockSignals(False)
        if chosen in names:
            self.labels_combo.setCurrentText(chosen)
        self._pick_uncertainty()
        if self.layer is not None and self.layer not in self.viewer.layers:
            self._forget_layer()

    def _pick_uncertainty(self, _name: str = "") -> None:
        """List the Image layers of the labels' shape; pre-select the one named after the labels."""
        labels = self._chosen_labels()
        self.uncertainty_combo.clear()
        self.uncertainty_combo.addItem(_NO_UNCERTAINTY)
        if labels is None:
            return
        shape = tuple(_level0(labels).shape)
        names = [layer.name for layer in self.viewer.layers
                 if isinstance(layer, Image) and not layer.rgb and tuple(_level0(layer).shape) == shape]
        self.uncertainty_combo.addItems(names)
        for end, uncertainty_end in _UNCERTAINTY_NAMES:
            if labels.name.endswith(end) and (guess := labels.name[: -len(end)] + uncertainty_end) in names:
                self.uncertainty_combo.setCurrentText(guess)
                return

    def _chosen_labels(self) -> Labels | None:
        name = self.labels_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    @property
    def rows(self) -> pd.DataFrame | None:
        """The listed layer's ``features`` (read and written through the layer: another widget may replace
        them, :meth:`_on_features`), or None."""
        return None if self.layer is None else self.layer.features

    def _disconnect(self) -> None:
        if self.layer is not None:
            self.layer.events.set_data.disconnect(self._on_layer_data)
            self.layer.events.features.disconnect(self._on_features)

    def _forget_layer(self) -> None:
        self._disconnect()
        self.layer, self._frame, self.deleted = None, None, set()
        self.refresh_table()

    # ------------------------------------------------------------------ loading

    def load(self) -> None:
        """List the objects of the chosen Labels layer.

        A worker finds them (keeping the features' values and columns) unless the features already say where its
        objects are and the layer is opened lazily, or its features are kept current by the interactive widget's
        commits (:func:`napari_sum_hq._interactive_scores.features_current`); other in-memory labels are always
        scanned (cheap), so objects painted or edited since the last load are listed as they are now.
        """
        layer = self._chosen_labels()
        if layer is None:
            self.set_status("Add or choose a Labels layer first.", error=True)
            return
        data = _level0(layer)
        try:
            current = not isinstance(data, np.ndarray) or features_current(layer)
            rows = rows_from_features(layer.features, data.ndim) if current else None
        except SumError as err:
            self.fail(err)
            return
        if rows is not None:
            self._set_rows(layer, rows)
            self.set_status(f"{len(rows)} object(s) from the features of '{layer.name}'.")
            return
        name = self.uncertainty_combo.currentText()
        uncertainty = _level0(self.viewer.layers[name]) if name in self.viewer.layers else None
        features = layer.features.copy() if len(layer.features) else None
        self.start_job(scan_rows, (data, uncertainty, features), {}, partial(self._on_scanned, layer))

    def _on_scanned(self, layer: Labels, rows: pd.DataFrame) -> None:
        if layer not in self.viewer.layers:
            self.set_status(f"'{layer.name}' was removed before its objects were found.", error=True)
            return
        self._set_rows(layer, rows)
        self.set_status(f"Found {len(rows)} object(s) in '{layer.name}'.")

    def _set_rows(self, layer: Labels, rows: pd.DataFrame) -> None:
        self._disconnect()
        self.layer, self.deleted = None, set()
        layer.features = rows
        self.layer, self._frame = layer, layer.features
        layer.events.set_data.connect(self._on_layer_data)
        layer.events.features.connect(self._on_features)
        columns, chosen = score_columns(self.rows), self.column_combo.currentText()
        self.column_combo.blockSignals(True)
        self.column_combo.clear()
        self.column_combo.addItems(columns)
        if chosen in columns:
            self.column_combo.setCurrentText(chosen)
        self.column_combo.blockSignals(False)
        self.refresh_table()

    # ------------------------------------------------------------------ table

    def refresh_table(self, *_args: Any) -> None:
        """List the queue (sort column, order, threshold) and update the counts."""
        self.table.blockSignals(True)
        self.table.setRowCount(0)
        column = self.column_combo.currentText()
        if self.rows is None or not column:
            self.shown = np.zeros(0, dtype=np.int64)
            self.table.blockSignals(False)
            self.counts_label.setText("No objects loaded.")
            return
        threshold = None if self.threshold.value() == self.threshold.minimum() else self.threshold.value()
        self.shown = queue(self.rows, column, threshold=threshold, descending=self.order_combo.currentIndex() == 0,
                           hidden=self.deleted)
        self.table.setHorizontalHeaderItem(2, QTableWidgetItem(column))
        self.table.setColumnHidden(1, _level0(self.layer).ndim == 2)
        listed = self.shown[:SHOWN_ROWS]
        self.table.setRowCount(len(listed))
        for i, position in enumerate(listed):
            self._fill_row(i, int(position), column)
        self.table.blockSignals(False)
        self._show_counts()

    def _fill_row(self, i: int, position: int, column: str) -> None:
        row = self.rows.iloc[position]
        value = float(row[column])
        cells = (str(int(row["index"])), str(int(row["slice"])), "" if np.isnan(value) else f"{value:.4g}",
                 str(int(row["area"])) if "area" in row else "", "✓" if row[REVIEWED] else "")
        for j, text in enumerate(cells):
            item = QTableWidgetItem(text)
            item.setData(Qt.UserRole, position)
            self.table.setItem(i, j, item)

    def _show_counts(self) -> None:
        reviewed = int(self.rows[REVIEWED].to_numpy()[self.shown].sum()) if len(self.shown) else 0
        listed = f" (first {SHOWN_ROWS} listed)" if len(self.shown) > SHOWN_ROWS else ""
        deleted = f", {len(self.deleted)} deleted" if self.deleted else ""
        self.counts_label.setText(
            f"Reviewed {reviewed} of {len(self.shown)} in the queue, {len(self.shown) - reviewed} remaining"
            f"{listed}; {len(self.rows)} object(s) in all{deleted}."
        )

    def current_position(self) -> int | None:
        """The row position (in :attr:`rows`) of the chosen table row, or None."""
        item = self.table.item(self.table.currentRow(), 0) if self.table.currentRow() >= 0 else None
        return None if item is None else int(item.data(Qt.UserRole))

    def _select(self, position: int | None) -> None:
        """Choose the table row of ``position`` (clears the choice for None or an unlisted row)."""
        listed = self.shown[:SHOWN_ROWS]
        hits = np.flatnonzero(listed == position) if position is not None else []
        if len(hits):
            self.table.setCurrentCell(int(hits[0]), 0)
        else:
            self.table.setCurrentCell(-1, -1)

    def _on_current_cell(self, row: int, *_args: Any) -> None:
        position = self.current_position()
        if row >= 0 and position is not None:
            self.jump(position)

    # ------------------------------------------------------------------ actions

    def jump(self, position: int) -> None:
        """Centre the canvas on the object of row ``position`` and zoom to it; move to its slice in a stack."""
        row, layer = self.rows.iloc[position], self.layer
        r0, c0, r1, c1 = (float(row[name]) for name in BBOX)
        centre = [(r0 + r1 - 1) / 2, (c0 + c1 - 1) / 2]
        data_ndim = _level0(layer).ndim
        if data_ndim == 3:
            centre.insert(0, float(row["slice"]))
        world = np.asarray(layer.data_to_world(centre), dtype=float)
        lead = self.viewer.dims.ndim - data_ndim
        if data_ndim == 3:
            self.viewer.dims.set_point(lead, world[0])
        scale = np.abs(np.asarray(layer.scale[-2:], dtype=float))
        extent = np.maximum([r1 - r0, c1 - c0], MIN_VIEW) * scale
        camera = _camera(self.viewer)
        camera.center = tuple(world[-2:])
        camera.zoom = float(FILL * np.min(np.asarray(self.viewer.canvas.size, dtype=float) / extent))
        layer.selected_label = int(row["index"])

    def accept_current(self) -> None:
        """Mark the chosen object reviewed (in the layer's features) and go to the next one not reviewed."""
        position = self.current_position()
        if position is None:
            return
        self.rows.loc[position, REVIEWED] = True
        after = self._next_after(position, unreviewed=True)
        self.refresh_table()
        self._select(after)

    def _next_after(self, position: int, unreviewed: bool = False) -> int | None:
        """The next row of the queue after ``position`` (wrapping), optionally the next not reviewed."""
        shown = [int(p) for p in self.shown]
        i = shown.index(position) if position in shown else -1
        ordered = shown[i + 1:] + shown[:max(i, 0)]
        reviewed = self.rows[REVIEWED].to_numpy()
        for candidate in ordered:
            if not (unreviewed and reviewed[candidate]):
                return candidate
        return None

    def delete_current(self) -> None:
        """Set the chosen object's pixels to 0 (undoable: ``Labels.data_setitem``); lazily opened data is refused."""
        position = self.current_position()
        if position is None:
            return
        layer = self.layer
        if layer.multiscale or not isinstance(layer.data, np.ndarray):
            self.set_status(
                f"'{layer.name}' is opened lazily from disk (read-only here): its objects cannot be deleted in "
                "napari. Copy it into memory (or edit the result file) to delete objects.", error=True)
            return
        after = self._next_after(position)
        layer.data_setitem(object_index(layer.data, self.rows.iloc[position]), 0)
        self.deleted.add(position)
        self.set_status(f"Deleted object {int(self.rows.iloc[position]['index'])} (Ctrl+Z on the layer undoes it).")
        self.refresh_table()
        self._select(after)

    def _on_features(self, _event: Any = None) -> None:
        """The layer's features were replaced (the interactive widget's commit or undo): list them as they are
        now, keeping their ``reviewed`` marks and the deleted objects hidden; forget the layer when they no
        longer say where its objects are (press List objects again)."""
        layer, old = self.layer, self._frame
        if layer is None or layer.features is old:
            return
        try:
            rows = rows_from_features(layer.features, _level0(layer).ndim)
        except SumError:
            rows = None
        if rows is None:
            self._forget_layer()
            self.set_status(f"The features of '{layer.name}' changed: press List objects again.")
            return
        deleted = {_key(old.iloc[p]) for p in self.deleted if p < len(old)}
        chosen = self.current_position()
        chosen_key = None if chosen is None or chosen >= len(old) else _key(old.iloc[chosen])
        self._set_rows(layer, rows)
        keys = [_key(row) for _, row in self.rows.iterrows()]
        self.deleted = {p for p, key in enumerate(keys) if key in deleted}
        self.refresh_table()
        self._select(keys.index(chosen_key) if chosen_key in keys else None)

    def _on_layer_data(self, _event: Any = None) -> None:
        """After an edit of the layer (an undo), list again the deleted objects that are back."""
        if not self.deleted or self.layer is None:
            return
        back = {p for p in self.deleted if object_present(_level0(self.layer), self.rows.iloc[p])}
        if back:
            self.deleted -= back
            chosen = self.current_position()
            self.refresh_table()
            self._select(chosen)

    def resegment_current(self) -> None:
        """Prompt the interactive widget with the chosen object's mask (:func:`sum_core.prompts.prompts_from_mask`,
        computed in a worker): its bounding box as a box prompt (selected) and its deepest point as a positive
        point prompt."""
        position = self.current_position()
        if position is None:
            return
        image = self._image()
        if image is None:
            self.set_status(
                f"Re-segment: no image for '{self.layer.name}'. Name it '<image> committed objects' (or keep a "
                "single image layer) so the prompts go to that image.", error=True)
            return
        row, layer = self.rows.iloc[position], self.layer
        self.start_job(mask_prompt, (_level0(layer), row), {}, partial(self._on_mask_prompt, layer, image, row))

    def _on_mask_prompt(self, layer: Labels, image: Image, row: pd.Series, prompt: np.ndarray | None) -> None:
        if layer not in self.viewer.layers or image not in self.viewer.layers:
            self.set_status("Re-segment: the labels or the image were removed meanwhile.", error=True)
            return
        if prompt is None:
            self.set_status(f"Object {int(row['index'])} has no pixel left (deleted?): nothing to re-segment.",
                            error=True)
            return
        points, boxes = add_mask_prompt(self.viewer, image, layer, prompt)
        self.set_status(f"Object {int(row['index'])}: its box and deepest point are prompts in '{boxes.name}' and "
                        f"'{points.name}'; press S in the interactive widget to segment it again.")

    def _image(self) -> Image | None:
        """The image the labels belong to: named like them without their ending, else the sole image."""
        name = self.layer.name
        for suffix in _IMAGE_SUFFIXES:
            if name.endswith(suffix) and (stem := name[: -len(suffix)]) in self.viewer.layers:
                if isinstance(self.viewer.layers[stem], Image):
                    return self.viewer.layers[stem]
        return sole_image(self.viewer, skip=("uncertainty",))


def _key(row: pd.Series) -> tuple[int, int]:
    """A review row's ``(slice, index)``."""
    return int(row["slice"]), int(row["index"])
