"""Dock widget for automatic ("segment everything") segmentation of an image layer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtWidgets import QComboBox, QFormLayout, QVBoxLayout
from sum_core.errors import InvalidInputError, SumError

from ._batch_jobs import FEATURE_COLUMNS, AutoResult, auto_job, moved_ids, next_free_id
from ._job_widget import JobWidget
from ._layers import spatial_shape
from ._uncertainty_style import UNCERTAINTY_STYLE
from ._widget_parts import ModelPicker, ModeOptions, TilingOptions, WaitsForModelCheck, sole_image

if TYPE_CHECKING:
    import napari
    import pandas as pd

SCOPE_SLICE = "current slice"
SCOPE_IMAGE = "whole image / stack"
#: Suffix of the result image layers (never offered as the image to segment).
UNCERTAINTY_SUFFIX = " auto uncertainty"


class AutomaticSegmentationWidget(WaitsForModelCheck, JobWidget):
    """Segment every object of an image (or of the displayed slice of a stack).

    Two modes: AIS (the model's AIS decoder and one watershed; offered and preselected when the
    model carries a decoder) and AMG (SAM's point grid, any model), each with its options.
    Writes a Labels layer ``"<image> auto labels"`` (uint32 ids, 0 background) and an Image
    layer ``"<image> auto uncertainty"`` (float32 in [0, 1], magma), aligned with the image.
    Each object's scores (AIS and AMG) become the Labels layer's ``features`` (columns
    :data:`~napari_sum_hq._batch_jobs.FEATURE_COLUMNS`, one row per object: predicted IoU and
    stability (AMG; NaN for AIS), area, mean and boundary uncertainty; shown in napari's status bar
    over an object). Running on another slice of the same stack fills that slice of the same layers
    (and replaces that slice's rows only); a slice's ids follow the largest id of the layer's other
    slices when the result is written (so they stay unique even if the layer was edited meanwhile);
    ids that would not fit uint32 are refused, the layer left as it was. The work runs in a worker thread, tile by
    tile, with progress and an ETA (AMG: also within a tile, after each decoder batch, so a
    one-tile image moves too); Cancel stops it before the next tile (AMG: between two decoder
    batches of the running tile).

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer to work in (injected by napari).
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__("Segment everything")
        self.viewer = viewer
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The image layer to segment (pre-selected when the viewer has one image).")
        self.run_button.setToolTip(
            "Segment every object of the chosen image (or slice) in the background; the results are "
            "the layers '<image> auto labels' and '<image> auto uncertainty'."
        )
        self.scope_combo = QComboBox()
        self.scope_combo.addItems([SCOPE_SLICE, SCOPE_IMAGE])
        self.scope_combo.setToolTip("For stacks: only the displayed slice, or every slice.")
        self.model = ModelPicker()
        self.auto_mode = ModeOptions()
        self.tiling = TilingOptions()
        self.run_button.clicked.connect(self.run)
        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("scope", self.scope_combo)
        layout = QVBoxLayout(self.body)
        layout.addLayout(form)
        layout.addWidget(self.model)
        layout.addWidget(self.auto_mode)
        layout.addWidget(self.tiling)
        layout.addLayout(self.job_row)
        layout.addWidget(self.progress_bar)
        layout.addLayout(self.status_row)
        layout.addStretch(1)
        self._refresh_images()
        viewer.layers.events.inserted.connect(self._refresh_images)
        viewer.layers.events.removed.connect(self._refresh_images)
        self.auto_mode.follow(self.model)
        self.model.download.downloaded.connect(lambda name: self.set_status(f"Model {name} downloaded."))

    @property
    def image_layer(self) -> Image | None:
        """The chosen image layer, if still in the viewer."""
        layer = self.image_combo.currentData()
        return layer if layer in self.viewer.layers else None

    def _refresh_images(self, *_args) -> None:
        current = self.image_combo.currentData()
        if current not in self.viewer.layers:
            current = sole_image(self.viewer, skip=(UNCERTAINTY_SUFFIX,))
        self.image_combo.clear()
        for layer in self.viewer.layers:
            if isinstance(layer, Image) and not layer.name.endswith(UNCERTAINTY_SUFFIX):
                self.image_combo.addItem(layer.name, layer)
        self.image_combo.setCurrentIndex(max(0, self.image_combo.findData(current)))

    def _slice_key(self, image: Image) -> tuple[int, ...]:
        shape = spatial_shape(image)
        lead = len(shape) - 2
        position = image.world_to_data(self.viewer.dims.point)[:lead]
        return tuple(int(np.clip(np.rint(p), 0, n - 1)) for p, n in zip(position, shape[:lead], strict=True))

    def run(self) -> None:
        """Start the automatic segmentation of the chosen image (or slice)."""
        image = self.image_layer
        if image is None:
            self.set_status("No image chosen: add an image layer and pick it above.", error=True)
            return
        missing = self.model.not_downloaded()
        if missing:
            self.set_status(missing, error=True)
            return
        if self.run_after_check():  # the mode is not known yet: started once the check has answered
            return
        shape = spatial_shape(image)
        data = image.data[0] if image.multiscale else image.data
        key = self._slice_key(image)
        whole = self.scope_combo.currentText() == SCOPE_IMAGE
        try:
            if whole and len(key) > 1:
                raise InvalidInputError(
                    f"whole image: stacks with one slice axis only; this image has {len(key)} leading axes"
                )
            options = self.auto_mode.options()
        except SumError as exc:
            self.fail(exc, "Cannot start")
            return
        pixels = data if whole or not key else data[key]  # read in the worker (dask stays lazy)
        stack_axis = 0 if whole and key else None
        where = key if (key and not whole) else ()
        lead = shape[: len(where)]
        slice_index = int(np.ravel_multi_index(where, lead)) if where else None
        self.start_job(
            auto_job, (pixels, stack_axis, self.model.choice()),
            {"mode": self.auto_mode.mode(), "options": options, **self.tiling.tiling(),
             "slice_index": slice_index or 0},
            lambda result: self._write(image, shape, where, slice_index, result),
        )  # fmt: skip

    def _write(
        self, image: Image, shape: tuple[int, ...], key: tuple[int, ...], slice_index: int | None, result: AutoResult
    ) -> None:
        names = (f"{image.name} auto labels", f"{image.name} auto uncertainty")
        current = self.viewer.layers[names[0]] if names[0] in self.viewer.layers else None
        if key and isinstance(current, Labels) and tuple(current.data.shape) == shape:
            try:  # the layer as it is now (GUI thread): its other slices' ids, edits made meanwhile included
                result = moved_ids(result, next_free_id(current.data, key))
            except SumError as exc:
                self.fail(exc, "Cannot write the result")
                return
        ndim = len(shape)
        align = {"scale": tuple(image.scale[-ndim:]), "translate": tuple(image.translate[-ndim:])}
        layers = []
        for name, kind, dtype in ((names[0], Labels, np.uint32), (names[1], Image, np.float32)):
            layer = self.viewer.layers[name] if name in self.viewer.layers else None
            if not isinstance(layer, kind) or tuple(layer.data.shape) != shape:
                if layer is not None:
                    self.viewer.layers.remove(layer)
                zeros = np.zeros(shape, dtype=dtype)
                if kind is Labels:
                    layer = self.viewer.add_labels(zeros, name=name, **align)
                else:
                    layer = self.viewer.add_image(zeros, name=name, **UNCERTAINTY_STYLE, visible=False, **align)
            layers.append(layer)
        for layer, values in zip(layers, (result.labels, result.uncertainty), strict=True):
            layer.data[key] = values
            layer.refresh()
        layers[0].features = _merged_features(layers[0].features, slice_index, result.features)
        where = f" on slice {key}" if key else ""
        self.set_status(f"Found {result.n_objects} object(s) ({result.mode.upper()}){where}.")


def _merged_features(old: pd.DataFrame, slice_index: int | None, new: pd.DataFrame) -> pd.DataFrame:
    """The features table with the rows of ``slice_index`` (all rows: None) replaced by ``new``."""
    import pandas as pd

    kept = old[old["slice"] != slice_index] if slice_index is not None and "slice" in old else old.iloc[:0]
    parts = [part for part in (kept, new) if part is not None and len(part)]
    if not parts:
        return pd.DataFrame({name: [] for name in FEATURE_COLUMNS})
    return pd.concat(parts, ignore_index=True).sort_values("index", ignore_index=True)
