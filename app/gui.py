"""Start the Qt application; ``--screenshot`` / ``--quit-after`` / ``--stats`` for automation."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtGui import QImageWriter
from PySide6.QtWidgets import QApplication

from core.errors import HandTwinError, InputError
from core.outputs import atomic_write_bytes
from core.procstat import tree_cpu_s

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


class SessionStats:
    """How the window did over a session (``gui --stats FILE``, ``bench --only gui_fps``).

    A 10 ms timer on the GUI thread records when it ticks: the longest gap between ticks is the
    longest the thread could not react (plus up to one period). Counting starts ``warmup_s``
    after the first frame is shown (models, the detector's child and the first calls' set-up
    are start-up, not the steady state).
    """

    PERIOD_MS = 10

    def __init__(self, window, warmup_s: float = 3.0) -> None:
        self.window = window
        self.warmup_s = warmup_s
        self._first_shown: float | None = None
        self._start: tuple[float, int, int, int, float | None] | None = None  # time, tracked, shown, renders, CPU s
        self._beats: list[float] = []
        self._stages: dict[str, list[float]] = {}
        self._last_result = None
        self._timer = QTimer()
        self._timer.setInterval(self.PERIOD_MS)
        self._timer.timeout.connect(self._tick)
        self._timer.start()

    def _tracked(self) -> int:
        worker = self.window.worker
        return 0 if worker is None else int(worker.frames_done)

    def _tick(self) -> None:
        now = time.perf_counter()
        w = self.window
        if self._start is None:
            if self._first_shown is None and w.frames_shown > 0:
                self._first_shown = now
            if self._first_shown is not None and now - self._first_shown >= self.warmup_s:
                self._start = (now, self._tracked(), w.frames_shown, w.hand_view.renders, tree_cpu_s())
                self._beats.append(now)
            return
        self._beats.append(now)
        u = w.current_update
        if u is not None and u.result is not self._last_result:
            self._last_result = u.result
            for k, v in u.result.time_ms.items():
                self._stages.setdefault(k, []).append(float(v))

    def figures(self) -> dict[str, object]:
        """fps (tracked, shown, 3D view renders), the longest gap between the timer's ticks
        and its 99th percentile (ms), the settings the session ran with, the median stages."""
        import numpy as np

        self._timer.stop()
        w = self.window
        s = w.settings
        out: dict[str, object] = {"refine_iterations": int(s.refine_iterations), "texture": bool(s.texture),
                                  "measured_s": 0.0}
        if self._start is None or len(self._beats) < 2:
            return out
        t0, tracked0, shown0, renders0, cpu0 = self._start
        elapsed = time.perf_counter() - t0
        cpu1 = tree_cpu_s()
        tracked = self._tracked() - tracked0
        gaps = np.diff(np.asarray(self._beats)) * 1000.0
        worker = w.worker
        out.update({
            "measured_s": round(elapsed, 2),
            "tracked_fps": round(tracked / elapsed, 2),
            # CPU time of the window and its detector child per tracked frame, all threads: what
            # the frame costs whatever else the machine runs (two free cores give 2000 / this fps)
            "cpu_ms_per_frame": None if cpu0 is None or cpu1 is None or tracked <= 0
            else round((cpu1 - cpu0) * 1000.0 / tracked, 1),
            "shown_fps": round((w.frames_shown - shown0) / elapsed, 2),
            "view_renders_per_s": round((w.hand_view.renders - renders0) / elapsed, 2),
            "gui_block_max_ms": round(float(gaps.max()), 1),
            "gui_block_p99_ms": round(float(np.percentile(gaps, 99)), 1),
            "gui_gap_median_ms": round(float(np.median(gaps)), 2),
            "detector_in_child": bool(worker is not None and worker.engine_detects_in_child),
            "stage_ms": {k: round(float(np.median(v)), 2) for k, v in self._stages.items()},
        })
        return out


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


#: Seconds between the interpreter's thread switches in the GUI process (see :func:`run_gui`).
GUI_SWITCH_INTERVAL_S = 0.001


def run_gui(
    source: str | None = None,
    profile: str | None = None,
    model: str | None = None,
    screenshot: str | None = None,
    quit_after: float | None = None,
    intrinsics: str | None = None,
    fov_deg: float | None = None,
    weak_perspective: bool = False,
    stats: str | None = None,
    realtime: bool | None = None,
) -> int:
    """Open the main window and run the event loop; returns the exit status.

    ``intrinsics`` (a file), ``fov_deg`` or ``weak_perspective`` set the camera of this run's
    sources (as the source dialog's camera choice does; not saved); ``realtime`` False plays
    files as fast as tracking goes instead of at their frame rate (not saved). With ``stats`` (and
    ``quit_after``) the session's figures (:class:`SessionStats`) are written there as JSON
    when the window quits.

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

    # The GUI thread's long blocks are mostly waits for the GIL held by the tracking threads'
    # Python glue, not work of its own (15 longest 30-50 ms blocks: 2-6 ms of CPU each). A
    # 1 ms switch interval (Python's default is 5 ms) lets it take the GIL back sooner: two
    # alternated pairs of `bench --only gui_fps` on a slowed machine, block max 57.7 -> 52.3 and
    # 55.8 -> 47.2 ms, p99 31 -> 28 ms, fps 23.0 -> 24.7 and 24.9 -> 27.1.
    sys.setswitchinterval(GUI_SWITCH_INTERVAL_S)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("HandTwin")
    app.setOrganizationName("HandTwin")
    check_startup(model, profile, screenshot)
    if stats is not None:
        from core.outputs import check_output

        if quit_after is None:
            raise InputError("--stats needs --quit-after (the figures are written when the window quits)")
        check_output(Path(stats), (model, profile))
    if source is None:
        source = default_source()
        log.info("source: %s", source or "none (no camera, no demo clip)")
    window = MainWindow(model=model, source=source, profile=profile, camera=camera, realtime=realtime)
    window.show()
    session = SessionStats(window) if stats is not None else None
    failure: list[HandTwinError] = []
    if quit_after is not None or screenshot is not None:
        delay_ms = int(1000 * (quit_after if quit_after is not None else 2.0))

        def finish() -> None:
            log.info("quitting after %g s: %d frames shown", delay_ms / 1000, window.frames_shown)
            try:
                if session is not None:
                    atomic_write_bytes(stats, (json.dumps(session.figures(), indent=2) + "\n").encode())
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
