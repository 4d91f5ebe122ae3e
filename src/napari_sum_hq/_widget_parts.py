"""Form pieces shared by the widgets: model choice (all three) and AMG options (automatic, batch)."""

from __future__ import annotations

import dataclasses
from typing import Any

from napari.utils.notifications import show_error
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox, QSpinBox, QWidget
from sum_core.errors import SumError

from ._session import DEVICES, ModelChoice

LOCAL_FILE_ITEM = "local file..."


class ModelPicker(QWidget):
    """Registry model or checkpoint file, and the device to run on.

    Signals
    -------
    changed
        Emitted when the chosen model or device changes.
    """

    changed = Signal()

    def __init__(self) -> None:
        super().__init__()
        from sum_core.zoo import DEFAULT_MODEL, list_models

        try:
            names = list_models()
        except SumError as exc:
            show_error(str(exc))
            names = []
        self.model_combo = QComboBox()
        self.model_combo.addItems([DEFAULT_MODEL, *(n for n in names if n != DEFAULT_MODEL)])
        self.model_combo.addItem(LOCAL_FILE_ITEM)
        self._index = 0
        self.model_combo.activated.connect(self._on_activated)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.device_combo.currentIndexChanged.connect(self.changed)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("model", self.model_combo)
        form.addRow("device", self.device_combo)

    def choice(self) -> ModelChoice:
        """The chosen model source and device."""
        return ModelChoice(self.model_combo.currentText(), self.device_combo.currentText())

    def set_source(self, source: str) -> None:
        """Choose a registry name or a checkpoint path."""
        index = self.model_combo.findText(source)
        if index < 0:
            index = self.model_combo.count() - 1
            self.model_combo.insertItem(index, source)
        self.model_combo.setCurrentIndex(index)
        self._index = index
        self.changed.emit()

    def _on_activated(self, index: int) -> None:
        if self.model_combo.itemText(index) != LOCAL_FILE_ITEM:
            if index != self._index:
                self._index = index
                self.changed.emit()
            return
        path, _ = QFileDialog.getOpenFileName(
            self, "Model checkpoint", "", "Checkpoints (*.pth *.pt *.ckpt *.bin);;All files (*)"
        )
        if path:
            self.set_source(path)
        else:
            self.model_combo.setCurrentIndex(self._index)


class AmgOptions(QGroupBox):
    """The main automatic-mask-generation options (see :func:`sum_core.automatic.auto_segment`)."""

    def __init__(self, title: str = "Automatic segmentation options") -> None:
        from sum_core.auto_options import AutoOptions  # no torch import

        super().__init__(title)
        defaults, fields = AutoOptions(), {f.name: f for f in dataclasses.fields(AutoOptions)}

        def tip(name: str) -> str:
            return fields[name].metadata["help"].capitalize() + "."

        self.points_spin = _int_spin(1, 256, defaults.points_per_side, tip("points_per_side"))
        self.iou_spin = _float_spin(defaults.pred_iou_thresh, tip("pred_iou_thresh"))
        self.stability_spin = _float_spin(defaults.stability_thresh, tip("stability_thresh"))
        self.nms_spin = _float_spin(defaults.box_nms_thresh, tip("box_nms_thresh"))
        self.min_area_spin = _int_spin(0, 10**6, defaults.min_area, tip("min_area"))
        self.tile_spin = _int_spin(0, 10**5, 0, "Inner tile side in pixels (0: default tiling).")
        self.tile_spin.setSpecialValueText("default")
        self.halo_spin = _int_spin(0, 10**4, 0, "Context around each tile (0: model input / 16); with a tile only.")
        self.halo_spin.setSpecialValueText("default")
        form = QFormLayout(self)
        form.addRow("points per side", self.points_spin)
        form.addRow("pred IoU thresh", self.iou_spin)
        form.addRow("stability thresh", self.stability_spin)
        form.addRow("box NMS thresh", self.nms_spin)
        form.addRow("min area", self.min_area_spin)
        form.addRow("tile", self.tile_spin)
        form.addRow("halo", self.halo_spin)

    def options(self) -> dict[str, Any]:
        """Keyword arguments of ``auto_segment`` / ``segment_zarr`` (tiling included)."""
        tile = self.tile_spin.value() or None
        return {
            "points_per_side": self.points_spin.value(),
            "pred_iou_thresh": self.iou_spin.value(),
            "stability_thresh": self.stability_spin.value(),
            "box_nms_thresh": self.nms_spin.value(),
            "min_area": self.min_area_spin.value(),
            "tile_shape": tile,
            "halo": (self.halo_spin.value() or None) if tile else None,
        }


def _int_spin(low: int, high: int, value: int, tip: str) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    spin.setToolTip(tip)
    return spin


def _float_spin(value: float, tip: str) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(0.0, 1.0)
    spin.setSingleStep(0.01)
    spin.setDecimals(3)
    spin.setValue(value)
    spin.setToolTip(tip)
    return spin
