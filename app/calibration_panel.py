"""The calibration session panel: guided poses, auto-captured frames, calibration, result.

The flow of the identity-aware paper as a user sees it: show a few hand poses while the panel
offers tracked frames to a :class:`core.personalize.session.CalibrationSession` (it refits
each with a free shape, predicts a confidence and keeps the usable ones); the thumbnails show
every candidate with its confidence and attention weight, chosen ones ticked; the user drops
or adds frames, picks how the metric size is fixed, and calibrates (a job with a progress bar
and a Cancel button; cancelling keeps the previous result and profile). The result shows hand
length and width, the personal skeleton against the average hand (a picture and per-bone
lengths, :mod:`app.calibration_result`), the frames used and rejected (why), the fitted
surface, where the size comes from, per-frame hand lengths, and the mesh.

The panel binds to the application state (:class:`app.state.AppState`): the session and the
result live there, and the panel reaches the rest of the app only through it. The session is
touched by the tracking thread (auto-capture), jobs (manual capture, calibration) and the GUI
thread (add/drop), always under ``self.lock`` (the state's calibration lock).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import QSize, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QColor, QIcon, QImage, QPixmap
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSpinBox,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from app.bone_coverage import BoneCoverage, coverage_hint
from app.calibration_result import NOTABLE_MM, CalibrationResultView, result_offsets_mm
from app.jobs import describe_error, show_error

if TYPE_CHECKING:
    from app.jobs import Job
    from app.state import AppState

log = logging.getLogger(__name__)

#: The guided poses, shown one after another as frames are captured.
POSE_PROMPTS = (
    ("Flat hand, palm toward the camera", "Fingers together and straight, whole hand in view."),
    ("Spread your fingers", "Palm toward the camera, fingers wide apart."),
    ("Back of the hand", "Turn the hand over: knuckles toward the camera."),
    ("Tilt the hand", "Palm toward the camera, tilt it slowly left and right."),
    ("Relaxed, slightly curled", "Let the fingers bend a little, as at rest."),
    ("Thumb out", "Flat hand with the thumb stretched away from the palm."),
)

#: Seconds between two frames offered by auto-capture (each offer refits the hand).
AUTO_INTERVAL_S = 0.25
MAX_MEASURED = 200


def thumbnail_icon(image: np.ndarray, selected: bool, size: int = 84) -> QIcon:
    img = np.ascontiguousarray(image[..., :3])
    h, w = img.shape[:2]
    q = QImage(img.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    pix = QPixmap.fromImage(q).scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio,
                                      Qt.TransformationMode.SmoothTransformation)
    if not selected:
        faded = QPixmap(pix.size())
        faded.fill(QColor(0, 0, 0, 0))
        from PySide6.QtGui import QPainter

        p = QPainter(faded)
        p.setOpacity(0.35)
        p.drawPixmap(0, 0, pix)
        p.end()
        pix = faded
    return QIcon(pix)


class CalibrationPanel(QWidget):
    """The calibration dock's contents (see the module docstring)."""

    candidate_added = Signal(object)  # emitted from any thread; queued to the GUI
    measured = Signal(int)
    #: (tracking thread) the side of the hand auto-capture sees when none is of the session's
    #: side, or "" once the session's side is seen again
    other_side_seen = Signal(str)

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.lock = state.calibration_lock
        self.auto = False
        self.job: Job | None = None
        self._last_offer = 0.0
        self._measured_kp: list[np.ndarray] = []
        self._stereo_detector = None
        self._stereo_cal = None
        self._mesh_view = None
        self._creating = False
        self._other_side = ""  # see other_side_seen
        #: (session, result, scale measurements) a Clear took away, until the next capture
        self._undo: tuple[Any, Any, list[np.ndarray]] | None = None
        icon = self.style().standardIcon

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = self._scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        outer.addWidget(scroll)
        body = QWidget()
        scroll.setWidget(body)
        lay = QVBoxLayout(body)

        # -- session settings
        top = QHBoxLayout()
        self.side = QComboBox()
        self.side.addItems(["right", "left"])
        self.side.setToolTip("The hand to calibrate")
        self.k = QSpinBox()
        self.k.setRange(3, 60)
        self.k.setValue(20)
        self.k.setToolTip("Frames to calibrate from (the paper uses 20)")
        top.addWidget(QLabel("Hand"))
        top.addWidget(self.side)
        top.addWidget(QLabel("Frames"))
        top.addWidget(self.k)
        top.addStretch(1)
        lay.addLayout(top)

        # -- guided prompt
        self.prompt = QLabel()
        self.prompt.setWordWrap(True)
        self.prompt.setStyleSheet("QLabel { background: #2b3340; color: #f1f3f5; padding: 8px; border-radius: 6px; }")
        lay.addWidget(self.prompt)
        self.count_bar = QProgressBar()
        self.count_bar.setFormat("%v of %m frames chosen")
        lay.addWidget(self.count_bar)
        self.coverage = BoneCoverage()
        self.coverage_label = QLabel()
        self.coverage_label.setWordWrap(True)
        lay.addWidget(self.coverage)
        lay.addWidget(self.coverage_label)

        row = QHBoxLayout()
        self.auto_btn = QPushButton(icon(QStyle.StandardPixmap.SP_MediaPlay), "Auto-capture")
        self.auto_btn.setCheckable(True)
        self.auto_btn.setToolTip("Offer tracked frames to the session while you show the poses")
        self.auto_btn.toggled.connect(self.set_auto)
        self.capture_btn = QPushButton(icon(QStyle.StandardPixmap.SP_DialogApplyButton), "Capture (C)")
        self.capture_btn.setToolTip("Offer the frame shown now (C)")
        self.capture_btn.clicked.connect(self.capture_current)
        self.clear_btn = QPushButton(icon(QStyle.StandardPixmap.SP_DialogResetButton), "Clear")
        self.clear_btn.clicked.connect(self._clear_or_undo)
        for b in (self.auto_btn, self.capture_btn, self.clear_btn):
            row.addWidget(b)
        lay.addLayout(row)

        # -- candidates
        self.thumbs = QListWidget()
        self.thumbs.setViewMode(QListWidget.ViewMode.IconMode)
        self.thumbs.setIconSize(QSize(84, 84))
        self.thumbs.setGridSize(QSize(100, 124))
        self.thumbs.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.thumbs.setMovement(QListWidget.Movement.Static)
        self.thumbs.setMinimumHeight(260)
        self.thumbs.setWordWrap(True)
        self.thumbs.setToolTip("Candidates: c = confidence, w = attention weight. Faded ones are not used.\n"
                               "Double-click to add or drop a frame.")
        self.thumbs.itemDoubleClicked.connect(lambda item: self.toggle(item.data(Qt.ItemDataRole.UserRole)))
        self.thumbs.currentItemChanged.connect(lambda *_: self._sync_buttons())
        lay.addWidget(self.thumbs)
        row = QHBoxLayout()
        self.drop_btn = QPushButton(icon(QStyle.StandardPixmap.SP_TrashIcon), "Drop")
        self.drop_btn.clicked.connect(lambda: self._current_do("drop"))
        self.add_btn = QPushButton(icon(QStyle.StandardPixmap.SP_ArrowUp), "Use")
        self.add_btn.clicked.connect(lambda: self._current_do("add"))
        row.addWidget(self.drop_btn)
        row.addWidget(self.add_btn)
        row.addStretch(1)
        lay.addLayout(row)

        # -- metric scale
        scale = QGroupBox("Metric size")
        grid = QGridLayout(scale)
        self.scale_group = QButtonGroup(self)
        self.scale_prior = QRadioButton("Average hand size (no measurement)")
        self.scale_length = QRadioButton("Known hand length")
        self.scale_aruco = QRadioButton("Hand flat on a marker sheet")
        self.scale_stereo = QRadioButton("Stereo camera pair")
        for i, r in enumerate((self.scale_prior, self.scale_length, self.scale_aruco, self.scale_stereo)):
            self.scale_group.addButton(r, i)
        self.scale_prior.setChecked(True)
        self.length_mm = QDoubleSpinBox()
        self.length_mm.setRange(80, 300)
        self.length_mm.setValue(185)
        self.length_mm.setSuffix(" mm")
        self.length_mm.setToolTip("Wrist crease to middle fingertip, hand flat")
        self.sheet_kind = QComboBox()
        self.sheet_kind.addItems(["charuco", "aruco"])
        self.sheet_square = QDoubleSpinBox(); self.sheet_square.setRange(5, 200); self.sheet_square.setValue(35)
        self.sheet_square.setSuffix(" mm")
        self.sheet_marker = QDoubleSpinBox(); self.sheet_marker.setRange(1, 200); self.sheet_marker.setValue(26)
        self.sheet_marker.setSuffix(" mm")
        self.sheet_dict = QComboBox()
        self.sheet_dict.addItems(["DICT_4X4_50", "DICT_4X4_100", "DICT_5X5_100", "DICT_6X6_250"])
        self.stereo_file = QLineEdit()
        self.stereo_file.setPlaceholderText("stereo calibration JSON (K1, K2, R, T)")
        stereo_browse = QPushButton(icon(QStyle.StandardPixmap.SP_DialogOpenButton), "")
        stereo_browse.clicked.connect(self._browse_stereo)
        self.measured_label = QLabel("")
        self.measured_label.setWordWrap(True)
        grid.addWidget(self.scale_prior, 0, 0, 1, 3)
        grid.addWidget(self.scale_length, 1, 0)
        grid.addWidget(self.length_mm, 1, 1, 1, 2)
        grid.addWidget(self.scale_aruco, 2, 0, 1, 3)
        sheet = QGridLayout()
        sheet.addWidget(self.sheet_kind, 0, 0)
        sheet.addWidget(self.sheet_dict, 0, 1)
        sheet.addWidget(self.sheet_square, 1, 0)
        sheet.addWidget(self.sheet_marker, 1, 1)
        self.sheet_square.setToolTip("Square side of the printed sheet")
        self.sheet_marker.setToolTip("Marker side of the printed sheet")
        grid.addLayout(sheet, 3, 0, 1, 3)
        grid.addWidget(self.scale_stereo, 4, 0)
        grid.addWidget(self.stereo_file, 4, 1)
        grid.addWidget(stereo_browse, 4, 2)
        grid.addWidget(self.measured_label, 5, 0, 1, 3)
        self.scale_group.idToggled.connect(lambda *_: self._sync_scale())
        lay.addWidget(scale)

        # -- calibrate
        row = QHBoxLayout()
        self.calibrate_btn = QPushButton(icon(QStyle.StandardPixmap.SP_MediaSeekForward), "Calibrate")
        self.calibrate_btn.setToolTip("One shape from the chosen frames (attention-weighted)")
        self.calibrate_btn.clicked.connect(self.calibrate)
        self.cal_progress = QProgressBar()
        self.cal_progress.setRange(0, 1000)
        self.cal_progress.setTextVisible(False)
        self.cancel_btn = QPushButton(icon(QStyle.StandardPixmap.SP_DialogCancelButton), "Cancel")
        self.cancel_btn.setToolTip("Stop the calibration; the current profile and result stay as they are")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.cancel_calibration)
        row.addWidget(self.calibrate_btn)
        row.addWidget(self.cal_progress, 1)
        row.addWidget(self.cancel_btn)
        self.cal_status = QLabel("")
        self.cal_status.setWordWrap(True)
        self.cal_status.setStyleSheet("color: #8a94a3;")
        # Below the scroll area, always in view: at 1280 x 720 Calibrate, its progress and Cancel
        # were below the thumbnails and the size options, out of sight.
        self.save_btn = QPushButton(icon(QStyle.StandardPixmap.SP_DialogSaveButton), "Save as profile…")
        self.save_btn.setToolTip("Save the result as a named profile and track with it")
        self.save_btn.clicked.connect(self.save_profile_dialog)
        bar = QVBoxLayout()
        bar.setContentsMargins(9, 4, 9, 4)
        bar.addLayout(row)
        status_row = QHBoxLayout()
        status_row.addWidget(self.cal_status, 1)
        status_row.addWidget(self.save_btn)  # beside the result's status: it was below the plots
        bar.addLayout(status_row)
        outer.addLayout(bar)

        # -- result
        self.result_box = QGroupBox("Result")
        rlay = QVBoxLayout(self.result_box)
        self.result_label = QLabel("Not calibrated yet.")
        self.result_label.setWordWrap(True)
        rlay.addWidget(self.result_label)
        self.result_view = CalibrationResultView()
        rlay.addWidget(self.result_view)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.4, 4.0), dpi=90, tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setFixedHeight(360)
        rlay.addWidget(self.canvas)
        lay.addWidget(self.result_box)
        lay.addStretch(1)
        # The calibrated mesh's 3D view stays outside the scroll area (an OpenGL widget
        # composites badly when scrolled).
        self.mesh_holder = QVBoxLayout()
        outer.addLayout(self.mesh_holder)

        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(200)
        self._refresh_timer.timeout.connect(self.refresh)
        self.candidate_added.connect(self._on_candidate)
        state.jobs.job_finished.connect(self._job_finished)
        self.measured.connect(self._on_measured)
        self.other_side_seen.connect(lambda *_: self.refresh())
        self.side.currentIndexChanged.connect(self._side_changed)
        self.k.valueChanged.connect(self._k_changed)
        self.refresh()
        self._sync_scale()

    # ------------------------------------------------------------------ session

    @property
    def session(self) -> Any:
        """The calibration session (core.personalize.session.CalibrationSession) or None."""
        return self.state.calibration_session

    @session.setter
    def session(self, session: Any) -> None:
        self.state.set_calibration_session(session)

    @property
    def result(self) -> Any:
        """The last calibration result (core.personalize.session.CalibrationResult) or None."""
        return self.state.calibration

    @Slot(object)
    def _on_candidate(self, cand: Any) -> None:
        self._refresh_timer.start()

    @Slot(int)
    def _on_measured(self, count: int) -> None:
        self._sync_scale()

    def ensure_session(self, then=None) -> None:
        """Create the session in a job (it loads the models), then call ``then()``."""
        if self.session is not None:
            if then:
                then()
            return
        if self._creating:
            return
        self._creating = True
        side, k = self.side.currentText(), self.k.value()
        model, device = self.state.model_path, self.state.settings.device

        def make(progress):
            from core.personalize.session import CalibrationSession

            progress(-1, "Loading the calibration models…")
            return CalibrationSession(side=side, k=k, model=model, device=device)

        def done(session) -> None:
            self._creating = False
            self.session = session
            self.refresh()
            if then:
                then()

        def failed(message: str) -> None:
            self._creating = False
            self.auto_btn.setChecked(False)
            show_error(self, "Calibration", message)

        self.state.jobs.start("Preparing calibration", make, on_done=done, on_error=failed, dialog=False)

    def clear(self) -> None:
        """Forget the candidates and the result (a new session); :meth:`undo_clear` brings them
        back until the next frame is captured."""
        if self.job is not None:
            self.job.cancel()
        with self.lock:
            session, measured = self.session, self._measured_kp
            self._measured_kp = []
        if session is not None and session.candidates:
            self._undo = (session, self.result, measured)
        self._other_side = ""
        self.session = None
        self.state.set_calibration(None)
        self.auto_btn.setChecked(False)
        self.result_view.clear()
        self.figure.clear()
        self.canvas.draw_idle()
        self.result_label.setText("Not calibrated yet.")
        self.refresh()

    @property
    def can_undo_clear(self) -> bool:
        """Whether the Clear button brings back the last cleared session (nothing captured since)."""
        return self._undo is not None and (self.session is None or not self.session.candidates)

    def undo_clear(self) -> None:
        """Bring back the session (frames, choices, side) and result the last Clear took away."""
        if not self.can_undo_clear:
            return
        session, result, measured = self._undo
        self._undo = None
        for widget, set_value in ((self.side, lambda: self.side.setCurrentText(session.side)),
                                  (self.k, lambda: self.k.setValue(int(session.k)))):
            widget.blockSignals(True)
            set_value()
            widget.blockSignals(False)
        with self.lock:
            self._measured_kp = measured
        self.session = session
        self._sync_scale()
        if result is not None:
            self.show_result(result)
        else:
            self.refresh()
        self.state.show_message(f"Brought back {len(session.candidates)} captured frames.", 4000)

    def _clear_or_undo(self) -> None:
        if self.can_undo_clear:
            self.undo_clear()
        else:
            self.clear()

    def _side_changed(self) -> None:
        """Another hand: a new session; auto-capture goes on for it if it was on."""
        auto = self.auto_btn.isChecked()
        self.clear()
        if auto:
            self.auto_btn.setChecked(True)

    def _k_changed(self, k: int) -> None:
        with self.lock:
            if self.session is not None:
                self.session.k = int(k)
                self.session._selected = None  # noqa: SLF001 - the session re-selects lazily
        self.refresh()

    def set_auto(self, on: bool) -> None:
        """Start or stop auto-capture (tracked frames are offered every AUTO_INTERVAL_S)."""
        if on and self.session is None:
            self.ensure_session(lambda: self.set_auto(self.auto_btn.isChecked()))
            return
        self.auto = on
        self.auto_btn.setText("Stop capture" if on else "Auto-capture")
        self.auto_btn.setIcon(self.style().standardIcon(
            QStyle.StandardPixmap.SP_MediaStop if on else QStyle.StandardPixmap.SP_MediaPlay))
        self.state.set_frame_hook(self.frame_hook if on else None)
        if on and not self.state.tracking:
            self.state.show_message("Auto-capture waits for a source: open the demo or a camera.")

    def stop_auto(self) -> None:
        """Stop auto-capture without touching the session (the window is closing)."""
        self.auto = False
        if self.state.frame_hook is not None:
            self.state.set_frame_hook(None)

    def frame_hook(self, frames: tuple, result: Any) -> None:
        """Called in the tracking thread for every frame."""
        if not self.auto or self.session is None:
            return
        now = time.perf_counter()
        if now - self._last_offer < AUTO_INTERVAL_S:
            return
        side = self.session.side
        sides = {h.detection.handedness for h in result.hands}
        if side not in sides:
            other = "" if not sides else sides.pop()
            if other and other != self._other_side:  # tell the user once, not every frame
                self._other_side = other
                self.other_side_seen.emit(other)
            return
        if self._other_side:
            self._other_side = ""
            self.other_side_seen.emit("")
        self._last_offer = now
        frame = frames[0]
        with self.lock:
            session = self.session
            if session is None:
                return
            cand = session.offer(frame, result)
        self._measure_scale(frames, result, side)
        if cand is not None:
            self.candidate_added.emit(cand)

    def capture_current(self) -> None:
        """Offer the frame on screen now (a job: the refit takes a moment)."""
        update = self.state.current_update
        if update is None or not update.result.hands:
            show_error(self, "Calibration", "No hand in the current frame: open a source and show your hand.")
            return
        if self.session is None:
            self.ensure_session(self.capture_current)
            return

        def offer(progress):
            with self.lock:
                return self.session.offer(update.frame, update.result) if self.session is not None else None

        def done(cand) -> None:
            if cand is None:
                self.state.show_message(
                    f"This frame is not usable for calibration (no clear {self.side.currentText()} hand).", 4000)
            else:
                self.candidate_added.emit(cand)
                self.state.show_message(f"Captured a frame (confidence {cand.confidence:.2f}).", 3000)

        self.state.jobs.start("Capturing a frame", offer, on_done=done, dialog=False)

    # ------------------------------------------------------------------ metric scale

    def _browse_stereo(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Stereo calibration", "", "JSON (*.json)")
        if path:
            self.stereo_file.setText(path)
            self.scale_stereo.setChecked(True)

    def scale_mode(self) -> str:
        return ("prior", "hand_length", "aruco", "stereo")[max(self.scale_group.checkedId(), 0)]

    def _sync_scale(self) -> None:
        mode = self.scale_mode()
        self.length_mm.setEnabled(mode == "hand_length")
        for w in (self.sheet_kind, self.sheet_square, self.sheet_marker, self.sheet_dict):
            w.setEnabled(mode == "aruco")
        self.stereo_file.setEnabled(mode == "stereo")
        n = len(self._measured_kp)
        if mode == "aruco":
            self.measured_label.setText(f"{n} frame(s) with the hand measured on the sheet. "
                                        "Lay the hand flat on the printed sheet; the camera needs intrinsics.")
        elif mode == "stereo":
            self.measured_label.setText(f"{n} frame(s) triangulated. Open a stereo pair as the source.")
        elif mode == "prior":
            self.measured_label.setText("No measurement: the size will be the population prior (the average "
                                        "hand's length), not yours; the proportions are still yours.")
        else:
            self.measured_label.setText("")

    def _measure_scale(self, frames: tuple, result: Any, side: str) -> None:
        """Metric keypoints for the ArUco or stereo options (tracking thread; cheap or skipped)."""
        mode = self.scale_mode()
        if mode not in ("aruco", "stereo") or len(self._measured_kp) >= MAX_MEASURED:
            return
        hand = next((h for h in result.hands if h.detection.handedness == side), None)
        frame = frames[0]
        if hand is None:
            return
        try:
            from core.personalize import scale as sc

            if mode == "aruco":
                if frame.intrinsics is None:
                    return
                sheet = sc.SheetSpec(self.sheet_kind.currentText(), (5, 7), self.sheet_square.value(),
                                     self.sheet_marker.value(), self.sheet_dict.currentText())
                pose = sc.sheet_pose(frame.image, frame.intrinsics.K, sheet)
                if pose is None:
                    return
                kp = sc.keypoints_on_plane(hand.detection.keypoints_2d, frame.intrinsics.K, *pose)
            else:
                if len(frames) < 2 or not self.stereo_file.text().strip():
                    return
                if self._stereo_cal is None:
                    self._stereo_cal = sc.load_stereo_calibration(self.stereo_file.text().strip())
                if self._stereo_detector is None:
                    from core.detect import HandDetector

                    self._stereo_detector = HandDetector(max_hands=2, mode="video")
                dets = [d for d in self._stereo_detector.detect(frames[1].image, frames[1].timestamp_s)
                        if d.handedness == side]
                if not dets:
                    return
                kp = sc.triangulate_keypoints(hand.detection.keypoints_2d, dets[0].keypoints_2d, self._stereo_cal)
        except Exception:  # noqa: BLE001 - a failed measurement only means fewer measurements
            log.debug("scale measurement failed", exc_info=True)
            return
        self._measured_kp.append(np.asarray(kp, dtype=np.float64))
        self.measured.emit(len(self._measured_kp))

    def scale_option(self):
        """The ScaleOption for the chosen mode (raises InputError when it cannot be built)."""
        from core.personalize.scale import ScaleOption

        mode = self.scale_mode()
        if mode == "prior":
            return None
        if mode == "hand_length":
            return ScaleOption.from_hand_length(self.length_mm.value())
        kp = np.stack(self._measured_kp) if self._measured_kp else None
        return ScaleOption(mode, keypoints_3d=kp)

    # ------------------------------------------------------------------ candidates view

    def toggle(self, index: int) -> None:
        with self.lock:
            if self.session is None:
                return
            (self.session.drop if index in self.session.selected else self.session.add)(index)
        self.refresh()

    def _current_do(self, what: str) -> None:
        item = self.thumbs.currentItem()
        if item is None:
            return
        index = item.data(Qt.ItemDataRole.UserRole)
        with self.lock:
            if self.session is not None:
                getattr(self.session, what)(index)
        self.refresh()

    def preview_weights(self) -> dict[int, float]:
        """Attention weights of the chosen frames (from the result when calibrated on them)."""
        with self.lock:
            if self.session is None:
                return {}
            selected = self.session.selected
            cands = self.session.candidates
        if self.result is not None and list(self.result.frames) == selected:
            return {i: float(w) for i, w in zip(self.result.frames, self.result.weights)}
        if not selected:
            return {}
        from core.personalize import attention_weights

        w = attention_weights(np.array([cands[i].confidence for i in selected]))
        return dict(zip(selected, map(float, w)))

    def refresh(self) -> None:
        """Rebuild the thumbnails, counters, prompt and button states."""
        with self.lock:
            cands = self.session.candidates if self.session is not None else []
            selected = set(self.session.selected) if self.session is not None else set()
            report = self.session.coverage() if self.session is not None and selected else None
        self.coverage.set_report(report)
        if report is None:
            self.coverage_label.setText("Bones measured: none yet.")
        else:
            self.coverage_label.setText(
                f"Bones measured well enough: {int(report.covered.sum())} of 20 "
                f"(worst length uncertainty {min(float(report.uncertainty.max()), 9.99) * 100:.0f} %).")
        weights = self.preview_weights()
        result = self.result
        rejected = dict(result.rejected) if result is not None and getattr(result, "rejected", None) else {}
        current = self.thumbs.currentItem().data(Qt.ItemDataRole.UserRole) if self.thumbs.currentItem() else None
        self.thumbs.clear()
        for i, c in enumerate(cands):
            chosen = i in selected
            w = weights.get(i)
            # the frame's share of the calibration: the predictor's raw confidence (tooltip) is
            # a log-weight near 0, which read as broken ("c -0.01") under a thumbnail
            text = f"weight {100 * w:.1f}%" if w is not None else "not used"
            if i in rejected:
                text += "\nrejected"
            item = QListWidgetItem(thumbnail_icon(c.thumbnail, chosen and i not in rejected), text)
            item.setData(Qt.ItemDataRole.UserRole, i)
            item.setToolTip(f"{c.source} frame {c.frame_index} · {c.side} hand · confidence {c.confidence:.3f}"
                            + (f" · weight {w:.3f}" if w is not None else " · not used")
                            + (f"\nrejected by the calibration: {rejected[i]}" if i in rejected else ""))
            if i in rejected:
                item.setForeground(QColor("#e8553e"))
            self.thumbs.addItem(item)
            if i == current:
                self.thumbs.setCurrentItem(item)
        k = self.k.value()
        self.count_bar.setRange(0, k)
        self.count_bar.setValue(min(len(selected), k))
        step = min(len(cands) * len(POSE_PROMPTS) // max(k, 1), len(POSE_PROMPTS) - 1)
        title, hint = POSE_PROMPTS[step]
        other = self._other_side
        if self.session is None:
            self.prompt.setText("<b>Calibrate your hand</b><br>Start auto-capture and show the poses asked "
                                "for here, or press C to capture the frame on screen.")
        elif self.auto and other and other != self.session.side:
            side = self.session.side
            self.prompt.setText(f"<b>The hand in view is a {other} hand.</b><br>This session calibrates the {side} "
                                f"hand: set Hand to {other} above, or show your {side} hand.")
        elif report is not None and report.done and len(selected) >= min(k, 8):
            self.prompt.setText(f"<b>Done: every bone is measured ({len(cands)} frames captured).</b><br>Check the "
                                "thumbnails, drop any bad one, then Calibrate.")
        elif len(selected) >= k:
            hint = coverage_hint(report) if report is not None else ""
            self.prompt.setText(f"<b>{len(cands)} frames, but not every bone is measured yet.</b><br>{hint}")
        else:
            self.prompt.setText(f"<b>Pose {step + 1} of {len(POSE_PROMPTS)}: {title}</b><br>{hint}")
        self._sync_buttons()

    def _sync_buttons(self) -> None:
        has = self.session is not None and bool(self.session.candidates)
        if self._undo is not None and has:  # frames captured since the Clear: it is final
            self._undo = None
        undo = self.can_undo_clear
        self.clear_btn.setText("Undo clear" if undo else "Clear")
        self.clear_btn.setToolTip(
            f"Bring back the {len(self._undo[0].candidates)} frames (and result) the last Clear took away"
            if undo else "Start a new calibration session (it can be undone until the next capture)")
        self.calibrate_btn.setEnabled(has and self.job is None)
        self.cancel_btn.setEnabled(self.job is not None)
        item = self.thumbs.currentItem()
        in_sel = (item is not None and self.session is not None
                  and item.data(Qt.ItemDataRole.UserRole) in self.session.selected)
        self.drop_btn.setEnabled(item is not None and in_sel)
        self.add_btn.setEnabled(item is not None and not in_sel)
        self.save_btn.setEnabled(self.result is not None)

    # ------------------------------------------------------------------ calibrate

    def calibrate(self) -> None:
        if self.session is None:
            show_error(self, "Calibration", "Capture some frames first.")
            return
        unmeasured = {  # said in the app's words, not the core's "(N, 21, 3) keypoints"
            "aruco": "No frame has measured the hand on the marker sheet yet. Lay the hand flat on the printed "
                     "sheet while auto-capture runs (the camera needs intrinsics: Open source, Ctrl+O), or "
                     "choose another way to fix the size.",
            "stereo": "No frame has been triangulated yet. Open a stereo pair as the source, choose its "
                      "calibration file here and run auto-capture, or choose another way to fix the size.",
        }
        if self.scale_mode() in unmeasured and not self._measured_kp:
            show_error(self, "Calibration", unmeasured[self.scale_mode()])
            return
        try:
            scale = self.scale_option()
        except Exception as exc:  # noqa: BLE001 - InputError from ScaleOption: a message
            show_error(self, "Calibration", describe_error(exc))
            return
        if self.job is not None:
            return
        self.cal_progress.setRange(0, 1000)
        self.cal_progress.setValue(0)
        self.cal_status.setText("Calibrating…")
        session = self.session

        def work(progress):
            with self.lock:
                # progress() raises once Cancel is pressed; cancel= stops between reports too.
                return session.calibrate(scale, progress=progress, cancel=lambda: progress.cancelled)

        def on_progress(fraction: float, message: str) -> None:
            self.cal_progress.setRange(0, 0 if fraction < 0 else 1000)
            if fraction >= 0:
                self.cal_progress.setValue(int(1000 * fraction))
            if message:
                self.cal_status.setText(message)

        def failed(message: str) -> None:
            self.cal_status.setText(f"Calibration failed: {message}")
            show_error(self, "Calibration", message)

        self.job = self.state.jobs.start("Calibrating", work, on_done=self.show_result, on_error=failed,
                                         dialog=False, progress_to=on_progress)
        self._sync_buttons()

    def cancel_calibration(self) -> None:
        """Stop a running calibration; the previous result and the active profile stay."""
        if self.job is not None:
            self.job.cancel()
            self.cancel_btn.setEnabled(False)
            self.cal_status.setText("Cancelling…")

    @Slot(object)
    def _job_finished(self, job: Any) -> None:
        """A job ended (the runner tells in the GUI thread, after its result or error)."""
        if job is not self.job:
            return
        self.job = None
        if job.cancel_requested:  # cancelled: no result was shown, the previous one stays
            self.cal_progress.setRange(0, 1000)
            self.cal_progress.setValue(0)
            self.cal_status.setText("Calibration cancelled: the previous result and profile are unchanged.")
            self.state.show_message("Calibration cancelled.", 4000)
        self._sync_buttons()

    def show_result(self, result: Any) -> None:
        self.state.set_calibration(result)
        self.cal_status.setText(f"Calibrated in {result.seconds:.1f} s. Save it as a profile to track with it.")
        self.cal_progress.setRange(0, 1000)
        self.cal_progress.setValue(1000)
        scale_names = {"prior": "average size (no measurement)", "hand_length": "known hand length",
                       "aruco": "marker sheet", "stereo": "stereo pair"}
        rejected = getattr(result, "rejected", ())
        used = len(result.weights) - len(rejected)
        lines = [
            f"<b>Hand length {result.hand_length_mm:.1f} mm · width {result.hand_width_mm:.1f} mm</b>",
            f"{used} frames used, {len(rejected)} rejected · size from "
            f"{scale_names.get(result.scale_source, result.scale_source)} · {result.seconds * 1000:.0f} ms",
        ]
        if getattr(result, "focal_px", None) is not None:
            lines.append(f"estimated focal length {result.focal_px:.0f} px")
        self.result_label.setText("<br>".join(lines))
        session = self.session
        self.result_view.show_result(result, session.model_data, session.side, session.candidates)
        self._plot(result)
        self._show_mesh(result)
        self.refresh()
        # The result opens at its top (hand length, where the size comes from): ensureWidgetVisible
        # centres a box taller than the view, which hid those lines.
        QTimer.singleShot(0, lambda: self._scroll.verticalScrollBar().setValue(self.result_box.y()))

    def _plot(self, result: Any) -> None:
        """The result's plots, one above the other across the panel's width: each bone's length
        against the average hand's at the same hand length (the personal skeleton), and each
        chosen frame's hand length before calibration against the calibrated one. Their keys are
        in the titles: a legend inside such small axes covered the data."""
        fig = self.figure
        fig.clear()
        skeleton = getattr(result, "skeleton", None)
        rows = 2 if skeleton is not None else 1
        ax = fig.add_subplot(rows, 1, rows)
        if skeleton is not None:
            self._plot_bones(fig.add_subplot(rows, 1, 1))
        lengths = np.asarray(result.frame_lengths_mm, dtype=float)
        w = np.asarray(result.weights, dtype=float)
        x = np.arange(1, len(lengths) + 1)
        sizes = 10 + 120 * w / max(w.max(), 1e-9)
        ax.scatter(x, lengths, s=sizes, c=w, cmap="viridis", edgecolors="k", linewidths=0.4)
        ax.axhline(result.hand_length_mm, color="#e8553e", lw=2)
        ax.set_title(f"Hand length per frame; line: calibrated {result.hand_length_mm:.1f} mm",
                     fontsize=8)
        ax.set_xlabel("chosen frame, before calibration (dot size = weight)", fontsize=8)
        ax.set_ylabel("mm", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        self.canvas.draw()

    def _plot_bones(self, ax: Any) -> None:
        """Each bone of the personal skeleton minus the average hand's at the same hand length, mm
        (the result view's table), grouped by finger: longer bones red, shorter blue."""
        diff = np.array([row[3] for row in self.result_view.rows], dtype=float)
        finger = np.arange(len(diff)) // 4
        x = np.arange(len(diff)) + finger  # a gap between fingers
        colours = ["#e8553e" if d > 0 else "#4cc9f0" for d in diff]
        ax.bar(x, diff, 0.8, color=colours, edgecolor="#333333", linewidth=0.3)
        ax.axhline(0.0, color="#333333", lw=0.8)
        limit = max(NOTABLE_MM, 1.15 * float(np.abs(diff).max(initial=0.0)))
        ax.set_ylim(-limit, limit)
        ax.set_xticks([x[finger == f].mean() for f in range(5)], ["thumb", "index", "middle", "ring", "little"],
                      fontsize=7)
        ax.set_title("Your bones minus the average hand's (same length)", fontsize=8)
        ax.set_ylabel("mm", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, axis="y")

    def _show_mesh(self, result: Any) -> None:
        """The calibrated hand in the rest pose, in a small 3D view of its own."""
        import torch

        from app.hand_view import make_hand_view
        from core.model import HandModel, load_model_data

        try:
            data = load_model_data(self.state.model_path, self.session.side)
            offsets = result_offsets_mm(result)
            if getattr(result, "skeleton", None) is not None:  # the personal hand (and its surface)
                from core.model.personal import personal_model

                data = personal_model(data, np.asarray(result.skeleton), betas=np.asarray(result.shape),
                                      offsets=None if offsets is None else offsets / 1000.0)
            layer = HandModel(data)
            with torch.no_grad():
                out = layer.rest(torch.as_tensor(np.asarray(result.shape, np.float32))[None])
        except Exception as exc:  # noqa: BLE001
            log.warning("cannot show the calibrated mesh: %s", exc)
            return
        if self._mesh_view is None:
            self._mesh_view = make_hand_view(self)
            self._mesh_view.interactor.setFixedHeight(220)
            self.mesh_holder.addWidget(self._mesh_view.interactor)
        self._mesh_view.set_hand(out.vertices[0].numpy(), data.faces, out.keypoints[0].numpy())

    def close_views(self) -> None:
        if self._mesh_view is not None:
            self._mesh_view.close()
            self._mesh_view = None
        if self._stereo_detector is not None:
            self._stereo_detector.close()
            self._stereo_detector = None

    # ------------------------------------------------------------------ profile

    def save_profile_dialog(self) -> None:
        """Ask for a name (a free one is offered) and save; replacing an existing profile file is
        asked first (saving twice as "My hand" replaced the first profile and its texture)."""
        if self.result is None:
            return
        from core.profile_io import profile_file_name

        folder = self.state.profiles_directory
        default, n = "My hand", 2
        while (folder / profile_file_name(default)).exists():
            default, n = f"My hand {n}", n + 1
        name, ok = QInputDialog.getText(self, "Save the profile", "Profile name:", text=default)
        if not ok or not name.strip():
            return
        path = folder / profile_file_name(name.strip())
        if path.exists() and QMessageBox.question(
                self, "Save the profile", f"A profile file {path.name} already exists in {folder}. Replace it "
                "(and its texture)?") != QMessageBox.StandardButton.Yes:
            self.state.show_message("Not saved: the existing profile is kept.", 4000)
            return
        self.save_profile(name.strip())

    def profile_document(self, name: str) -> dict:
        with self.lock:
            return self.session.to_profile(self.result, name)

    def save_profile(self, name: str) -> Path | None:
        """Save the result (with the current texture) as a profile and make it the active one;
        returns its path, or None after telling the user why it failed."""
        try:
            return self.state.save_profile(self.profile_document(name))
        except Exception as exc:  # noqa: BLE001 - unwritable folder etc.: a message
            show_error(self, "Save the profile", describe_error(exc))
            return None
