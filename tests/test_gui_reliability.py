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


def _image_folder(tmp_path: Path, name: str, mirrored: bool) -> Path:
    """20 demo frames from frame 40 as PNGs (no camera: the folder's camera is assumed, or
    weak with ``intrinsics_mode`` "weak"); mirrored, they are a left hand."""
    import cv2

    folder = tmp_path / name
    folder.mkdir()
    for i, image in enumerate(_demo_frames(40, 20)):
        image = image[:, ::-1] if mirrored else image
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    return folder


def _record_texture_inputs(monkeypatch) -> dict:
    """What the live texture is sampled with, by frame image: (image, vertices, K)."""
    from core.texture import TextureCapture

    seen: dict[int, tuple] = {}
    original = TextureCapture.update

    def update(self, image, vertices, K, mask=None):  # noqa: N803
        seen[id(image)] = (image, np.array(vertices), np.array(K))  # the image kept: its id stays unique
        return original(self, image, vertices, K, mask)

    monkeypatch.setattr(TextureCapture, "update", update)
    return seen


def _texture_registration_px(update, seen: dict) -> float | None:
    """How far the texture's camera puts the hand's keypoints from where the hand's own camera
    puts them (max, px): the mesh the texture got is the hand's mesh moved rigidly (a weak
    camera's pinhole form pushes it far away), so its keypoints move with it. None when the
    frame on screen was not textured (yet)."""
    from core.camera import project

    if update is None or not update.result.hands or id(update.frame.image) not in seen:
        return None
    hand = update.result.hands[0]
    _, verts, K = seen[id(update.frame.image)]
    shift = verts[0].astype(np.float64) - hand.vertices[0]
    return float(np.abs(project(hand.keypoints_3d + shift, K) - hand.final_keypoints_2d).max())


@pytest.mark.gui
@pytest.mark.skipif(not has_display(), reason="no display; `make test` runs the GUI tests under Xvfb")
def test_left_hand_is_drawn_with_the_left_topology(make_window, gui_env, qtbot, tmp_path: Path,  # noqa: F811
                                                   monkeypatch) -> None:
    """The demo mirrored is a left hand: the live view must pair the left side's mirrored faces
    with the left side's UV faces (with the right's UV faces its texture was scrambled: 6,938
    distinct vertex/UV pairs on the open hand instead of 1,818), and the texture must be
    sampled with the refined hand's own camera (refinement is on by default)."""
    from core.export.bundle import split_uv_seams
    from core.model import load_model_data

    folder = _image_folder(tmp_path, "mirrored", mirrored=True)
    left, right = load_model_data(None, "left"), load_model_data(None, "right")
    good = len(split_uv_seams(left.faces, left.uv_faces).vertex_index)
    scrambled = len(split_uv_seams(left.faces, right.uv_faces).vertex_index)
    assert good < scrambled  # the oracle tells the two apart
    seen = _record_texture_inputs(monkeypatch)

    w = make_window()
    assert w.settings.refine_iterations == 3 and w.settings.texture
    w.start_source(str(folder))
    registered: list[float] = []

    def left_textured() -> bool:
        u = w.current_update
        if u is None or not u.result.hands or u.result.hands[0].side != "left" or not w.hand_view.has_mesh:
            return False
        err = _texture_registration_px(u, seen)
        if err is not None and u.result.hands[0].refined is not None:
            registered.append(err)
        return bool(registered)

    qtbot.waitUntil(left_textured, timeout=120_000)
    assert max(registered) < 0.05, registered
    view = w.hand_view
    assert np.array_equal(view._faces, left.faces)  # noqa: SLF001
    assert np.array_equal(view._uv_faces, left.uv_faces)  # noqa: SLF001
    assert view._mesh.n_points == good  # noqa: SLF001
    w.stop_tracking()


@pytest.mark.gui
@pytest.mark.skipif(not has_display(), reason="no display; `make test` runs the GUI tests under Xvfb")
@pytest.mark.parametrize("mirrored,refine", [(False, 0), (True, 3)], ids=["right-fit", "left-refined"])
def test_weak_perspective_texture_is_sampled_with_the_fits_weak_camera(make_window, gui_env, qtbot,  # noqa: F811
                                                                       tmp_path: Path, monkeypatch,
                                                                       mirrored: bool, refine: int) -> None:
    """A source without a camera, tracked with weak perspective: the texture and the silhouette
    overlay use the hand's weak camera, not the nominal pinhole the hand is placed in (which
    puts the fingertips about 17 px off on these frames); with refinement on (the GUI's
    default, 3 iterations) the hand is refined in that weak camera and keeps it (in the nominal
    pinhole the refinement fell back on most frames)."""
    from app.settings import AppSettings
    from core.camera import project

    AppSettings(refine_iterations=refine, intrinsics_mode="weak").save(gui_env.store)
    folder = _image_folder(tmp_path, "frames", mirrored=mirrored)
    side = "left" if mirrored else "right"
    seen = _record_texture_inputs(monkeypatch)
    w = make_window()
    w.start_source(str(folder))
    found: list = []

    def textured() -> bool:
        u = w.current_update
        err = _texture_registration_px(u, seen)
        if err is not None and u.result.hands[0].side == side and (u.result.hands[0].refined is None) == (not refine):
            found.append((err, u))
        return bool(found)

    qtbot.waitUntil(textured, timeout=120_000)
    err, u = found[-1]
    hand = u.result.hands[0]
    assert u.result.camera_source == "weak" and hand.camera.is_weak
    if refine:
        assert not hand.refined.fell_back and hand.camera is hand.refined.camera
    assert err < 0.05
    nominal_off = np.abs(project(hand.keypoints_3d, u.result.camera.K) - hand.final_keypoints_2d).max()
    assert nominal_off > 3.0  # the oracle tells the two cameras apart
    # The overlay's fitted silhouette is drawn with the fit's weak camera too, not the nominal one
    # (up to the hand's wrist line, as the overlay shows it).
    from app.worker import clear_past_wrist, fill_silhouette

    drawn = (u.silhouette & 1) > 0

    def iou(pixels) -> float:
        mask = np.zeros(drawn.shape, np.uint8)
        fill_silhouette(mask, pixels, hand.faces, 1)
        clear_past_wrist(mask, hand.detection.keypoints_2d)
        return float((drawn & (mask > 0)).sum() / max((drawn | (mask > 0)).sum(), 1))

    assert iou(hand.camera.project(hand.vertices)) > 0.99
    assert iou(project(hand.vertices, u.result.camera.K).astype(np.float32)) < 0.9
    w.stop_tracking()


def _detector_children() -> list[int]:
    """This process's detector child processes (``python -m core.detect.process``)."""
    me, found = os.getpid(), []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == me and b"core.detect.process" in cmd:
            found.append(int(proc.name))
    return found


def _mapped_shared_blocks() -> set[str]:
    """The POSIX shared memory blocks this process has mapped."""
    maps = Path(f"/proc/{os.getpid()}/maps").read_text()
    return {line.split()[-1] for line in maps.splitlines() if "/dev/shm/" in line}


@pytest.mark.gui
@pytest.mark.skipif(not has_display() or not Path("/dev/shm").is_dir(), reason="Xvfb and POSIX shared memory")
def test_pause_switch_and_stop_end_the_detector_child_and_its_shared_memory(make_window, gui_env, qtbot,  # noqa: F811
                                                                           tmp_path: Path) -> None:
    """The window tracks in the engine's stream, MediaPipe in a child process over shared
    memory: pausing holds the stream, a source switch while paused starts the new source at
    once, and stopping ends the child and unmaps and removes its shared memory."""
    w = make_window(source="demo")
    wait_frames(qtbot, w, 2)
    assert w.worker.engine_detects_in_child
    children = _detector_children()
    blocks = _mapped_shared_blocks()
    assert len(children) == 1 and blocks
    w.action_pause.setChecked(True)
    counts = [w.worker.frames_done]

    def settled() -> bool:  # the frames already in the pipeline come out, then nothing
        qtbot.wait(500)
        counts.append(w.worker.frames_done)
        return counts[-1] == counts[-2]

    qtbot.waitUntil(settled, timeout=30_000)
    qtbot.wait(1000)
    assert w.worker.frames_done == counts[-1]
    assert counts[-1] - counts[0] <= 6  # the pipeline holds a few frames, not the source
    folder = _image_folder(tmp_path, "frames", mirrored=False)
    w.start_source(str(folder))  # while paused: the old stream stops, the new one runs
    assert not any(Path(f"/proc/{pid}").exists() for pid in children)
    assert not {b for b in blocks if Path(b).exists()}
    wait_frames(qtbot, w, 2)
    assert w.current_update.frame.source == str(folder)
    children, blocks = _detector_children(), _mapped_shared_blocks()
    assert len(children) == 1
    w.stop_tracking()
    assert not any(Path(f"/proc/{pid}").exists() for pid in children)
    assert not _mapped_shared_blocks() and not {b for b in blocks if Path(b).exists()}
