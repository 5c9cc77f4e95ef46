"""The whole flow in the real window: demo -> frames -> mesh -> calibration frames ->
calibrate -> save and reload a profile -> export a GLB, with a screenshot at each step
(``$HANDTWIN_SHOTS``, default /tmp/handtwin_shots/gui_*.png)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.test_gui_support import (  # noqa: F401
    GUI_MARKS,
    SHOTS,
    gui_env,
    make_window,
    screenshot,
    screenshot_screen,
    wait_frames,
)

pytestmark = GUI_MARKS + [pytest.mark.slow]


def test_demo_calibrate_profile_export(make_window, gui_env, qtbot, tmp_path: Path) -> None:
    pytest.importorskip("core.personalize.session")
    trimesh = pytest.importorskip("trimesh")

    # 1. The demo tracks: camera image with overlays, a posed mesh in the 3D view, stats.
    w = make_window(source="demo")
    wait_frames(qtbot, w, 3)
    assert w.camera_view.has_image and w.hand_view.has_mesh
    assert w.hand_view.num_model_vertices == w.model_data.num_vertices
    assert w.current_update.result.hands, "the demo shows a hand"
    assert "fps" in w.fps_label.text() and "detect" in w.stages_label.text()
    assert "reprojection" in w.quality_label.text()
    assert w.current_update.silhouette is not None and w.current_update.silhouette.any()
    screenshot(w, "gui_1_tracking.png")

    # 2. Calibration frames are auto-captured while the demo plays.
    panel = w.calibration_panel
    w.calibration_dock.raise_()
    panel.k.setValue(5)
    panel.auto_btn.setChecked(True)
    qtbot.waitUntil(lambda: panel.session is not None and len(panel.session.candidates) >= 5, timeout=240_000)
    panel.auto_btn.setChecked(False)
    panel.refresh()
    assert panel.thumbs.count() >= 5
    texts = [panel.thumbs.item(i).text() for i in range(panel.thumbs.count())]
    assert all(t.startswith(("weight ", "not used")) for t in texts), texts
    assert "confidence" in panel.thumbs.item(0).toolTip()
    # Drop one chosen frame and add it back: the selection follows.
    chosen = panel.session.selected
    panel.toggle(chosen[0])
    assert chosen[0] not in panel.session.selected
    panel.toggle(chosen[0])
    assert chosen[0] in panel.session.selected
    screenshot(w, "gui_2_capture.png")

    # 3. Calibrate (known hand length): the result, its plot and mesh appear.
    panel.scale_length.setChecked(True)
    panel.length_mm.setValue(180.0)
    panel.calibrate()
    qtbot.waitUntil(lambda: panel.result is not None, timeout=120_000)
    assert abs(panel.result.hand_length_mm - 180.0) < 2.0
    assert "Hand length" in panel.result_label.text()
    assert panel.figure.axes and len(panel.figure.axes[0].collections) == 1
    assert panel._mesh_view is not None and panel._mesh_view.has_mesh  # noqa: SLF001
    # The result view: your skeleton against the average hand, per bone, and the frames.
    view = panel.result_view
    assert view.isVisible() and view.bones.rowCount() == 20 and view.overlay.personal is not None
    assert view.frames.rowCount() == len(panel.result.frames)
    assert "population prior" not in view.scale_label.text() and "measurement" in view.scale_label.text()
    assert not gui_env.messages
    screenshot(w, "gui_3_calibrated.png")
    SHOTS.mkdir(parents=True, exist_ok=True)
    assert panel.result_box.grab().save(str(SHOTS / "gui_3_calibration_result.png"))

    # 4. Save as a profile (it becomes active), drop it, load it again from the list.
    saved = w.save_calibration_profile("Test hand")
    assert saved is not None and saved.is_file() and saved.parent == gui_env.home / "profiles"
    assert w.active_profile.name == "Test hand" and "Test hand" in w.windowTitle()
    w.set_active_profile(None)
    assert w.windowTitle() == "HandTwin"
    w.profiles_dock.raise_()
    w.profiles_panel.refresh()
    w.profiles_panel.select(saved)
    w.profiles_panel.use_selected()
    assert w.active_profile is not None and w.active_profile.name == "Test hand"
    np.testing.assert_allclose(w.active_profile.shape, panel.result.shape, atol=1e-5)
    wait_frames(qtbot, w, 2)  # tracking restarted with the profile's shape
    np.testing.assert_allclose(w.current_update.result.hands[0].fit.betas, w.active_profile.shape, atol=1e-5)
    screenshot(w, "gui_4_profile.png")

    # 5. Export a GLB of the profile's hand in the rest pose.
    dlg = w.export_dialog()
    dlg.format.setCurrentIndex(0)
    out = tmp_path / "export" / "my-hand.glb"
    dlg.dest.setText(str(out))
    dlg.start()
    qtbot.waitUntil(lambda: dlg.job is None, timeout=120_000)
    assert not gui_env.messages, gui_env.messages
    assert out.is_file() and dlg.show_btn.isEnabled()
    scene = trimesh.load(out, force="mesh")
    assert len(scene.vertices) >= w.model_data.num_vertices and len(scene.faces) == w.model_data.num_faces
    extent = scene.vertices.max(0) - scene.vertices.min(0)
    assert 0.15 < extent.max() < 0.25  # a hand about 18 cm long, in metres
    screenshot_screen("gui_5_export.png")
    dlg.close()
