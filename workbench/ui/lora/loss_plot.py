"""A small painted line chart of the training loss, step by step."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPaintEvent, QPen, QPolygonF
from PySide6.QtWidgets import QSizePolicy, QWidget


class LossPlot(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.points: list[tuple[int, float]] = []  # (step, loss)
        self.total_steps = 0
        self.setMinimumHeight(140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

    def clear(self, total_steps: int = 0) -> None:
        self.points.clear()
        self.total_steps = total_steps
        self.update()

    def add(self, step: int, loss: float) -> None:
        self.points.append((step, loss))
        self.update()

    def paintEvent(self, _event: QPaintEvent) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), QColor("#ffffff"))
        area = QRectF(self.rect()).adjusted(44, 10, -10, -22)
        p.setPen(QPen(QColor("#999999"), 1))
        p.drawRect(area)
        if not self.points:
            p.drawText(area, Qt.AlignmentFlag.AlignCenter, "The loss appears here as it trains")
            return
        losses = [loss for _, loss in self.points]
        top, bottom = max(losses), min(0.0, min(losses))
        span = (top - bottom) or 1.0
        last = max(self.total_steps, self.points[-1][0], 1)

        def at(step: int, loss: float) -> QPointF:
            return QPointF(area.left() + area.width() * step / last,
                           area.bottom() - area.height() * (loss - bottom) / span)

        p.setPen(QColor("#555555"))
        for value in (bottom, (top + bottom) / 2, top):
            y = at(0, value).y()
            p.drawText(QRectF(0, y - 8, 40, 16),
                       Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                       f"{value:.2f}")
        p.drawText(QRectF(area.left(), area.bottom() + 4, area.width(), 16),
                   Qt.AlignmentFlag.AlignRight, f"step {self.points[-1][0]} of {last}")
        p.setPen(QPen(QColor("#2a6fdb"), 2))
        p.drawPolyline(QPolygonF([at(s, v) for s, v in self.points]))
