"""The camera panel: the live image with the 2D keypoints, skeleton and silhouettes drawn over it.

The frame is composed for display (silhouettes blended in, scaled to the panel, skeleton
drawn) by :func:`compose_frame`, with OpenCV, which releases the GIL. The tracking worker
calls it for every frame with the panel's current :class:`DisplaySpec`, so the GUI thread
only blits the result. The panel composes a frame itself only when the one it got no longer
fits (the panel was resized, an overlay toggled while paused).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter
from PySide6.QtWidgets import QWidget

from core.keypoints import BONES

HAND_COLOURS = {"right": QColor("#ffd166"), "left": QColor("#06d6a0")}
BACKGROUND = QColor("#15181d")
KEYPOINT_COLOUR = QColor("#ef476f")
#: Gap between the two images of a stereo pair, frame pixels.
STEREO_GAP_PX = 8

#: RGBA per silhouette label: 1 fitted mesh only, 2 target mask only, 3 both (agreement).
SILHOUETTE_RGBA = np.array(
    [[0, 0, 0, 0], [76, 201, 240, 95], [255, 140, 50, 110], [90, 220, 120, 95]], dtype=np.uint8
)


@dataclass(frozen=True)
class DisplaySpec:
    """How the camera panel shows a frame.

    Attributes:
        width, height: the panel's size in device pixels.
        skeleton: draw the keypoints and the fitted skeleton.
        silhouette: blend in the silhouette labels.
    """

    width: int
    height: int
    skeleton: bool = True
    silhouette: bool = True


@dataclass(frozen=True)
class ComposedFrame:
    """A frame drawn for display under one :class:`DisplaySpec`.

    Attributes:
        spec: the spec it was drawn for.
        image: (h, w, 4) uint8, bytes B, G, R, 255 per pixel (QImage.Format_RGB32 on
            little-endian machines): the frame(s) scaled, with the overlays.
        x, y: where its top-left corner goes in the panel, device pixels.
        scale: panel device pixels per frame pixel.
    """

    spec: DisplaySpec
    image: np.ndarray
    x: int
    y: int
    scale: float


def _rgb(colour: QColor) -> tuple[int, int, int]:
    return colour.red(), colour.green(), colour.blue()


def blend_silhouette(image_rgb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 image with the silhouette labels (H, W) uint8 0-3 blended in (a copy)."""
    out = np.array(image_rgb, dtype=np.uint8, copy=True)
    x, y, w, h = cv2.boundingRect((labels > 0).view(np.uint8))
    if w == 0 or h == 0:
        return out
    lab = np.minimum(labels[y:y + h, x:x + w], 3)
    rgba = SILHOUETTE_RGBA[lab].astype(np.float32)
    alpha = rgba[..., 3:] / 255.0
    roi = out[y:y + h, x:x + w].astype(np.float32)
    out[y:y + h, x:x + w] = (roi * (1.0 - alpha) + rgba[..., :3] * alpha + 0.5).astype(np.uint8)
    return out


def frame_layout(frame_size: tuple[int, int], second_size: tuple[int, int] | None,
                 panel_size: tuple[int, int]) -> tuple[float, int, int, int, int]:
    """Where a frame (and the second image of a stereo pair, right of it) goes in the panel.

    Args:
        frame_size, second_size: (width, height) pixels. panel_size: (width, height) pixels.

    Returns:
        (scale, x, y, width, height): panel pixels per frame pixel, and the box of the scaled
        image(s), centred in the panel.
    """
    iw, ih = frame_size
    total_w = float(iw)
    if second_size is not None:
        total_w = iw + STEREO_GAP_PX + second_size[0] * ih / max(second_size[1], 1)
    scale = min(panel_size[0] / total_w, panel_size[1] / ih)
    w, h = max(1, round(total_w * scale)), max(1, round(ih * scale))
    return scale, (panel_size[0] - w) // 2, (panel_size[1] - h) // 2, w, h


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (image.shape[1], image.shape[0]) == size:
        return image
    shrink = size[0] < image.shape[1]
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def compose_frame(
    image_rgb: np.ndarray,
    hands: list[tuple[str, np.ndarray, np.ndarray]],
    silhouette: np.ndarray | None,
    second_rgb: np.ndarray | None,
    spec: DisplaySpec,
) -> ComposedFrame | None:
    """Draw a frame for display: silhouettes blended in, scaled to fit ``spec``, keypoints and
    skeleton on top. Safe to call off the GUI thread (no Qt objects).

    Args:
        image_rgb: (H, W, 3) uint8. hands: (side, detected (21, 2) px, fitted (21, 2) px).
        silhouette: (H, W) uint8 labels (see :data:`SILHOUETTE_RGBA`), or None.
        second_rgb: the other camera of a stereo pair, or None.
        spec: the panel's size and overlay toggles.

    Returns:
        The :class:`ComposedFrame`, or None for an empty panel.
    """
    if spec.width < 2 or spec.height < 2:
        return None
    ih, iw = image_rgb.shape[:2]
    second_size = None if second_rgb is None else (second_rgb.shape[1], second_rgb.shape[0])
    scale, x, y, w, h = frame_layout((iw, ih), second_size, (spec.width, spec.height))
    base = image_rgb
    if silhouette is not None and spec.silhouette:
        base = blend_silhouette(image_rgb, silhouette)
    fw = min(w, max(1, round(iw * scale)))
    out = np.empty((h, w, 3), np.uint8)
    out[:] = _rgb(BACKGROUND)
    out[:, :fw] = _resize(base, (fw, h))
    x2 = round((iw + STEREO_GAP_PX) * scale)
    if second_rgb is not None and x2 < w:
        out[:, x2:] = _resize(second_rgb, (w - x2, h))
    if spec.skeleton and hands:
        shift = 4  # sub-pixel positions, 1/16 px

        def pt(xy: np.ndarray) -> tuple[int, int]:
            # Pixel centres are integers in both the frame and the composed image.
            return (round(((xy[0] + 0.5) * scale - 0.5) * 16), round(((xy[1] + 0.5) * scale - 0.5) * 16))

        for side, detected, fitted in hands:
            colour = _rgb(HAND_COLOURS.get(side, QColor("white")))
            fitted_px = [pt(p) for p in np.asarray(fitted, np.float64)]
            for a, b in BONES:
                cv2.line(out, fitted_px[a], fitted_px[b], colour, 2, cv2.LINE_AA, shift)
            for p in np.asarray(detected, np.float64):
                cv2.circle(out, pt(p), 40, _rgb(KEYPOINT_COLOUR), -1, cv2.LINE_AA, shift)
    return ComposedFrame(spec, cv2.cvtColor(out, cv2.COLOR_RGB2BGRA), x, y, scale)


class CameraView(QWidget):
    """Shows an RGB frame scaled to fit, with detected and fitted keypoints on top.

    A stereo pair shows the second camera's image to the right of the reference one (the
    overlays belong to the reference camera).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(320, 240)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)  # paintEvent fills it all
        self._frame: tuple | None = None  # (image, hands, silhouette, second)
        self._composed: ComposedFrame | None = None
        self._qimage: QImage | None = None
        self.show_skeleton = True
        self.show_silhouette = True
        self.badges: list[tuple[str, QColor]] = []
        self.message = "No source. Open the demo, a camera, a video or a folder."
        self.setToolTip(
            "Red dots: detected keypoints. Lines: the fitted hand's skeleton.\n"
            "Blue: fitted mesh silhouette; orange: segmented hand not covered; green: both."
        )

    def display_spec(self) -> DisplaySpec:
        """The panel's current size (device pixels) and overlay toggles, for :func:`compose_frame`."""
        ratio = self.devicePixelRatioF()
        return DisplaySpec(round(self.width() * ratio), round(self.height() * ratio),
                           self.show_skeleton, self.show_silhouette)

    def set_frame(
        self,
        image_rgb: np.ndarray,
        hands: list[tuple[str, np.ndarray, np.ndarray]],
        silhouette: np.ndarray | None = None,
        second_rgb: np.ndarray | None = None,
        composed: ComposedFrame | None = None,
    ) -> None:
        """image_rgb: (H, W, 3) uint8; hands: (side, detected (21, 2) px, fitted (21, 2) px);
        silhouette: (H, W) uint8 labels (see :data:`SILHOUETTE_RGBA`); second_rgb: the other
        camera of a stereo pair; composed: this frame already drawn by :func:`compose_frame`
        (used when its spec is still the panel's)."""
        self._frame = (image_rgb, hands, silhouette, second_rgb)
        self._set_composed(composed)
        self.update()

    def clear(self, message: str) -> None:
        self._frame = None
        self._set_composed(None)
        self.message = message
        self.update()

    @property
    def has_image(self) -> bool:
        return self._frame is not None

    @property
    def composed(self) -> ComposedFrame | None:
        """What the panel shows (None: nothing drawn yet, or a message)."""
        return self._composed

    def _set_composed(self, composed: ComposedFrame | None) -> None:
        self._composed = composed
        self._qimage = None
        if composed is not None:
            h, w = composed.image.shape[:2]
            # Wraps the array (kept alive in self._composed): no copy.
            self._qimage = QImage(composed.image.data, w, h, 4 * w, QImage.Format.Format_RGB32)
            self._qimage.setDevicePixelRatio(self.devicePixelRatioF())

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        p = QPainter(self)
        p.fillRect(self.rect(), BACKGROUND)
        if self._frame is None:
            p.setPen(QColor("#9aa4b2"))
            p.drawText(self.rect().adjusted(20, 20, -20, -20),
                       Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self.message)
            return
        spec = self.display_spec()
        if self._composed is None or self._composed.spec != spec:
            self._set_composed(compose_frame(*self._frame, spec))
        c = self._composed
        if c is None:
            return
        ratio = self.devicePixelRatioF()
        p.drawImage(QPointF(c.x / ratio, c.y / ratio), self._qimage)
        if self.badges:
            self._draw_badges(p, c.x / ratio, c.y / ratio)

    def _draw_badges(self, p: QPainter, left: float, top: float) -> None:
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        font = QFont(self.font())
        font.setBold(True)
        p.setFont(font)
        x = left + 8
        for text, colour in self.badges:
            width = p.fontMetrics().horizontalAdvance(text) + 14
            rect = QRectF(x, top + 8, width, 22)
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QColor(0, 0, 0, 150))
            p.drawRoundedRect(rect, 5, 5)
            p.setPen(colour)
            p.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)
            x += width + 6
