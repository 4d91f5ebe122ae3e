"""The interactive widget's tile limit for planes segmented window by window (whole slides).

On such planes :meth:`sum_core.TiledPredictor.predict` follows an object from tile to tile up to
``max tiles``; an object still reaching an inner tile border then may be cut there. The widget
says so in its status line and this row offers to continue with every tile of the plane.
"""

from __future__ import annotations

from qtpy.QtWidgets import QHBoxLayout, QPushButton, QSpinBox, QWidget

#: sum_core's default tile limit per object.
DEFAULT_MAX_TILES = 16


class TileLimit(QWidget):
    """``max tiles`` spin box and the *Continue with all tiles* button (shown after a cut)."""

    def __init__(self) -> None:
        super().__init__()
        self.spin = QSpinBox()
        self.spin.setRange(1, 100_000)
        self.spin.setValue(DEFAULT_MAX_TILES)
        self.spin.setToolTip(
            "Planes too large for full-size results (whole slides): an object is followed across at most this "
            "many tiles; one still reaching a tile border then may be cut (the status line says so)."
        )
        self.continue_button = QPushButton()
        self.continue_button.setToolTip(
            "Segment again with every tile of the plane allowed (tiles encoded so far are reused)."
        )
        self.continue_button.hide()
        self.plane_tiles = 0
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.spin)
        layout.addWidget(self.continue_button)

    def show_cut(self, plane_tiles: int) -> None:
        """Offer to continue with all ``plane_tiles`` tiles (an object was cut)."""
        self.plane_tiles = plane_tiles
        self.continue_button.setText(f"Continue with all {plane_tiles} tiles")
        self.continue_button.show()

    def allow_all(self) -> None:
        """Raise the limit to every tile of the plane and hide the button."""
        self.spin.setValue(max(self.spin.value(), self.plane_tiles))
        self.continue_button.hide()
