"""The camera calibration wizard: intrinsics from photos of a checkerboard or ChArUco board.

Images come from a folder or are grabbed from the live source; the calibration itself
(:func:`core.camera.calibrate_camera_images`) runs as a job. The result is saved as an
intrinsics JSON (the intrinsics file of docs/ARCHITECTURE.md) and can be used for tracking at once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PySide6.QtCore import Slot
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from app.jobs import JobRunner, show_error
from core.camera import CalibrationResult, CharucoPattern, CheckerboardPattern, calibrate_camera_images, save_intrinsics
from core.capture import IMAGE_EXTENSIONS
from core.errors import InputError


def read_images(folder: str | Path) -> tuple[list[np.ndarray], list[str]]:
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    images, names = [], []
    for p in paths:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is not None:
            images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            names.append(str(p))
    if not images:
        raise InputError(f"no readable images in {folder}")
    return images, names


class CameraCalibrationDialog(QDialog):
    """Guided intrinsics calibration.

    Args:
        runner: the window's job runner.
        grab_frame: returns the live source's current RGB image (None when nothing plays).
    """

    def __init__(self, runner: JobRunner, grab_frame: Callable[[], np.ndarray | None] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Calibrate the camera")
        self.runner = runner
        # Calibrate is enabled again once the runner's job is over (``_sync`` in the job's own
        # result or error slots still saw it running: after a failed try, say a wrong board
        # size, Calibrate stayed greyed out).
        runner.job_finished.connect(self._job_finished)
        self.grab_frame = grab_frame
        self.images: list[np.ndarray] = []
        self.names: list[str] = []
        self.result: CalibrationResult | None = None
        self.saved_path: str | None = None
        icon = self.style().standardIcon
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel(
            "1. Choose the board. 2. Add 10-20 sharp photos of the whole board at different tilts\n"
            "   (from a folder, or grab them from the live camera). 3. Calibrate, then save."
        ))
        form = QFormLayout()
        self.kind = QComboBox()
        self.kind.addItems(["Checkerboard", "ChArUco board"])
        form.addRow("Board", self.kind)
        self.stack = QStackedWidget()
        cb = QWidget()
        cbf = QFormLayout(cb)
        self.cols = QSpinBox(); self.cols.setRange(3, 30); self.cols.setValue(9)
        self.rows = QSpinBox(); self.rows.setRange(3, 30); self.rows.setValue(6)
        self.square = QDoubleSpinBox(); self.square.setRange(1, 200)
        self.square.setValue(25); self.square.setSuffix(" mm")
        cbf.addRow("Inner corners across", self.cols)
        cbf.addRow("Inner corners down", self.rows)
        cbf.addRow("Square", self.square)
        ch = QWidget()
        chf = QFormLayout(ch)
        self.sx = QSpinBox(); self.sx.setRange(3, 30); self.sx.setValue(7)
        self.sy = QSpinBox(); self.sy.setRange(3, 30); self.sy.setValue(5)
        self.ch_square = QDoubleSpinBox(); self.ch_square.setRange(1, 200)
        self.ch_square.setValue(40); self.ch_square.setSuffix(" mm")
        self.ch_marker = QDoubleSpinBox(); self.ch_marker.setRange(1, 200)
        self.ch_marker.setValue(30); self.ch_marker.setSuffix(" mm")
        self.dictionary = QComboBox()
        self.dictionary.addItems(["DICT_4X4_50", "DICT_4X4_100", "DICT_5X5_100", "DICT_6X6_250"])
        self.dictionary.setCurrentText("DICT_5X5_100")
        chf.addRow("Squares across", self.sx)
        chf.addRow("Squares down", self.sy)
        chf.addRow("Square", self.ch_square)
        chf.addRow("Marker", self.ch_marker)
        chf.addRow("Dictionary", self.dictionary)
        self.stack.addWidget(cb)
        self.stack.addWidget(ch)
        self.kind.currentIndexChanged.connect(self.stack.setCurrentIndex)
        form.addRow(self.stack)
        lay.addLayout(form)
        row = QHBoxLayout()
        self.add_folder = QPushButton(icon(QStyle.StandardPixmap.SP_DirOpenIcon), "Add a folder…")
        self.add_folder.clicked.connect(self._choose_folder)
        self.grab = QPushButton(icon(QStyle.StandardPixmap.SP_DialogApplyButton), "Grab live frame")
        self.grab.setToolTip("Add the camera's current image")
        self.grab.setEnabled(grab_frame is not None)
        self.grab.clicked.connect(self._grab)
        self.clear = QPushButton(icon(QStyle.StandardPixmap.SP_DialogResetButton), "Clear")
        self.clear.clicked.connect(self._clear)
        for b in (self.add_folder, self.grab, self.clear):
            row.addWidget(b)
        lay.addLayout(row)
        self.count_label = QLabel()
        self.result_label = QLabel("Not calibrated yet.")
        self.result_label.setWordWrap(True)
        lay.addWidget(self.count_label)
        lay.addWidget(self.result_label)
        self.buttons = QDialogButtonBox()
        self.calibrate_btn = self.buttons.addButton("Calibrate", QDialogButtonBox.ButtonRole.ActionRole)
        self.calibrate_btn.clicked.connect(self.calibrate)
        self.save_btn = self.buttons.addButton("Save and use", QDialogButtonBox.ButtonRole.AcceptRole)
        self.save_btn.clicked.connect(self._save)
        self.buttons.addButton(QDialogButtonBox.StandardButton.Close).clicked.connect(self.reject)
        lay.addWidget(self.buttons)
        self._sync()

    def pattern(self) -> CheckerboardPattern | CharucoPattern:
        if self.kind.currentIndex() == 0:
            return CheckerboardPattern(self.cols.value(), self.rows.value(), self.square.value() / 1000)
        return CharucoPattern(self.sx.value(), self.sy.value(), self.ch_square.value() / 1000,
                              self.ch_marker.value() / 1000, self.dictionary.currentText())

    def _sync(self) -> None:
        self.count_label.setText(f"{len(self.images)} image(s)")
        self.calibrate_btn.setEnabled(len(self.images) >= 3 and not self.runner.busy)
        self.save_btn.setEnabled(self.result is not None)

    @Slot(object)
    def _job_finished(self, _job: object) -> None:
        self._sync()

    def add_images(self, images: list[np.ndarray], names: list[str]) -> None:
        self.images += images
        self.names += names
        self._sync()

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Photos of the board")
        if folder:
            try:
                self.add_images(*read_images(folder))
            except InputError as exc:
                show_error(self, "Camera calibration", str(exc))

    def _grab(self) -> None:
        image = self.grab_frame() if self.grab_frame else None
        if image is None:
            show_error(self, "Camera calibration", "Nothing is playing: open a camera first.")
            return
        self.add_images([np.array(image)], [f"live frame {len(self.images) + 1}"])

    def _clear(self) -> None:
        self.images, self.names, self.result = [], [], None
        self.result_label.setText("Not calibrated yet.")
        self._sync()

    def calibrate(self) -> None:
        images, names, pattern = list(self.images), list(self.names), self.pattern()

        def work(progress):
            progress(-1, f"Looking for the board in {len(images)} images…")
            return calibrate_camera_images(images, pattern, names)

        self.calibrate_btn.setEnabled(False)
        self.result_label.setText(f"Looking for the board in {len(images)} images…")
        self.runner.start("Calibrating the camera", work, on_done=self._done,
                          on_error=self._failed)

    def _failed(self, message: str) -> None:
        self.result_label.setText(f"Calibration failed: {message}")
        show_error(self, "Camera calibration", message)
        self._sync()

    def _done(self, result: CalibrationResult) -> None:
        self.result = result
        i = result.intrinsics
        self.result_label.setText(
            f"fx {i.fx:.1f}  fy {i.fy:.1f}  cx {i.cx:.1f}  cy {i.cy:.1f} px · "
            f"RMS {result.rms_px:.3f} px · board found in {len(result.used_images)} of {len(self.images)} images"
        )
        self._sync()

    def _save(self) -> None:
        if self.result is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save the intrinsics", "intrinsics.json", "JSON (*.json)")
        if path:
            self.save_to(path)

    def save_to(self, path: str) -> None:
        try:
            save_intrinsics(path, self.result.intrinsics)
        except OSError as exc:
            show_error(self, "Camera calibration", f"Cannot write {path}: {exc}")
            return
        self.saved_path = path
        self.accept()
