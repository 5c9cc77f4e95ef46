"""The refinement's contracts: its settings, what it refines against and what it returns.

:class:`~core.refine.refiner.Refiner` takes :class:`RefineSettings` and one :class:`RefineTarget`
(with its :class:`RefineView` s) per fitted hand and returns one :class:`RefineResult` each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.camera import HandCamera, weak_perspective_camera
from core.render import SoftRasterSettings

__all__ = [
    "LIVE_ITERATIONS",
    "OFFLINE_ITERATIONS",
    "RefineResult",
    "RefineSettings",
    "RefineTarget",
    "RefineView",
    "nominal_intrinsics",
]

#: Refinement iterations per frame when tracking live (paper 001, Fig. 9: 3 iterations).
LIVE_ITERATIONS = 3
#: Refinement iterations offline (paper 001, Fig. 9: 15 iterations, IoU 0.677 -> 0.748).
OFFLINE_ITERATIONS = 15


@dataclass(frozen=True)
class RefineSettings:
    """Weights, step sizes and rendering of the refinement.

    Loss weights (paper 001 Eq. 5: l1 = l2 = l3 = l4 = 1, l5 = 0.1):
        w_silhouette: l1, the silhouette term.
        w_vertex: l2, vertex offsets (in mean edge lengths).
        w_normal: l3, normal consistency.
        w_laplacian: l4, Laplacian of the offsets (in mean edge lengths).
        w_edge: l5, edge-length consistency.
    Anchors HandTwin adds:
        w_keypoints: 2D keypoints against MediaPipe's; keypoint_scale_px: its unit, crop pixels.
        keypoint_slack: count only how much further each keypoint moves from MediaPipe's than
            the fit had it (the fit already balanced them against its priors; the term then
            stops drift without pulling the hand toward MediaPipe's noise).
        w_pose: ``mean(dp^2)``, radians^2. w_shape: ``mean(ds^2)``.
    Optional terms:
        w_depth: depth map term (paper 003, Eq. 8: l_D = 0.1), used when a target has depth.
        w_penetration: two-hand penetration (paper 004, Sec. 4.1: l6 = 10), in edge lengths.
    Optimization (Adam; step sizes are the largest change per iteration, in natural units):
        iterations: default number of iterations (offline 15; the engine uses 3 live).
        lr_pose: radians. lr_shape: shape units. lr_vertices: mean edge lengths.
        lr_translation: crop pixels of the primary view: x, y shift the hand, z grows or shrinks
            its image (a change of depth).
        lr_focal: log focal length (weak-perspective path only, see ``optimize_focal``).
        optimize_pose, optimize_shape, optimize_vertices, optimize_translation: which offsets
            are free (a profile's fixed shape turns ``optimize_shape`` off).
        optimize_focal: None = only when the camera is unknown (weak perspective: the focal
            length is nominal there); True/False to force.
    Rendering:
        image_size: side of the crop's render, pixels. sigma: SoftRas sharpness, px^2 at that
        size. saturate_interior: set the silhouette's interior to exactly 1 (removes SoftRas's
        faint interior dips; measured on synthetic hands it changes nothing in the result and
        costs a third of the forward pass, so it is off).
        raster_backend: "auto" (C kernels on the CPU when they build), "native", "eager" or
            "compiled" (see :class:`SoftRasterSettings`).
        crop_margin: margin around the hand in the crop, fraction of its extent.
        cull_backfaces: render only the faces turned toward the camera (the silhouette of a
            closed surface is theirs alone; about half the renderer's work).
        ignore_beyond_wrist: ignore pixels past the wrist line (the forearm) in the losses.
        keep_best: return the iterate with the lowest loss, not the last one.
    The keypoint guard (a guarantee, checked on every result):
        keypoint_guard_px, keypoint_guard_fraction: a refined hand whose reprojection error
            (against MediaPipe's keypoints) exceeds the fit's by more than
            ``max(keypoint_guard_px, keypoint_guard_fraction * fit error)`` is replaced by the
            fit itself (``RefineResult.fell_back``): the silhouette may not buy IoU with keypoint
            error. None: no guard.
    """

    iterations: int = OFFLINE_ITERATIONS
    w_silhouette: float = 1.0
    w_vertex: float = 1.0
    w_normal: float = 1.0
    w_laplacian: float = 1.0
    w_edge: float = 0.1
    w_keypoints: float = 1.0
    keypoint_scale_px: float = 4.0
    keypoint_slack: bool = True
    keypoint_tolerance_px: float | None = None
    w_pose: float = 1.0
    w_shape: float = 0.01
    w_depth: float = 0.1
    w_penetration: float = 10.0
    lr_pose: float = 0.01
    lr_shape: float = 0.05
    lr_vertices: float = 0.04
    lr_translation: float = 0.5
    lr_focal: float = 0.01
    optimize_pose: bool = True
    optimize_shape: bool = True
    optimize_vertices: bool = True
    optimize_translation: bool = True
    optimize_focal: bool | None = None
    image_size: int = 128
    sigma: float = 0.5
    saturate_interior: bool = False
    raster_backend: str = "auto"
    crop_margin: float = 0.15
    cull_backfaces: bool = True
    ignore_beyond_wrist: bool = True
    keep_best: bool = True
    keypoint_guard_px: float | None = 1.0
    keypoint_guard_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8 pixels, got {self.image_size}")

    @property
    def soft(self) -> SoftRasterSettings:
        """The soft rasterizer settings of the crop."""
        return SoftRasterSettings(
            image_size=(self.image_size, self.image_size), sigma=self.sigma,
            saturate_interior=self.saturate_interior, backend=self.raster_backend,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class RefineView:
    """A second calibrated camera seeing the same hand (paper 001, Sec. 3.3, Eq. 8).

    Attributes:
        mask: (H, W) bool or float in [0, 1], the hand's silhouette in this camera's image.
        K: (3, 3) intrinsics of this camera, pixels.
        R, t: (3, 3), (3,) metres: ``X_view = R @ X_primary + t`` (primary camera frame to
            this camera's frame).
        keypoints_2d: (21, 2) pixels in this image (MediaPipe order), or None.
    """

    mask: np.ndarray
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    keypoints_2d: np.ndarray | None = None


@dataclass(frozen=True)
class RefineTarget:
    """What one hand is refined against.

    Attributes:
        mask: (H, W) bool or float in [0, 1], the target silhouette in the primary image
            (a hand segmentation, cut at the wrist). Its shape gives the image size.
        keypoints_2d: (21, 2) MediaPipe keypoints, pixels of the primary image.
        K: (3, 3) intrinsics of the primary camera, pixels; None when unknown (the fit's
            weak-perspective path: the refiner works in the fit's own weak camera, as its
            pinhole form, :meth:`core.camera.HandCamera.pinhole_frame`).
        depth: (H, W) float metres, a depth map registered to the primary image (0 or
            non-finite where unknown), or None; needs ``K``.
        views: extra calibrated views (all targets of one call must have the same number);
            they need ``K``.
    """

    mask: np.ndarray
    keypoints_2d: np.ndarray
    K: np.ndarray | None = None
    depth: np.ndarray | None = None
    views: tuple[RefineView, ...] = ()


@dataclass(frozen=True)
class RefineResult:
    """A refined hand (camera frame: OpenCV axes, metres; image pixels).

    Attributes:
        side: "right" or "left".
        vertices: (V, 3) float32 refined mesh ``H = M(p + dp, s + ds) + dv``, camera frame.
        pose: (48,) float32 axis-angle, radians (smplx layout, global rotation first).
        betas: (S,) float32 shape.
        transl: (3,) float32 smplx translation, metres (camera offset included).
        vertex_offsets: (V, 3) float32 free offsets ``dv``, metres, camera frame.
        keypoints_3d: (21, 3) float32 keypoints of ``M(p + dp, s + ds)``, camera frame,
            MediaPipe order.
        keypoints_2d: (21, 2) float32 those keypoints projected with ``K``, image pixels.
        K: (3, 3) float32 the primary camera's intrinsics (times the refined focal scale
            when the focal is free); on the weak-perspective path the nominal camera the hand
            is placed in, which only approximates its projection (use ``camera``).
        reprojection_error_px: mean distance of ``keypoints_2d`` to MediaPipe's, pixels.
        iou_before, iou_after: IoU of the mesh's silhouette (soft > 0.5) with the target
            (> 0.5) in the primary view's crop at ``image_size``, wrist-cut region ignored;
            before and after refinement.
        edge_length_error: mean | |e_H| - |e_M| | over edges, metres (paper 004's edge
            error, against the parametric mesh ``M`` the offsets deform).
        normal_error: mean |<e_H / |e_H|, n_M>| over face edges, no unit (paper 004's
            normal error against ``M``).
        iterations: iterations run. best_iteration: the iterate returned (0 = the fit).
        ms: wall time of the refinement call that produced it (shared by its hands), ms.
        fit_reprojection_error_px: the fit's reprojection error against the same keypoints,
            projected with the same camera (NaN when not measured).
        fell_back: the refined hand broke the keypoint guard and this is the fit
            (``RefineSettings.keypoint_guard_px``): no offsets, ``iou_after == iou_before``.
        camera: the camera ``vertices`` line up with the image in (:class:`HandCamera`): the
            pinhole ``K`` for a perspective hand; a weak-perspective fit's weak camera, as the
            refinement moved it (it works in the camera's pinhole form). Set by
            :meth:`~core.refine.refiner.Refiner.refine`.
    """

    side: str
    vertices: np.ndarray
    pose: np.ndarray
    betas: np.ndarray
    transl: np.ndarray
    vertex_offsets: np.ndarray
    keypoints_3d: np.ndarray
    keypoints_2d: np.ndarray
    K: np.ndarray
    reprojection_error_px: float
    iou_before: float
    iou_after: float
    edge_length_error: float
    normal_error: float
    iterations: int
    best_iteration: int
    ms: float
    fit_reprojection_error_px: float = float("nan")
    fell_back: bool = False
    camera: HandCamera | None = None


def nominal_intrinsics(image_size: tuple[int, int], fov_deg: float) -> np.ndarray:
    """The pinhole camera the tailor places weak-perspective fits in
    (:func:`core.camera.weak_perspective_camera`), as a float32 matrix.

    Args:
        image_size: (width, height) pixels. fov_deg: horizontal field of view, degrees.

    Returns:
        (3, 3) float32 K with ``f = (w / 2) / tan(fov / 2)`` and the image centre.
    """
    return weak_perspective_camera(image_size, fov_deg).K.astype(np.float32)

