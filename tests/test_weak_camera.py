"""One weak-perspective camera: the fit, the refiner, the texture and the engine share it."""

from __future__ import annotations

import numpy as np
import pytest

from core.camera import (
    WEAK_PINHOLE_DEPTH_M,
    HandCamera,
    intrinsics_from_fov,
    project,
    weak_perspective_camera,
    weak_perspective_origin,
)
from core.fit import FitSettings, HandFit, fit_camera
from core.refine import nominal_intrinsics


def test_the_origin_projects_to_its_pixel_at_depth_fx_over_scale() -> None:
    cam = weak_perspective_camera((640, 480), 60.0)
    assert cam == intrinsics_from_fov(60.0, 640, 480)
    origin = weak_perspective_origin(cam, (401.5, 122.25), 2500.0)
    assert origin.dtype == np.float32 and np.isclose(origin[2], cam.fx / 2500.0)
    np.testing.assert_allclose(project(origin[None].astype(np.float64), cam.K)[0], [401.5, 122.25], atol=1e-3)


def _fit(projection: str, nominal) -> HandFit:
    rng = np.random.default_rng(5)
    kp3 = (rng.uniform(-0.08, 0.08, (21, 3)) + (0.0, 0.0, 0.5)).astype(np.float32)
    kp2 = rng.uniform(100, 300, (21, 2)).astype(np.float32)
    kp3 += weak_perspective_origin(nominal, kp2[0], 1200.0) - kp3[0]  # where the fitter puts a weak wrist
    return HandFit("right", np.zeros(48, np.float32), np.zeros(10, np.float32), np.zeros(3, np.float32), kp3, kp2,
                   0.0, projection, 1200.0, 0)  # type: ignore[arg-type]


def test_consumers_use_the_same_camera() -> None:
    nominal = weak_perspective_camera((320, 240), 55.0)
    np.testing.assert_array_equal(nominal_intrinsics((320, 240), 55.0), nominal.K.astype(np.float32))
    weak = fit_camera(_fit("weak", nominal), nominal)
    assert weak.is_weak and weak.intrinsics == nominal and weak.weak_scale == 1200.0
    fit = _fit("weak", nominal)
    np.testing.assert_allclose(weak.project(fit.keypoints_3d[:1]), fit.keypoints_2d[:1], atol=1e-3)
    persp = fit_camera(_fit("perspective", nominal), nominal)
    assert not persp.is_weak and persp.intrinsics == nominal
    # The fitter's nominal camera for weak perspective: 60 degrees, centred.
    K = weak_perspective_camera((240, 180), FitSettings().nominal_fov_deg).K
    assert K[0, 2] == 119.5 and K[1, 2] == 89.5 and abs(K[0, 0] - 120.0 / np.tan(np.radians(30))) < 1e-9


@pytest.mark.parametrize("move", [(0.0, 0.0, 0.0), (0.02, -0.01, 0.0), (0.01, 0.03, 40.0), (0.0, 0.0, -25.0)])
def test_a_hand_moved_in_the_pinhole_form_comes_back_as_a_weak_hand(move) -> None:
    """The refinement works in a weak camera's pinhole form; a hand it moved there (sideways: a
    new anchor pixel; along the axis: a new scale) comes back as a weak hand, placed where the
    fitter places weak hands, whose weak camera projects it as the pinhole form did."""
    rng = np.random.default_rng(2)
    nominal = intrinsics_from_fov(60.0, 640, 480)
    anchor = weak_perspective_origin(nominal, (350.0, 220.0), 1500.0).astype(np.float64)
    cam = HandCamera.weak(nominal, 1500.0, anchor, np.array([350.0, 220.0]))
    hand = anchor + rng.uniform(-0.09, 0.09, (300, 3))
    hand[0] = anchor
    offset, K = cam.pinhole_frame()
    moved, K2 = cam.pinhole(hand)
    np.testing.assert_allclose(moved, hand + offset, atol=1e-4)
    np.testing.assert_array_equal(K, K2)
    assert K[0, 0] == pytest.approx(1500.0 * WEAK_PINHOLE_DEPTH_M)
    refined = moved.astype(np.float64) + move  # what the refinement made of it, pinhole form
    back_cam, back = cam.from_pinhole_frame(refined[0])
    back_hand = refined + back
    assert back_cam.is_weak and back_cam.intrinsics == nominal
    np.testing.assert_allclose(back_cam.project(back_hand), project(refined, K), atol=0.02)
    np.testing.assert_allclose(back_cam.weak_scale, K[0, 0] / refined[0, 2], rtol=1e-9)
    np.testing.assert_allclose(back_hand[0], weak_perspective_origin(nominal, back_cam.weak_anchor_px,
                                                                     back_cam.weak_scale), atol=1e-6)
    if not any(move):  # unmoved: the same camera and the same place
        np.testing.assert_allclose(back_cam.weak_anchor_px, cam.weak_anchor_px, atol=1e-6)
        np.testing.assert_allclose(back_hand, hand, atol=1e-4)
    with pytest.raises(ValueError):
        HandCamera(nominal).from_pinhole_frame(refined[0])
