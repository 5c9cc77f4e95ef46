"""What the engine hands every consumer (issue 16 item 1): each hand's posed (refined) mesh, the
camera it lives in (a pinhole, or the weak camera of a weak-perspective fit), its segmentation
mask and its side's topology; right and left hands, perspective and weak perspective."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from core.camera import HandCamera, intrinsics_from_fov, project
from core.capture import DEMO_CLIP_PATH, open_source

# ------------------------------------------------------------------ the camera alone (no data)


def test_a_weak_camera_projects_about_its_anchor_and_its_pinhole_form_agrees() -> None:
    rng = np.random.default_rng(3)
    nominal = intrinsics_from_fov(70.0, 640, 480)
    anchor = np.array([0.05, -0.02, 0.6])
    cam = HandCamera.weak(nominal, 900.0, anchor, np.array([300.0, 200.0]))
    pts = anchor + rng.uniform(-0.1, 0.1, (500, 3))  # a hand-sized cloud, 20 cm deep
    px = cam.project(pts)
    np.testing.assert_allclose(cam.project(anchor[None]), [[300.0, 200.0]], atol=1e-4)
    np.testing.assert_allclose(px, 900.0 * (pts[:, :2] - anchor[:2]) + [300.0, 200.0], atol=1e-3)
    moved, K = cam.pinhole(pts)
    assert moved.dtype == np.float32 and K.shape == (3, 3)
    assert np.abs(project(moved, K) - px).max() < 0.05  # the far pinhole is the weak camera
    assert np.abs(project(pts, nominal.K) - px).max() > 5.0  # the nominal pinhole is not
    persp = HandCamera(nominal)
    assert not persp.is_weak and cam.is_weak
    same, K2 = persp.pinhole(pts)
    np.testing.assert_array_equal(same, pts.astype(np.float32))
    np.testing.assert_allclose(persp.project(pts), project(pts, nominal.K), atol=1e-3)
    np.testing.assert_array_equal(K2, nominal.K)


# ------------------------------------------------------------------ the engine's hands

pytestmark_demo = pytest.mark.skipif(not DEMO_CLIP_PATH.exists(), reason="demo clip not built")


def _frames(left: bool, weak: bool) -> list:
    """Six demo frames from frame 40; mirrored (a left hand) and without a camera (weak) on request."""
    with open_source("demo") as src:
        frames = list(itertools.islice(src, 40, 46))
    out = []
    for f in frames:
        image = np.ascontiguousarray(f.image[:, ::-1]) if left else f.image
        intr, origin = (None, "none") if weak else (f.intrinsics, f.intrinsics_source)
        out.append(dataclasses.replace(f, image=image, intrinsics=intr, intrinsics_source=origin))
    return out


@pytestmark_demo
@pytest.mark.parametrize("refine", [0, 1])
@pytest.mark.parametrize("left,weak", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["right-perspective", "left-perspective", "right-weak", "left-weak"])
def test_every_hand_carries_its_mesh_camera_mask_and_topology(left: bool, weak: bool, refine: int) -> None:
    import torch

    from core.engine import Engine, EngineSettings
    from core.model import HandModel
    from core.refine import RefineSettings

    settings = EngineSettings(max_hands=1, device="cpu", refine_iterations=refine, segment=True,
                              refine=RefineSettings(image_size=64, sigma=0.5 / 4), detector_process=False)
    side = "left" if left else "right"
    frames = _frames(left, weak)
    with Engine(settings) as engine:
        results = [engine.process(f) for f in frames]
        hands = [(f, r, r.hands[0]) for f, r in zip(frames, results) if r.hands and r.hands[0].side == side]
        assert len(hands) >= len(frames) - 2, [[h.side for h in r.hands] for r in results]
        models = engine.model_data
        layer = HandModel(models[side])
    assert not np.array_equal(models["left"].faces, models["right"].faces)
    for frame, result, h in hands:
        height, width = frame.image.shape[:2]
        assert h.faces is models[side].faces and h.uv_faces is models[side].uv_faces and h.uv is models[side].uv
        assert h.vertices.shape == (models[side].num_vertices, 3) and h.vertices.dtype == np.float32
        assert h.mask is not None and h.mask.shape == (height, width) and h.mask.dtype == bool
        assert 0.01 < h.mask.mean() < 0.5
        if refine:
            assert h.refined is not None
            np.testing.assert_array_equal(h.vertices, h.refined.vertices)
        else:
            with torch.no_grad():
                posed = layer(torch.as_tensor(h.fit.pose)[None], torch.as_tensor(h.fit.betas)[None],
                              torch.as_tensor(h.fit.transl)[None]).vertices[0].numpy()
            np.testing.assert_allclose(h.vertices, posed, atol=1e-6)
        # The camera is the one under which the hand's own keypoints land where it says they do:
        # a weak-perspective hand keeps its weak camera when refined (it is refined in it).
        weak_fit = h.camera.is_weak
        assert weak_fit == weak
        if refine:
            assert h.camera is h.refined.camera
        np.testing.assert_allclose(h.camera.project(h.keypoints_3d), h.final_keypoints_2d, atol=0.01)
        moved, K = h.camera.pinhole(h.vertices)  # what the texture samples with
        assert np.abs(project(moved, K) - h.camera.project(h.vertices)).max() < 0.05
        if weak_fit:  # the nominal pinhole the hand is placed in is visibly off (the old texture)
            off = np.abs(project(h.keypoints_3d, result.camera.K) - h.final_keypoints_2d).max()
            assert off > 3.0
        # The track line is unchanged by what the result now carries.
        bare = dataclasses.replace(h, vertices=None, camera=None, mask=None, model=None)
        assert bare.to_json() == h.to_json()


@pytestmark_demo
def test_hands_are_not_segmented_unless_asked_or_refined() -> None:
    from core.engine import Engine, EngineSettings

    frame = _frames(False, False)[0]
    with Engine(EngineSettings(max_hands=1, device="cpu", detector_process=False)) as engine:
        r = engine.process(frame)
    assert r.hands and r.hands[0].mask is None and r.hands[0].vertices is not None
    assert "segment" not in r.time_ms
