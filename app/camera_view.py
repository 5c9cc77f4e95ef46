"""The camera panel: the live image with the 2D keypoints, skeleton and silhouettes drawn over it."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPen
from PySide6.QtWidgets import QWidget

from core.keypoints import BONES

HAND_COLOURS = {"right": QColor("#ffd166"), "left": QColor("#06d6a0")}

#: RGBA per silhouette label: 1 fitted mesh only, 2 target mask only, 3 both (agreement).
SILHOUETTE_RGBA = np.array(
    [[0, 0, 0, 0], [76, 201, 240, 95], [255, 140, 50, 110], [90, 220, 120, 95]], dtype=np.uint8
)


def silhouette_overlay(labels: np.ndarray) -> QImage:
    """(H, W) uint8 labels (0-3) -> a translucent RGBA QImage."""
    rgba = np.ascontiguousarray(SILHOUETTE_RGBA[np.minimum(labels, 3)])
    h, w = labels.shape
    return QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()


def to_qimage(image_rgb: np.ndarray) -> QImage:
    img = np.ascontiguousarray(image_rgb)
    h, w = img.shape[:2]
    return QImage(img.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


class CameraView(QWidget):
    """Shows an RGB frame scaled to fit, with detected and fitted keypoints on top.

    A stereo pair shows the second camera's image to the right of the reference one (the
    overlays belong to the reference camera).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(320, 240)
        self._image: QImage | None = None
        self._second: QImage | None = None
        self._overlay: QImage | None = None
        self._hands: list[tuple[str, np.ndarray, np.ndarray]] = []
        self.show_skeleton = True
        self.show_silhouette = True
        self.badges: list[tuple[str, QColor]] = []
        self.message = "No source. Open the demo, a camera, a video or a folder."
        self.setToolTip(
            "Red dots: detected keypoints. Lines: the fitted hand's skeleton.\n"
            "Blue: fitted mesh silhouette; orange: segmented hand not covered; green: both."
        )

    def set_frame(
        self,
        image_rgb: np.ndarray,
        hands: list[tuple[str, np.ndarray, np.ndarray]],
        silhouette: np.ndarray | None = None,
        second_rgb: np.ndarray | None = None,
    ) -> None:
        """image_rgb: (H, W, 3) uint8; hands: (side, detected (21, 2) px, fitted (21, 2) px);
        silhouette: (H, W) uint8 labels (see :data:`SILHOUETTE_RGBA`); second_rgb: the other
        camera of a stereo pair."""
        self._image = to_qimage(image_rgb)
        self._second = None if second_rgb is None else to_qimage(second_rgb)
        self._overlay = None if silhouette is None else silhouette_overlay(silhouette)
        self._hands = hands
        self.update()

    def clear(self, message: str) -> None:
        self._image = None
        self._second = None
        self._overlay = None
        self._hands = []
        self.message = message
        self.update()

    @property
    def has_image(self) -> bool:
        return self._image is not None

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        p = QPainter(self)
        p.fillRect(self.rect(), QColor("#15181d"))
        if self._image is None:
            p.setPen(QColor("#9aa4b2"))
            p.drawText(self.rect().adjusted(20, 20, -20, -20),
                       Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self.message)
            return
        iw, ih = self._image.width(), self._image.height()
        total_w = iw
        if self._second is not None:
            sw = self._second.width() * ih / max(self._second.height(), 1)
            total_w = iw + 8 + sw
        scale = min(self.width() / total_w, self.height() / ih)
        ox, oy = (self.width() - total_w * scale) / 2, (self.height() - ih * scale) / 2
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        target = QRectF(ox, oy, iw * scale, ih * scale)
        p.drawImage(target, self._image)
        if self._second is not None:
            p.drawImage(QRectF(ox + (iw + 8) * scale, oy, (total_w - iw - 8) * scale, ih * scale), self._second)
        if self._overlay is not None and self.show_silhouette:
            p.drawImage(target, self._overlay)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)

        def pt(xy: np.ndarray) -> QPointF:
            # Pixel centres are at integer coordinates: shift by half a pixel to the widget.
            return QPointF(ox + (xy[0] + 0.5) * scale, oy + (xy[1] + 0.5) * scale)

        if self.show_skeleton:
            for side, detected, fitted in self._hands:
                colour = HAND_COLOURS.get(side, QColor("white"))
                p.setPen(QPen(QColor(colour.red(), colour.green(), colour.blue(), 220), 2))
                for a, b in BONES:
                    p.drawLine(pt(fitted[a]), pt(fitted[b]))
                p.setPen(QPen(QColor("#ef476f"), 1))
                p.setBrush(QColor("#ef476f"))
                for xy in detected:
                    p.drawEllipse(pt(xy), 2.5, 2.5)
        if self.badges:
            font = QFont(self.font())
            font.setBold(True)
            p.setFont(font)
            x = target.left() + 8
            for text, colour in self.badges:
                width = p.fontMetrics().horizontalAdvance(text) + 14
                rect = QRectF(x, target.top() + 8, width, 22)
                p.setPen(Qt.PenStyle.NoPen)
                p.setBrush(QColor(0, 0, 0, 150))
                p.drawRoundedRect(rect, 5, 5)
                p.setPen(colour)
                p.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)
                x += width + 6
