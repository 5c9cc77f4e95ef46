"""The main window's status bar: the transient message keeps a readable width and the
permanent fields (fps, stage times, camera, quality, texture, profile, model) sit on two
lines at its right, each elided with its full text in the tooltip when the window is narrow."""

from __future__ import annotations

import math

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QFontMetricsF, QResizeEvent
from PySide6.QtWidgets import QHBoxLayout, QLabel, QStatusBar, QVBoxLayout, QWidget

__all__ = ["ElidedLabel", "StatusBar"]


class ElidedLabel(QLabel):
    """A one-line label that shrinks below its text's width, showing the text elided at the
    right; its tooltip is the description and, while elided, the full text.

    The elided text is worked out when the text or the width changes and handed to QLabel,
    which paints it in C++: a Python ``paintEvent`` ran on every repaint of the status bar
    (about 35 a second while tracking), and each of its Qt calls had to take the GIL back
    from the tracking threads (up to 55 ms a paint under load, ``bench --only gui_fps``)."""

    def __init__(self, text: str = "", description: str = "", parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self.description = description
        self._full = text
        self.setTextFormat(Qt.TextFormat.PlainText)  # drawn as it is, as drawText did
        self.setContentsMargins(6, 0, 6, 0)
        self._elide()

    def text(self) -> str:
        """The full text (what is shown may be elided)."""
        return self._full

    def setText(self, text: str) -> None:  # noqa: N802 (Qt naming)
        if text != self._full:
            self._full = text
            self.updateGeometry()  # the size hint follows the full text
            self._elide()

    @property
    def elided(self) -> bool:
        """Whether the text is drawn shortened (it is wider than the label)."""
        return super().text() != self._full

    def _text_width(self) -> int:
        """The full text's width in whole pixels, rounded up: ``QFontMetrics.horizontalAdvance``
        rounds to the nearest pixel while ``elidedText`` compares the exact width, so a label
        sized to the rounded width showed "14.7 fps · view 10.…"."""
        return math.ceil(QFontMetricsF(self.font()).horizontalAdvance(self._full))

    def _elide(self) -> None:
        """Show the full text elided to the width, and say the full text in the tooltip."""
        shown = self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideRight, self.contentsRect().width())
        if shown != super().text():
            super().setText(shown)
        parts = [self._full] if shown != self._full and self._full else []
        if self.description:
            parts.append(self.description)
        self.setToolTip("\n\n".join(parts))

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt naming)
        m = self.contentsMargins()
        return QSize(self._text_width() + m.left() + m.right(), super().sizeHint().height())

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt naming)
        m = self.contentsMargins()
        return QSize(self.fontMetrics().horizontalAdvance("Mm…") + m.left() + m.right(),
                     super().minimumSizeHint().height())

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 (Qt naming)
        super().resizeEvent(event)
        self._elide()


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
