"""Choosing what to track: cameras found, a video, an image folder, a session, the demo, a
colour + depth (RGB-D) source, or a stereo pair of cameras (calibrated or not); and the
intrinsics (a file, a field of view, or the calibration wizard).

The choice travels as a source spec string (:func:`core.capture.open.parse_spec`): SRC or
SRC|SRC2, with ``|depth=D|depth-intrinsics=F`` or ``|stereo-calib=S`` options.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from core.capture import DEMO_CLIP_PATH, SourceSpec, is_session_folder, parse_spec

log = logging.getLogger(__name__)

MAX_CAMERA_INDEX = 6
_camera_cache: list[int] | None = None
_camera_lock = threading.Lock()


def probe_cameras(max_index: int = MAX_CAMERA_INDEX, refresh: bool = False) -> list[int]:
    """Indices of the cameras that open (0 .. max_index - 1), cached after the first probe.

    Slow (a camera can take a second to open): call it off the GUI thread. On Linux only
    indices with a ``/dev/video<i>`` node are tried.
    """
    global _camera_cache
    with _camera_lock:
        if _camera_cache is not None and not refresh:
            return list(_camera_cache)
        found = []
        for i in range(max_index):
            if sys.platform.startswith("linux") and not os.path.exists(f"/dev/video{i}"):
                continue
            cap = cv2.VideoCapture(i)
            try:
                if cap.isOpened():
                    found.append(i)
            finally:
                cap.release()
        _camera_cache = found
        log.info("cameras found: %s", found or "none")
        return list(found)


@dataclass(frozen=True)
class SourceChoice:
    """What the source dialog returns.

    Attributes:
        sources: one SRC, or two for a stereo pair.
        intrinsics_mode: "none", "file", "fov" or "weak".
        intrinsics_file: the file for mode "file".
        fov_deg: the field of view for mode "fov".
        depth, depth_camera: an RGB-D source's depth stream and depth camera file ("" for none).
        stereo_calib: a stereo pair's calibration file ("" for an uncalibrated pair).
    """

    sources: tuple[str, ...]
    intrinsics_mode: str = "none"
    intrinsics_file: str = ""
    fov_deg: float = 60.0
    depth: str = ""
    depth_camera: str = ""
    stereo_calib: str = ""

    @property
    def spec(self) -> str:
        """The source spec string the settings keep ("a|b" for a pair, options appended)."""
        return SourceSpec(self.sources, self.depth or None, self.depth_camera or None, self.stereo_calib or None).text

    @staticmethod
    def from_spec(spec: str, intrinsics_mode: str = "none", intrinsics_file: str = "",
                  fov_deg: float = 60.0) -> "SourceChoice":
        s = parse_spec(spec)
        return SourceChoice(s.sources or ("demo",), intrinsics_mode, intrinsics_file, fov_deg,
                            s.depth or "", s.depth_camera or "", s.stereo_calib or "")


def split_spec(spec: str) -> tuple[str, ...]:
    """The SRCs of a source spec (its options left out)."""
    return parse_spec(spec).sources


def describe_source(spec: str) -> str:
    parsed = parse_spec(spec)
    parts = parsed.sources
    if len(parts) > 1:
        return "stereo " + " + ".join(describe_source(p) for p in parts)
    if parsed.depth:
        return "RGB-D " + describe_source(parts[0] if parts else "")
    s = parts[0] if parts else ""
    if s == "demo":
        return "the demo clip"
    if s.isdigit():
        return f"camera {s}"
    return Path(s).name or s


class IntrinsicsBox(QGroupBox):
    """None / file / field of view / weak perspective, plus a button that opens the calibration wizard."""

    calibrate_requested = Signal()

    def __init__(self, mode: str = "none", file: str = "", fov_deg: float = 60.0,
                 parent: QWidget | None = None) -> None:
        super().__init__("Camera intrinsics", parent)
        grid = QGridLayout(self)
        self.group = QButtonGroup(self)
        self.none = QRadioButton("From the source, else assumed")
        self.none.setToolTip("Recorded sessions and the demo carry their camera, photos their EXIF focal length; "
                             "otherwise a typical camera is assumed (perspective fitting)")
        self.file_radio = QRadioButton("From a file")
        self.fov_radio = QRadioButton("From a field of view")
        self.weak_radio = QRadioButton("Weak perspective (no camera)")
        self.weak_radio.setToolTip("HandTailor's weak-perspective fit where the source carries no camera")
        for i, b in enumerate((self.none, self.file_radio, self.fov_radio, self.weak_radio)):
            self.group.addButton(b, i)
        self.file_edit = QLineEdit(file)
        self.file_edit.setPlaceholderText("intrinsics.json or .npy")
        browse = QPushButton(self.style().standardIcon(QStyle.StandardPixmap.SP_DialogOpenButton), "")
        browse.setToolTip("Choose an intrinsics file")
        browse.clicked.connect(self._browse)
        self.fov = QDoubleSpinBox()
        self.fov.setRange(10.0, 170.0)
        self.fov.setSuffix("°")
        self.fov.setValue(fov_deg)
        self.fov.setToolTip("Horizontal field of view of the camera (a typical webcam: 60-78°)")
        wizard = QPushButton("Calibrate camera…")
        wizard.setToolTip("Find the intrinsics from photos of a checkerboard or ChArUco board")
        wizard.clicked.connect(self.calibrate_requested)
        grid.addWidget(self.none, 0, 0, 1, 3)
        grid.addWidget(self.file_radio, 1, 0)
        grid.addWidget(self.file_edit, 1, 1)
        grid.addWidget(browse, 1, 2)
        grid.addWidget(self.fov_radio, 2, 0)
        grid.addWidget(self.fov, 2, 1)
        grid.addWidget(self.weak_radio, 3, 0, 1, 3)
        grid.addWidget(wizard, 4, 0, 1, 3)
        {"file": self.file_radio, "fov": self.fov_radio, "weak": self.weak_radio}.get(mode, self.none).setChecked(True)
        self.group.idToggled.connect(lambda *_: self._sync())
        self._sync()

    def _sync(self) -> None:
        self.file_edit.setEnabled(self.file_radio.isChecked())
        self.fov.setEnabled(self.fov_radio.isChecked())

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Intrinsics file", "", "Intrinsics (*.json *.npy)")
        if path:
            self.set_file(path)

    def set_file(self, path: str) -> None:
        self.file_edit.setText(path)
        self.file_radio.setChecked(True)
        self._sync()

    @property
    def mode(self) -> str:
        if self.weak_radio.isChecked():
            return "weak"
        return "file" if self.file_radio.isChecked() else "fov" if self.fov_radio.isChecked() else "none"


class SourceDialog(QDialog):
    """Pick a source and its intrinsics. ``choice()`` after ``exec()`` returned Accepted.

    Args:
        runner: the window's :class:`~app.jobs.JobRunner` (cameras are probed off the GUI thread).
        current: the settings' last choice, preselected.
    """

    KINDS = ("camera", "video", "folder", "session", "demo", "stereo", "rgbd")

    def __init__(self, runner, current: SourceChoice, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Open a source")
        self.runner = runner
        icon = self.style().standardIcon
        layout = QVBoxLayout(self)
        box = QGroupBox("Source")
        form = QGridLayout(box)
        self.kind_group = QButtonGroup(self)
        self.radios: dict[str, QRadioButton] = {}
        labels = {
            "camera": "Camera", "video": "Video file", "folder": "Image folder",
            "session": "Recorded session", "demo": "Bundled demo clip", "stereo": "Stereo pair",
            "rgbd": "Colour + depth",
        }
        for i, kind in enumerate(self.KINDS):
            r = QRadioButton(labels[kind])
            self.radios[kind] = r
            self.kind_group.addButton(r, i)
            form.addWidget(r, i, 0)
        self.camera_combo = QComboBox()
        self.camera_combo.setToolTip("Cameras found on this computer")
        self.refresh = QPushButton(icon(QStyle.StandardPixmap.SP_BrowserReload), "")
        self.refresh.setToolTip("Look for cameras again")
        self.refresh.clicked.connect(lambda: self.probe(refresh=True))
        cam_row = QHBoxLayout()
        cam_row.addWidget(self.camera_combo, 1)
        cam_row.addWidget(self.refresh)
        form.addLayout(cam_row, 0, 1)
        self.video_edit = self._path_row(form, 1, "Video", "Videos (*.mp4 *.avi *.mov *.mkv *.webm *.m4v)")
        self.folder_edit = self._path_row(form, 2, "Image folder", None)
        self.session_edit = self._path_row(form, 3, "Session folder", None)
        demo_label = QLabel("A synthetic hand, 10 s, known camera" if DEMO_CLIP_PATH.is_file()
                            else "missing from this install")
        demo_label.setEnabled(DEMO_CLIP_PATH.is_file())
        form.addWidget(demo_label, 4, 1)
        self.radios["demo"].setEnabled(DEMO_CLIP_PATH.is_file())
        self.stereo_a = QComboBox()
        self.stereo_b = QComboBox()
        for c in (self.stereo_a, self.stereo_b):
            c.setEditable(True)
            c.setToolTip("A camera index, or a video of one of the two synchronized views")
        pair = QHBoxLayout()
        pair.addWidget(QLabel("left"))
        pair.addWidget(self.stereo_a, 1)
        pair.addWidget(QLabel("right"))
        pair.addWidget(self.stereo_b, 1)
        pair_box = QVBoxLayout()
        pair_box.addLayout(pair)
        self.stereo_calib_edit = self._file_row(pair_box, "Stereo calibration JSON (K1, K2, R, T); empty: "
                                                "the second view is only shown", "Stereo calibration (*.json)")
        form.addLayout(pair_box, 5, 1)
        rgbd = QVBoxLayout()
        self.colour_edit = self._file_row(rgbd, "Colour video (or an image folder)",
                                          "Videos (*.mp4 *.avi *.mov *.mkv *.webm *.m4v)")
        self.depth_edit = self._file_row(rgbd, "Depth video, or a folder of 16-bit PNGs", None)
        self.depth_camera_edit = self._file_row(rgbd, "Depth camera JSON (fx, fy, cx, cy, depth_scale_m [, R, T])",
                                                "Depth camera (*.json)")
        form.addLayout(rgbd, 6, 1)
        layout.addWidget(box)
        self.intrinsics = IntrinsicsBox(current.intrinsics_mode, current.intrinsics_file, current.fov_deg)
        layout.addWidget(self.intrinsics)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Open | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self._preselect(current)
        self.kind_group.idToggled.connect(lambda *_: self._sync())
        self.probe()
        self._sync()
        # Wide enough for the path fields' hints (at its natural width they ended in "…").
        fields = [e for e in self.findChildren(QLineEdit) if e.placeholderText()]
        lacking = max(e.fontMetrics().horizontalAdvance(e.placeholderText()) + 16 - e.sizeHint().width()
                      for e in fields)
        self.setMinimumWidth(self.sizeHint().width() + max(0, lacking))

    def _path_field(self, what: str, tip: str, pick: Callable[[], str]) -> tuple[QHBoxLayout, QLineEdit]:
        """A path field and its browse button; ``pick`` asks for a path ("" when cancelled)."""
        edit = QLineEdit()
        edit.setPlaceholderText(what)
        btn = QPushButton(self.style().standardIcon(QStyle.StandardPixmap.SP_DirOpenIcon), "")
        btn.setToolTip(tip)

        def browse() -> None:
            path = pick()
            if path:
                edit.setText(path)

        btn.clicked.connect(browse)
        h = QHBoxLayout()
        h.addWidget(edit, 1)
        h.addWidget(btn)
        return h, edit

    def _path_row(self, grid: QGridLayout, row: int, what: str, filt: str | None) -> QLineEdit:
        """A path field in ``grid``'s ``row``: a file with ``filt``, else a folder."""
        def pick() -> str:
            if filt:
                return QFileDialog.getOpenFileName(self, what, "", filt)[0]
            return QFileDialog.getExistingDirectory(self, what)

        h, edit = self._path_field(what, f"Choose a {what.lower()}", pick)
        grid.addLayout(h, row, 1)
        return edit

    def _file_row(self, box: QVBoxLayout, what: str, filt: str | None) -> QLineEdit:
        """A path field with a browse button (a file with ``filt``, else a file or a folder)."""
        def pick() -> str:
            path = QFileDialog.getOpenFileName(self, what, "", filt or "All files (*)")[0]
            return path or (QFileDialog.getExistingDirectory(self, what) if filt is None else "")

        h, edit = self._path_field(what, what, pick)
        box.addLayout(h)
        return edit

    def _preselect(self, current: SourceChoice) -> None:
        s = current.sources
        self.stereo_calib_edit.setText(current.stereo_calib)
        if current.depth and s:
            self.radios["rgbd"].setChecked(True)
            self.colour_edit.setText(s[0])
            self.depth_edit.setText(current.depth)
            self.depth_camera_edit.setText(current.depth_camera)
        elif len(s) > 1:
            self.radios["stereo"].setChecked(True)
            self.stereo_a.setEditText(s[0])
            self.stereo_b.setEditText(s[1])
        elif not s or s[0] == "demo":
            self.radios["demo" if DEMO_CLIP_PATH.is_file() else "camera"].setChecked(True)
        elif s[0].isdigit():
            self.radios["camera"].setChecked(True)
        elif Path(s[0]).is_dir():
            kind = "session" if is_session_folder(s[0]) else "folder"
            self.radios[kind].setChecked(True)
            (self.session_edit if kind == "session" else self.folder_edit).setText(s[0])
        else:
            self.radios["video"].setChecked(True)
            self.video_edit.setText(s[0])

    def probe(self, refresh: bool = False) -> None:
        """List the cameras (probed in a job; the list fills in when it is done)."""
        self.camera_combo.clear()
        self.camera_combo.addItem("Looking for cameras…")
        self.camera_combo.setEnabled(False)
        self.refresh.setEnabled(False)
        self.runner.start("Looking for cameras", lambda progress: probe_cameras(refresh=refresh),
                          on_done=self._cameras_found, dialog=False)

    def _cameras_found(self, cameras: list[int]) -> None:
        try:
            self.camera_combo.clear()
        except RuntimeError:  # the dialog was closed meanwhile
            return
        self.refresh.setEnabled(True)
        for i in cameras:
            self.camera_combo.addItem(f"Camera {i}", str(i))
        for combo in (self.stereo_a, self.stereo_b):
            text = combo.currentText()
            combo.clear()
            combo.addItems([str(i) for i in cameras])
            combo.setEditText(text)
        if cameras:
            self.camera_combo.setEnabled(True)
        else:
            self.camera_combo.addItem("No camera found")
        self._sync()

    def _sync(self) -> None:
        kind = self.kind()
        ok = True
        if kind == "camera":
            ok = self.camera_combo.currentData() is not None
        elif kind in ("video", "folder", "session"):
            edit = {"video": self.video_edit, "folder": self.folder_edit, "session": self.session_edit}[kind]
            ok = bool(edit.text().strip()) or True  # a typed path is checked when it opens
        self.buttons.button(QDialogButtonBox.StandardButton.Open).setEnabled(ok)

    def kind(self) -> str:
        return self.KINDS[max(self.kind_group.checkedId(), 0)]

    def choice(self) -> SourceChoice:
        kind = self.kind()
        if kind == "camera":
            sources: tuple[str, ...] = (str(self.camera_combo.currentData() or "0"),)
        elif kind == "video":
            sources = (self.video_edit.text().strip(),)
        elif kind == "folder":
            sources = (self.folder_edit.text().strip(),)
        elif kind == "session":
            sources = (self.session_edit.text().strip(),)
        elif kind == "stereo":
            sources = (self.stereo_a.currentText().strip(), self.stereo_b.currentText().strip())
        elif kind == "rgbd":
            sources = (self.colour_edit.text().strip(),)
        else:
            sources = ("demo",)
        rgbd = kind == "rgbd"
        return SourceChoice(sources, self.intrinsics.mode, self.intrinsics.file_edit.text().strip(),
                            float(self.intrinsics.fov.value()),
                            depth=self.depth_edit.text().strip() if rgbd else "",
                            depth_camera=self.depth_camera_edit.text().strip() if rgbd else "",
                            stereo_calib=self.stereo_calib_edit.text().strip() if kind == "stereo" else "")
