"""The calibration panel on a session of synthetic frames: the result view (personal skeleton
against the average hand, per-bone lengths, frames used and rejected, surface, size source),
progress and Cancel (the previous result and profile stay), and the panels bound to the
application state rather than to the window."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest

from tests.test_gui_support import GUI_MARKS, SHOTS, gui_env, make_window  # noqa: F401

pytestmark = GUI_MARKS


def _session(side: str = "right", frames: int = 10, seed: int = 50, bad: int | None = 3):
    """A calibration session holding synthetic frames of an off-template person (one of them a
    wrong detection, which the joint optimization rejects)."""
    from core.model import load_model_data
    from core.personalize import CalibrationFrame, CalibrationSession
    from core.personalize.features import NUM_FEATURES
    from core.personalize.people import synthetic_person

    person = synthetic_person(load_model_data(None, side), np.random.default_rng(seed), frames, noise_px=1.0)
    rng = np.random.default_rng(0)
    cands = [CalibrationFrame(
        source="synthetic", frame_index=i, side=side, thumbnail=np.full((96, 96, 3), 90, np.uint8),
        features=np.zeros(NUM_FEATURES, np.float32), pose=f.pose.astype(np.float32),
        betas=np.zeros(10, np.float32), confidence=0.5, descriptor=rng.normal(size=8).astype(np.float32),
        keypoints_2d=f.keypoints_2d.astype(np.float32), K=f.K, image_size=f.image_size,
        world_landmarks=f.world_landmarks.astype(np.float32), score=0.9,
    ) for i, f in enumerate(person.frames)]
    if bad is not None:
        cands[bad] = dataclasses.replace(cands[bad], keypoints_2d=cands[bad].keypoints_2d[::-1].copy())
    s = CalibrationSession(side=side, k=frames, confidence="heuristic")
    s.convention = None  # exact keypoints in the model's own convention
    s.add_candidates(cands)
    return s, person


def _panel_on(make_window, **session):
    """A new window, and its calibration panel showing a :func:`_session` of these arguments."""
    w = make_window()
    panel = w.calibration_panel
    panel.session, _ = _session(**session)
    panel.refresh()
    return w, panel, panel.session


def _calibrate(qtbot, panel) -> None:
    panel.calibrate()
    assert panel.job is not None and panel.cancel_btn.isEnabled() and not panel.calibrate_btn.isEnabled()
    qtbot.waitUntil(lambda: panel.job is None, timeout=120_000)


@pytest.mark.slow
def test_result_view_shows_the_personal_skeleton_against_the_average(make_window, gui_env, qtbot) -> None:
    from core.keypoints import bone_lengths

    w = make_window()
    panel = w.calibration_panel
    session, person = _session()
    panel.session = session
    assert w.state.calibration_session is session  # the panel's session is the state's
    panel.refresh()
    assert panel.calibrate_btn.isEnabled() and not panel.cancel_btn.isEnabled()
    panel.scale_prior.setChecked(True)
    seen: list[int] = []
    panel.cal_progress.valueChanged.connect(seen.append)
    _calibrate(qtbot, panel)
    assert not gui_env.messages, gui_env.messages
    result = panel.result
    assert result is not None and result is w.state.calibration and result.skeleton is not None
    # The progress bar moved through the joint optimization's iterations, then to the end.
    assert len([v for v in seen if 750 <= v < 1000]) >= 3 and seen[-1] == 1000

    view = panel.result_view
    assert view.isVisible()
    # The picture: both skeletons in palm view, wrists together, the same hand length.
    ov = view.overlay
    assert ov.personal is not None and ov.average is not None
    np.testing.assert_allclose(ov.personal[0], ov.average[0], atol=1e-9)
    length = lambda p: float(np.linalg.norm(p[12] - p[0]))  # noqa: E731
    assert length(ov.personal) == pytest.approx(result.hand_length_mm / 1000.0, rel=0.05)
    assert length(ov.average) == pytest.approx(result.hand_length_mm / 1000.0, rel=0.01)  # flat: ~ in plane
    # Fingers point up, and the thumb is on its side of the palm (right hand, palm view: right).
    assert ov.average[12, 1] > 0 and ov.average[4, 0] > ov.average[20, 0]
    # The table: yours, the average's (same length), the difference, in mm.
    mine = bone_lengths(result.skeleton) * 1000.0
    assert view.bones.rowCount() == 20
    for b in (0, 6, 19):
        name, yours, avg, diff = view.rows[b]
        assert yours == pytest.approx(mine[b], abs=1e-6) and diff == pytest.approx(yours - avg)
        assert view.bones.item(b, 1).text() == f"{yours:.1f}" and view.bones.item(b, 3).text() == f"{diff:+.1f}"
    assert view.rows[0][0] == "thumb base"
    # Proportions (bones over hand length): the calibrated column is closer to the person's than
    # the average column (the size itself is the prior here).
    truth = bone_lengths(person.skeleton) / length(person.skeleton)
    err_mine = np.abs(np.array([r[1] for r in view.rows]) / result.hand_length_mm - truth).mean()
    err_avg = np.abs(np.array([r[2] for r in view.rows]) / result.hand_length_mm - truth).mean()
    assert err_mine < 0.9 * err_avg, (err_mine, err_avg)  # the columns are not swapped
    # Frames used and rejected, with the reason.
    assert view.frames.rowCount() == 10
    status = {r[0].split(" ")[0]: r[3] for r in view.frame_rows}
    assert status["4"].startswith("rejected: disagrees with the shared hand")
    assert sum(s == "used" for s in status.values()) == 9
    assert "9 used, 1 rejected" in view.frames_label.text()
    thumb = next(panel.thumbs.item(i) for i in range(panel.thumbs.count())
                 if panel.thumbs.item(i).data(256) == 3)
    assert "rejected" in thumb.text() and "disagrees" in thumb.toolTip()
    # No surface fitted here: said so. No metric anchor: the size is plainly the prior.
    assert "no surface offsets" in view.surface_label.text()
    assert "population prior" in view.scale_label.text() and "not a measurement" in view.scale_label.text()
    SHOTS.mkdir(parents=True, exist_ok=True)
    assert view.grab().save(str(SHOTS / "gui_calibration_result_view.png"))


@pytest.mark.slow
def test_result_opens_at_its_top_with_plots_that_read(make_window, gui_env, qtbot) -> None:
    """At 1280 x 720 Calibrate, its progress, Cancel and Save are in view, and the result opens at its
    first lines (hand length, where the size comes from: the view centred the tall result box,
    which scrolled them out of sight); the per-bone plot
    shows each bone's difference from the average hand (the table's column: 1-2 mm differences
    were invisible as bars of 20-100 mm), its finger names do not overlap, and no legend covers
    the data."""
    from PySide6.QtCore import QPoint
    from PySide6.QtWidgets import QApplication

    w = make_window()
    w.resize(1280, 720)
    panel = w.calibration_panel
    session, _ = _session(frames=8, seed=52, bad=None)
    panel.session = session
    panel.refresh()
    for _ in range(3):
        QApplication.processEvents()
        qtbot.wait(20)
    # Calibrate, its progress and Cancel are in sight without scrolling (they were below the
    # thumbnails and the size options).
    for widget in (panel.calibrate_btn, panel.cal_progress, panel.cancel_btn):
        assert widget.visibleRegion().boundingRect().size() == widget.size(), widget
    _calibrate(qtbot, panel)
    for _ in range(5):
        QApplication.processEvents()
        qtbot.wait(20)
    viewport = panel._scroll.viewport()  # noqa: SLF001
    for label in (panel.result_label, panel.result_view.scale_label):
        top = label.mapTo(viewport, QPoint(0, 0)).y()
        assert 0 <= top and top + label.height() <= viewport.height(), (label.text()[:40], top)
    assert "population prior" in panel.result_view.scale_label.text()
    # Save as profile is in view too (it was at the bottom of the result, below the plots).
    assert panel.save_btn.isEnabled() and panel.save_btn.visibleRegion().boundingRect().size() == panel.save_btn.size()
    assert "Save it as a profile" in panel.cal_status.text()

    fig = panel.figure
    bones = next(ax for ax in fig.axes if len(ax.patches) == 20)
    heights = np.array([p.get_height() for p in bones.patches])
    np.testing.assert_allclose(heights, [r[3] for r in panel.result_view.rows], atol=1e-9)
    renderer = panel.canvas.get_renderer()
    for ax in fig.axes:
        assert ax.get_legend() is None
        boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
        assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:])), [t.get_text() for t in ax.get_xticklabels()]
        title = ax.title.get_window_extent(renderer)
        assert title.x0 >= 0 and title.x1 <= fig.bbox.width + 1, ax.get_title()
    SHOTS.mkdir(parents=True, exist_ok=True)
    assert panel.canvas.grab().save(str(SHOTS / "gui_calibration_plots.png"))


@pytest.mark.slow
def test_clear_can_be_undone_until_the_next_capture(make_window, gui_env, qtbot) -> None:
    """Clear (or another Hand) took every captured frame and the result away at one click; the
    button now reads "Undo clear" and brings back the frames, the choices, the side and the
    result, until a new frame is captured."""
    from PySide6.QtCore import Qt

    w, panel, session = _panel_on(make_window, frames=8, seed=53, bad=None)
    _calibrate(qtbot, panel)
    result = panel.result
    dropped = session.selected[0]
    panel.toggle(dropped)
    chosen = list(session.selected)
    assert panel.clear_btn.text() == "Clear"

    qtbot.mouseClick(panel.clear_btn, Qt.MouseButton.LeftButton)
    assert panel.session is None and panel.result is None and panel.thumbs.count() == 0
    assert panel.clear_btn.text() == "Undo clear" and "8 frames" in panel.clear_btn.toolTip()
    qtbot.mouseClick(panel.clear_btn, Qt.MouseButton.LeftButton)
    assert panel.session is session and panel.session.selected == chosen and dropped not in chosen
    assert panel.result is result and w.state.calibration is result and panel.result_view.isVisible()
    assert panel.thumbs.count() == 8 and panel.clear_btn.text() == "Clear"

    # Another hand clears too, and is undone to the right hand again.
    panel.side.setCurrentText("left")
    assert panel.session is None and panel.clear_btn.text() == "Undo clear"
    panel.undo_clear()
    assert panel.session is session and panel.side.currentText() == "right"
    # Once a new session has frames, the cleared one is gone for good.
    panel.clear()
    other, _ = _session(frames=4, seed=54, bad=None)
    panel.session = other
    panel.refresh()
    assert not panel.can_undo_clear and panel.clear_btn.text() == "Clear"
    assert not gui_env.messages, gui_env.messages


def test_auto_capture_says_when_the_hand_in_view_is_the_other_side(make_window, gui_env, qtbot) -> None:
    """Auto-capture of the right hand with a left hand in view captured nothing and said nothing;
    the prompt now says which hand it sees, and switching Hand keeps auto-capture on."""
    from types import SimpleNamespace

    w = make_window()
    panel = w.calibration_panel
    session, _ = _session(frames=4, seed=55, bad=None)
    offered = []
    session.offer = lambda frame, result: offered.append(frame)  # no refit here
    panel.session = session
    panel.auto_btn.setChecked(True)
    assert panel.auto and w.state.frame_hook is not None

    def seen(*sides):
        return SimpleNamespace(hands=[SimpleNamespace(detection=SimpleNamespace(handedness=s)) for s in sides])

    panel.frame_hook(("frame",), seen("left"))
    assert "The hand in view is a left hand" in panel.prompt.text() and "set Hand to left" in panel.prompt.text()
    assert not offered
    panel.frame_hook(("frame",), seen("right", "left"))
    assert offered == ["frame"] and "left hand" not in panel.prompt.text()

    panel.side.setCurrentText("left")
    qtbot.waitUntil(lambda: panel.session is not None, timeout=60_000)
    assert panel.session.side == "left" and panel.auto_btn.isChecked() and panel.auto
    panel.auto_btn.setChecked(False)
    assert not gui_env.messages, gui_env.messages


def _screen_axes(camera) -> tuple[np.ndarray, np.ndarray]:
    """(right, up) unit vectors of a VTK camera's screen in world coordinates."""
    d = np.array(camera.GetFocalPoint()) - np.array(camera.GetPosition())
    up = np.array(camera.GetViewUp())
    right = np.cross(d, up)
    return right / np.linalg.norm(right), up / np.linalg.norm(up)


@pytest.mark.slow
def test_a_left_hand_is_shown_as_a_left_hand_fingers_up(make_window, gui_env, qtbot) -> None:
    """A left hand's profile was shown at rest as a right hand, and a left hand in the model frame
    (the calibration's mesh view) upside down: both now show a left hand from its back, fingers
    up, thumb on the right, as a right hand shows with its thumb on the left."""
    w = make_window()
    view = w.hand_view
    right_kp = np.asarray(view._skeleton.points)  # noqa: SLF001 - the model's own right hand at start
    screen_right, screen_up = _screen_axes(view.camera)
    assert (right_kp[12] - right_kp[0]) @ screen_up > 0 and (right_kp[4] - right_kp[0]) @ screen_right < 0

    panel = w.calibration_panel
    panel.side.setCurrentText("left")
    session, _ = _session(side="left", frames=6, seed=56, bad=None)
    panel.session = session
    panel.refresh()
    _calibrate(qtbot, panel)
    mesh_view = panel._mesh_view  # noqa: SLF001
    kp = np.asarray(mesh_view._skeleton.points)  # noqa: SLF001
    screen_right, screen_up = _screen_axes(mesh_view.camera)
    assert (kp[12] - kp[0]) @ screen_up > 0 and (kp[4] - kp[0]) @ screen_right > 0

    assert w.save_calibration_profile("Lefty") is not None and w.active_profile.handedness == "left"
    kp = np.asarray(view._skeleton.points)  # noqa: SLF001
    assert kp[9, 0] < kp[0, 0]  # the left model: fingers along -x
    screen_right, screen_up = _screen_axes(view.camera)
    assert (kp[12] - kp[0]) @ screen_up > 0 and (kp[4] - kp[0]) @ screen_right > 0
    np.testing.assert_allclose(np.linalg.norm(kp[12] - kp[0]) * 1000.0, panel.result.hand_length_mm, rtol=0.05)
    assert not gui_env.messages, gui_env.messages


@pytest.mark.slow
def test_saving_a_profile_never_replaces_one_without_asking(make_window, gui_env, qtbot, monkeypatch) -> None:
    """Saving a second calibration under the offered name "My hand" replaced the first profile
    (and its texture) without a word: a free name is offered, and an existing file is replaced
    only when the user says so."""
    from PySide6.QtWidgets import QInputDialog, QMessageBox

    w, panel, session = _panel_on(make_window, frames=6, seed=57, bad=None)
    _calibrate(qtbot, panel)
    first = w.save_calibration_profile("My hand")
    before = first.read_bytes()
    offered, asked = [], []
    typed = {"name": None}
    answer = {"button": QMessageBox.StandardButton.No}

    def get_text(parent, title, label, *args, text="", **kwargs):
        offered.append(text)
        return (typed["name"] or text), True

    monkeypatch.setattr(QInputDialog, "getText", get_text)
    monkeypatch.setattr(QMessageBox, "question", lambda parent, title, text, *a, **k: asked.append(text)
                        or answer["button"])
    typed["name"] = "My hand"
    panel.save_profile_dialog()
    assert offered == ["My hand 2"] and len(asked) == 1 and "my-hand.json" in asked[0]
    assert first.read_bytes() == before and "kept" in w.statusBar().currentMessage()
    answer["button"] = QMessageBox.StandardButton.Yes
    panel.save_profile_dialog()
    assert len(asked) == 2 and w.active_profile.path == first
    typed["name"] = None  # the offered name: a new file, nothing asked
    panel.save_profile_dialog()
    assert len(asked) == 2 and w.active_profile.name == "My hand 2"
    assert not gui_env.messages, gui_env.messages


def test_a_size_option_with_nothing_measured_says_what_to_do(make_window, gui_env) -> None:
    """Calibrate with the marker sheet or stereo option and nothing measured said "the aruco
    scale needs measured keypoints (N, 21, 3)": it now says what to do, and nothing starts."""
    w, panel, session = _panel_on(make_window, frames=4, seed=58, bad=None)
    for radio, words in ((panel.scale_aruco, "flat on the printed sheet"), (panel.scale_stereo, "stereo pair")):
        radio.setChecked(True)
        panel.calibrate()
        assert panel.job is None and panel.result is None
        assert len(gui_env.messages) == 1 and words in gui_env.messages[0], gui_env.messages
        assert "(N, 21, 3)" not in gui_env.messages[0] and "aruco" not in gui_env.messages[0]
        gui_env.messages.clear()


def test_surface_offsets_are_summarized() -> None:
    from app.calibration_result import result_offsets_mm, surface_iou, surface_text

    class R:
        surface_offsets = np.array([[0.001, 0.0, 0.0], [0.0, 0.003, 0.004]])

    mm = result_offsets_mm(R())
    np.testing.assert_allclose(mm[1], [0.0, 3.0, 4.0])
    assert "mean 3.0 mm, max 5.0 mm over 2 vertices" in surface_text(mm)
    assert result_offsets_mm(object()) is None

    class Fit:  # a calibration result's surface fit: offsets in metres, IoU per frame
        offsets = np.array([[0.0, 0.002, 0.0]] * 3)
        used = np.array([True, False, True])
        iou_before = np.array([0.7, np.nan, 0.8])
        iou_after = np.array([0.8, np.nan, 0.9])

    class S:
        surface = Fit()

    mm = result_offsets_mm(S())
    np.testing.assert_allclose(mm, 2.0 * (np.arange(3) == 1)[None].repeat(3, 0))
    text = surface_text(mm, surface_iou(S.surface))
    assert "mean 2.0 mm" in text and "IoU 0.75 -> 0.85 on 2 frames" in text
    # A profile's surface object: the means it stored.
    assert surface_iou({"offsets_mm": {}, "frames": 7, "iou_before": 0.8, "iou_after": 0.9}) == (0.8, 0.9, 7)
    assert surface_iou(None) is None and surface_iou({"offsets_mm": {}}) is None


@pytest.mark.slow
def test_cancel_stops_the_calibration_and_keeps_the_previous_result(make_window, gui_env, qtbot, monkeypatch) -> None:
    import core.personalize.bundle as bundle

    w, panel, session = _panel_on(make_window, frames=8, seed=51, bad=None)
    panel.scale_length.setChecked(True)
    panel.length_mm.setValue(190.0)
    _calibrate(qtbot, panel)
    first = panel.result
    assert first is not None and first.hand_length_mm == pytest.approx(190.0, abs=0.5)
    saved = w.save_calibration_profile("Before")
    assert saved is not None and w.active_profile.name == "Before"
    before = saved.read_bytes()

    # The second calibration blocks in its joint optimization until Cancel is pressed.
    reached = threading.Event()
    steps = {"n": 0}
    real_step = bundle._lm_step

    def step(*args, **kwargs):
        steps["n"] += 1
        reached.set()
        job = panel.job
        for _ in range(600):  # at most 30 s
            if job is None or job.cancel_requested:
                break
            threading.Event().wait(0.05)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(bundle, "_lm_step", step)
    panel.length_mm.setValue(170.0)
    panel.calibrate()
    qtbot.waitUntil(reached.is_set, timeout=60_000)
    assert panel.cancel_btn.isEnabled()
    from PySide6.QtCore import Qt

    qtbot.mouseClick(panel.cancel_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.job is None, timeout=30_000)
    assert steps["n"] == 1  # stopped at the next iteration's check
    assert panel.result is first and w.state.calibration is first
    assert "cancelled" in panel.cal_status.text()
    assert w.active_profile.name == "Before" and saved.read_bytes() == before
    assert panel.calibrate_btn.isEnabled() and not panel.cancel_btn.isEnabled()
    assert not gui_env.messages, gui_env.messages


def test_panels_bind_to_the_state_not_the_window(make_window, gui_env, tmp_path) -> None:
    import ast
    import inspect

    import app.calibration_panel
    import app.export_dialog
    import app.profiles_panel
    import app.tracking_panel

    for mod in (app.calibration_panel, app.profiles_panel, app.export_dialog, app.tracking_panel):
        tree = ast.parse(inspect.getsource(mod))
        names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert "window_" not in names, mod.__name__
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "app.main_window"
                    for a in n.names}
        assert not imported, mod.__name__
    w = make_window()
    assert w.profiles_panel.state is w.state and w.calibration_panel.state is w.state
    # A profile made active through the state reaches the window and the profiles panel.
    from core.personalize.session import CalibrationSession

    session, _ = _session(frames=6, seed=52, bad=None)
    assert isinstance(session, CalibrationSession)
    result = session.calibrate()
    doc = session.to_profile(result, "Via state")
    path = w.state.save_profile(doc)
    assert w.active_profile is not None and w.active_profile.path == path
    assert "Via state" in w.windowTitle()
    assert "Via state" in w.profiles_panel.active_label.text()
    assert "population prior" in w.profiles_panel.active_label.text()
    assert "population prior" in w.profiles_panel.list.currentItem().text()
    # The selected profile's hand against the average, from the saved file.
    details = w.profiles_panel.details
    assert details.overlay.personal is not None and details.bones.rowCount() == 20
    np.testing.assert_allclose([r[1] for r in details.rows], result.bone_lengths_mm, atol=0.02)
    assert "population prior" in details.scale_label.text() and details.frames.rowCount() == 6
    w.state.set_profile(None)
    assert w.windowTitle() == "HandTwin" and "none" in w.profiles_panel.active_label.text()
    assert not gui_env.messages, gui_env.messages


def test_profile_summaries_wrap_at_the_panels_width(make_window, gui_env, qtbot, monkeypatch) -> None:
    """A profile's summary longer than the panel wrapped nowhere: its end was cut off behind a
    horizontal scroll bar."""
    from PySide6.QtWidgets import QApplication

    from tests.test_gui_reliability import _profile_doc

    w = make_window()
    w.profiles_dock.raise_()
    name = "Left hand of the violin teacher, measured on the marker sheet in March"
    w.state.save_profile(_profile_doc(name))
    for _ in range(3):
        QApplication.processEvents()
    # Nothing is tracked: the status line does not say "Tracking with the profile".
    assert w.statusBar().currentMessage().startswith(f"Profile {name} in use: tracking will keep")
    lst = w.profiles_panel.list
    item = lst.currentItem()
    assert item is not None and item.text().startswith(name)
    assert lst.fontMetrics().horizontalAdvance(name) > lst.viewport().width()  # it has to wrap
    rect = lst.visualItemRect(item)
    assert lst.horizontalScrollBar().maximum() == 0 and rect.right() <= lst.viewport().width()
    assert rect.height() > 3.5 * lst.fontMetrics().lineSpacing()  # three lines, one of them wrapped
    # Rename offers the name to edit (the field was empty), and keeping it changes nothing.
    from PySide6.QtWidgets import QInputDialog

    offered = []
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, text="", **k: (offered.append(text), (text, True))[1])
    path = w.profiles_panel.selected_path()
    w.profiles_panel.rename_dialog()
    assert offered == [name] and w.profiles_panel.selected_path() == path
    assert not gui_env.messages, gui_env.messages


def test_tracking_panel_settings_go_through_the_state(make_window, gui_env, qtbot) -> None:
    from app.settings import AppSettings
    from tests.test_gui_support import wait_frames

    w = make_window(source="demo")
    wait_frames(qtbot, w, 1)
    first = w.worker
    assert w.state.tracking and w.state.source == "demo"
    # Texture capture toggles live: same worker; the panel's box and the action agree.
    w.tracking_panel.texture_check.setChecked(not w.settings.texture)
    assert w.worker is first and w.action_texture.isChecked() == w.settings.texture
    # A setting the source was started with restarts it with the new value, saved.
    w.tracking_panel.refine_iterations.setValue(1)
    w.tracking_panel.apply()
    assert w.worker is not first and w.worker.config.settings.refine_iterations == 1
    assert AppSettings.load(gui_env.store).refine_iterations == 1
    w.set_intrinsics("fov", "", 75.0)
    assert "75" in w.tracking_panel.intrinsics_label.text()
    w.stop_tracking()
    assert not w.state.tracking and w.state.source == ""


def test_palm_view_puts_the_thumb_where_you_see_it() -> None:
    from app.calibration_result import average_skeleton, palm_view
    from core.model import load_model_data

    for side, thumb_right in (("right", True), ("left", False)):
        kp = average_skeleton(load_model_data(None, side), 180.0)
        p = palm_view(kp, kp, side)
        np.testing.assert_allclose(p[0], 0.0, atol=1e-12)  # the wrist at the origin
        assert p[12, 1] > 0.15 and abs(p[12, 0]) < 0.03  # the middle finger points up
        assert (p[4, 0] > p[20, 0]) == thumb_right, side  # thumb tip vs little fingertip
