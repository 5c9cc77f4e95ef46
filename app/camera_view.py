"""The camera panel: the live image with the 2D keypoints and skeleton drawn over it."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPen
from PySide6.QtWidgets import QWidget

from core.keypoints import BONES

HAND_COLOURS = {"right": QColor("#ffd166"), "left": QColor("#06d6a0")}


class CameraView(QWidget):
    """Shows an RGB frame scaled to fit, with detected and fitted keypoints on top."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(320, 240)
        self._image: QImage | None = None
        self._hands: list[tuple[str, np.ndarray, np.ndarray]] = []
        self.message = "No source. Open the demo, a camera, a video or a folder."

    def set_frame(self, image_rgb: np.ndarray, hands: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
        """image_rgb: (H, W, 3) uint8; hands: (side, detected (21, 2) px, fitted (21, 2) px)."""
        img = np.ascontiguousarray(image_rgb)
        h, w = img.shape[:2]
        self._image = QImage(img.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
        self._hands = hands
        self.update()

    def clear(self, message: str) -> None:
        self._image = None
        self._hands = []
        self.message = message
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        p = QPainter(self)
        p.fillRect(self.rect(), QColor("#15181d"))
        if self._image is None:
            p.setPen(QColor("#9aa4b2"))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self.message)
            return
        iw, ih = self._image.width(), self._image.height()
        scale = min(self.width() / iw, self.height() / ih)
        ox, oy = (self.width() - iw * scale) / 2, (self.height() - ih * scale) / 2
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        p.drawImage(QRectF(ox, oy, iw * scale, ih * scale), self._image)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)

        def pt(xy: np.ndarray) -> QPointF:
            # Pixel centres are at integer coordinates: shift by half a pixel to the widget.
            return QPointF(ox + (xy[0] + 0.5) * scale, oy + (xy[1] + 0.5) * scale)

        for side, detected, fitted in self._hands:
            colour = HAND_COLOURS.get(side, QColor("white"))
            p.setPen(QPen(QColor(colour.red(), colour.green(), colour.blue(), 220), 2))
            for a, b in BONES:
                p.drawLine(pt(fitted[a]), pt(fitted[b]))
            p.setPen(QPen(QColor("#ef476f"), 1))
            p.setBrush(QColor("#ef476f"))
            for xy in detected:
                p.drawEllipse(pt(xy), 2.5, 2.5)
