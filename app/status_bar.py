"""The main window's status bar: the transient message keeps a readable width and the
permanent fields (fps, stage times, camera, quality, texture, profile, model) sit on two
lines at its right, each elided with its full text in the tooltip when the window is narrow."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QPainter, QResizeEvent
from PySide6.QtWidgets import QHBoxLayout, QLabel, QStatusBar, QVBoxLayout, QWidget

__all__ = ["ElidedLabel", "StatusBar"]


class ElidedLabel(QLabel):
    """A one-line label that shrinks below its text's width, drawing the text elided at the
    right; its tooltip is the description and, while elided, the full text."""

    def __init__(self, text: str = "", description: str = "", parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self.description = description
        self.setContentsMargins(6, 0, 6, 0)
        self._sync_tooltip()

    def setText(self, text: str) -> None:  # noqa: N802 (Qt naming)
        if text != self.text():
            super().setText(text)
            self._sync_tooltip()

    @property
    def elided(self) -> bool:
        """Whether the text is drawn shortened (it is wider than the label)."""
        return self.fontMetrics().horizontalAdvance(self.text()) > self.contentsRect().width()

    def _sync_tooltip(self) -> None:
        parts = [self.text()] if self.elided and self.text() else []
        if self.description:
            parts.append(self.description)
        self.setToolTip("\n\n".join(parts))

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt naming)
        m = self.contentsMargins()
        return QSize(self.fontMetrics().horizontalAdvance("Mm…") + m.left() + m.right(),
                     super().minimumSizeHint().height())

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 (Qt naming)
        super().resizeEvent(event)
        self._sync_tooltip()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        rect = self.contentsRect()
        text = self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideRight, rect.width())
        painter = QPainter(self)
        painter.setPen(self.palette().color(self.foregroundRole()))
        painter.drawText(rect, int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft), text)


class StatusBar(QStatusBar):
    """A status bar whose permanent fields never take the transient message's last
    ``message_min_width`` pixels: they are laid out in ``rows`` (lists of labels, each row
    right-aligned) in one permanent widget whose width is capped on every resize.

    The message stays QStatusBar's own (``showMessage``, ``currentMessage``, status tips)."""

    def __init__(self, rows: list[list[QLabel]], message_min_width: int = 360,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.message_min_width = message_min_width
        self.fields = QWidget(self)
        column = QVBoxLayout(self.fields)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        for labels in rows:
            row = QHBoxLayout()
            row.setContentsMargins(0, 0, 0, 0)
            row.setSpacing(0)
            row.addStretch(1)
            for label in labels:
                row.addWidget(label)
            column.addLayout(row)
        self.addPermanentWidget(self.fields)

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 (Qt naming)
        self.fields.setMaximumWidth(max(0, event.size().width() - self.message_min_width))
        super().resizeEvent(event)
