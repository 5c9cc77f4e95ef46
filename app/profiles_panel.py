"""The profiles panel: saved hand profiles; use one (identity-aware tracking), import, rename, delete.

Bound to the application state (:class:`app.state.AppState`): it lists the state's profiles
folder, marks the state's active profile and follows its changes. Below the list, the selected
profile's hand against the average hand (:class:`app.calibration_result.CalibrationResultView`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from app.calibration_result import CalibrationResultView
from app.jobs import describe_error, show_error

if TYPE_CHECKING:
    from app.state import AppState

log = logging.getLogger(__name__)


#: How each scale source reads in the list (the prior is said plainly: it is not a measurement).
SCALE_WORDS = {"prior": "size: population prior (not measured)", "hand_length": "size: measured length",
               "aruco": "size: marker sheet", "stereo": "size: stereo pair"}


def profile_summary(p) -> str:
    tex = " · textured" if p.texture is not None and Path(p.texture).is_file() else ""
    personal = " · own skeleton" if getattr(p, "skeleton_mm", None) is not None else ""
    offsets = getattr(p, "surface_offsets_mm", None)
    if offsets is not None and len(offsets):
        personal += f" · surface (mean offset {float(np.linalg.norm(offsets, axis=1).mean()):.1f} mm)"
    scale = SCALE_WORDS.get(p.scale_source, p.scale_source)
    return (f"{p.name}\n{p.hand_length_mm:.0f} × {p.hand_width_mm:.0f} mm · {p.handedness}{personal}{tex}\n"
            f"{scale}")


class ProfilesPanel(QWidget):
    """Lists the profiles in the profiles folder; the active one is shown in bold."""

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        icon = self.style().standardIcon
        lay = QVBoxLayout(self)
        self.active_label = QLabel()
        self.active_label.setWordWrap(True)
        lay.addWidget(self.active_label)
        self.list = QListWidget()
        self.list.setToolTip("Double-click a profile to track with it")
        self.list.itemDoubleClicked.connect(lambda *_: self.use_selected())
        self.list.currentItemChanged.connect(lambda *_: self._sync())
        self.list.setMinimumHeight(140)
        # Summaries wrap at the panel's width (a long line needed a horizontal scroll bar).
        self.list.setWordWrap(True)
        self.list.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        lay.addWidget(self.list, 1)
        grid = QHBoxLayout()
        self.use_btn = QPushButton(icon(QStyle.StandardPixmap.SP_DialogApplyButton), "Use")
        self.use_btn.setToolTip("Track with this profile's hand shape (identity-aware tracking)")
        self.use_btn.clicked.connect(self.use_selected)
        self.none_btn = QPushButton(icon(QStyle.StandardPixmap.SP_DialogCancelButton), "None")
        self.none_btn.setToolTip("Track without a profile (the shape is estimated per frame)")
        self.none_btn.clicked.connect(lambda: self.state.set_profile(None))
        self.import_btn = QPushButton(icon(QStyle.StandardPixmap.SP_DialogOpenButton), "Load…")
        self.import_btn.setToolTip("Load a profile file and use it")
        self.import_btn.clicked.connect(self.import_dialog)
        for b in (self.use_btn, self.none_btn, self.import_btn):
            grid.addWidget(b)
        lay.addLayout(grid)
        grid = QHBoxLayout()
        self.rename_btn = QPushButton(icon(QStyle.StandardPixmap.SP_FileDialogDetailedView), "Rename…")
        self.rename_btn.clicked.connect(self.rename_dialog)
        self.delete_btn = QPushButton(icon(QStyle.StandardPixmap.SP_TrashIcon), "Delete")
        self.delete_btn.clicked.connect(self.delete_selected)
        self.refresh_btn = QPushButton(icon(QStyle.StandardPixmap.SP_BrowserReload), "")
        self.refresh_btn.setToolTip("Read the profiles folder again")
        self.refresh_btn.clicked.connect(self.refresh)
        for b in (self.rename_btn, self.delete_btn, self.refresh_btn):
            grid.addWidget(b)
        lay.addLayout(grid)
        self.folder_label = QLabel()
        self.folder_label.setWordWrap(True)
        self.folder_label.setStyleSheet("color: #8a94a3;")
        lay.addWidget(self.folder_label)
        self.details = CalibrationResultView()
        self.details.setToolTip("The selected profile's hand against the average hand")
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(self.details)
        lay.addWidget(scroll, 2)
        self._profiles: dict[str, object] = {}
        state.profile_changed.connect(self._on_profile_changed)
        state.model_changed.connect(lambda *_: self._sync())
        self.refresh()

    def _on_profile_changed(self, profile, _restart: bool) -> None:
        self.refresh()
        if profile is not None and profile.path is not None:
            self.select(profile.path)

    @property
    def directory(self) -> Path:
        return self.state.profiles_directory

    def refresh(self) -> None:
        from core.profile_io import list_profiles

        active = self.state.profile
        active_path = str(active.path) if active is not None and active.path is not None else None
        current = self.list.currentItem().data(Qt.ItemDataRole.UserRole) if self.list.currentItem() else None
        self.list.clear()
        self._profiles = {}
        for p in list_profiles(self.directory):
            self._profiles[str(p.path)] = p
            item = QListWidgetItem(profile_summary(p))
            item.setData(Qt.ItemDataRole.UserRole, str(p.path))
            item.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_FileIcon))
            if active_path is not None and Path(active_path) == p.path:
                font = QFont(item.font())
                font.setBold(True)
                item.setFont(font)
                item.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_DialogApplyButton))
            self.list.addItem(item)
            if str(p.path) == current:
                self.list.setCurrentItem(item)
        if active is None:
            self.active_label.setText("Active: none. Tracking estimates the shape per frame.")
        else:
            prior = (" <i>Its size is the population prior (no metric anchor), not a measurement.</i>"
                     if active.scale_source == "prior" else "")
            self.active_label.setText(f"Active: <b>{active.name}</b> ({active.hand_length_mm:.0f} mm).{prior}")
        self.folder_label.setText(f"Folder: {self.directory}")
        self._sync()

    def _sync(self) -> None:
        has = self.list.currentItem() is not None
        self.show_details(self._profiles.get(self.selected_path() or ""))
        for b in (self.use_btn, self.rename_btn, self.delete_btn):
            b.setEnabled(has)
        self.none_btn.setEnabled(self.state.profile is not None)

    def show_details(self, profile) -> None:
        """Show ``profile``'s hand against the average (None: nothing)."""
        data = self.state.model_data
        if profile is None or data is None:
            self.details.clear()
            return
        try:
            self.details.show_profile(profile, data)
        except Exception:  # noqa: BLE001 - a profile that cannot be drawn still lists
            log.warning("cannot show the profile %s", profile.name, exc_info=True)
            self.details.clear()

    def selected_path(self) -> str | None:
        item = self.list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def select(self, path: str | Path) -> None:
        for i in range(self.list.count()):
            if Path(self.list.item(i).data(Qt.ItemDataRole.UserRole)) == Path(path):
                self.list.setCurrentRow(i)
                return

    def use_selected(self) -> None:
        path = self.selected_path()
        if path:
            self.state.load_profile_file(path)

    def import_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load a profile", str(self.directory), "Profiles (*.json)")
        if path:
            self.state.load_profile_file(path)

    def rename_dialog(self) -> None:
        path = self.selected_path()
        if not path:
            return
        profile = self._profiles.get(path)  # its name to edit, not an empty field
        name, ok = QInputDialog.getText(self, "Rename the profile", "New name:",
                                        text="" if profile is None else profile.name)
        if ok and name.strip() and (profile is None or name.strip() != profile.name):
            self.rename(path, name)

    def rename(self, path: str, name: str) -> Path | None:
        from core.profile_io import rename_profile

        try:
            new = rename_profile(path, name, self.directory)
        except Exception as exc:  # noqa: BLE001 - InputError/OSError: a message
            show_error(self, "Rename the profile", describe_error(exc))
            return None
        active = self.state.profile
        if active is not None and active.path is not None and Path(active.path) == Path(path):
            self.state.load_profile_file(str(new), restart=False)
        self.refresh()
        self.select(new)
        return new

    def delete_selected(self, confirm: bool = True) -> None:
        path = self.selected_path()
        if not path:
            return
        if confirm and QMessageBox.question(self, "Delete the profile", f"Delete {Path(path).name} and its texture?") \
                != QMessageBox.StandardButton.Yes:
            return
        self.delete(path)

    def delete(self, path: str) -> None:
        from core.profile_io import delete_profile

        active = self.state.profile
        try:
            delete_profile(path, self.directory)
        except Exception as exc:  # noqa: BLE001
            show_error(self, "Delete the profile", describe_error(exc))
            return
        if active is not None and active.path is not None and Path(active.path) == Path(path):
            self.state.set_profile(None)
        self.refresh()
