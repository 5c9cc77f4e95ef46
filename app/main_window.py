"""The main window: camera panel, 3D hand view, toolbar and status bar."""

from __future__ import annotations

import logging

import torch
from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QLabel, QMainWindow, QMessageBox, QSplitter, QToolBar

from app.hand_view import HandView
from core.errors import HandTwinError
from core.model import HandModel, load_model_data

log = logging.getLogger(__name__)


class MainWindow(QMainWindow):
    """HandTwin's main window.

    Args:
        model: hand model path (None: ``$HANDTWIN_MODEL`` or the bundled open hand).
        source: the requested frame source (shown; live capture arrives with tracking).
    """

    def __init__(self, model: str | None = None, source: str | None = None) -> None:
        super().__init__()
        self.setWindowTitle("HandTwin")
        self.resize(1280, 760)

        self.camera_panel = QLabel("No camera source yet.\nLive capture arrives with tracking.")
        self.camera_panel.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.camera_panel.setMinimumWidth(360)
        self.camera_panel.setStyleSheet("background:#15181d; color:#9aa4b2; font-size:14px;")
        self.hand_view = HandView(self)

        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(self.camera_panel)
        splitter.addWidget(self.hand_view.interactor)
        splitter.setSizes([520, 760])
        self.setCentralWidget(splitter)

        self._build_toolbar()
        self.model_label = QLabel()
        self.statusBar().addPermanentWidget(self.model_label)
        self.requested_source = source
        self.layer: HandModel | None = None
        self.load_model(model)

    def _build_toolbar(self) -> None:
        bar = QToolBar("View", self)
        bar.setMovable(False)
        self.addToolBar(bar)
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
        msg = "Showing the mean hand in the rest pose."
        if self.requested_source:
            msg += f" Source '{self.requested_source}': live capture arrives with tracking."
        self.statusBar().showMessage(msg)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        self.hand_view.close()
        super().closeEvent(event)
