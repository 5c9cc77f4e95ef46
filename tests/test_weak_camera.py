"""One weak-perspective camera: the fit, the refiner, the texture and the engine share it."""

from __future__ import annotations

import numpy as np

from core.camera import intrinsics_from_fov, project, weak_perspective_camera, weak_perspective_origin
from core.fit import FitSettings
from core.refine import nominal_intrinsics


def test_the_origin_projects_to_its_pixel_at_depth_fx_over_scale() -> None:
    cam = weak_perspective_camera((640, 480), 60.0)
    assert cam == intrinsics_from_fov(60.0, 640, 480)
    origin = weak_perspective_origin(cam, (401.5, 122.25), 2500.0)
    assert origin.dtype == np.float32 and np.isclose(origin[2], cam.fx / 2500.0)
    np.testing.assert_allclose(project(origin[None].astype(np.float64), cam.K)[0], [401.5, 122.25], atol=1e-3)


def test_consumers_use_the_same_camera() -> None:
    K = weak_perspective_camera((320, 240), 55.0).K
    np.testing.assert_array_equal(nominal_intrinsics((320, 240), 55.0), K.astype(np.float32))
    # The fitter's nominal camera for weak perspective: 60 degrees, centred.
    K = weak_perspective_camera((240, 180), FitSettings().nominal_fov_deg).K
    assert K[0, 2] == 119.5 and K[1, 2] == 89.5 and abs(K[0, 0] - 120.0 / np.tan(np.radians(30))) < 1e-9
