"""Start the Qt application; ``--screenshot`` / ``--quit-after`` for automation."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtGui import QImageWriter
from PySide6.QtWidgets import QApplication

from core.errors import HandTwinError, InputError

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


def check_screenshot_path(path: str | os.PathLike[str], inputs: Iterable[str | None] = ()) -> Path:
    """Refuse a screenshot path that cannot be written, before the window opens.

    Raises:
        HandTwinError: an image format Qt cannot write, a folder, a missing or unwritable
            folder, one of the command's ``inputs`` (:func:`core.outputs.check_output`).
    """
    from core.outputs import check_output

    path = Path(path)
    formats = {bytes(f.data()).decode().lower() for f in QImageWriter.supportedImageFormats()}
    if path.suffix.lower().lstrip(".") not in formats and not path.is_dir():
        raise InputError(f"the screenshot {path} needs an image suffix that Qt writes, such as .png")
    return check_output(path, inputs)


def check_startup(model: str | None, profile: str | None, screenshot: str | None) -> None:
    """Load what the command line names before the window opens, so that a bad file gives one
    error (``handtwin: error: ...``, exit 2) instead of a message box nobody can answer.

    Raises:
        HandTwinError: the screenshot cannot be written, the model (either side) or the
            profile cannot be used.
    """
    from app.main_window import load_profile_for
    from core.model import load_model_data

    if screenshot is not None:
        check_screenshot_path(screenshot, inputs=(model, profile))
    data = load_model_data(model, "right")
    load_model_data(model, "left")  # the tracker needs both sides
    if profile is not None:
        load_profile_for(profile, data)


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

    Raises:
        HandTwinError: a file named on the command line cannot be used (checked before the
            window opens), conflicting or out-of-range camera options, or the screenshot could
            not be written.
    """
    from core.camera import check_camera_args

    check_camera_args(intrinsics, fov_deg, weak_perspective)
    camera = ("file", intrinsics, None) if intrinsics else ("fov", "", fov_deg) if fov_deg is not None else \
        ("weak", "", None) if weak_perspective else None
    from app.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("HandTwin")
    app.setOrganizationName("HandTwin")
    check_startup(model, profile, screenshot)
    if source is None:
        source = default_source()
        log.info("source: %s", source or "none (no camera, no demo clip)")
    window = MainWindow(model=model, source=source, profile=profile, camera=camera)
    window.show()
    failure: list[HandTwinError] = []
    if quit_after is not None or screenshot is not None:
        delay_ms = int(1000 * (quit_after if quit_after is not None else 2.0))

        def finish() -> None:
            log.info("quitting after %g s: %d frames shown", delay_ms / 1000, window.frames_shown)
            try:
                if screenshot:
                    save_screenshot(window, screenshot)
            except (OSError, HandTwinError) as exc:  # reported after the loop; quit all the same
                failure.append(exc if isinstance(exc, HandTwinError) else InputError(str(exc)))
            finally:
                window.close()
                app.quit()

        QTimer.singleShot(delay_ms, finish)
    status = app.exec()
    if failure:
        raise failure[0]
    return status
