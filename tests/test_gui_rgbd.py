"""The source dialog's colour + depth and calibrated stereo choices, and the window tracking them."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from tests.test_gui_support import GUI_MARKS, gui_env, make_window, record_session, wait_frames  # noqa: F401

pytestmark = GUI_MARKS


def test_source_dialog_rgbd_and_calibrated_stereo(qtbot, make_window) -> None:
    from app.sources import SourceChoice, SourceDialog, describe_source, split_spec

    w = make_window()
    dlg = SourceDialog(w.jobs, SourceChoice(("demo",)), w)
    qtbot.addWidget(dlg)
    qtbot.waitUntil(lambda: not w.jobs.busy, timeout=20_000)
    dlg.radios["rgbd"].setChecked(True)
    dlg.colour_edit.setText("/x/colour.avi")
    dlg.depth_edit.setText("/x/depth")
    dlg.depth_camera_edit.setText("/x/dc.json")
    c = dlg.choice()
    assert c.sources == ("/x/colour.avi",)
    assert c.spec == "/x/colour.avi|depth=/x/depth|depth-intrinsics=/x/dc.json"
    assert split_spec(c.spec) == ("/x/colour.avi",) and describe_source(c.spec) == "RGB-D colour.avi"
    assert SourceChoice.from_spec(c.spec) == c
    dlg.radios["stereo"].setChecked(True)
    dlg.stereo_a.setEditText("a.mp4")
    dlg.stereo_b.setEditText("b.mp4")
    dlg.stereo_calib_edit.setText("/x/s.json")
    c = dlg.choice()
    assert c.spec == "a.mp4|b.mp4|stereo-calib=/x/s.json" and not c.depth
    dlg.close()
    again = SourceDialog(w.jobs, SourceChoice.from_spec("/x/colour.avi|depth=/x/depth|depth-intrinsics=/x/dc.json"), w)
    qtbot.addWidget(again)
    qtbot.waitUntil(lambda: not w.jobs.busy, timeout=20_000)
    assert again.kind() == "rgbd" and again.depth_edit.text() == "/x/depth"
    again.close()


def test_window_tracks_an_rgbd_source_with_depth_on_its_frames(make_window, qtbot, tmp_path: Path) -> None:
    """The demo clip's first frames with a 16-bit depth folder: the frames the window shows carry depth."""
    depth = tmp_path / "depth"
    depth.mkdir()
    for i in range(4):
        cv2.imwrite(str(depth / f"{i:02d}.png"), np.full((360, 480), 450 + i, np.uint16))
    cam = tmp_path / "dc.json"
    cam.write_text(json.dumps({"fx": 420.0, "fy": 420.0, "cx": 239.5, "cy": 179.5, "depth_scale_m": 0.001}))
    w = make_window(source=f"demo|depth={depth}|depth-intrinsics={cam}")
    wait_frames(qtbot, w, 2)
    frame = w.current_update.frame
    assert frame.depth is not None and frame.depth.shape == frame.image.shape[:2]
    assert 0.449 < float(frame.depth.max()) < 0.454
    # A recording keeps the depth: replayed, its frames carry it again.
    from core.capture import open_source

    folder = tmp_path / "rec"
    record_session(qtbot, w, folder, 2)
    with open_source(str(folder)) as replay:
        replayed = list(replay)
    assert len(replayed) >= 2
    for f in replayed:
        assert f.depth is not None and f.depth.shape == f.image.shape[:2]
        np.testing.assert_allclose(f.depth, (450 + f.index) / 1000.0, atol=1e-6)  # depth image i on frame i


def test_window_tracks_a_calibrated_stereo_pair_fused(make_window, qtbot, tmp_path: Path) -> None:
    """Two folders of a rendered stereo pair and their calibration: the window's results are fused."""
    from core.synth.render import SynthSettings, default_layers
    from core.synth.stereo import render_stereo_sample

    layers = default_layers()
    rng = np.random.default_rng(3)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for i in range(3):
        s = render_stereo_sample(rng, layers, SynthSettings(image_size=(192, 144), supersample=1, back_facing=0.0),
                                 K=np.array([[170.0, 0, 95.5], [0, 170.0, 71.5], [0, 0, 1]]))
        for j in range(i, 24, 3):  # 24 frames: time to record some after the first ones are shown
            cv2.imwrite(str(a / f"{j:02d}.png"), s.reference.image[..., ::-1])
            cv2.imwrite(str(b / f"{j:02d}.png"), s.image2[..., ::-1])
    cal = tmp_path / "s.json"
    cal.write_text(json.dumps({k: np.asarray(getattr(s.calibration, k)).tolist() for k in ("K1", "K2", "R", "T")}))
    w = make_window(source=f"{a}|{b}|stereo-calib={cal}")
    wait_frames(qtbot, w, 2)
    update = w.current_update
    assert update.second_image is not None
    assert "fuse" in update.result.time_ms and update.result.camera.fx == 170.0
    # A recording keeps both cameras and the calibration: replayed, it is the calibrated pair again.
    from core.capture import open_spec
    from core.capture.stereo import StereoSource

    folder = tmp_path / "rec"
    record_session(qtbot, w, folder, 2)
    with open_spec(str(folder)) as replay:
        assert isinstance(replay, StereoSource)
        np.testing.assert_allclose(replay.calibration.T, s.calibration.T)
        sets = list(replay)
    assert len(sets) >= 2
    for fs in sets:  # each recorded set is the pair's images of its frame
        np.testing.assert_array_equal(fs[0].image, cv2.imread(str(a / f"{fs[0].index:02d}.png"))[..., ::-1])
        np.testing.assert_array_equal(fs[1].image, cv2.imread(str(b / f"{fs[0].index:02d}.png"))[..., ::-1])
        assert fs[1].intrinsics.fx == s.calibration.K2[0, 0]
