"""The tracking panel: device, fit and refinement iterations, playback pace, texture capture and
the camera in use. Bound to the application state (:class:`app.state.AppState`): each change goes
into the state's settings (the window restarts a running source when one it was started with
changed) and the panel follows the settings' changes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QLabel, QSpinBox, QWidget

from app.settings import AppSettings, cuda_available
from core.camera import DEFAULT_FOV_DEG

if TYPE_CHECKING:
    from app.state import AppState


def intrinsics_text(s: AppSettings) -> str:
    """The camera the settings give the sources, in words."""
    return {"file": f"file {Path(s.intrinsics_file).name}", "fov": f"field of view {s.fov_deg:.0f}°",
            "weak": "weak perspective"}.get(
        s.intrinsics_mode, f"from the source, else assumed {DEFAULT_FOV_DEG:.0f}° (perspective)")


class TrackingPanel(QWidget):
    """The tracking dock's contents (see the module docstring). ``texture_check`` mirrors the
    window's Texture action, which the window connects."""

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        s = state.settings
        form = QFormLayout(self)
        self.device_combo = QComboBox()
        self.device_combo.addItem("CPU", "cpu")
        self.device_combo.addItem("CUDA (GPU)", "cuda")
        if not cuda_available():
            item = self.device_combo.model().item(1)
            item.setEnabled(False)
            item.setToolTip("This PyTorch has no CUDA device")
        self.device_combo.setCurrentIndex(1 if s.device == "cuda" and cuda_available() else 0)
        self.device_combo.setToolTip("Where fitting and refinement run")
        self.device_combo.currentIndexChanged.connect(lambda *_: self.apply())
        self.fit_iterations = QSpinBox()
        self.fit_iterations.setRange(1, 100)
        self.fit_iterations.setValue(s.fit_iterations)
        self.fit_iterations.setToolTip("Levenberg-Marquardt iterations of the model fit per frame")
        self.fit_iterations.editingFinished.connect(self.apply)
        self.refine_iterations = QSpinBox()
        self.refine_iterations.setRange(0, 50)
        self.refine_iterations.setValue(s.refine_iterations)
        self.refine_iterations.setSpecialValueText("off")
        self.refine_iterations.setToolTip("Silhouette refinement iterations per frame (0: off)")
        self.refine_iterations.editingFinished.connect(self.apply)
        self.realtime_check = QCheckBox("Play files at their frame rate")
        self.realtime_check.setChecked(s.realtime)
        self.realtime_check.setToolTip("Off: files play as fast as tracking goes")
        self.realtime_check.toggled.connect(lambda *_: self.apply())
        self.texture_check = QCheckBox("Capture the skin texture")
        self.texture_check.setChecked(s.texture)
        self.intrinsics_label = QLabel()
        self.intrinsics_label.setWordWrap(True)
        form.addRow("Device", self.device_combo)
        form.addRow("Fit iterations", self.fit_iterations)
        form.addRow("Refinement", self.refine_iterations)
        form.addRow(self.realtime_check)
        form.addRow(self.texture_check)
        form.addRow("Intrinsics", self.intrinsics_label)
        state.settings_changed.connect(self._on_settings)
        self._on_settings(s)

    def apply(self) -> None:
        """The panel's values into the state's settings."""
        self.state.update_settings(
            device=self.device_combo.currentData() or "cpu",
            fit_iterations=self.fit_iterations.value(),
            refine_iterations=self.refine_iterations.value(),
            realtime=self.realtime_check.isChecked(),
        )

    def _on_settings(self, s: AppSettings) -> None:
        self.intrinsics_label.setText(intrinsics_text(s))
