"""Jobs, settings, shortcuts, sources and responsiveness of the window."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from tests.test_gui_support import GUI_MARKS, SHOTS, gui_env, make_window, wait_frames  # noqa: F401

pytestmark = GUI_MARKS


# ----------------------------------------------------------------------------- jobs


@pytest.fixture
def runner(qtbot):
    from PySide6.QtWidgets import QWidget

    from app.jobs import JobRunner

    host = QWidget()
    qtbot.addWidget(host)
    r = JobRunner(host)
    yield r
    r.cancel_all()


def test_job_reports_progress_and_result(runner, qtbot) -> None:
    seen, results = [], []

    def work(progress):
        for i in range(5):
            progress(i, 5, f"step {i}")
        return 42

    runner.start("Counting", work, on_done=results.append, progress_to=lambda f, m: seen.append((f, m)))
    qtbot.waitUntil(lambda: results == [42] and not runner.busy, timeout=10_000)
    assert [m for _, m in seen] == [f"step {i}" for i in range(5)]
    assert seen[-1][0] == pytest.approx(0.8)


def test_job_error_becomes_a_message(runner, qtbot, gui_env) -> None:
    from core.errors import ExportError

    def work(progress):
        raise ExportError("the disk is full")

    runner.start("Exporting", work)
    qtbot.waitUntil(lambda: bool(gui_env.messages) and not runner.busy, timeout=10_000)
    assert gui_env.messages == ["Exporting: the disk is full"]

    def bug(progress):
        return 1 / 0

    runner.start("Buggy", bug)
    qtbot.waitUntil(lambda: len(gui_env.messages) == 2 and not runner.busy, timeout=10_000)
    assert gui_env.messages[1] == "Buggy: ZeroDivisionError: division by zero"


def test_job_cancel_stops_at_the_next_report(runner, qtbot) -> None:
    steps, done = [], []

    def work(progress):
        for i in range(1000):
            progress(i / 1000)
            steps.append(i)
            time.sleep(0.005)
        return "finished"

    job = runner.start("Long", work, on_done=done.append)
    qtbot.waitUntil(lambda: len(steps) >= 3, timeout=10_000)
    cancelled = []
    job.cancelled.connect(lambda: cancelled.append(True))
    job.cancel()
    qtbot.waitUntil(lambda: not runner.busy, timeout=10_000)
    assert not done and len(steps) < 1000


# ----------------------------------------------------------------------------- settings


def test_settings_round_trip_and_cuda_state(gui_env, make_window) -> None:
    from app.settings import AppSettings, cuda_available

    s = AppSettings(last_source="demo", intrinsics_mode="fov", fov_deg=72.5, refine_iterations=3, device="cpu",
                    texture=False)
    s.save(gui_env.store)
    assert AppSettings.load(gui_env.store) == s
    gui_env.store.setValue("device", "cuda")
    gui_env.store.setValue("fov_deg", "not a number")
    loaded = AppSettings.load(gui_env.store)
    assert loaded.device == ("cuda" if cuda_available() else "cpu") and loaded.fov_deg == 60.0
    w = make_window()
    item = w.device_combo.model().item(1)
    assert item.isEnabled() == cuda_available()
    assert not w.texture_check.isChecked() and not w.action_texture.isChecked()
    w.action_texture.setChecked(True)
    assert AppSettings.load(gui_env.store).texture is True


def test_shortcuts(make_window) -> None:
    w = make_window()
    keys = {a.text(): a.shortcut().toString() for a in w.actions()}
    assert keys["Start"] == "Space" and keys["Capture frame"] == "C" and keys["Export…"] == "Ctrl+E"


def test_space_starts_then_pauses(make_window, qtbot) -> None:
    from PySide6.QtCore import Qt

    w = make_window()
    w.settings = w.settings.with_recent("demo")
    assert w.action_start.shortcut().toString() == "Space"
    w.action_start.trigger()  # what Space does
    assert w.worker is not None
    wait_frames(qtbot, w, 1)
    w.action_start.trigger()
    assert w.worker.paused and w.action_start.text() == "Resume"
    w.action_start.trigger()
    assert not w.worker.paused


def test_source_dialog_choices(qtbot, make_window, tmp_path: Path) -> None:
    from app.sources import SourceChoice, SourceDialog, probe_cameras

    w = make_window()
    assert isinstance(probe_cameras(), list)  # cached after the first probe
    dlg = SourceDialog(w.jobs, SourceChoice(("demo",), "fov", "", 70.0), w)
    qtbot.addWidget(dlg)
    qtbot.waitUntil(lambda: not w.jobs.busy, timeout=20_000)
    assert dlg.choice() == SourceChoice(("demo",), "fov", "", 70.0)
    dlg.radios["stereo"].setChecked(True)
    dlg.stereo_a.setEditText("demo")
    dlg.stereo_b.setEditText("demo")
    dlg.intrinsics.set_file(str(tmp_path / "k.json"))
    c = dlg.choice()
    assert c.sources == ("demo", "demo") and c.spec == "demo|demo" and c.intrinsics_mode == "file"
    dlg.radios["video"].setChecked(True)
    dlg.video_edit.setText("/x/clip.mp4")
    assert dlg.choice().sources == ("/x/clip.mp4",)
    dlg.close()


def test_stereo_pair_shows_both_views(make_window, qtbot) -> None:
    w = make_window(source="demo|demo")
    wait_frames(qtbot, w, 2)
    assert w.current_update.second_image is not None
    assert w.current_update.result.hands


def test_camera_calibration_wizard(qtbot, make_window, tmp_path: Path) -> None:
    import cv2

    from app.camera_calibration import CameraCalibrationDialog
    from core.camera import load_intrinsics

    # Synthetic photos of a 9x6 inner-corner board seen from a few tilts.
    board = np.full((7 * 40 + 80, 10 * 40 + 80), 255, np.uint8)
    for r in range(7):
        for c in range(10):
            if (r + c) % 2 == 0:
                board[40 + r * 40: 80 + r * 40, 40 + c * 40: 80 + c * 40] = 0
    h, w_ = board.shape
    images = []
    for dx, dy in ((0, 0), (60, -30), (-50, 40), (40, 50), (-40, -40)):
        src = np.float32([[0, 0], [w_, 0], [w_, h], [0, h]])
        dst = np.float32([[100 + dx, 80], [540, 60 + dy], [560 - dx, 420], [80, 400 - dy]])
        warp = cv2.warpPerspective(board, cv2.getPerspectiveTransform(src, dst), (640, 480), borderValue=255)
        images.append(cv2.cvtColor(warp, cv2.COLOR_GRAY2RGB))
    win = make_window()
    dlg = CameraCalibrationDialog(win.jobs, None, win)
    qtbot.addWidget(dlg)
    dlg.add_images(images, [f"img{i}" for i in range(len(images))])
    assert dlg.calibrate_btn.isEnabled()
    dlg.calibrate()
    qtbot.waitUntil(lambda: dlg.result is not None or "failed" in dlg.result_label.text(), timeout=60_000)
    assert dlg.result is not None, dlg.result_label.text()
    out = tmp_path / "intr.json"
    dlg.save_to(str(out))
    assert load_intrinsics(out).fx > 0


def test_toggles_reach_both_views(make_window, qtbot) -> None:
    w = make_window(source="demo")
    wait_frames(qtbot, w, 1)
    w.action_silhouette.setChecked(False)
    assert not w.camera_view.show_silhouette and w.worker.silhouette_enabled is False
    w.action_skeleton.setChecked(False)
    assert not w.camera_view.show_skeleton
    assert not any(a.GetVisibility() for a in w.hand_view._skel_actors)  # noqa: SLF001


# ----------------------------------------------------------------------------- responsiveness


def test_gui_thread_stays_responsive_while_tracking(make_window, qtbot) -> None:
    """A 10 ms timer on the GUI thread records its gaps while the demo tracks; the 3D view's
    update rate is measured by driving it as fast as it goes for a second meanwhile.
    The figures go to $HANDTWIN_SHOTS/gui_perf.json (they depend on the machine's load)."""
    from PySide6.QtCore import QTimer

    w = make_window(source="demo")
    w.action_texture.setChecked(False)
    wait_frames(qtbot, w, 2)
    gaps: list[float] = []
    last = [time.perf_counter()]

    def beat() -> None:
        now = time.perf_counter()
        gaps.append((now - last[0]) * 1000)
        last[0] = now

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(beat)
    timer.start()
    start_frames = w.worker.frames_done
    qtbot.wait(8000)
    timer.stop()
    tracked = w.worker.frames_done - start_frames
    # Drive the 3D view alone (tracking still running in its thread) for about a second.
    u = w.current_update
    kp = u.result.hands[0].fit.keypoints_3d
    w.action_pause.setChecked(True)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 1.5:
        w.hand_view.set_hand(u.meshes[0] - kp.mean(0) + 0.001 * (n % 5), u.faces[0], kp - kp.mean(0), camera_frame=True,
                             uv=w.model_data.uv, uv_faces=w.model_data.uv_faces)
        w.hand_view.repaint()  # paint (render + blit) now, not when the loop next runs
        n += 1
    view_fps = n / (time.perf_counter() - t0)
    g = np.asarray(gaps[5:])
    figures = {"gap_median_ms": float(np.median(g)), "gap_p99_ms": float(np.percentile(g, 99)),
               "gap_max_ms": float(g.max()), "tracked_fps": tracked / 8.0, "view_fps": view_fps,
               "beats": int(len(g))}
    SHOTS.mkdir(parents=True, exist_ok=True)
    (SHOTS / "gui_perf.json").write_text(json.dumps(figures, indent=2))
    print("gui responsiveness:", figures)
    assert tracked >= 1 and len(g) >= 5 and view_fps > 0
