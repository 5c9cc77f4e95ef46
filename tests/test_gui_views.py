"""The two views of the main window on their own: the camera panel's frame composition (done
in the tracking thread) and the 3D view's off-GUI-thread rendering, orbiting and mailboxes."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.test_gui_support import GUI_MARKS

pytestmark = GUI_MARKS

GREY = 100


def _frame_and_hands():
    image = np.full((30, 40, 3), GREY, np.uint8)
    labels = np.zeros((30, 40), np.uint8)
    labels[2:12, 20:36] = 1  # the fitted mesh only
    labels[16:28, 20:36] = 3  # mesh and segmentation agree
    fitted = np.tile(np.float32([5.0, 25.0]), (21, 1))
    fitted[0] = (5.0, 5.0)  # bone 0-1 is a vertical line at x = 5, y 5..25; the others a dot
    detected = np.tile(np.float32([30.0, 15.0]), (21, 1))
    return image, labels, [("right", detected, fitted)]


def _rgb(composed, x: int, y: int) -> np.ndarray:
    b, g, r, _ = composed.image[y, x].astype(int)
    return np.array([r, g, b])


def test_compose_frame_blends_scales_and_draws() -> None:
    from app.camera_view import HAND_COLOURS, KEYPOINT_COLOUR, SILHOUETTE_RGBA, DisplaySpec, compose_frame

    image, labels, hands = _frame_and_hands()
    c = compose_frame(image, hands, labels, None, DisplaySpec(100, 60))
    # Scale 2 (the height binds), centred horizontally.
    assert c.scale == pytest.approx(2.0) and (c.x, c.y) == (10, 0) and c.image.shape == (60, 80, 4)
    assert (c.image[..., 3] == 255).all()
    for label, (x, y) in ((1, (56, 14)), (3, (56, 44))):
        rgba = SILHOUETTE_RGBA[label].astype(float)
        a = rgba[3] / 255
        expected = np.round(GREY * (1 - a) + rgba[:3] * a)
        np.testing.assert_allclose(_rgb(c, x, y), expected, atol=2)
    np.testing.assert_array_equal(_rgb(c, 4, 40), [GREY] * 3)  # no label, no line: the frame
    # Frame pixel (x, y) has its centre at ((x + 0.5) * 2 - 0.5) in the composed image.
    line = HAND_COLOURS["right"]
    np.testing.assert_allclose(_rgb(c, 10, 30) * 0.5 + _rgb(c, 11, 30) * 0.5,
                               [line.red(), line.green(), line.blue()], atol=40)
    dot = _rgb(c, 60, 30)
    np.testing.assert_allclose(dot, [KEYPOINT_COLOUR.red(), KEYPOINT_COLOUR.green(), KEYPOINT_COLOUR.blue()], atol=20)

    bare = compose_frame(image, hands, labels, None, DisplaySpec(100, 60, skeleton=False, silhouette=False))
    np.testing.assert_array_equal(_rgb(bare, 60, 30), [GREY] * 3)
    np.testing.assert_array_equal(_rgb(bare, 56, 14), [GREY] * 3)
    assert compose_frame(image, hands, labels, None, DisplaySpec(1, 1)) is None


def test_compose_frame_puts_a_stereo_pair_side_by_side() -> None:
    from app.camera_view import STEREO_GAP_PX, DisplaySpec, compose_frame

    image, labels, hands = _frame_and_hands()
    second = np.full((30, 40, 3), 200, np.uint8)
    c = compose_frame(image, [], None, second, DisplaySpec(88, 30))
    assert c.scale == pytest.approx(1.0) and c.image.shape == (30, 40 + STEREO_GAP_PX + 40, 4)
    np.testing.assert_array_equal(_rgb(c, 20, 15), [GREY] * 3)
    np.testing.assert_array_equal(_rgb(c, 40 + STEREO_GAP_PX + 20, 15), [200] * 3)


def test_camera_view_blits_the_composed_frame_and_recomposes_when_it_no_longer_fits(qtbot) -> None:
    from app.camera_view import CameraView, compose_frame

    view = CameraView()
    qtbot.addWidget(view)
    view.resize(400, 300)
    view.show()
    qtbot.waitExposed(view)
    image, labels, hands = _frame_and_hands()
    composed = compose_frame(image, hands, labels, None, view.display_spec())
    view.set_frame(image, hands, labels, None, composed)
    qtbot.wait(100)  # painted
    assert view.composed is composed  # drawn by the tracking thread, only blitted here
    view.show_skeleton = False
    view.update()
    qtbot.waitUntil(lambda: view.composed.spec.skeleton is False)
    assert view.composed is not composed
    view.resize(500, 300)
    qtbot.waitUntil(lambda: view.composed.spec.width == round(500 * view.devicePixelRatioF()))


# ----------------------------------------------------------------------------- 3D view


def _shown_view_and_rest_hand(qtbot, side: str, size: tuple[int, int]):
    """A shown HandView of ``size`` and the model's rest hand of ``side``: (view, model data,
    vertices (V, 3), keypoints (21, 3))."""
    import torch

    from app.hand_view import HandView
    from core.model import HandModel, load_model_data

    data = load_model_data(None, side)
    with torch.no_grad():
        out = HandModel(data).rest(None)
    view = HandView()
    qtbot.addWidget(view)
    view.resize(*size)
    view.show()
    qtbot.waitExposed(view)
    return view, data, out.vertices[0].numpy(), out.keypoints[0].numpy()


@pytest.fixture
def hand_view(qtbot):
    view, data, verts, kp = _shown_view_and_rest_hand(qtbot, "right", (320, 400))
    centre = kp.mean(0)
    view.set_hand(verts - centre, data.faces, kp - centre, camera_frame=True, uv=data.uv, uv_faces=data.uv_faces)
    assert view.render() and view.error is None
    yield view, data, verts - centre, kp - centre
    view.close()
    assert not view._thread.is_alive()  # noqa: SLF001


def _shown(view) -> np.ndarray:
    return np.array(view._qimage_data, copy=True)  # noqa: SLF001


def test_hand_view_renders_in_its_own_thread(hand_view) -> None:
    from app.hand_view import BACKGROUND_RGB

    view, *_ = hand_view
    seen = []
    render = view._scene.render  # noqa: SLF001

    def spy():
        seen.append(threading.current_thread().name)
        return render()

    view._scene.render = spy  # noqa: SLF001
    view.render()
    assert seen and set(seen) == {"handtwin-hand-view"}
    img = _shown(view)
    h, w = img.shape[:2]
    assert (w, h) == (round(320 * view.devicePixelRatioF()), round(400 * view.devicePixelRatioF()))
    background = np.round(np.array(BACKGROUND_RGB[::-1]) * 255)
    hand = np.abs(img[..., :3].astype(float) - background).sum(-1) > 30
    assert 0.05 < hand.mean() < 0.9  # the hand fills part of the view (fingers sideways in a tall view)


@pytest.mark.parametrize("side", ["right", "left"])
def test_hand_view_shows_either_hand_fingers_up_from_its_back(qtbot, side: str) -> None:
    """In the model frame a left hand (the mirrored right one) was shown upside down: the
    threaded view now shows it fingers up, thumb on the right; a right hand's thumb on the left."""
    view, data, verts, kp = _shown_view_and_rest_hand(qtbot, side, (200, 240))
    view.set_hand(verts, data.faces, kp)
    assert view.render() and view.error is None
    camera = view._scene.renderer.GetActiveCamera()  # noqa: SLF001
    d = np.array(camera.GetFocalPoint()) - np.array(camera.GetPosition())
    up = np.array(camera.GetViewUp())
    right = np.cross(d, up)
    assert (kp[12] - kp[0]) @ up > 0
    assert np.sign((kp[4] - kp[0]) @ right) == (1 if side == "left" else -1)
    view.close()


@pytest.mark.parametrize("kind", ["threaded", "interactor"])
def test_a_live_hand_held_sideways_fits_a_tall_view(qtbot, kind: str) -> None:
    """The 3D view at 1280 x 720 is taller than wide: a live hand with its fingers sideways
    (the rest hand in the camera frame: fingers to the right) was cut off at the sides, the
    view angle being vertical; every vertex is now inside the view, and still in a wide one."""
    import torch
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    from app.hand_view import HandView
    from app.hand_view_qt import InteractorHandView
    from core.model import HandModel, load_model_data

    data = load_model_data(None)
    with torch.no_grad():
        out = HandModel(data).rest(None)
    verts, kp = out.vertices[0].numpy(), out.keypoints[0].numpy()
    centre = kp.mean(0)
    view = HandView() if kind == "threaded" else InteractorHandView()
    qtbot.addWidget(view)
    view.show()
    for size in ((240, 420), (420, 240)):
        view.resize(*size)
        qtbot.waitExposed(view)
        view.set_hand(verts - centre, data.faces, kp - centre, camera_frame=True)
        assert view.render()
        camera = (view._scene.renderer if kind == "threaded" else view.renderer).GetActiveCamera()  # noqa: SLF001
        m = vtkMatrix4x4()
        m.DeepCopy(camera.GetCompositeProjectionTransformMatrix(size[0] / size[1], -1, 1))
        proj = np.array([[m.GetElement(i, j) for j in range(4)] for i in range(4)])
        p = np.c_[verts - centre, np.ones(len(verts))] @ proj.T
        ndc = p[:, :2] / p[:, 3:]
        assert np.abs(ndc).max() < 1.0, (size, np.abs(ndc).max(0))
        assert np.abs(ndc).max() > 0.5  # and it fills the view's narrow side well
    view.close()


def test_hand_view_orbits_with_the_mouse(hand_view, qtbot) -> None:
    from PySide6.QtCore import QEvent, QPointF, Qt
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    view, *_ = hand_view
    camera = view._scene.renderer.GetActiveCamera()  # noqa: SLF001
    before_pos, before_img = np.array(camera.GetPosition()), _shown(view)

    def send(kind, x, buttons):
        button = Qt.MouseButton.LeftButton if kind != QEvent.Type.MouseMove else Qt.MouseButton.NoButton
        p = QPointF(x, 200)
        QApplication.sendEvent(view, QMouseEvent(kind, p, view.mapToGlobal(p), button, buttons,
                                                 Qt.KeyboardModifier.NoModifier))

    send(QEvent.Type.MouseButtonPress, 100, Qt.MouseButton.LeftButton)
    for x in range(110, 220, 10):
        send(QEvent.Type.MouseMove, x, Qt.MouseButton.LeftButton)
    send(QEvent.Type.MouseButtonRelease, 220, Qt.MouseButton.NoButton)
    assert view.render()
    after_pos = np.array(camera.GetPosition())
    # Orbiting keeps the distance to the focal point (the hand's centre) and changes the view.
    focal = np.array(camera.GetFocalPoint())
    assert np.linalg.norm(after_pos - focal) == pytest.approx(np.linalg.norm(before_pos - focal), rel=1e-3)
    assert np.linalg.norm(after_pos - before_pos) > 0.05
    assert np.abs(_shown(view).astype(int) - before_img.astype(int)).mean() > 1.0


def test_hand_view_never_waits_for_a_render_and_the_latest_pose_wins(hand_view) -> None:
    view, data, verts, kp = hand_view
    started, release = threading.Event(), threading.Event()
    render = view._scene.render  # noqa: SLF001

    def slow():
        started.set()
        release.wait(10)
        return render()

    view._scene.render = slow  # noqa: SLF001
    renders = view.renders
    view.set_hand(verts, data.faces, kp, camera_frame=True, uv=data.uv, uv_faces=data.uv_faces)
    assert started.wait(10)  # a render is under way and cannot finish
    for i in range(1, 6):  # these return at once: each replaces the one before
        view.set_hand(verts + 0.01 * i, data.faces, kp, camera_frame=True, uv=data.uv, uv_faces=data.uv_faces)
    release.set()
    assert view.wait_idle(10)
    assert view.renders - renders <= 2
    np.testing.assert_allclose(view._scene.mesh.points, (verts + 0.05)[view._vertex_index], atol=1e-6)  # noqa: SLF001


def test_the_view_is_chosen_by_the_opengl_driver(monkeypatch, qtbot) -> None:
    """Software OpenGL (Xvfb here) gets the threaded view; $HANDTWIN_VIEW forces either; the
    pyvistaqt interactor view (hardware OpenGL) shows and updates the hand like the other."""
    import numpy as np

    import app.hand_view as hv
    from app.hand_view_qt import InteractorHandView
    from core.model import HandModel, load_model_data

    monkeypatch.delenv(hv.VIEW_ENV_VAR, raising=False)
    assert hv.software_opengl()  # llvmpipe under Xvfb
    view = hv.make_hand_view()
    assert isinstance(view, hv.HandView)
    view.close()
    monkeypatch.setenv(hv.VIEW_ENV_VAR, "interactor")
    view = hv.make_hand_view()
    try:
        assert isinstance(view, InteractorHandView) and view.interactor is view
        data = load_model_data(None, "right")
        out = HandModel(data).rest()
        verts, kp = out.vertices[0].numpy(), out.keypoints[0].numpy()
        view.set_hand(verts, data.faces, kp, uv=data.uv, uv_faces=data.uv_faces)
        view.set_texture(np.full((64, 64, 3), 200, np.uint8))
        assert view.has_mesh and view.textured and view.num_model_vertices == len(verts)
        view.set_hand(verts + 0.01, data.faces, kp + 0.01, uv=data.uv, uv_faces=data.uv_faces)
        split = verts[view._vertex_index]  # one point per vertex and UV pair
        np.testing.assert_allclose(view._mesh.points, split + 0.01, atol=1e-6)  # moved in place
        before = view.renders
        view.render()
        assert view.renders > before and view.wait_idle()
        view.set_wireframe(True)
        view.set_skeleton_visible(False)
    finally:
        view.close()


@pytest.mark.parametrize("side", ["right", "left"])
def test_fill_silhouette_is_the_union_of_the_mesh_triangles(side: str) -> None:
    """The mesh silhouette of the overlay covers every pixel whose centre lies in some triangle
    (a parity fill left holes where triangles overlap), for both sides' windings."""
    import torch

    from app.worker import fill_silhouette
    from core.camera import intrinsics_from_fov, project
    from core.model import HandModel, load_model_data

    data = load_model_data(None, side)
    rng = np.random.default_rng(5)
    pose = np.zeros(48, np.float32)
    pose[:3] = (2.0, 0.3, 0.2)
    pose[3:] = rng.normal(0.0, 0.25, 45)
    with torch.no_grad():
        verts = HandModel(data)(torch.as_tensor(pose)[None], torch.zeros(1, data.num_betas),
                                torch.tensor([[0.0, 0.0, 0.4]])).vertices[0].numpy()
    K = intrinsics_from_fov(60.0, 320, 240).K
    px = project(verts.astype(np.float64), K).astype(np.float32)
    mask = np.zeros((240, 320), np.uint8)
    fill_silhouette(mask, px, data.faces, 1)
    # Oracle: point-in-triangle over all triangles, at the pixel centres.
    ys, xs = np.mgrid[0:240, 0:320]
    centres = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    covered = np.zeros(len(centres), bool)
    for a, b, c in px[data.faces].astype(np.float64):
        lo, hi = np.floor(np.minimum(np.minimum(a, b), c)), np.ceil(np.maximum(np.maximum(a, b), c))
        idx = np.nonzero((centres[:, 0] >= lo[0]) & (centres[:, 0] <= hi[0]) & (centres[:, 1] >= lo[1])
                         & (centres[:, 1] <= hi[1]))[0]
        p = centres[idx]

        def cross(u, v, q):
            return (v[0] - u[0]) * (q[:, 1] - u[1]) - (v[1] - u[1]) * (q[:, 0] - u[0])

        d = np.stack([cross(a, b, p), cross(b, c, p), cross(c, a, p)], 1)
        covered[idx[(d >= 0).all(1) | (d <= 0).all(1)]] = True
    truth = covered.reshape(240, 320)
    drawn = mask > 0
    assert truth.sum() > 2000
    assert (drawn != truth).sum() <= 0.05 * truth.sum()  # edge pixels only (sub-pixel rounding)
    assert drawn[truth].mean() > 0.98


def test_overlay_ends_at_the_hand_wrist_line() -> None:
    """A hand's overlay labels are cleared past its own wrist line inside its box (the mask's
    forearm stub, which the box used to cut square), and kept everywhere else."""
    from app.worker import clear_past_wrist
    from core.segment import hand_box, hand_scale
    from tests.test_segment import TEMPLATE

    kp = TEMPLATE * 40.0 + np.array([60.0, 100.0])  # wrist at (60, 100), fingers up
    labels = np.full((200, 160), 3, np.uint8)
    clear_past_wrist(labels, kp)
    x0, y0, x1, y1 = hand_box(kp, (160, 200))
    assert y1 > 100 + hand_scale(kp) * 0.2 + 2  # the box reaches past the wrist: there is a stub to cut
    rows = np.arange(y0, y1)
    inside = labels[y0:y1, x0:x1]
    assert np.array_equal(inside.all(axis=1), rows <= 100) and np.array_equal(inside.any(axis=1), rows <= 100)
    # Outside the hand's box nothing changes (a mesh far from its keypoints still shows).
    outside = np.ones(labels.shape, bool)
    outside[y0:y1, x0:x1] = False
    assert (labels[outside] == 3).all()
