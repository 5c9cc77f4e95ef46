"""The main window: camera panel, 3D hand view, panels (calibration, profiles, tracking),
toolbar, menus and the status area."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PySide6.QtCore import QByteArray, QSettings, Qt, QThread, QTimer, Slot
from PySide6.QtGui import QAction, QColor, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QMainWindow,
    QSplitter,
    QStyle,
    QToolBar,
    QWidget,
)

from app.calibration_panel import CalibrationPanel
from app.camera_view import CameraView
from app.hand_view import make_hand_view
from app.jobs import JobRunner, show_error
from app.profiles_panel import ProfilesPanel
from app.settings import AppSettings, open_store
from app.sources import SourceChoice, SourceDialog, describe_source, split_spec
from app.state import AppState, load_profile_for
from app.status_bar import ElidedLabel, StatusBar
from app.tracking_panel import TrackingPanel
from app.worker import LiveUpdate, TrackingConfig, TrackingWorker
from core.camera import fov_from_focal
from core.engine import EngineSettings
from core.errors import HandTwinError
from core.fit import FitSettings
from core.model import HandModel, load_model_data

if TYPE_CHECKING:
    from core.profile_io import Profile


def camera_text(result) -> str:
    """The status bar's camera: focal length, field of view and where it came from."""
    cam = getattr(result, "camera", None)
    if cam is None:
        return ""
    width = cam.width if cam.width is not None else 2 * cam.cx + 1
    fov = fov_from_focal(cam.fx, width)
    cue = getattr(result, "camera_cue", None)
    estimated = {"hand": " (from the hand)", "scene": " (from the scene)"}.get(
        cue, " (estimated)")
    origin = {"given": "", "exif": " (EXIF)", "assumed": " (assumed)", "estimated": estimated,
              "weak": " (weak perspective)"}.get(result.camera_source, "")
    return f"camera f {cam.fx:.0f} px · {fov:.0f}°{origin}"


log = logging.getLogger(__name__)

STAGE_ORDER = ("detect", "fit", "refine", "segment", "texture")


def engine_settings(model: str | None, s: AppSettings) -> EngineSettings:
    """EngineSettings from the app settings."""
    return EngineSettings(model=model, device=s.device, fit=FitSettings(iterations=s.fit_iterations),
                          refine_iterations=int(s.refine_iterations))


__all__ = ["MainWindow", "camera_text", "engine_settings", "load_profile_for"]

#: Where the window's geometry and dock layout are kept between runs (QSettings keys).
LAYOUT_KEYS = ("window/geometry", "window/layout")

#: The settings a running source is restarted for when they change.
RESTART_FIELDS = ("device", "fit_iterations", "refine_iterations", "realtime")


class MainWindow(QMainWindow):
    """HandTwin's main window: composes the views, the panels and the tracking worker around
    one :class:`~app.state.AppState` (``self.state``), which the panels bind to.

    Args:
        model: hand model path (None: ``$HANDTWIN_MODEL`` or the bundled open hand).
        source: a SRC to start tracking at once (camera index, "demo", video, folder, "a|b"
            for a stereo pair), or None.
        store: where settings persist (None: the user's QSettings).
        profile: a profile file to use at once (None: the last active one, if any).
        camera: the command line's camera for this run, ``(mode, file, fov_deg)`` with mode
            "file", "fov" or "weak" (see :class:`~app.settings.AppSettings`), or None.
        realtime: the command line's pacing for this run (False: files as fast as tracking
            goes), or None for the saved setting.
    """

    def __init__(self, model: str | None = None, source: str | None = None, store: QSettings | None = None,
                 profile: str | None = None, camera: tuple[str, str, float | None] | None = None,
                 realtime: bool | None = None) -> None:
        super().__init__()
        self.store = store if store is not None else open_store()
        settings = AppSettings.load(self.store)
        run_only: dict[str, object] = {}
        if camera is not None:  # the command line's camera for this run (not saved)
            mode, file, fov = camera
            run_only = dict(intrinsics_mode=mode, intrinsics_file=file,
                            fov_deg=settings.fov_deg if fov is None else fov)
        if realtime is not None:  # the command line's pacing for this run (not saved)
            run_only["realtime"] = realtime
        self._fit_default_size(1560, 900)
        self.model_path = model
        self.jobs = JobRunner(self)
        self.state = AppState(self.store, settings, model, self.jobs, self, run_only=run_only)
        self.camera_view = CameraView(self)
        self.hand_view = make_hand_view(self)
        self.layer: HandModel | None = None
        self._thread: QThread | None = None
        self._worker: TrackingWorker | None = None
        self._tracked_settings: AppSettings | None = None
        self.frames_shown = 0
        self._closing = False
        st = self.state
        st.message.connect(self._on_state_message)
        st.error.connect(self._on_state_error)
        st.settings_changed.connect(self._on_settings_changed)
        st.profile_changed.connect(self._on_profile_changed)
        st.texture_changed.connect(self.hand_view.set_texture)
        st.frame_hook_changed.connect(lambda *_: (self.install_frame_hook(), self._sync_actions()))
        st.calibration_changed.connect(self.calibration_finished)

        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(self.camera_view)
        splitter.addWidget(self.hand_view.interactor)
        splitter.setSizes([600, 560])
        self.setCentralWidget(splitter)

        self._build_status()
        self._build_actions()
        self._build_docks()
        self._build_menus_and_toolbar()
        self._restore_layout()

        self._draw_timer = QTimer(self)
        self._draw_timer.setInterval(15)
        self._draw_timer.timeout.connect(self._draw_latest)
        self._draw_timer.start()
        self.load_model(model)
        if profile is not None:
            self.load_profile_file(profile, restart=False)
        elif self.settings.active_profile:
            if Path(self.settings.active_profile).is_file():
                self.load_profile_file(self.settings.active_profile, restart=False, quiet=True)
        self._update_title()
        self._sync_actions()
        if source is not None:
            QTimer.singleShot(0, lambda: self.start_source(source))

    def _restore_layout(self) -> None:
        """The size, position and dock layout the window had when it was last closed."""
        geometry, layout = self.store.value(LAYOUT_KEYS[0]), self.store.value(LAYOUT_KEYS[1])
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        if isinstance(layout, QByteArray) and not layout.isEmpty():
            self.restoreState(layout)

    def _save_layout(self) -> None:
        self.store.setValue(LAYOUT_KEYS[0], self.saveGeometry())
        self.store.setValue(LAYOUT_KEYS[1], self.saveState())

    def _fit_default_size(self, width: int, height: int) -> None:
        """Open at ``width`` x ``height``, or the screen's free area where that is smaller."""
        screen = self.screen()
        if screen is not None:
            free = screen.availableGeometry()
            width, height = min(width, free.width()), min(height, free.height())
        self.resize(width, height)

    # ================================================================== the shared state

    @property
    def settings(self) -> AppSettings:
        return self.state.settings

    @settings.setter
    def settings(self, value: AppSettings) -> None:
        self.state.set_settings(value, save=False)

    @property
    def active_profile(self) -> Profile | None:
        return self.state.profile

    @property
    def model_data(self):  # -> core.model.HandModelData | None
        return self.state.model_data

    @property
    def current_update(self) -> LiveUpdate | None:
        return self.state.current_update

    @current_update.setter
    def current_update(self, update: LiveUpdate | None) -> None:
        self.state.current_update = update

    @property
    def last_message(self) -> str:
        return self.state.last_message

    @last_message.setter
    def last_message(self, text: str) -> None:
        self.state.last_message = text

    def _on_state_message(self, text: str, ms: int) -> None:
        self.statusBar().showMessage(text, ms)

    def _on_state_error(self, title: str, text: str) -> None:
        self.statusBar().showMessage(text, 8000)
        show_error(self, title, text)

    def _on_settings_changed(self, settings: AppSettings) -> None:
        """Restart a running source when a setting it was started with changed."""
        old = self._tracked_settings
        if self._worker is None or old is None:
            return
        if any(getattr(old, f) != getattr(settings, f) for f in RESTART_FIELDS):
            self.start_source("|".join(self._worker.config.sources))

    # ================================================================== building

    def _icon(self, name: str):
        return self.style().standardIcon(getattr(QStyle.StandardPixmap, name))

    def _action(self, text: str, icon: str | None = None, shortcut: str | None = None, tip: str = "",
                slot=None, checkable: bool = False, checked: bool = False) -> QAction:
        a = QAction(text, self)
        if icon:
            a.setIcon(self._icon(icon))
        if shortcut:
            a.setShortcut(QKeySequence(shortcut))
            a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        a.setCheckable(checkable)
        if checkable:
            a.setChecked(checked)
        tip = tip or text
        a.setToolTip(f"{tip} ({a.shortcut().toString()})" if shortcut else tip)
        a.setStatusTip(tip)
        if slot is not None:
            (a.toggled if checkable else a.triggered).connect(slot)
        return a

    def _build_actions(self) -> None:
        s = self.settings
        self.action_open = self._action("Open source…", "SP_DialogOpenButton", "Ctrl+O",
                                        "Choose a camera, video, image folder, session, the demo or a stereo pair",
                                        self.open_source_dialog)
        self.action_demo = self._action("Demo", "SP_ComputerIcon", "Ctrl+D", "Track the bundled demo clip",
                                        lambda: self.start_source("demo"))
        self.action_video = self._action("Open video…", None, None, "Track a video file", self._open_video)
        self.action_folder = self._action("Open image folder…", None, None, "Track an image folder", self._open_folder)
        self.action_start = self._action("Start", "SP_MediaPlay", "Space",
                                         "Start tracking the last source, or pause and resume", self.start_or_pause)
        self.action_pause = self._action("Pause", "SP_MediaPause", None, "Pause or resume tracking",
                                         self._set_paused, checkable=True)
        self.action_stop = self._action("Stop", "SP_MediaStop", "Ctrl+.", "Stop tracking", self.stop_tracking)
        self.action_record = self._action("Record", "SP_DialogSaveButton", "Ctrl+R",
                                          "Record frames and results to a session folder", self.set_recording,
                                          checkable=True)
        self.action_replay = self._action("Replay session…", "SP_MediaSeekBackward", "Ctrl+Shift+R",
                                          "Track a recorded session again", self.replay_dialog)
        self.action_capture = self._action("Capture frame", "SP_DialogApplyButton", "C",
                                           "Offer the current frame to the calibration session",
                                           lambda: self.calibration_panel.capture_current())
        self.action_export = self._action("Export…", "SP_DriveFDIcon", "Ctrl+E",
                                          "Export the personalized hand (OBJ, GLB, rigged GLB, PLY)",
                                          self.export_dialog)
        self.action_camera_calib = self._action("Calibrate camera…", "SP_FileDialogContentsView", None,
                                                "Intrinsics from photos of a checkerboard or ChArUco board",
                                                self.camera_calibration_dialog)
        self.action_skeleton = self._action("Skeleton", None, "K", "Show the keypoints and bones",
                                            self._set_skeleton, checkable=True, checked=True)
        self.action_wireframe = self._action("Wireframe", None, "W", "Show mesh edges",
                                             self.hand_view.set_wireframe, checkable=True)
        self.action_silhouette = self._action("Silhouette", None, "S", "Overlay the fitted and segmented silhouettes",
                                              self._set_silhouette, checkable=True, checked=s.silhouette)
        self.action_texture = self._action("Texture", None, "T", "Capture and show the skin texture",
                                           self._set_texture, checkable=True, checked=s.texture)
        self.action_reset = self._action("Reset view", "SP_BrowserReload", "R", "Frame the hand again",
                                         self.hand_view.reset_view)
        self.action_quit = self._action("Quit", None, "Ctrl+Q", "Quit HandTwin", self.close)
        for a in (self.action_open, self.action_demo, self.action_start, self.action_stop, self.action_record,
                  self.action_replay, self.action_capture, self.action_export, self.action_skeleton,
                  self.action_wireframe, self.action_silhouette, self.action_texture, self.action_reset,
                  self.action_quit, self.action_pause):
            self.addAction(a)

    def _build_menus_and_toolbar(self) -> None:
        m = self.menuBar()
        f = m.addMenu("&File")
        for a in (self.action_open, self.action_demo, self.action_video, self.action_folder, self.action_replay):
            f.addAction(a)
        f.addSeparator()
        f.addAction(self.action_export)
        f.addSeparator()
        f.addAction(self.action_quit)
        t = m.addMenu("&Tracking")
        for a in (self.action_start, self.action_stop, self.action_record):
            t.addAction(a)
        t.addSeparator()
        t.addAction(self.action_camera_calib)
        c = m.addMenu("&Calibration")
        c.addAction(self.action_capture)
        c.addAction(self.calibration_dock.toggleViewAction())
        c.addAction(self.profiles_dock.toggleViewAction())
        v = m.addMenu("&View")
        for a in (self.action_skeleton, self.action_wireframe, self.action_silhouette, self.action_texture,
                  self.action_reset):
            v.addAction(a)
        v.addSeparator()
        v.addAction(self.tracking_dock.toggleViewAction())

        bar = QToolBar("Main", self)
        bar.setObjectName("main-toolbar")
        bar.setMovable(False)
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.addToolBar(bar)
        for a in (self.action_open, self.action_demo):
            bar.addAction(a)
        bar.addSeparator()
        for a in (self.action_start, self.action_stop, self.action_record, self.action_replay):
            bar.addAction(a)
        bar.addSeparator()
        bar.addAction(self.action_capture)
        bar.addAction(self.action_export)
        bar.addSeparator()
        for a in (self.action_skeleton, self.action_wireframe, self.action_silhouette, self.action_texture,
                  self.action_reset):
            bar.addAction(a)
        self.toolbar = bar

    def _build_docks(self) -> None:
        self.calibration_panel = CalibrationPanel(self.state, self)
        self.profiles_panel = ProfilesPanel(self.state, self)
        self.tracking_panel = TrackingPanel(self.state, self)
        tp = self.tracking_panel  # its widgets under their old names
        self.device_combo, self.fit_iterations, self.refine_iterations = (
            tp.device_combo, tp.fit_iterations, tp.refine_iterations)
        self.realtime_check, self.texture_check, self.intrinsics_label = (
            tp.realtime_check, tp.texture_check, tp.intrinsics_label)
        self.texture_check.toggled.connect(self.action_texture.setChecked)
        self.action_texture.toggled.connect(self.texture_check.setChecked)
        self.calibration_dock = self._dock("Calibration", self.calibration_panel)
        self.profiles_dock = self._dock("Profiles", self.profiles_panel)
        self.tracking_dock = self._dock("Tracking", self.tracking_panel)
        self.tabifyDockWidget(self.calibration_dock, self.profiles_dock)
        self.tabifyDockWidget(self.profiles_dock, self.tracking_dock)
        self.calibration_dock.raise_()
        self.calibration_dock.setMinimumWidth(400)
        self.resizeDocks([self.calibration_dock], [420], Qt.Orientation.Horizontal)

    def _dock(self, title: str, widget: QWidget) -> QDockWidget:
        d = QDockWidget(title, self)
        d.setObjectName(f"dock-{title.lower()}")
        d.setWidget(widget)
        d.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable | QDockWidget.DockWidgetFeature.DockWidgetClosable
                      | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, d)
        return d

    def _build_status(self) -> None:
        self.fps_label = ElidedLabel("— fps", "Frames tracked per second / 3D view updates per second")
        self.stages_label = ElidedLabel("", "Per-stage time of the last frame, milliseconds")
        self.camera_label = ElidedLabel("", "The camera the hands are fitted in: focal length (pixels), field of view "
                                        "and where it came from (given, the photo's EXIF, assumed, estimated from "
                                        "the stream: from the hand's perspective or from the scene, the "
                                        "background's motion when the camera moves; or weak perspective)")
        self.quality_label = ElidedLabel("", "Mean reprojection error of the 21 keypoints; silhouette IoU when "
                                         "refining")
        self.texture_label = ElidedLabel("", "Share of the hand's texture captured so far, or frames recorded")
        self.profile_label = ElidedLabel("", "The active profile: the calibrated hand tracking keeps")
        self.model_label = ElidedLabel("", "The hand model: its vertices and its mean hand's length and width")
        self.stats_label = self.stages_label  # older name
        # Per-frame figures on the first line, what the hand is seen with on the second; the message
        # keeps its width at their left.
        self.setStatusBar(StatusBar([[self.fps_label, self.stages_label, self.quality_label, self.texture_label],
                                     [self.camera_label, self.profile_label, self.model_label]], parent=self))

    # ================================================================== model, profile

    def load_model(self, model: str | None) -> None:
        """Load a hand model and show its mean shape in the rest pose."""
        try:
            data = load_model_data(model)
        except HandTwinError as exc:
            show_error(self, "Hand model", str(exc))
            return
        self.layer = HandModel(data)
        self.state.set_model(data)
        self._show_rest_hand()
        with torch.no_grad():
            length, width = self.layer.measures()
        self.model_label.setText(
            f"{data.name} · {data.num_vertices} vertices · "
            f"length {length.item() * 1000:.0f} mm · width {width.item() * 1000:.0f} mm"
        )
        self.statusBar().showMessage("Showing the hand in the rest pose. "
                                     "Open a source to track (Ctrl+O, or Ctrl+D for the demo).")

    def _show_rest_hand(self) -> None:
        if self.layer is None:
            return
        profile = self.active_profile
        shape = None if profile is None else torch.as_tensor(profile.shape)[None]
        layer, d = self.layer, self.model_data
        if profile is not None and profile.handedness == "left" and d.side != "left":
            try:  # a left hand's profile: its own side (the mirrored model), not a right hand
                d = load_model_data(self.model_path, "left")
                layer = HandModel(d)
            except HandTwinError as exc:
                log.warning("showing the right hand: %s", exc)
                layer, d = self.layer, self.model_data
        if profile is not None and profile.identity.is_personal:
            from core.model.personal import identity_model

            try:  # the profile's own hand: its skeleton and surface (mirrored for a left hand)
                personal = identity_model(d, profile.identity)
                layer, d = HandModel(personal), personal
            except HandTwinError as exc:
                log.warning("showing the model's own hand: %s", exc)
        with torch.no_grad():
            out = layer.rest(shape)
        self.hand_view.set_hand(out.vertices[0].numpy(), d.faces, out.keypoints[0].numpy(),
                                uv=d.uv, uv_faces=d.uv_faces)

    @property
    def profiles_directory(self) -> Path:
        return self.state.profiles_directory

    @property
    def export_directory(self) -> Path:
        return self.state.export_directory

    def load_profile_file(self, path: str, restart: bool = True, quiet: bool = False) -> bool:
        """Read a profile and make it the active one; a bad file gives a message and changes nothing."""
        return self.state.load_profile_file(path, restart=restart, quiet=quiet)

    def set_active_profile(self, profile, restart: bool = True) -> None:
        """Use ``profile`` (a core.profile_io.Profile, or None) for identity-aware tracking."""
        self.state.set_profile(profile, restart=restart)

    def _on_profile_changed(self, profile, restart: bool) -> None:
        if not self.tracking:
            self._show_rest_hand()
        self._update_title()
        if restart and self.tracking:
            self.start_source("|".join(self._worker.config.sources))
        note = ""
        if profile is not None and profile.scale_source == "prior":
            note = " Its size is the population prior (no metric anchor), not a measurement."
        if profile is None:
            text = "No profile: the shape is estimated per frame."
        elif restart and self.tracking:
            text = f"Tracking with the profile {profile.name}: the hand keeps its calibrated identity.{note}"
        else:  # nothing is tracked with it yet
            text = f"Profile {profile.name} in use: tracking will keep its calibrated identity.{note}"
        self.statusBar().showMessage(text, 8000)

    def _update_title(self) -> None:
        p = self.active_profile
        self.setWindowTitle(f"HandTwin — {p.name}" if p is not None else "HandTwin")
        self.profile_label.setText(f"profile: {p.name}" if p is not None else "no profile")

    def calibration_finished(self, result) -> None:
        if result is None:
            return
        self.statusBar().showMessage(
            f"Calibrated: hand length {result.hand_length_mm:.1f} mm, width {result.hand_width_mm:.1f} mm. "
            "Save it as a profile to track with it.", 8000)

    def save_calibration_profile(self, name: str) -> Path | None:
        """Save the calibration result (with the captured texture) as a profile and use it."""
        return self.calibration_panel.save_profile(name)

    # ================================================================== sources and tracking

    def current_choice(self) -> SourceChoice:
        s = self.settings
        return SourceChoice.from_spec(s.last_source or "demo", s.intrinsics_mode, s.intrinsics_file, s.fov_deg)

    def open_source_dialog(self) -> None:
        dlg = SourceDialog(self.jobs, self.current_choice(), self)
        dlg.intrinsics.calibrate_requested.connect(lambda: self._wizard_into(dlg))
        if dlg.exec() == SourceDialog.DialogCode.Accepted:
            choice = dlg.choice()
            if not all(choice.sources):
                show_error(self, "Open a source", "Choose a file or folder first.")
                return
            self.set_intrinsics(choice.intrinsics_mode, choice.intrinsics_file, choice.fov_deg)
            self.start_source(choice.spec)

    def _wizard_into(self, dlg: SourceDialog) -> None:
        path = self.camera_calibration_dialog()
        if path:
            dlg.intrinsics.set_file(path)

    def camera_calibration_dialog(self) -> str | None:
        from app.camera_calibration import CameraCalibrationDialog

        wiz = CameraCalibrationDialog(
            self.jobs, lambda: None if self.current_update is None else self.current_update.frame.image, self)
        wiz.exec()
        if wiz.saved_path:
            self.set_intrinsics("file", wiz.saved_path, self.settings.fov_deg)
            return wiz.saved_path
        return None

    def set_intrinsics(self, mode: str, file: str = "", fov_deg: float = 60.0) -> None:
        self.state.update_settings(intrinsics_mode=mode, intrinsics_file=file, fov_deg=fov_deg)

    def _open_video(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a video", "", "Videos (*.mp4 *.avi *.mov *.mkv *.webm)")
        if path:
            self.start_source(path)

    def _open_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open an image folder")
        if path:
            self.start_source(path)

    def replay_dialog(self) -> None:
        start = str(self.state.sessions_directory)
        path = QFileDialog.getExistingDirectory(self, "Replay a recorded session", start)
        if path:
            self.start_source(path)

    def tracking_config(self, spec: str) -> TrackingConfig:
        s = self.settings
        sources = split_spec(spec)
        intr = s.intrinsics_file if s.intrinsics_mode == "file" and s.intrinsics_file else None
        fov = s.fov_deg if s.intrinsics_mode == "fov" else None
        return TrackingConfig(
            sources=sources,
            spec=spec,
            settings=engine_settings(self.model_path, s),
            intrinsics=intr,
            fov_deg=fov,
            weak_perspective=s.intrinsics_mode == "weak",
            shape=None if self.active_profile is None else self.active_profile.identity,
            realtime=s.realtime,
            loop=sources == ("demo",),
            texture=s.texture,
            silhouette=s.silhouette,
        )

    def start_source(self, spec: str) -> None:
        """Start tracking a SRC ("a|b": a stereo pair) in a worker thread (stops any running one)."""
        self.stop_tracking()
        if not spec:
            return
        config = self.tracking_config(spec)
        self.state.set_settings(self.settings.with_recent(spec))
        self._tracked_settings = self.settings
        self._worker = TrackingWorker(config)
        self._worker.display_spec = self.camera_view.display_spec()
        self._thread = QThread(self)
        self._thread.setObjectName("handtwin-tracking")
        self._worker.moveToThread(self._thread)
        self._thread.started.connect(self._worker.run)
        worker = self._worker
        worker.failed.connect(self._on_failed)
        worker.ended.connect(self._on_ended)
        worker.notice.connect(self._on_notice)
        worker.finished.connect(self._thread.quit)
        worker.finished.connect(self._on_worker_finished)
        self.install_frame_hook()
        self.state.live_texture = worker.texture_image
        self._thread.start()
        self.state.set_source(spec)
        self.action_pause.setChecked(False)
        self.camera_view.clear(f"Opening {describe_source(spec)}…")
        self.statusBar().showMessage(f"Tracking {describe_source(spec)}")
        self._sync_actions()

    def install_frame_hook(self) -> None:
        """Hand the state's per-frame hook (auto-capture) to the running worker."""
        if self._worker is not None:
            self._worker.frame_hook = self.state.frame_hook

    def stop_tracking(self) -> None:
        worker, thread = self._worker, self._thread
        self._worker = None
        self._thread = None
        if worker is not None:
            worker.stop()
            if worker.recording:
                worker.stop_recording()
        if thread is not None:
            thread.quit()
            if not thread.wait(15000):
                log.warning("the tracking thread did not stop in time")
        self._tracked_settings = None
        self.state.live_texture = None
        self.state.set_source("")
        self.fps_label.setText("— fps")  # not the last stream's rate, as if it still ran
        self.action_record.blockSignals(True)
        self.action_record.setChecked(False)
        self.action_record.blockSignals(False)
        self._sync_actions()

    @property
    def tracking(self) -> bool:
        return self._thread is not None and self._thread.isRunning()

    @property
    def worker(self) -> TrackingWorker | None:
        return self._worker

    def start_or_pause(self) -> None:
        """Space: start the last source when idle, otherwise pause or resume."""
        if self._worker is None:
            self.start_source(self.settings.last_source or "demo")
        else:
            self.action_pause.toggle()

    def _set_paused(self, paused: bool) -> None:
        if self._worker is not None:
            self._worker.set_paused(paused)
            self.statusBar().showMessage("Paused (Space resumes)" if paused else "Tracking")
        self._sync_actions()

    @Slot()
    def _on_worker_finished(self) -> None:
        worker = self._worker
        if worker is not None and worker.done:
            # The stream ended by itself (end of file, failure): keep the last image on screen.
            thread = self._thread
            self._worker = None
            self._thread = None
            if thread is not None:
                thread.quit()
                thread.wait(5000)
            self._tracked_settings = None
            self.state.live_texture = None
            self.state.set_source("")
            self.fps_label.setText("— fps")  # not the last stream's rate, as if it still ran
            self.action_record.blockSignals(True)
            self.action_record.setChecked(False)
            self.action_record.blockSignals(False)
        self._sync_actions()

    def _on_failed(self, message: str) -> None:
        self.last_message = message
        self.statusBar().showMessage(message)
        if self.current_update is None:
            self.camera_view.clear(message)
        if not self._closing:
            show_error(self, "Tracking", message)

    def _on_ended(self, message: str) -> None:
        self.statusBar().showMessage(message)

    def _on_notice(self, message: str) -> None:
        self.last_message = message
        self.statusBar().showMessage(message, 8000)
        if message.startswith(("Cannot record", "Recording stopped")):
            self.action_record.blockSignals(True)
            self.action_record.setChecked(False)
            self.action_record.blockSignals(False)
            show_error(self, "Recording", message)

    def set_recording(self, on: bool, folder: str | None = None) -> None:
        """Start (into ``folder``, default a new time-stamped one) or stop recording."""
        if self._worker is None:
            if on:
                self.action_record.blockSignals(True)
                self.action_record.setChecked(False)
                self.action_record.blockSignals(False)
                show_error(self, "Recording", "Nothing to record: open a source first.")
            return
        if on:
            folder = folder or str(self.state.sessions_directory / time.strftime("session-%Y%m%d-%H%M%S"))
            self.recording_folder = folder
            self._worker.start_recording(folder)
            self.statusBar().showMessage(f"Recording to {folder}")
        else:
            self._worker.stop_recording()
        self._sync_actions()

    def _sync_actions(self) -> None:
        running = self._worker is not None
        self.action_stop.setEnabled(running)
        self.action_record.setEnabled(running)
        paused = running and self._worker.paused
        self.action_start.setText("Resume" if paused else "Pause" if running else "Start")
        self.action_start.setIcon(self._icon("SP_MediaPause" if running and not paused else "SP_MediaPlay"))
        badges = []
        if running and self._worker.recording:
            badges.append(("● REC", QColor("#ff5a5f")))
        if paused:
            badges.append(("PAUSED", QColor("#ffd166")))
        if running and self.state.frame_hook is not None:  # not on a stopped or ended stream's last frame
            badges.append(("AUTO-CAPTURE", QColor("#4cc9f0")))
        self.camera_view.badges = badges
        self.camera_view.update()

    # ================================================================== settings

    def _set_skeleton(self, on: bool) -> None:
        self.hand_view.set_skeleton_visible(on)
        self.camera_view.show_skeleton = on
        self.camera_view.update()

    def _set_silhouette(self, on: bool) -> None:
        self.state.update_settings(silhouette=on)
        self.camera_view.show_silhouette = on
        self.camera_view.update()
        if self._worker is not None:
            self._worker.silhouette_enabled = on

    def _set_texture(self, on: bool) -> None:
        self.state.update_settings(texture=on)
        if self._worker is not None:
            self._worker.texture_enabled = on
        self.hand_view.set_texture_visible(on)

    # ================================================================== drawing

    def _draw_latest(self) -> None:
        worker = self._worker
        update = worker.take_latest() if worker is not None else None
        if update is None:
            return
        self.state.current_update = update
        result = update.result
        # The worker draws the next frames for the panel's size and toggles as they are now.
        worker.display_spec = self.camera_view.display_spec()
        self.camera_view.set_frame(
            update.frame.image,
            [(h.side, h.detection.keypoints_2d, h.final_keypoints_2d) for h in result.hands],
            update.silhouette,
            update.second_image,
            update.composed,
        )
        if update.texture is not None:
            self.state.set_texture(update.texture)
        if update.meshes:
            # Seen from the camera, centred on the hand so the view stays framed as it moves.
            kp = result.hands[0].fit.keypoints_3d
            centre = kp.mean(0)
            # The hand's own side's topology: a left hand's faces and UV faces are both mirrored.
            self.hand_view.set_hand(update.meshes[0] - centre, update.faces[0], kp - centre, camera_frame=True,
                                    uv=update.uv[0] if update.uv else None,
                                    uv_faces=update.uv_faces[0] if update.uv_faces else None,
                                    normals=update.normals[0] if update.normals else None)
        now = time.perf_counter()
        if now - getattr(self, "_stats_time", 0.0) > 0.25:  # every label change repaints the window
            self._stats_time = now
            self._show_stats(update)
        self.frames_shown += 1

    def _show_stats(self, update: LiveUpdate) -> None:
        result = update.result
        self.fps_label.setText(f"{update.fps:4.1f} fps · view {self.hand_view.update_rate():4.1f}/s")
        self.camera_label.setText(camera_text(result))
        t = result.time_ms
        stages = [k for k in STAGE_ORDER if k in t] + [k for k in t if k not in STAGE_ORDER and k != "total"]
        self.stages_label.setText(" · ".join(f"{k} {t[k]:.0f}" for k in stages) + " ms")
        if result.hands:
            err = np.mean([h.fit.reprojection_error_px for h in result.hands])
            iou = f" · IoU {update.iou:.2f}" if update.iou is not None else ""
            self.quality_label.setText(f"reprojection {err:.1f} px{iou}")
        else:
            self.quality_label.setText("no hand")
        if update.recorded >= 0:
            self.texture_label.setText(f"● recorded {update.recorded}")
        elif self.settings.texture and update.texture_coverage > 0:
            self.texture_label.setText(f"texture {100 * update.texture_coverage:.0f}%")
        else:
            self.texture_label.setText("")
        if self.frames_shown % 8 == 0:
            self._sync_actions()

    # ================================================================== export

    def current_hand_fit(self):
        return self.state.current_hand_fit()

    def current_texture(self) -> np.ndarray | None:
        return self.state.current_texture()

    def export_shape(self) -> tuple[np.ndarray, str]:
        """(shape, side) to export: the profile's, else the current frame's, else the mean."""
        return self.state.export_shape()

    def export_dialog(self):
        from app.export_dialog import ExportDialog

        if getattr(self, "_export_dialog", None) is None:
            self._export_dialog = ExportDialog(self.state, self)
        self._export_dialog.refresh()
        self._export_dialog.show()
        self._export_dialog.raise_()
        return self._export_dialog

    # ================================================================== closing

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        self._closing = True
        self._draw_timer.stop()
        self.calibration_panel.stop_auto()
        self.stop_tracking()
        self.jobs.cancel_all()
        self._save_layout()
        self.state.save_settings()
        self.calibration_panel.close_views()
        if getattr(self, "_export_dialog", None) is not None:
            self._export_dialog.close()
        self.hand_view.close()
        super().closeEvent(event)
