"""The export dialog: format, pose, texture size, destination; progress; "show in folder"."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from app.jobs import Job, show_error

if TYPE_CHECKING:
    from app.state import AppState

log = logging.getLogger(__name__)

#: (label, suffix, rigged)
FORMATS = (
    ("glTF binary (.glb)", ".glb", False),
    ("Rigged glTF (.glb, skeleton + skin)", ".glb", True),
    ("Wavefront OBJ (.obj + .mtl + .png)", ".obj", False),
    ("PLY with vertex colours (.ply)", ".ply", False),
)
TEXTURE_SIZES = (256, 512, 1024, 2048)


@dataclass(frozen=True)
class ExportRequest:
    """What to export.

    Attributes:
        out: destination file. rigged: a skinned glTF. pose: (48,) axis-angle or None (rest).
        shape: (S,) shape. side: "right" / "left". texture: (H, W, 3) uint8 or None.
        texture_size: side of the written texture. model: hand model path or None.
        profile_json: the profile document to embed, or None.
        force: replace existing files beside ``out`` (the user agreed to replace them).
    """

    out: Path
    rigged: bool
    pose: np.ndarray | None
    shape: np.ndarray
    side: str
    texture: np.ndarray | None
    texture_size: int
    model: str | None
    profile_json: dict | None
    identity: Any = None  # the profile's PersonalIdentity: export its own hand (skeleton, surface)
    force: bool = False


def existing_files(req: ExportRequest) -> list[Path]:
    """The files an export of ``req`` would replace: the destination and its companions
    (``NAME.mtl``, ``NAME.png``, ``NAME.profile.json``) that exist already."""
    from core.export.api import companion_files

    files = [req.out, *companion_files(req.out, texture=req.texture is not None,
                                       profile_json=req.profile_json is not None)]
    return [p for p in dict.fromkeys(files) if p.exists()]


def run_export(req: ExportRequest, progress) -> list[Path]:
    """Export through :func:`core.export.api.export_hand`, checking the folder first."""
    from core.errors import ExportError

    folder = req.out.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create the folder {folder}: {exc.strerror}") from exc
    from core.export.api import export_hand
    from core.model import load_model_data
    from core.model.personal import identity_model

    data = identity_model(load_model_data(req.model, req.side), req.identity)  # type: ignore[arg-type]
    return list(export_hand(
        req.out, shape=req.shape, texture=req.texture, pose=req.pose, side=req.side, rigged=req.rigged,
        model=req.model, texture_size=req.texture_size, profile_json=req.profile_json, progress=progress,
        model_data=data, force=req.force,
    ))


class ExportDialog(QDialog):
    """Modeless export dialog over the current hand (the state's profile or live frame)."""

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.setWindowTitle("Export the hand")
        self.setMinimumWidth(520)
        self.job: Job | None = None
        self.written: list[Path] = []
        icon = self.style().standardIcon
        lay = QVBoxLayout(self)
        form = QFormLayout()
        self.format = QComboBox()
        for label, _, _ in FORMATS:
            self.format.addItem(label)
        self.format.currentIndexChanged.connect(self._format_changed)
        form.addRow("Format", self.format)
        pose_row = QHBoxLayout()
        self.pose_rest = QRadioButton("Rest pose (flat hand)")
        self.pose_frame = QRadioButton("Current frame")
        self.pose_rest.setChecked(True)
        pose_row.addWidget(self.pose_rest)
        pose_row.addWidget(self.pose_frame)
        form.addRow("Pose", pose_row)
        tex_row = QHBoxLayout()
        self.texture_on = QCheckBox("Skin texture")
        self.texture_size = QComboBox()
        for s in TEXTURE_SIZES:
            self.texture_size.addItem(f"{s} × {s}", s)
        self.texture_size.setCurrentIndex(TEXTURE_SIZES.index(1024))
        tex_row.addWidget(self.texture_on)
        tex_row.addWidget(self.texture_size)
        form.addRow("Texture", tex_row)
        dest_row = QHBoxLayout()
        self.dest = QLineEdit()
        browse = QPushButton(icon(QStyle.StandardPixmap.SP_DialogSaveButton), "")
        browse.setToolTip("Choose where to write")
        browse.clicked.connect(self._browse)
        dest_row.addWidget(self.dest, 1)
        dest_row.addWidget(browse)
        form.addRow("Destination", dest_row)
        lay.addLayout(form)
        self.source_label = QLabel()
        self.source_label.setWordWrap(True)
        self.source_label.setStyleSheet("color: #8a94a3;")
        lay.addWidget(self.source_label)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        lay.addWidget(self.progress)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)
        self.buttons = QDialogButtonBox()
        self.export_btn = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.ActionRole)
        self.export_btn.setIcon(icon(QStyle.StandardPixmap.SP_DialogSaveButton))
        self.export_btn.clicked.connect(self.start)
        self.cancel_btn = self.buttons.addButton("Cancel export", QDialogButtonBox.ButtonRole.ActionRole)
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.cancel)
        self.show_btn = self.buttons.addButton("Show in folder", QDialogButtonBox.ButtonRole.ActionRole)
        self.show_btn.setIcon(icon(QStyle.StandardPixmap.SP_DirOpenIcon))
        self.show_btn.setEnabled(False)
        self.show_btn.clicked.connect(self.show_in_folder)
        self.buttons.addButton(QDialogButtonBox.StandardButton.Close).clicked.connect(self.close)
        lay.addWidget(self.buttons)
        self.refresh()

    def refresh(self) -> None:
        """Defaults from the state: destination, texture availability, pose availability."""
        w = self.state
        if not self.dest.text():
            self.dest.setText(str(w.export_directory / ("hand" + FORMATS[self.format.currentIndex()][1])))
        has_frame = w.current_hand_fit() is not None
        self.pose_frame.setEnabled(has_frame)
        if not has_frame:
            self.pose_rest.setChecked(True)
        has_tex = w.current_texture() is not None
        self.texture_on.setEnabled(has_tex)
        self.texture_on.setChecked(has_tex and w.settings.texture)
        profile = w.profile
        self.source_label.setText(
            (f"Shape from the profile <b>{profile.name}</b>." if profile is not None
             else "No profile: the shape of the current frame (or the average hand).")
            + ("" if has_tex else " No texture captured yet: the hand is exported in skin colour.")
        )

    def _format_changed(self, index: int) -> None:
        suffix = FORMATS[index][1]
        text = self.dest.text().strip()
        if text:
            self.dest.setText(str(Path(text).with_suffix(suffix)))

    def _browse(self) -> None:
        suffix = FORMATS[self.format.currentIndex()][1]
        path, _ = QFileDialog.getSaveFileName(self, "Export to", self.dest.text(), f"*{suffix}")
        if path:
            self.dest.setText(str(Path(path).with_suffix(suffix)))

    def request(self) -> ExportRequest:
        _, suffix, rigged = FORMATS[self.format.currentIndex()]
        w = self.state
        fit = w.current_hand_fit() if self.pose_frame.isChecked() else None
        shape, side = w.export_shape()
        if fit is not None:
            side = fit.side
        texture = w.current_texture() if self.texture_on.isChecked() else None
        profile = w.profile
        return ExportRequest(
            out=Path(self.dest.text().strip()).expanduser().with_suffix(suffix),
            rigged=rigged,
            pose=None if fit is None else np.asarray(fit.pose, np.float32),
            shape=shape,
            side=side,
            texture=texture,
            texture_size=int(self.texture_size.currentData()),
            model=w.model_path,
            profile_json=None if profile is None else profile.raw,
            identity=None if profile is None else profile.identity,
        )

    def start(self) -> None:
        if not self.dest.text().strip():
            show_error(self, "Export", "Choose a destination file.")
            return
        req = self.request()
        existing = existing_files(req)
        if existing:  # asked here, once, for the destination and its companions alike
            names = ", ".join(p.name for p in existing)
            answer = QMessageBox.question(
                self, "Export", f"{names} already {'exists' if len(existing) == 1 else 'exist'} in "
                f"{req.out.parent}. Replace {'it' if len(existing) == 1 else 'them'}?")
            if answer != QMessageBox.StandardButton.Yes:
                self.status.setText("Not exported: the existing files are kept.")
                return
            req = dataclasses.replace(req, force=True)
        self.written = []
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.status.setText(f"Exporting to {req.out}…")
        self.export_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.show_btn.setEnabled(False)
        self.job = self.state.jobs.start(
            "Exporting", lambda progress: run_export(req, progress), on_done=self._done, on_error=self._failed,
            dialog=False, progress_to=self._progress,
        )
        self.job.cancelled.connect(self._cancelled)

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def _progress(self, fraction: float, message: str) -> None:
        if fraction < 0:
            self.progress.setRange(0, 0)
        else:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(1000 * fraction))
        if message:
            self.status.setText(message)

    def _finish(self) -> None:
        self.job = None
        self.export_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)

    def _done(self, written: Any) -> None:
        self._finish()
        self.written = [Path(p) for p in (written or [])]
        self.progress.setRange(0, 1000)
        self.progress.setValue(1000)
        names = ", ".join(p.name for p in self.written) or "nothing"
        self.status.setText(f"Wrote {names} in {self.written[0].parent if self.written else ''}")
        self.show_btn.setEnabled(bool(self.written))
        self.state.show_message(f"Exported {names}", 5000)

    def _failed(self, message: str) -> None:
        self._finish()
        self.progress.setValue(0)
        self.status.setText(f"Export failed: {message}")
        show_error(self, "Export", message)

    def _cancelled(self) -> None:
        self._finish()
        self.progress.setValue(0)
        self.status.setText("Export cancelled.")

    def show_in_folder(self) -> None:
        if self.written:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.written[0].parent)))
