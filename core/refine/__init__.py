"""Silhouette refinement of fitted hands (RealisticHands, paper 001, Sec. 3.2-3.3).

The tailor's fit is refined against the hand's target silhouette by differentiable rendering
(SoftRas, :mod:`core.render`) with offsets for pose, shape, per-vertex positions and camera
(Eq. 1), mesh regularizers (Eq. 2-5, :mod:`core.refine.mesh`), a 2D keypoint anchor, an
optional depth term (paper 003, Eq. 7), an optional second calibrated view (paper 001, Eq. 8)
and a penetration term between two hands (paper 004, Eq. 6, :mod:`core.refine.penetration`).

Public API::

    Refiner(right, left, settings=RefineSettings(), device="cpu", nominal_fov_deg=60.0)
        .refine(fits, targets, iterations=None) -> list[RefineResult]
    RefineSettings   frozen: weights (paper 001 defaults), step sizes, crop rendering
    RefineTarget     frozen: mask (H, W), keypoints_2d (21, 2), K | None, depth | None, views
    RefineView       frozen: a second calibrated camera (mask, K, R, t, keypoints_2d)
    RefineResult     frozen: vertices, pose, betas, transl, vertex_offsets, keypoints_3d/2d,
                     iou_before, iou_after, edge_length_error, normal_error, ms, ...
    LIVE_ITERATIONS (3), OFFLINE_ITERATIONS (15)

Notes on the paper's terms: paper 001 writes its edge term as ``sum |v - k|^2`` and its normal
term as ``1 - cos`` of neighbouring faces; both are non-zero on a curved hand and would shrink
and flatten it. Here every regularizer measures the free offsets against the parametric mesh
they deform (paper 003's consistency forms), so each is zero at the fit and only the free-form
part is held back.
"""

from core.refine.mesh import MeshTopology
from core.refine.penetration import penetration_loss, penetration_stats
from core.refine.refiner import (
    LIVE_ITERATIONS,
    OFFLINE_ITERATIONS,
    Refiner,
    RefineResult,
    RefineSettings,
    RefineTarget,
    RefineView,
    nominal_intrinsics,
)

__all__ = [
    "LIVE_ITERATIONS",
    "OFFLINE_ITERATIONS",
    "MeshTopology",
    "RefineResult",
    "RefineSettings",
    "RefineTarget",
    "RefineView",
    "Refiner",
    "nominal_intrinsics",
    "penetration_loss",
    "penetration_stats",
]
