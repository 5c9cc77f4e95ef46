"""The main window: camera panel, 3D hand view, toolbar and status bar."""

from __future__ import annotations

import logging

import numpy as np
import torch
from PySide6.QtCore import Qt, QThread, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog, QLabel, QMainWindow, QMessageBox, QSplitter, QToolBar

from app.camera_view import CameraView
from app.hand_view import HandView
from app.worker import LiveUpdate, TrackingWorker
from core.engine import EngineSettings
from core.errors import HandTwinError
from core.model import HandModel, load_model_data

log = logging.getLogger(__name__)


class MainWindow(QMainWindow):
    """HandTwin's main window.

    Args:
        model: hand model path (None: ``$HANDTWIN_MODEL`` or the bundled open hand).
        source: a SRC to start tracking at once (camera index, "demo", video, folder), or None.
    """

    def __init__(self, model: str | None = None, source: str | None = None) -> None:
        super().__init__()
        self.setWindowTitle("HandTwin")
        self.resize(1280, 760)
        self.model_path = model
        self.camera_view = CameraView(self)
        self.hand_view = HandView(self)

        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(self.camera_view)
        splitter.addWidget(self.hand_view.interactor)
        splitter.setSizes([620, 660])
        self.setCentralWidget(splitter)

        self._build_toolbar()
        self.model_label = QLabel()
        self.stats_label = QLabel()
        self.statusBar().addPermanentWidget(self.stats_label)
        self.statusBar().addPermanentWidget(self.model_label)

        self.layer: HandModel | None = None
        self._thread: QThread | None = None
        self._worker: TrackingWorker | None = None
        self._latest: LiveUpdate | None = None
        self.frames_shown = 0
        self._draw_timer = QTimer(self)
        self._draw_timer.setInterval(30)
        self._draw_timer.timeout.connect(self._draw_latest)
        self._draw_timer.start()
        self.load_model(model)
        if source is not None:
            QTimer.singleShot(0, lambda: self.start_source(source))

    # ------------------------------------------------------------------ UI

    def _build_toolbar(self) -> None:
        bar = QToolBar("Main", self)
        bar.setMovable(False)
        self.addToolBar(bar)
        self.action_demo = QAction("Demo", self)
        self.action_demo.setToolTip("Track the bundled demo clip")
        self.action_demo.triggered.connect(lambda: self.start_source("demo"))
        self.action_camera = QAction("Camera", self)
        self.action_camera.setToolTip("Track camera 0")
        self.action_camera.triggered.connect(lambda: self.start_source("0"))
        self.action_video = QAction("Video…", self)
        self.action_video.triggered.connect(self._open_video)
        self.action_folder = QAction("Folder…", self)
        self.action_folder.triggered.connect(self._open_folder)
        self.action_pause = QAction("Pause", self, checkable=True)
        self.action_pause.setShortcut(QKeySequence(Qt.Key.Key_Space))
        self.action_pause.setToolTip("Pause or resume tracking (Space)")
        self.action_pause.toggled.connect(self._set_paused)
        self.action_stop = QAction("Stop", self)
        self.action_stop.triggered.connect(self.stop_tracking)
        for a in (self.action_demo, self.action_camera, self.action_video, self.action_folder):
            bar.addAction(a)
        bar.addSeparator()
        bar.addAction(self.action_pause)
        bar.addAction(self.action_stop)
        bar.addSeparator()
        self.action_skeleton = QAction("Skeleton", self, checkable=True, checked=True)
        self.action_skeleton.setShortcut(QKeySequence("K"))
        self.action_skeleton.setToolTip("Show the 21 keypoints and bones (K)")
        self.action_skeleton.toggled.connect(self.hand_view.set_skeleton_visible)
        self.action_wireframe = QAction("Wireframe", self, checkable=True, checked=False)
        self.action_wireframe.setShortcut(QKeySequence("W"))
        self.action_wireframe.setToolTip("Show mesh edges (W)")
        self.action_wireframe.toggled.connect(self.hand_view.set_wireframe)
        self.action_reset = QAction("Reset view", self)
        self.action_reset.setShortcut(QKeySequence("R"))
        self.action_reset.triggered.connect(self.hand_view.reset_view)
        for action in (self.action_skeleton, self.action_wireframe, self.action_reset):
            bar.addAction(action)

    def _open_video(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a video", "", "Videos (*.mp4 *.avi *.mov *.mkv *.webm)")
        if path:
            self.start_source(path)

    def _open_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open an image folder")
        if path:
            self.start_source(path)

    # ------------------------------------------------------------------ model

    def load_model(self, model: str | None) -> None:
        """Load a hand model and show its mean shape in the rest pose."""
        try:
            data = load_model_data(model)
        except HandTwinError as exc:
            QMessageBox.warning(self, "Hand model", str(exc))
            log.warning("could not load the hand model: %s", exc)
            return
        self.layer = HandModel(data)
        with torch.no_grad():
            out = self.layer.rest()
            length, width = self.layer.measures()
        self.hand_view.set_hand(out.vertices[0].numpy(), data.faces, out.keypoints[0].numpy())
        self.model_label.setText(
            f"{data.name} · {data.num_vertices} vertices · "
            f"length {length.item() * 1000:.0f} mm · width {width.item() * 1000:.0f} mm"
        )
        self.statusBar().showMessage("Showing the mean hand in the rest pose. Open a source to track.")

    # ------------------------------------------------------------------ tracking

    def start_source(self, source: str) -> None:
        """Start tracking a SRC in a worker thread (stops any running one first)."""
        self.stop_tracking()
        self._worker = TrackingWorker(source, EngineSettings(model=self.model_path), realtime=True, loop=source == "demo")
        self._thread = QThread(self)
        self._worker.moveToThread(self._thread)
        self._thread.started.connect(self._worker.run)
        self._worker.update.connect(self._on_update)
        self._worker.failed.connect(self._on_failed)
        self._worker.finished.connect(self._thread.quit)
        self._thread.start()
        self.action_pause.setChecked(False)
        self.camera_view.clear(f"Opening {source}…")
        self.statusBar().showMessage(f"Tracking {source}")

    def stop_tracking(self) -> None:
        if self._worker is not None:
            self._worker.stop()
        if self._thread is not None:
            self._thread.quit()
            self._thread.wait(5000)
        self._worker = None
        self._thread = None

    @property
    def tracking(self) -> bool:
        return self._thread is not None and self._thread.isRunning()

    def _set_paused(self, paused: bool) -> None:
        if self._worker is not None:
            self._worker.set_paused(paused)
        self.statusBar().showMessage("Paused" if paused else "Tracking")

    def _on_update(self, update: LiveUpdate) -> None:
        self._latest = update  # latest frame wins; drawn by the timer

    def _on_failed(self, message: str) -> None:
        self.statusBar().showMessage(message)
        self.camera_view.clear(message)
        QMessageBox.warning(self, "Tracking", message)

    def _draw_latest(self) -> None:
        update, self._latest = self._latest, None
        if update is None:
            return
        result = update.result
        self.camera_view.set_frame(
            update.frame.image,
            [(h.fit.side, h.detection.keypoints_2d, h.fit.keypoints_2d) for h in result.hands],
        )
        if update.meshes:
            # Seen from the camera, centred on the hand so the view stays framed as it moves.
            kp = result.hands[0].fit.keypoints_3d
            centre = kp.mean(0)
            self.hand_view.set_hand(update.meshes[0] - centre, update.faces[0], kp - centre, camera_frame=True)
        t = result.time_ms
        err = (
            f" · reprojection {np.mean([h.fit.reprojection_error_px for h in result.hands]):.1f} px"
            if result.hands else " · no hand"
        )
        self.stats_label.setText(
            f"{update.fps:4.1f} fps · detect {t.get('detect', 0):.0f} ms · fit {t.get('fit', 0):.0f} ms{err}"
        )
        self.frames_shown += 1

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        self._draw_timer.stop()
        self.stop_tracking()
        self.hand_view.close()
        super().closeEvent(event)
