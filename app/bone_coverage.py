"""The guided session's per-bone coverage: which bones the chosen frames constrain.

Twenty bars in five finger groups (thumb to little finger; each bar one bone, palm side first:
metacarpal, proximal, middle, distal), filled to the bone's coverage relative to what it needs
(:class:`core.personalize.selection.CoverageReport`), red to green; a bone is done (green)
when its length uncertainty is under the target. :func:`coverage_hint` turns the weakest bone
into the pose to show next.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

#: Bars per finger, in the order of :data:`core.keypoints.BONES` (thumb first).
_FINGERS = ("thumb", "index", "middle", "ring", "little")


def coverage_hint(report: Any) -> str:
    """What to show the camera next for the least covered bone of ``report`` (one line)."""
    from core.personalize.selection import BONE_NAMES

    b = int(report.weakest)
    name = BONE_NAMES[b]
    if b < 4:
        what = "Stretch the thumb away from the palm and tilt the hand so the thumb is seen from the side"
    elif b % 4 == 0:
        what = "Hold the hand flat, palm (or back) toward the camera, fingers spread"
    else:
        what = "Tilt the hand so the fingers are seen side-on, not pointing at the camera"
    return f"{what} (the {name} is seen least so far)."


class BoneCoverage(QWidget):
    """Per-bone coverage bars (see the module docstring); ``set_report(None)`` clears them."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.fractions = np.zeros(20)
        self.covered = np.zeros(20, dtype=bool)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("How well the chosen frames show each bone's length (thumb to little finger; "
                        "each group: metacarpal, proximal, middle, distal). Green: measured well enough.")

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(260, 54)

    def set_report(self, report: Any) -> None:
        """Show a :class:`~core.personalize.selection.CoverageReport` (None: nothing chosen)."""
        if report is None:
            self.fractions = np.zeros(20)
            self.covered = np.zeros(20, dtype=bool)
        else:
            from core.personalize.selection import PER_FRAME_RELATIVE_ERROR

            need = (PER_FRAME_RELATIVE_ERROR / report.target) ** 2
            self.fractions = np.clip(np.asarray(report.coverage, dtype=np.float64) / need, 0.0, 1.0)
            self.covered = np.asarray(report.covered, dtype=bool)
        self.update()

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        w, h = self.width(), self.height()
        label_h = 14
        gap_group, gap_bar = 8.0, 2.0
        bar_w = (w - 4 * gap_group - 20 * gap_bar) / 20.0
        top, bottom = 2.0, h - label_h - 2.0
        p.setPen(QPen(QColor("#9aa4b1")))
        x = 0.0
        for g, finger in enumerate(_FINGERS):
            x0 = x
            for k in range(4):
                b = 4 * g + k
                f = float(self.fractions[b])
                p.setPen(Qt.PenStyle.NoPen)
                p.setBrush(QColor("#3a4250"))
                p.drawRoundedRect(QRectF(x, top, bar_w, bottom - top), 2, 2)
                colour = QColor("#3fb950") if self.covered[b] else QColor.fromHsvF(0.33 * f * 0.85, 0.75, 0.9)
                p.setBrush(colour)
                fill = (bottom - top) * f
                p.drawRoundedRect(QRectF(x, bottom - fill, bar_w, fill), 2, 2)
                x += bar_w + gap_bar
            p.setPen(QPen(QColor("#9aa4b1")))
            p.drawText(QRectF(x0, h - label_h, x - x0, label_h), Qt.AlignmentFlag.AlignCenter, finger)
            x += gap_group
        p.end()
