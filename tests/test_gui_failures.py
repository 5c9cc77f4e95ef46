"""Failure modes: a source that dies mid-stream, a corrupt profile, an unwritable export or
recording folder. Each must give a clear message and leave the app usable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.errors import InputError
from tests.test_gui_support import GUI_MARKS, gui_env, make_window, record_session, wait_frames  # noqa: F401 (fixtures)

pytestmark = GUI_MARKS


class DyingSource:
    """Yields a few demo frames, then fails like an unplugged camera (or just stops)."""

    def __init__(self, frames: int = 4, error: Exception | None = None) -> None:
        from core.capture import open_source

        with open_source("demo") as src:
            self._frames = [f for _, f in zip(range(frames), src)]
        self.error = error
        self.name = "fake camera"

    def __iter__(self):
        yield from self._frames
        if self.error is not None:
            raise self.error

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def test_source_failing_mid_stream_gives_a_message_and_the_app_goes_on(make_window, gui_env, qtbot,
                                                                       monkeypatch) -> None:
    import app.worker as worker_module

    real_open, real_open_spec = worker_module.open_source, worker_module.open_spec
    monkeypatch.setattr(worker_module, "open_source",
                        lambda spec, **kw: (DyingSource(4, InputError("the camera was unplugged")) if spec == "9"
                                            else real_open(spec, **kw)))
    monkeypatch.setattr(worker_module, "open_spec",  # the worker opens a whole source spec
                        lambda spec, *a, **kw: DyingSource(4, InputError("the camera was unplugged")) if spec == "9"
                        else real_open_spec(spec, *a, **kw))
    w = make_window()
    w.start_source("9")
    qtbot.waitUntil(lambda: any("unplugged" in m for m in gui_env.messages), timeout=120_000)
    qtbot.waitUntil(lambda: not w.tracking, timeout=10_000)
    msg = next(m for m in gui_env.messages if "unplugged" in m)
    assert msg.startswith("Tracking:") and "stopped" in msg
    assert w.frames_shown >= 1 or w.worker is None
    # Still usable: the demo tracks.
    w.start_source("demo")
    wait_frames(qtbot, w, 2)
    assert w.tracking


def test_live_camera_that_stops_delivering_is_reported(make_window, gui_env, qtbot, monkeypatch) -> None:
    import app.worker as worker_module

    monkeypatch.setattr(worker_module, "CameraSource", DyingSource)
    monkeypatch.setattr(worker_module, "open_source", lambda spec, **kw: DyingSource(3))
    monkeypatch.setattr(worker_module, "open_spec", lambda spec, *a, **kw: DyingSource(3))
    w = make_window()
    w.start_source("7")
    qtbot.waitUntil(lambda: any("stopped delivering" in m for m in gui_env.messages), timeout=120_000)
    qtbot.waitUntil(lambda: not w.tracking, timeout=10_000)
    assert w.action_stop.isEnabled() is False


def test_missing_source_gives_a_message(make_window, gui_env, qtbot, tmp_path: Path) -> None:
    w = make_window()
    w.start_source(str(tmp_path / "nope.mp4"))
    qtbot.waitUntil(lambda: bool(gui_env.messages), timeout=60_000)
    assert "no such file" in gui_env.messages[0]
    qtbot.waitUntil(lambda: not w.tracking, timeout=10_000)


def test_corrupt_profile_gives_a_message_and_changes_nothing(make_window, gui_env, tmp_path: Path) -> None:
    w = make_window()
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json", encoding="utf-8")
    assert w.load_profile_file(str(bad)) is False
    assert gui_env.messages and "not valid JSON" in gui_env.messages[-1]
    assert w.active_profile is None and w.windowTitle() == "HandTwin"
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"format": "handtwin-profile", "version": 1, "name": "x"}), encoding="utf-8")
    assert w.load_profile_file(str(wrong)) is False
    assert "handedness" in gui_env.messages[-1] or "profile" in gui_env.messages[-1]
    # The window still works: the rest hand is shown and a view toggle responds.
    assert w.hand_view.has_mesh
    w.action_wireframe.setChecked(True)
    assert w.hand_view._mesh_actor.GetProperty().GetEdgeVisibility()  # noqa: SLF001


def test_corrupt_active_profile_at_start_is_reported_quietly(qtbot, gui_env, tmp_path: Path) -> None:
    from app.main_window import MainWindow

    bad = tmp_path / "gone.json"
    bad.write_text("[]", encoding="utf-8")
    gui_env.store.setValue("active_profile", str(bad))
    w = MainWindow(store=gui_env.store)
    qtbot.addWidget(w)
    assert w.active_profile is None
    assert "Cannot use the profile" in w.last_message
    w.close()


def test_unwritable_export_folder_gives_a_message_then_export_works(make_window, gui_env, qtbot,
                                                                    tmp_path: Path) -> None:
    w = make_window()
    dlg = w.export_dialog()
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    dlg.dest.setText(str(blocker / "sub" / "hand.glb"))
    dlg.start()
    qtbot.waitUntil(lambda: dlg.job is None, timeout=60_000)
    assert gui_env.messages and gui_env.messages[-1].startswith("Export:")
    assert "a-file" in gui_env.messages[-1]
    assert dlg.export_btn.isEnabled() and not dlg.show_btn.isEnabled()
    # The same dialog then exports to a good folder.
    dlg.dest.setText(str(tmp_path / "ok" / "hand.glb"))
    dlg.start()
    qtbot.waitUntil(lambda: dlg.job is None, timeout=60_000)
    assert (tmp_path / "ok" / "hand.glb").is_file() and dlg.show_btn.isEnabled()
    dlg.close()


def test_export_asks_before_replacing_files(make_window, gui_env, qtbot, tmp_path: Path, monkeypatch) -> None:
    """Exporting onto existing files asks once (destination and companions alike) and replaces
    them only on Yes: a second export to the default name replaced the first without a word, and
    a stray NAME.mtl stopped the export with the command line's advice to "pass --force"."""
    from PySide6.QtWidgets import QMessageBox

    w = make_window()
    dlg = w.export_dialog()
    dlg.format.setCurrentIndex(2)  # OBJ: NAME.obj + NAME.mtl
    out, mtl = tmp_path / "hand.obj", tmp_path / "hand.mtl"
    mtl.write_text("someone else's material")
    asked: list[str] = []
    answer = {"button": QMessageBox.StandardButton.No}
    monkeypatch.setattr(QMessageBox, "question", lambda parent, title, text, *a, **k: asked.append(text)
                        or answer["button"])
    dlg.dest.setText(str(out))
    dlg.start()
    assert len(asked) == 1 and "hand.mtl" in asked[0] and "hand.obj" not in asked[0]
    assert dlg.job is None and not out.exists() and mtl.read_text() == "someone else's material"
    assert "kept" in dlg.status.text()
    answer["button"] = QMessageBox.StandardButton.Yes
    dlg.start()
    qtbot.waitUntil(lambda: dlg.job is None, timeout=60_000)
    assert out.is_file() and mtl.read_text() != "someone else's material"
    assert not gui_env.messages, gui_env.messages
    # The same export again: both files named in one question; No keeps them as they are.
    before = out.read_bytes()
    out.write_bytes(before + b"# mine\n")
    answer["button"] = QMessageBox.StandardButton.No
    dlg.start()
    assert "hand.obj, hand.mtl" in asked[-1] and dlg.job is None
    assert out.read_bytes() == before + b"# mine\n"
    dlg.close()


def test_unwritable_recording_folder_gives_a_message(make_window, gui_env, qtbot, tmp_path: Path) -> None:
    w = make_window(source="demo")
    wait_frames(qtbot, w, 1)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    w.action_record.setChecked(True)  # default folder first: must work
    w.set_recording(False)
    w.action_record.blockSignals(True)
    w.action_record.setChecked(True)
    w.action_record.blockSignals(False)
    w.set_recording(True, str(blocker / "session"))
    qtbot.waitUntil(lambda: any(m.startswith("Recording:") for m in gui_env.messages), timeout=60_000)
    assert "a-file" in next(m for m in gui_env.messages if m.startswith("Recording:"))
    assert not w.action_record.isChecked()
    assert w.tracking  # tracking goes on


def test_record_then_replay_a_session(make_window, gui_env, qtbot, tmp_path: Path) -> None:
    w = make_window(source="demo")
    wait_frames(qtbot, w, 1)
    folder = tmp_path / "rec"
    record_session(qtbot, w, folder, 3)
    w.start_source(str(folder))
    wait_frames(qtbot, w, 2)
    assert w.current_update.frame.source == str(folder)
    assert w.current_update.frame.intrinsics is not None  # the demo's camera was recorded
    assert not gui_env.messages
    assert np.asarray(w.current_update.frame.image).shape[2] == 3
