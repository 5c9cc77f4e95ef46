"""The calibration result view: the personal skeleton against the average hand.

* a picture: both rest skeletons overlaid, seen from the palm (the average hand scaled to the
  calibrated hand length, wrists together), drawn with QPainter;
* per-bone lengths: yours, the average hand's (same hand length) and the difference, in mm;
* the frames used and rejected, with the joint optimization's reason for each rejection;
* the fitted surface (per-vertex offsets), when the result carries one;
* where the size comes from (a measurement, or plainly the population prior).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QBrush, QColor, QPainter, QPen
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.keypoints import BONES, Keypoint, bone_lengths

#: Colours of the two skeletons.
PERSONAL_COLOUR = QColor("#e8553e")
AVERAGE_COLOUR = QColor("#9aa7b8")
#: A bone whose length differs from the average hand's by more than this (mm) is highlighted.
NOTABLE_MM = 2.0


def average_skeleton(model_data: Any, hand_length_mm: float) -> np.ndarray:
    """(21, 3) the average hand's rest keypoints (the model's mean shape), metres, scaled about
    the wrist to ``hand_length_mm`` (wrist to middle fingertip)."""
    from core.model.personal import model_rest_keypoints

    kp = model_rest_keypoints(model_data)
    wrist = kp[Keypoint.WRIST]
    length = float(np.linalg.norm(kp[Keypoint.MIDDLE_TIP] - wrist))
    return wrist + (kp - wrist) * (hand_length_mm / 1000.0 / length)


def palm_view(points: np.ndarray, reference: np.ndarray, side: str = "right") -> np.ndarray:
    """(N, 2) points seen from the palm, metres: x across the palm (thumb to the right for a right
    hand, to the left for a left one, as you see your own palm), y from the wrist toward the
    middle finger. The axes come from ``reference`` (21, 3) keypoints; the origin is its wrist.
    """
    ref = np.asarray(reference, dtype=np.float64)
    wrist = ref[Keypoint.WRIST]
    up = ref[Keypoint.MIDDLE_MCP] - wrist
    up /= np.linalg.norm(up)
    across = ref[Keypoint.INDEX_MCP] - ref[Keypoint.PINKY_MCP]  # toward the thumb's side
    across = across - up * (across @ up)
    across /= np.linalg.norm(across)
    if side == "left":
        across = -across
    p = np.asarray(points, dtype=np.float64) - wrist
    return np.stack([p @ across, p @ up], -1)


def bone_table(personal: np.ndarray, average: np.ndarray) -> list[tuple[str, float, float, float]]:
    """(name, yours mm, average mm, difference mm) for the 20 bones (child order)."""
    from core.personalize.selection import BONE_NAMES

    mine = bone_lengths(np.asarray(personal, dtype=np.float64)) * 1000.0
    avg = bone_lengths(np.asarray(average, dtype=np.float64)) * 1000.0
    return [(BONE_NAMES[b], float(mine[b]), float(avg[b]), float(mine[b] - avg[b])) for b in range(len(BONES))]


def result_offsets_mm(result: Any) -> np.ndarray | None:
    """(V, 3) the result's fitted surface offsets in mm, or None when it has none (no surface
    fitted). Reads a ``surface`` object with ``offsets`` in metres (the calibration result's),
    else ``surface_offsets_mm`` (a profile's) or ``surface_offsets`` (metres)."""
    surface = getattr(result, "surface", None)
    candidates = ((getattr(surface, "offsets", None), 1000.0), (getattr(result, "surface_offsets_mm", None), 1.0),
                  (getattr(result, "surface_offsets", None), 1000.0))
    for value, to_mm in candidates:
        if value is not None:
            arr = np.asarray(value, dtype=np.float64)
            if arr.ndim == 2 and arr.shape[1] == 3 and len(arr):
                return arr * to_mm
    return None


def surface_iou(surface: Any) -> tuple[float, float, int] | None:
    """(mean IoU before, after, frames) of a calibration's surface fit, or None when it does not
    report them. ``surface``: a :class:`core.personalize.surface.SurfaceResult` (per-frame
    arrays) or a profile's ``surface`` object (``iou_before``, ``iou_after``, ``frames``)."""
    if surface is None:
        return None
    get = surface.get if isinstance(surface, dict) else (lambda k: getattr(surface, k, None))
    before, after, used = get("iou_before"), get("iou_after"), get("used")
    if before is None or after is None:
        return None
    if used is not None:
        used = np.asarray(used, dtype=bool)
        if not used.any():
            return None
        return (float(np.nanmean(np.asarray(before, float)[used])), float(np.nanmean(np.asarray(after, float)[used])),
                int(used.sum()))
    frames = get("frames")
    return float(before), float(after), int(frames) if isinstance(frames, (int, float)) else 0


def surface_text(offsets_mm: np.ndarray | None, iou: tuple[float, float, int] | None = None) -> str:
    """One line on the fitted surface (``iou``: :func:`surface_iou`)."""
    if offsets_mm is None:
        return "Surface: the average hand's (no surface offsets were fitted)."
    norms = np.linalg.norm(offsets_mm, axis=1)
    text = (f"Surface fitted to the silhouettes: offsets mean {norms.mean():.1f} mm, max {norms.max():.1f} mm "
            f"over {len(norms)} vertices")
    if iou is not None:
        text += f"; silhouette IoU {iou[0]:.2f} -> {iou[1]:.2f}" + (f" on {iou[2]} frames" if iou[2] else "")
    return text + "."


def frame_rows(result: Any, candidates: list[Any]) -> list[tuple[str, float, float | None, str]]:
    """(frame, weight, reprojection px or None, status) for each frame the calibration used;
    status is "used", "used; not in the surface fit: <reason>" or "rejected: <reason>"."""
    rejected = dict(getattr(result, "rejected", ()) or ())
    # The surface fit's own left-out frames, by position in result.frames.
    surface_out = dict(getattr(getattr(result, "surface", None), "rejected", ()) or ())
    weights = getattr(result, "frame_weights", None)
    weights = np.asarray(result.weights if weights is None else weights, dtype=float)
    residual = getattr(result, "residual_px", None)
    rows = []
    for k, i in enumerate(result.frames):
        c = candidates[i] if 0 <= i < len(candidates) else None
        name = f"{i + 1}" + (f" · {c.source} #{c.frame_index}" if c is not None else "")
        px = None if residual is None or k >= len(residual) else float(residual[k])
        status = f"rejected: {rejected[i]}" if i in rejected else "used"
        if i not in rejected and k in surface_out:
            status += f"; not in the surface fit: {surface_out[k]}"
        rows.append((name, float(weights[k]) if k < len(weights) else 0.0, px, status))
    return rows


class SkeletonOverlay(QWidget):
    """Two rest skeletons overlaid in palm view: yours (solid) and the average hand (dashed)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.personal: np.ndarray | None = None  # (21, 2) metres, palm view
        self.average: np.ndarray | None = None
        self.caption = ""
        self.setMinimumHeight(200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setToolTip("Your calibrated skeleton (solid) over the average hand at the same hand length "
                        "(dashed), seen from the palm, wrists together.")

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(360, 260)

    def set_skeletons(self, personal: np.ndarray | None, average: np.ndarray | None, side: str = "right",
                      caption: str = "") -> None:
        """Show (21, 3) rest keypoints (metres, the same rest frame); None clears the picture."""
        if personal is None or average is None:
            self.personal = self.average = None
        else:
            self.average = palm_view(average, average, side)
            self.personal = palm_view(personal, average, side)
        self.caption = caption
        self.update()

    def transform(self) -> tuple[float, float, float]:
        """(scale px per metre, x offset, y offset) mapping palm-view metres into the widget."""
        pts = np.concatenate([self.personal, self.average])
        lo, hi = pts.min(0), pts.max(0)
        margin, legend = 14.0, 22.0
        w, h = self.width() - 2 * margin, self.height() - 2 * margin - 2 * legend
        span = np.maximum(hi - lo, 1e-3)
        scale = float(min(w / span[0], h / span[1]))
        cx, cy = (lo + hi) / 2
        return scale, self.width() / 2 - scale * cx, margin + legend + h / 2 + scale * cy

    def to_widget(self, p: np.ndarray) -> list[QPointF]:
        scale, ox, oy = self.transform()
        return [QPointF(ox + scale * x, oy - scale * y) for x, y in p]

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QColor("#1f242c"))
        if self.personal is None:
            painter.setPen(QColor("#8a94a3"))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "Not calibrated yet.")
            painter.end()
            return
        # Yours wide underneath, the average dashed on top: where they differ both show.
        for pts, colour, style, width in ((self.personal, PERSONAL_COLOUR, Qt.PenStyle.SolidLine, 4.5),
                                          (self.average, AVERAGE_COLOUR, Qt.PenStyle.DashLine, 1.6)):
            q = self.to_widget(pts)
            painter.setPen(QPen(colour, width, style, Qt.PenCapStyle.RoundCap))
            for a, b in BONES:
                painter.drawLine(q[a], q[b])
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QBrush(colour))
            for p in q:
                painter.drawEllipse(p, width * 0.8, width * 0.8)
            painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.setPen(QColor("#f1f3f5"))
        font = painter.font()
        font.setPointSizeF(max(font.pointSizeF() - 1, 7))
        painter.setFont(font)
        y = 16.0
        painter.setPen(QPen(PERSONAL_COLOUR, 4.5))
        painter.drawLine(QPointF(10, y), QPointF(34, y))
        painter.setPen(QColor("#f1f3f5"))
        painter.drawText(QPointF(40, y + 4), "yours")
        painter.setPen(QPen(AVERAGE_COLOUR, 1.6, Qt.PenStyle.DashLine))
        painter.drawLine(QPointF(90, y), QPointF(114, y))
        painter.setPen(QColor("#f1f3f5"))
        painter.drawText(QPointF(120, y + 4), "average hand, same length")
        painter.setPen(QColor("#8a94a3"))
        painter.drawText(QRectF(0, self.height() - 20, self.width() - 8, 18),
                         Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, self.caption or "palm view")
        painter.end()


class BoneTable(QTableWidget):
    """Per-bone lengths: yours, the average hand's, the difference (mm)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, 4, parent)
        self.setHorizontalHeaderLabels(["bone", "yours", "average", "difference"])
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(20)
        header = self.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for c in (1, 2, 3):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        self.setToolTip(f"Bone lengths in mm; the average hand is scaled to your hand length. Differences over "
                        f"{NOTABLE_MM:.0f} mm are highlighted.")

    def set_rows(self, rows: list[tuple[str, float, float, float]]) -> None:
        self.setRowCount(len(rows))
        for r, (name, mine, avg, diff) in enumerate(rows):
            cells = (name, f"{mine:.1f}", f"{avg:.1f}", f"{diff:+.1f}")
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if c == 3 and abs(diff) > NOTABLE_MM:
                    item.setForeground(QBrush(PERSONAL_COLOUR if diff > 0 else QColor("#4cc9f0")))
                self.setItem(r, c, item)


class FrameTable(QTableWidget):
    """The frames the calibration used: weight, reprojection error, used or rejected (why)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, 4, parent)
        self.setHorizontalHeaderLabels(["frame", "weight", "error", "status"])
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(20)
        self.setWordWrap(True)
        header = self.horizontalHeader()
        for c in (0, 1, 2):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)

    def set_rows(self, rows: list[tuple[str, float, float | None, str]]) -> None:
        self.setRowCount(len(rows))
        for r, (name, weight, px, status) in enumerate(rows):
            cells = (name, f"{weight:.3f}", "" if px is None else f"{px:.1f} px", status)
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(status)
                if status.startswith("rejected"):
                    item.setForeground(QBrush(PERSONAL_COLOUR))
                self.setItem(r, c, item)
        self.resizeRowsToContents()


class CalibrationResultView(QWidget):
    """The picture, the per-bone table, the frames table and the surface and size lines."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.scale_label = QLabel("")
        self.scale_label.setWordWrap(True)
        self.overlay = SkeletonOverlay()
        self.overlay.setMinimumHeight(240)
        self.surface_label = QLabel("")
        self.surface_label.setWordWrap(True)
        self.bones = BoneTable()
        self.bones.setMinimumHeight(200)
        self.frames_label = QLabel("")
        self.frames = FrameTable()
        self.frames.setMinimumHeight(140)
        for w in (self.scale_label, self.overlay, self.surface_label, self.bones, self.frames_label, self.frames):
            lay.addWidget(w)
        self.rows: list[tuple[str, float, float, float]] = []
        self.frame_rows: list[tuple[str, float, float | None, str]] = []
        self.clear()

    def clear(self) -> None:
        self.overlay.set_skeletons(None, None)
        self.bones.set_rows([])
        self.frames.set_rows([])
        self.rows, self.frame_rows = [], []
        for label in (self.scale_label, self.surface_label, self.frames_label):
            label.setText("")
        self.setVisible(False)

    def show_result(self, result: Any, model_data: Any, side: str, candidates: list[Any]) -> None:
        """Show a :class:`core.personalize.session.CalibrationResult` of a session whose hand model
        (``model_data``, the session's side) and candidates are given."""
        self._show(result.scale_source, getattr(result, "scale_note", "") or "", result.hand_length_mm,
                   getattr(result, "skeleton", None), result.bone_lengths_mm, model_data, side,
                   result_offsets_mm(result), surface_iou(getattr(result, "surface", None)),
                   frame_rows(result, candidates))

    def show_profile(self, profile: Any, model_data: Any) -> None:
        """Show a saved :class:`core.profile_io.Profile` (``model_data``: the right hand's model,
        the frame profiles keep their skeleton in)."""
        side = profile.handedness if profile.handedness in ("right", "left") else "right"
        skeleton = None if profile.skeleton_mm is None else np.asarray(profile.skeleton_mm) / 1000.0
        reasons = {(r.get("source"), r.get("frame")): r.get("reason", "") for r in profile.rejected_frames}
        rows = []
        for f in profile.frames:
            key = (f.get("source"), f.get("frame"))
            status = f"rejected: {reasons[key]}" if key in reasons else "used"
            rows.append((f"{f.get('source')} #{f.get('frame')}", float(f.get("weight", 0.0)), None, status))
        self._show(profile.scale_source, profile.scale_note, profile.hand_length_mm, skeleton,
                   profile.bone_lengths_mm, model_data, side, result_offsets_mm(profile),
                   surface_iou((profile.raw or {}).get("surface")), rows)

    def _show(self, scale_source: str, note: str, hand_length_mm: float, skeleton: np.ndarray | None,
              bone_lengths_mm: np.ndarray, model_data: Any, side: str, offsets_mm: np.ndarray | None,
              iou: tuple[float, float, int] | None, rows: list[tuple[str, float, float | None, str]]) -> None:
        """``skeleton``: (21, 3) metres in ``model_data``'s rest frame, or None; ``side``: how the
        palm view is drawn."""
        self.setVisible(True)
        if scale_source == "prior":
            self.scale_label.setText("<b>Size: the population prior, not a measurement.</b> No metric anchor (a "
                                     "known hand length, a marker sheet or a stereo pair) was used, so the "
                                     "proportions are yours but the absolute size is the average hand's.")
            self.scale_label.setStyleSheet("QLabel { background: #4a3b12; color: #ffd166; padding: 6px; "
                                           "border-radius: 4px; }")
        else:
            self.scale_label.setText(note or f"Size from a measurement ({scale_source}).")
            self.scale_label.setStyleSheet("")
        average = average_skeleton(model_data, hand_length_mm)
        if skeleton is not None:
            personal = np.asarray(skeleton, dtype=np.float64)
            personal = personal - personal[Keypoint.WRIST] + average[Keypoint.WRIST]
            self.overlay.set_skeletons(personal, average, side, f"palm view · {side} hand · {hand_length_mm:.0f} mm")
            self.rows = bone_table(personal, average)
        else:  # the shape-space hand only (no personal skeleton): its bones are the table's
            from core.personalize.selection import BONE_NAMES

            self.overlay.set_skeletons(None, None)
            mine = np.asarray(bone_lengths_mm, dtype=float)
            avg = bone_lengths(average) * 1000.0
            self.rows = [(BONE_NAMES[b], float(mine[b]), float(avg[b]), float(mine[b] - avg[b]))
                         for b in range(min(20, len(mine)))]
        self.bones.set_rows(self.rows)
        self.surface_label.setText(surface_text(offsets_mm, iou))
        self.frame_rows = rows
        rejected = sum(1 for r in rows if r[3].startswith("rejected"))
        self.frames_label.setText(f"Frames: {len(rows) - rejected} used, {rejected} rejected")
        self.frames.set_rows(rows)
