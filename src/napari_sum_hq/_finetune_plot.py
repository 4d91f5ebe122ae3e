"""A small loss-curve plot drawn with QPainter (no plotting library needed)."""

from __future__ import annotations

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

MARGIN = 6
TEXT_HEIGHT = 16
CURVE_COLOR = QColor(80, 170, 255)


class LossPlot(QWidget):
    """Training loss against optimiser step: a polyline scaled to the widget, the first and last
    loss written above it."""

    def __init__(self) -> None:
        super().__init__()
        self.points: list[tuple[int, float]] = []
        self.setMinimumHeight(120)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.setToolTip("Training loss per step (metrics.csv of the run folder).")

    def set_points(self, points: list[tuple[int, float]]) -> None:
        """Show ``(step, loss)`` pairs (redrawn only when they changed)."""
        if points != self.points:
            self.points = list(points)
            self.update()

    def caption(self) -> str:
        """The text above the curve: steps and first / last loss."""
        if not self.points:
            return "loss: no step yet"
        (first_step, first), (last_step, last) = self.points[0], self.points[-1]
        return f"loss {first:.4g} (step {first_step}) \N{RIGHTWARDS ARROW} {last:.4g} (step {last_step})"

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        text_color = self.palette().color(self.foregroundRole())
        painter.setPen(text_color)
        painter.drawText(QRectF(MARGIN, 0, self.width() - 2 * MARGIN, TEXT_HEIGHT), Qt.AlignLeft, self.caption())
        area = QRectF(MARGIN, TEXT_HEIGHT + MARGIN, self.width() - 2 * MARGIN, self.height() - TEXT_HEIGHT - 2 * MARGIN)
        painter.setPen(QPen(text_color, 1))
        painter.drawRect(area)
        if len(self.points) < 2:
            return
        steps = [step for step, _ in self.points]
        losses = [loss for _, loss in self.points]
        low, high = min(losses), max(losses)
        span_x = (max(steps) - min(steps)) or 1
        span_y = (high - low) or 1.0
        line = QPolygonF([
            QPointF(area.left() + (step - min(steps)) / span_x * area.width(),
                    area.bottom() - (loss - low) / span_y * area.height())
            for step, loss in self.points
        ])
        painter.setPen(QPen(CURVE_COLOR, 2))
        painter.drawPolyline(line)
