"""Issue 17's GUI cases: bad files on the command line fail fast with one line, ``--profile``
reaches the window, a damaged video is reported; and issue 16's left hand, whose texture
must be drawn with the left side's own faces and UV faces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import has_display
from tests.test_gui_support import GUI_MARKS, gui_env, make_window, wait_frames  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[1]


def _profile_doc(name: str = "Ann", betas: int = 10) -> dict:
    return {
        "format": "handtwin-profile", "version": 1, "name": name, "handedness": "right",
        "model": {"name": "open hand", "sha256": "ab" * 32},
        "shape": [0.1] * betas, "hand_length_mm": 186.5, "hand_width_mm": 45.2,
        "bone_lengths_mm": [30.0] * 20, "scale_source": "prior",
        "frames": [{"source": "demo", "frame": 3, "confidence": 0.5, "weight": 1.0}],
        "texture": None, "created": "2026-01-01T00:00:00+00:00",
    }


def _demo_frames(start: int, count: int) -> list[np.ndarray]:
    from core.capture import open_source

    frames = []
    with open_source("demo") as src:
        for frame in src:
            if frame.index >= start:
                frames.append(frame.image)
            if len(frames) == count:
                break
    return frames


# ------------------------------------------------------------------ the command line

def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    garbage = tmp / "broken.pkl"
    garbage.write_bytes(b"\x80\x02garbage that is no pickle")
    broken = tmp / "broken.json"
    broken.write_text("{ not json", encoding="utf-8")
    wrong = tmp / "wrong.json"
    wrong.write_text(json.dumps(_profile_doc(betas=7)), encoding="utf-8")
    return {
        "screenshot in /proc": (["--screenshot", "/proc/x.png"], "/proc"),
        "screenshot in a missing folder": (["--screenshot", str(tmp / "none" / "x.png")], "does not exist"),
        "broken model": (["--model", str(garbage)], "broken.pkl"),
        "broken profile": (["--profile", str(broken)], "not valid JSON"),
        "profile for another model": (["--profile", str(wrong)], "needs 10"),
    }


@pytest.mark.parametrize("case", ["screenshot in /proc", "screenshot in a missing folder", "broken model",
                                  "broken profile", "profile for another model"])
def test_bad_files_on_the_gui_command_line_fail_fast(tmp_path: Path, case: str) -> None:
    """Each gives one ``handtwin: error:`` line and exit 2 before a window opens (they hung)."""
    args, expected = _bad_inputs(tmp_path)[case]
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HANDTWIN_HOME=str(tmp_path / "home"))
    proc = subprocess.run([sys.executable, "main.py", "gui", "--source", "demo", "--quit-after", "60", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("handtwin: error:")]
    assert proc.returncode == 2, proc.stderr[-800:]
    assert len(errors) == 1 and expected in errors[0], proc.stderr[-800:]
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------ in the window

@pytest.mark.gui
@pytest.mark.skipif(not has_display(), reason="no display; `make test` runs the GUI tests under Xvfb")
def test_gui_profile_option_reaches_the_window(qtbot, gui_env, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    """``gui --profile P`` hands P to the window, which makes it the active profile."""
    from PySide6.QtWidgets import QApplication

    import app.main_window as main_window
    from app.gui import run_gui

    path = tmp_path / "ann.json"
    path.write_text(json.dumps(_profile_doc()), encoding="utf-8")
    made = []

    class Window(main_window.MainWindow):
        def __init__(self, **kwargs) -> None:
            super().__init__(store=gui_env.store, **kwargs)
            made.append(self)

    monkeypatch.setattr(main_window, "MainWindow", Window)
    monkeypatch.setattr(QApplication, "exec", lambda self: 0)  # no event loop: the window as built
    assert run_gui(source="", profile=str(path)) == 0  # "": no source
    (window,) = made
    try:
        assert window.active_profile is not None and window.active_profile.name == "Ann"
        assert "Ann" in window.windowTitle()
    finally:
        window.close()


def _damaged_video(path: Path, frames: list[np.ndarray]) -> Path:
    """An MPEG-4 file of ``frames`` whose second half of the media data is random bytes."""
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15, (w, h))
    for image in frames:
        writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    writer.release()
    data = bytearray(path.read_bytes())
    mdat, moov = data.find(b"mdat"), data.find(b"moov")
    assert 0 < mdat < moov, "expected the media data before the index (OpenCV's MP4 writer)"
    start = mdat + (moov - mdat) // 2
    data[start:moov - 8] = np.random.default_rng(0).integers(0, 256, moov - 8 - start, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


@pytest.mark.gui
@pytest.mark.skipif(not has_display(), reason="no display; `make test` runs the GUI tests under Xvfb")
def test_damaged_video_is_reported_not_ended_quietly(make_window, gui_env, qtbot, tmp_path: Path) -> None:  # noqa: F811
    from core.capture import open_source

    video = _damaged_video(tmp_path / "damaged.mp4", _demo_frames(40, 30))
    with open_source(str(video)) as src:
        read = sum(1 for _ in src)
        assert read < 30 and src.ended_early and "damaged" in src.ended_early
    w = make_window()
    w.start_source(str(video))
    qtbot.waitUntil(lambda: any("ended early" in m for m in gui_env.messages), timeout=120_000)
    qtbot.waitUntil(lambda: not w.tracking, timeout=10_000)
    message = next(m for m in gui_env.messages if "ended early" in m)
    assert f"after {read} of its 30 frames" in message and "damaged" in message
    assert "ended early" in w.statusBar().currentMessage()


@pytest.mark.gui
@pytest.mark.skipif(not has_display(), reason="no display; `make test` runs the GUI tests under Xvfb")
def test_left_hand_is_drawn_with_the_left_topology(make_window, gui_env, qtbot, tmp_path: Path) -> None:  # noqa: F811
    """The demo mirrored is a left hand: the live view must pair the left side's mirrored faces
    with the left side's UV faces (with the right's UV faces its texture was scrambled: 6,938
    distinct vertex/UV pairs on the open hand instead of 1,818)."""
    import cv2

    from core.export.bundle import split_uv_seams
    from core.model import load_model_data

    folder = tmp_path / "mirrored"
    folder.mkdir()
    for i, image in enumerate(_demo_frames(40, 20)):
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.cvtColor(np.ascontiguousarray(image[:, ::-1]), cv2.COLOR_RGB2BGR))
    left, right = load_model_data(None, "left"), load_model_data(None, "right")
    good = len(split_uv_seams(left.faces, left.uv_faces).vertex_index)
    scrambled = len(split_uv_seams(left.faces, right.uv_faces).vertex_index)
    assert good < scrambled  # the oracle tells the two apart

    w = make_window()
    w.start_source(str(folder))
    seen = []

    def left_shown() -> bool:
        u = w.current_update
        if u is not None and u.result.hands:
            seen.append(u.result.hands[0].fit.side)
        return bool(seen) and seen[-1] == "left" and w.hand_view.has_mesh

    qtbot.waitUntil(left_shown, timeout=120_000)
    view = w.hand_view
    assert np.array_equal(view._faces, left.faces)  # noqa: SLF001
    assert np.array_equal(view._uv_faces, left.uv_faces)  # noqa: SLF001
    assert view._mesh.n_points == good  # noqa: SLF001
    w.stop_tracking()
