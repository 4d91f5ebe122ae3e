"""The interactive widget's "3D / time propagation" group: stop rules, micro-sam's prompt options."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QPushButton

#: Projection choices of :func:`sum_core.propagate`, with the words shown for each.
PROJECTION_TIPS = {
    "points_and_mask_and_box": "the previous slice's mask logits, its box and its deepest point (default)",
    "mask": "the previous slice's mask logits and its box (micro-sam's 'mask')",
    "points_and_mask": "the previous slice's mask logits and its deepest point",
    "box": "the previous slice's box only",
    "points": "the previous slice's deepest point only",
}


class PropagationGroup(QGroupBox):
    """Controls of :func:`sum_core.propagate` and the button that starts it (Shift+S)."""

    def __init__(self) -> None:
        super().__init__("3D / time propagation")
        self.button = QPushButton("Propagate through the stack [Shift+S]")
        self.button.setToolTip("Follow the current object from this slice through the stack, both ways.")
        self.iou_spin = QDoubleSpinBox()
        self.score_spin = QDoubleSpinBox()
        for spin, tip in (
            (self.iou_spin, "Stop when a slice's mask overlaps the previous slice's by less than this IoU."),
            (self.score_spin, "Stop when the predicted IoU of a slice's mask is below this."),
        ):
            spin.setRange(0.0, 1.0)
            spin.setSingleStep(0.05)
            spin.setValue(0.5)
            spin.setToolTip(tip)
        self.projection_combo = QComboBox()
        for name, tip in PROJECTION_TIPS.items():
            self.projection_combo.addItem(name)
            self.projection_combo.setItemData(self.projection_combo.count() - 1, tip)
        self.projection_combo.setToolTip(
            "How each slice prompts the next: " + "; ".join(f"{k}: {v}" for k, v in PROJECTION_TIPS.items()) + "."
        )
        self.box_extension_spin = QDoubleSpinBox()
        self.box_extension_spin.setRange(0.0, 1.0)
        self.box_extension_spin.setSingleStep(0.05)
        self.box_extension_spin.setToolTip(
            "Enlarge the box passed to the next slice on each side by this fraction of its size "
            "(micro-sam's box extension; 0 keeps the mask's box)."
        )
        layout = QFormLayout(self)
        layout.addRow("stop below IoU with previous slice", self.iou_spin)
        layout.addRow("stop below predicted IoU", self.score_spin)
        layout.addRow("prompt the next slice with", self.projection_combo)
        layout.addRow("box extension", self.box_extension_spin)
        layout.addRow(self.button)

    def options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`sum_core.propagate` chosen here."""
        return {
            "iou_threshold": self.iou_spin.value(),
            "score_threshold": self.score_spin.value(),
            "projection": self.projection_combo.currentText(),
            "box_extension": self.box_extension_spin.value(),
        }
