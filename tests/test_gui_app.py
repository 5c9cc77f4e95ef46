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


def test_window_size_and_docks_are_kept_between_runs(gui_env, make_window, qtbot) -> None:
    """The window opened at its default size with every dock back in place, whatever the user
    had arranged; it now comes back as it was closed (a corrupt saved layout is ignored)."""
    w = make_window()
    w.resize(1100, 650)
    w.profiles_dock.hide()
    qtbot.wait(50)
    size = w.size()
    w.close()
    again = make_window()
    qtbot.wait(50)
    assert again.size() == size and not again.profiles_dock.isVisible() and again.calibration_dock.isVisible()
    again.close()
    gui_env.store.setValue("window/layout", b"not a layout")
    gui_env.store.setValue("window/geometry", "nonsense")
    third = make_window()
    assert third.calibration_dock.isVisible()


def test_the_frame_rate_is_not_left_showing_once_tracking_ends(make_window, qtbot, tmp_path: Path) -> None:
    """After Stop, or the end of a file, the status bar went on showing the last stream's rate,
    as if it still ran."""
    from tests.test_gui_support import wait_frames

    w = make_window(source="demo")
    wait_frames(qtbot, w, 3)
    qtbot.waitUntil(lambda: "fps" in w.fps_label.text() and w.fps_label.text() != "— fps", timeout=30_000)
    w.stop_tracking()
    assert w.fps_label.text() == "— fps"
    # A file that ends by itself: the same.
    import cv2

    from core.capture import open_source

    folder = tmp_path / "clip"
    folder.mkdir()
    with open_source("demo") as src:
        for frame, _ in zip(src, range(12)):
            cv2.imwrite(str(folder / f"{frame.index:03d}.png"), cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
    w.state.set_frame_hook(lambda *_: None)  # auto-capture on: its badge too must go with the stream
    w.start_source(str(folder))
    wait_frames(qtbot, w, 2)
    qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
    assert w.fps_label.text() == "— fps" and w.current_update is not None
    assert "AUTO-CAPTURE" not in [text for text, _ in w.camera_view.badges]
    w.state.set_frame_hook(None)


def test_shortcuts(make_window) -> None:
    w = make_window()
    keys = {a.text(): a.shortcut().toString() for a in w.actions()}
    assert keys["Start"] == "Space" and keys["Capture frame"] == "C" and keys["Export…"] == "Ctrl+E"


def test_space_starts_then_pauses(make_window, qtbot) -> None:
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


def test_source_dialog_shows_its_path_hints_whole(qtbot, make_window) -> None:
    """At its natural width the dialog cut its path fields' hints ("Stereo calibration JSON
    (K...", "Depth camera JSON (fx, fy, c..."): each hint now shows whole."""
    from PySide6.QtWidgets import QLineEdit

    from app.sources import SourceChoice, SourceDialog

    w = make_window()
    dlg = SourceDialog(w.jobs, SourceChoice(("demo",), "none", "", 60.0), w)
    qtbot.addWidget(dlg)
    dlg.show()
    qtbot.waitExposed(dlg)
    qtbot.waitUntil(lambda: not w.jobs.busy, timeout=20_000)
    fields = [e for e in dlg.findChildren(QLineEdit) if e.placeholderText()]
    assert len(fields) >= 7
    for e in fields:
        need = e.fontMetrics().horizontalAdvance(e.placeholderText())
        assert need <= e.contentsRect().width() - 8, (e.placeholderText(), need, e.contentsRect().width())
    assert dlg.width() <= 1000
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
    # A wrong board size first: it fails with a message, and Calibrate can be pressed again
    # once the size is corrected (it stayed greyed out after a failure).
    dlg.cols.setValue(8)
    dlg.calibrate()
    assert not dlg.calibrate_btn.isEnabled()
    qtbot.waitUntil(lambda: not win.jobs.busy, timeout=60_000)
    assert dlg.result is None and "failed" in dlg.result_label.text()
    assert dlg.calibrate_btn.isEnabled()
    dlg.cols.setValue(9)
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


def test_texture_capture_uses_the_hand_segmentation(make_window, qtbot, monkeypatch) -> None:
    """The live texture gets the hand's segmentation mask, as the export does, so background
    stays out of it; the mask also shows in the silhouette overlay (labels 2 and 3)."""
    from core.texture import TextureCapture

    masks = []
    original = TextureCapture.update

    def update(self, image, vertices, K, mask=None):  # noqa: N803
        masks.append((image.shape[:2], mask))
        return original(self, image, vertices, K, mask)

    monkeypatch.setattr(TextureCapture, "update", update)
    w = make_window(source="demo")
    assert w.settings.texture
    wait_frames(qtbot, w, 3)
    assert masks
    for shape, mask in masks:
        assert mask is not None and mask.dtype == bool and mask.shape == shape
        assert 0.01 < mask.mean() < 0.5  # the hand, not the frame
    labels = w.current_update.silhouette
    assert (labels == 3).any() and (labels == 1).any()


# ----------------------------------------------------------------------------- live pipeline


def test_gui_tracks_on_the_engine_stream_with_refinement_and_texture(make_window, qtbot, monkeypatch) -> None:
    """The window's default: the engine's stream (the detector's child process, pipelined),
    3 refinement iterations and the texture; the 3D view follows the tracking and the GUI
    thread keeps ticking. Timings (fps, the GUI thread's longest block) are measured by
    ``bench --only gui_fps``, not here; the figures seen go to $HANDTWIN_SHOTS/gui_perf.json."""
    from PySide6.QtCore import QTimer

    from app.hand_view import HandView, software_opengl

    monkeypatch.delenv("HANDTWIN_VIEW", raising=False)  # the app's own choice for this driver
    w = make_window(source="demo")
    assert software_opengl() and isinstance(w.hand_view, HandView)  # Xvfb: the threaded view
    assert w.settings.refine_iterations == 3 and w.settings.texture
    wait_frames(qtbot, w, 2)
    beats: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: beats.append(time.perf_counter()))
    start_frames, start_renders = w.worker.frames_done, w.hand_view.renders
    t0 = time.perf_counter()
    beats.append(t0)
    timer.start()
    qtbot.wait(4000)
    timer.stop()
    elapsed = time.perf_counter() - t0
    tracked = w.worker.frames_done - start_frames
    renders = w.hand_view.renders - start_renders
    u = w.current_update
    hand = u.result.hands[0]
    # Refined on the engine's stream: its stages' times, the refined mesh on screen.
    assert {"detect", "fit", "segment", "refine"} <= set(u.result.time_ms)
    assert hand.refined is not None and u.meshes[0] is hand.vertices
    assert w.worker.engine_detects_in_child
    gaps = np.diff(beats) * 1000
    figures = {"tracked_fps": tracked / elapsed, "renders_per_s": renders / elapsed,
               "gap_median_ms": float(np.median(gaps)), "gap_max_ms": float(gaps.max()), "beats": len(gaps)}
    SHOTS.mkdir(parents=True, exist_ok=True)
    (SHOTS / "gui_perf.json").write_text(json.dumps(figures, indent=2))
    assert tracked >= 3 and len(gaps) >= 3
    assert renders >= tracked // 2  # the view follows the tracking
