"""Shared fixtures and helpers of the GUI tests (no tests here).

Every window gets its own settings file and HandTwin home under ``tmp_path``; message boxes
are captured instead of shown; at teardown the windows are closed and no tracking thread,
job thread or visible window may be left behind.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import has_display

GUI_MARKS = [
    pytest.mark.gui,
    pytest.mark.skipif(not has_display(), reason="no display; `make test` runs the GUI tests under Xvfb"),
]

SHOTS = Path(os.environ.get("HANDTWIN_SHOTS", "/tmp/handtwin_shots"))


@pytest.fixture
def gui_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QMessageBox

    home = tmp_path / "home"
    monkeypatch.setenv("HANDTWIN_HOME", str(home))
    store = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    messages: list[str] = []

    def warning(parent, title, text, *args, **kwargs):
        messages.append(f"{title}: {text}")
        return QMessageBox.StandardButton.Ok

    monkeypatch.setattr(QMessageBox, "warning", warning)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    return SimpleNamespace(store=store, messages=messages, home=home, tmp=tmp_path)


@pytest.fixture
def make_window(qtbot, gui_env):
    from PySide6.QtCore import QThread
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow

    windows = []

    def make(**kwargs) -> MainWindow:
        w = MainWindow(store=gui_env.store, **kwargs)
        qtbot.addWidget(w)
        w.show()
        qtbot.waitExposed(w)
        windows.append(w)
        return w

    yield make
    for w in windows:
        w.close()
    QApplication.processEvents()
    for w in windows:
        running = [t.objectName() for t in w.findChildren(QThread) if t.isRunning()]
        assert not running, f"threads left running: {running}"
        assert w._worker is None and not w.jobs.busy  # noqa: SLF001
    renderers = [t.name for t in threading.enumerate() if t.name == "handtwin-hand-view"]
    assert not renderers, f"3D view render threads left running: {renderers}"
    visible = [x for x in QApplication.topLevelWidgets() if x.isVisible()]
    assert not visible, f"windows left open: {visible}"


def wait_frames(qtbot, window, count: int, timeout_ms: int = 120_000) -> None:
    start = window.frames_shown
    qtbot.waitUntil(lambda: window.frames_shown >= start + count, timeout=timeout_ms)


def record_session(qtbot, window, folder: Path, frames: int) -> None:
    """Record at least ``frames`` frames of the running source into ``folder`` as the Record
    action does, and wait until the session is written."""
    from core.capture import is_session_folder

    window.action_record.blockSignals(True)
    window.action_record.setChecked(True)
    window.action_record.blockSignals(False)
    window.set_recording(True, str(folder))
    qtbot.waitUntil(lambda: window.current_update is not None and window.current_update.recorded >= frames,
                    timeout=120_000)
    window.action_record.setChecked(False)
    qtbot.waitUntil(lambda: is_session_folder(folder) and str(folder) in window.last_message, timeout=60_000)


def screenshot(window, name: str) -> Path:
    """Save the window (3D view included) as SHOTS/name."""
    from app.gui import save_screenshot

    SHOTS.mkdir(parents=True, exist_ok=True)
    return save_screenshot(window, SHOTS / name)


def screenshot_screen(name: str) -> Path:
    """Save the whole screen (window plus dialogs) as SHOTS/name."""
    from PySide6.QtWidgets import QApplication

    SHOTS.mkdir(parents=True, exist_ok=True)
    QApplication.processEvents()
    path = SHOTS / name
    QApplication.primaryScreen().grabWindow(0).save(str(path))
    return path
