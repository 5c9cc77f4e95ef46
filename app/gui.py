"""Start the Qt application; ``--screenshot`` / ``--quit-after`` for automation."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

log = logging.getLogger(__name__)


def save_screenshot(window, path: str | Path) -> Path:
    """Save what the window shows, including the OpenGL 3D view, as a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    window.hand_view.render()
    QApplication.processEvents()
    screen = window.screen() or QApplication.primaryScreen()
    pixmap = screen.grabWindow(window.winId())
    if pixmap.isNull():
        pixmap = window.grab()
    if not pixmap.save(str(path)):
        raise OSError(f"could not write the screenshot {path}")
    log.info("screenshot saved to %s", path)
    return path


def default_source() -> str | None:
    """Camera 0 when one opens, else the bundled demo clip (None when neither exists)."""
    import cv2

    from core.capture import DEMO_CLIP_PATH

    cap = cv2.VideoCapture(0)
    try:
        if cap.isOpened():
            return "0"
    finally:
        cap.release()
    return "demo" if DEMO_CLIP_PATH.is_file() else None


def run_gui(
    source: str | None = None,
    profile: str | None = None,
    model: str | None = None,
    screenshot: str | None = None,
    quit_after: float | None = None,
    intrinsics: str | None = None,
    fov_deg: float | None = None,
    weak_perspective: bool = False,
) -> int:
    """Open the main window and run the event loop; returns the exit status.

    ``intrinsics`` (a file), ``fov_deg`` or ``weak_perspective`` set the camera of this run's
    sources (as the source dialog's camera choice does; not saved).
    """
    from core.camera import check_camera_args

    check_camera_args(intrinsics, fov_deg, weak_perspective)
    camera = ("file", intrinsics, None) if intrinsics else ("fov", "", fov_deg) if fov_deg is not None else \
        ("weak", "", None) if weak_perspective else None
    from app.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("HandTwin")
    app.setOrganizationName("HandTwin")
    if source is None:
        source = default_source()
        log.info("source: %s", source or "none (no camera, no demo clip)")
    window = MainWindow(model=model, source=source, camera=camera)
    window.show()
    if quit_after is not None or screenshot is not None:
        delay_ms = int(1000 * (quit_after if quit_after is not None else 2.0))

        def finish() -> None:
            if screenshot:
                save_screenshot(window, screenshot)
            window.close()
            app.quit()

        QTimer.singleShot(delay_ms, finish)
    return app.exec()
