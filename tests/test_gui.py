"""The Qt window over the real VTK view (needs a display: `make test` provides Xvfb)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import has_display

pytestmark = [
    pytest.mark.gui,
    pytest.mark.skipif(not has_display(), reason="no display; `make test` runs the GUI tests under Xvfb"),
]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def window(qtbot, tmp_path: Path, monkeypatch):
    from PySide6.QtCore import QSettings

    from app.main_window import MainWindow

    monkeypatch.setenv("HANDTWIN_HOME", str(tmp_path / "home"))
    w = MainWindow(store=QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(w)
    yield w
    w.close()


def test_window_shows_the_open_hand(window) -> None:
    view = window.hand_view
    assert view._mesh is not None and view.num_model_vertices == 1610
    assert "1610 vertices" in window.model_label.text()
    assert "length" in window.model_label.text()


@pytest.mark.parametrize("size", [(1560, 900), (1280, 720), (900, 600)])
def test_status_bar_keeps_every_field_readable(window, qtbot, size) -> None:
    """The transient message keeps its width next to the permanent fields (it was squeezed to
    "Tracking th"); at the default and 1280 x 720 sizes every field shows whole, and where the
    window is narrower a field is elided with its full text in its tooltip."""
    from PySide6.QtWidgets import QApplication, QLabel

    window.show()
    qtbot.waitExposed(window)
    window.resize(*size)
    texts = {window.fps_label: "14.7 fps · view 10.2/s",
             window.stages_label: "detect 37 · fit 2 · refine 28 · segment 2 · texture 6 ms",
             window.camera_label: "camera f 416 px · 60° (from the scene)",
             window.quality_label: "reprojection 2.7 px · IoU 0.88", window.texture_label: "texture 52%"}
    for label, text in texts.items():
        label.setText(text)
    message = "Tracking the demo clip (a synthetic hand)"
    window.statusBar().showMessage(message)
    for _ in range(3):
        QApplication.processEvents()
    bar = window.statusBar()
    assert bar.width() == window.width()
    free = bar.width() - bar.fields.width()
    assert free >= bar.message_min_width
    assert free >= bar.fontMetrics().horizontalAdvance(message) + 20
    labels = [*texts, window.profile_label, window.model_label]
    for label in labels:
        assert label.isVisible() and label.width() > 0
        # What is painted (QLabel's own text) is the whole text unless the label says it is elided.
        shown = QLabel.text(label)
        assert label.elided == (shown != label.text()), (label.text(), shown)
        if label.elided:
            assert label.text() in label.toolTip()
        assert label.description in label.toolTip()
    if size[0] >= 1280:
        assert not [label.text() for label in labels if label.elided]
    else:
        assert any(label.elided for label in labels)


def test_view_toggles(window) -> None:
    window.action_wireframe.setChecked(True)
    assert window.hand_view._mesh_actor.GetProperty().GetEdgeVisibility()
    window.action_skeleton.setChecked(False)
    assert not any(a.GetVisibility() for a in window.hand_view._skel_actors)
    assert window.hand_view._skel_actors
    window.action_skeleton.setChecked(True)
    assert all(a.GetVisibility() for a in window.hand_view._skel_actors)


def test_bad_model_gives_a_message_not_a_crash(qtbot, tmp_path: Path, monkeypatch) -> None:
    from PySide6.QtWidgets import QMessageBox

    from app.main_window import MainWindow

    shown = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: shown.append(a[2]))
    monkeypatch.setenv("HANDTWIN_HOME", str(tmp_path / "home"))
    from PySide6.QtCore import QSettings

    monkeypatch.setenv("HANDTWIN_HOME", str(tmp_path / "home"))
    bad = tmp_path / "MANO_RIGHT.pkl"
    bad.write_bytes(b"junk")
    w = MainWindow(model=str(bad), store=QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(w)
    assert shown and "not a readable MANO pickle" in shown[0]
    assert w.layer is None
    w.close()


def test_screenshot_and_quit_after(tmp_path: Path) -> None:
    out = tmp_path / "shot.png"
    result = subprocess.run(
        [sys.executable, "main.py", "gui", "--screenshot", str(out), "--quit-after", "1.5"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
        env={**os.environ, "HANDTWIN_HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "config")},
    )
    assert result.returncode == 0, result.stderr
    from PIL import Image

    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape[0] > 400 and img.shape[1] > 800
    # The 3D view shows a skin-coloured hand, not a blank or black frame.
    skin = (img[..., 0] > 150) & (img[..., 0] > img[..., 2] + 30)
    assert skin.mean() > 0.01


def test_stats_report_the_live_session(tmp_path: Path) -> None:
    """``gui --stats`` (what ``bench --only gui_fps`` reads): the window's figures after its
    warm-up, with the defaults of a new user: refinement 3 and the texture, the detector in
    its child process. No timing is asserted here (``bench`` reports it)."""
    import json

    env = {**os.environ, "HANDTWIN_HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    bad = subprocess.run([sys.executable, "main.py", "gui", "--stats", str(tmp_path / "s.json")],
                         cwd=ROOT, capture_output=True, text=True, timeout=180, env=env)
    assert bad.returncode == 2 and "--stats needs --quit-after" in bad.stderr
    out = tmp_path / "stats.json"
    result = subprocess.run([sys.executable, "main.py", "gui", "--source", "demo", "--quit-after", "25",
                             "--stats", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    f = json.loads(out.read_text())
    assert f["refine_iterations"] == 3 and f["texture"] is True and f["detector_in_child"] is True
    assert f["measured_s"] > 0 and f["tracked_fps"] > 0 and f["shown_fps"] > 0 and f["cpu_ms_per_frame"] > 0
    assert f["gui_block_max_ms"] >= f["gui_block_p99_ms"] >= f["gui_gap_median_ms"] > 0
    assert {"detect", "fit", "segment", "refine"} <= set(f["stage_ms"])


def test_command_line_settings_hold_for_this_run_only(qtbot, tmp_path: Path, monkeypatch) -> None:
    """``gui --no-realtime`` (what ``bench --only gui_fps`` uses: the demo file is 15 fps, a
    webcam 30) and ``gui --fov 90`` hold for this run; saving another setting does not store
    them, while a value the user changes afterwards is the user's and is stored."""
    from PySide6.QtCore import QSettings

    from app.main_window import MainWindow
    from main import build_parser

    assert build_parser().parse_args(["gui", "--no-realtime"]).realtime is False
    assert build_parser().parse_args(["gui"]).realtime is None
    monkeypatch.setenv("HANDTWIN_HOME", str(tmp_path / "home"))
    store = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    run = MainWindow(store=store, realtime=False, camera=("fov", "", 90.0))
    qtbot.addWidget(run)
    config = run.tracking_config("demo")
    assert config.realtime is False and config.fov_deg == 90.0 and not run.realtime_check.isChecked()
    run.state.update_settings(silhouette=False)  # saves: the run-only values are not stored
    run.close()
    again = MainWindow(store=store)
    qtbot.addWidget(again)
    config = again.tracking_config("demo")
    assert config.realtime is True and config.fov_deg is None and again.settings.silhouette is False
    again.close()
    changed = MainWindow(store=store, realtime=False)
    qtbot.addWidget(changed)
    changed.state.update_settings(realtime=True, texture=False)  # the user ticks it again: stored
    changed.close()
    last = MainWindow(store=store)
    qtbot.addWidget(last)
    assert last.settings.realtime is True and last.settings.texture is False
    last.close()


def test_the_calibration_panel_fits_its_dock(window) -> None:
    """The panel scrolls vertically only: nothing in it may be wider than its dock, or the
    right side of every row is cut off (an unwrapped sentence once made it 790 px wide)."""
    panel = window.calibration_panel
    assert panel.scale_mode() == "prior" and "population prior" in panel.measured_label.text()
    body = panel._scroll.widget()
    assert body.minimumSizeHint().width() <= window.calibration_dock.minimumWidth()


def test_the_camera_field_names_where_an_estimate_came_from() -> None:
    """The status bar's camera: an estimated focal length says which cue gave it."""
    from types import SimpleNamespace

    from app.main_window import camera_text
    from core.camera import intrinsics_from_fov

    cam = intrinsics_from_fov(90.0, 640, 480)
    shown = camera_text(SimpleNamespace(camera=cam, camera_source="estimated", camera_cue="scene"))
    assert shown == "camera f 320 px · 90° (from the scene)"
    assert camera_text(SimpleNamespace(camera=cam, camera_source="estimated", camera_cue="hand")).endswith(
        "(from the hand)")
    assert camera_text(SimpleNamespace(camera=cam, camera_source="assumed", camera_cue=None)).endswith("(assumed)")
