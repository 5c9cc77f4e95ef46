"""Silhouette refinement of fitted hands (RealisticHands, paper 001, Sec. 3.2-3.3).

Starting from the tailor's fit (pose ``p``, shape ``s``, translation), the refinement adds
offsets (Eq. 1)

    H = M(p + dp, s + ds) + dv,        camera c + dc

and minimizes (Eq. 5, plus the terms HandTwin adds)

    L = l1 L_sil + l2 L_v + l3 L_n + l4 L_lap + l5 L_edge        (paper 001, Eq. 5)
        + l_kp L_kp + l_pose |dp|^2 + l_shape |ds|^2             (anchors, HandTwin)
        + l_D L_depth                                            (optional, paper 003 Eq. 7)
        + l_pen L_pene                                           (two hands, paper 004 Eq. 6)

* ``L_sil``: squared difference between the soft silhouette of ``H``
  (:func:`core.render.rasterize_silhouette`, SoftRas, rendered in the hand's crop at 128 x 128)
  and the target mask resampled into the same crop, summed over pixels and divided by the
  target's area (so it does not depend on the crop's resolution); with calibrated extra views
  it is averaged over the views (Eq. 8). Pixels beyond the wrist line (where the segmentation
  cuts the forearm off) are ignored in every view that has keypoints.
* ``L_v, L_n, L_lap, L_edge``: the mesh regularizers of :mod:`core.refine.mesh`, each zero at
  ``dv = 0``.
* ``L_kp``: MediaPipe's 2D keypoints against the model's reprojected keypoints, in units of
  ``keypoint_scale_px`` crop pixels, so the hand cannot slide along its own silhouette.
* ``L_depth``: smooth-L1 between the rendered depth map (hard visibility, differentiable depth)
  and a measured one, in units of the mean edge length.
* ``L_pene``: the depth of each hand's vertices inside the other hand.

Paper 001 steps the offsets by SGD with momentum (lr 0.002, momentum 0.9) on its own loss
scale; HandTwin uses Adam with per-parameter step sizes in natural units (radians, edge
lengths, crop pixels), which does not depend on the loss's scale and converges in the 3 (live)
or 15 (offline) iterations the paper reports. The best iterate (lowest loss, per hand) is kept.

Frames and units: camera frame (OpenCV, metres) for every 3D quantity, image pixels for every
2D quantity of the results; the crop only lives inside the optimization.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from core.camera import weak_perspective_camera
from core.errors import InputError
from core.fit import HandFit
from core.model import HandModel
from core.model.data import HandModelData
from core.model.layer import HandOutput
from core.refine import _fused_native
from core.refine import _native as refine_kernels
from core.refine.crop import CropBox, as_tensor, crop_box
from core.refine.lbs import LeanHand
from core.refine.mesh import (
    MeshTopology,
    edge_normal_losses,
    mean_edge_length,
    offset_losses,
    plausibility,
)
from core.refine.penetration import penetration_loss
from core.render import (
    RasterSettings,
    SoftRasterSettings,
    project_points,
    rasterize,
    rasterize_silhouette,
    render_depth_differentiable,
    smooth_l1_depth_loss,
)

log = logging.getLogger(__name__)

__all__ = [
    "LIVE_ITERATIONS",
    "OFFLINE_ITERATIONS",
    "RefineResult",
    "RefineSettings",
    "RefineTarget",
    "RefineView",
    "Refiner",
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
            weak-perspective path: the refiner uses the same nominal pinhole camera the fit
            placed the hand in, see :func:`nominal_intrinsics`).
        depth: (H, W) float metres, a depth map registered to the primary image (0 or
            non-finite where unknown), or None.
        views: extra calibrated views (all targets of one call must have the same number).
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
        K: (3, 3) float32 the primary camera's intrinsics used (nominal on the
            weak-perspective path, times the refined focal scale when the focal is free).
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


def nominal_intrinsics(image_size: tuple[int, int], fov_deg: float) -> np.ndarray:
    """The pinhole camera the tailor places weak-perspective fits in
    (:func:`core.camera.weak_perspective_camera`), as a float32 matrix.

    Args:
        image_size: (width, height) pixels. fov_deg: horizontal field of view, degrees.

    Returns:
        (3, 3) float32 K with ``f = (w / 2) / tan(fov / 2)`` and the image centre.
    """
    return weak_perspective_camera(image_size, fov_deg).K.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Internal state of one optimization (per side: hands of one side share a model and faces)
# --------------------------------------------------------------------------------------------


@dataclass
class _View:
    """One camera of a group: crop intrinsics map, target, weights (all batched over hands)."""

    affine: Tensor  # (B, 3, 3) image -> crop pixels
    K: Tensor  # (B, 3, 3) image intrinsics
    R: Tensor | None  # (B, 3, 3) primary -> this camera, or None for the primary view
    t: Tensor | None  # (B, 3)
    target: Tensor  # (B, S, S) float in [0, 1]
    weight: Tensor  # (B, S, S) float 0/1
    keypoints: Tensor | None  # (B, 21, 2) crop pixels
    boxes: list[CropBox]
    slack: Tensor | None = None  # (B, 21) crop px, the fit's keypoint distances (keypoint_slack)
    faces: Tensor | None = None  # (F', 3) faces drawn in this view, chosen at the first evaluation
    area: Tensor = dataclasses.field(init=False)  # (B,) the target's area inside the weight, px (>= 1)

    def __post_init__(self) -> None:
        self.area = (self.target * self.weight).flatten(1).sum(1).clamp_min(1.0)


@dataclass
class _Group:
    side: str
    index: list[int]  # positions of these hands in the call
    layer: HandModel
    topo: MeshTopology
    pose0: Tensor  # (B, 48)
    betas0: Tensor  # (B, S)
    transl0: Tensor  # (B, 3)
    depth0: Tensor  # (B,) the fit's wrist depth, metres
    edge0: Tensor  # (B,) length unit of the offsets: the model's mean edge length, metres
    views: list[_View]
    depth_target: Tensor | None  # (B, S, S) metres, 0 unknown
    free_focal: bool
    params: dict[str, Tensor] = dataclasses.field(default_factory=dict)  # views of the flat offsets
    layout: list[tuple[str, tuple[int, ...], int]] = dataclasses.field(default_factory=list)
    t_scale: Tensor | None = None  # (B, 3) metres per crop pixel of the translation offsets
    fused: object | None = None  # the primary view as core.refine.fused.numpy_view made it
    fused_params: tuple | None = None  # (addresses, NumPy views) of ``params``
    fused_native: object | None = None  # core.refine._fused_native.NativeEvaluation of ``fused``


@dataclass
class _Eval:
    """One evaluation of a group: per-hand losses and the detached outputs."""

    loss: Tensor  # (B,) with graph
    sil_iou: Tensor  # (B,)
    verts: Tensor  # (B, V, 3)
    base: Tensor  # (B, V, 3) parametric mesh M
    keypoints: Tensor  # (B, 21, 3)
    K: Tensor  # (B, 3, 3) primary image intrinsics in use
    terms: dict[str, Tensor]  # (B,) each weighted term (diagnostics)


class Refiner:
    """Refines fitted hands against target silhouettes; thin state: the models and topology.

    Args:
        right, left: the two hand models' data (the fit's).
        settings: weights, steps and rendering.
        device: "cpu" or "cuda"; every tensor of the optimization lives there.
        nominal_fov_deg: the fit's ``FitSettings.nominal_fov_deg`` (weak-perspective camera).
    """

    def __init__(self, right: HandModelData, left: HandModelData,
                 settings: RefineSettings = RefineSettings(), device: str | torch.device = "cpu",
                 nominal_fov_deg: float = 60.0) -> None:
        self.settings = settings
        self.device = torch.device(device)
        self.nominal_fov_deg = float(nominal_fov_deg)
        self.layers = {d.side: HandModel(d, self.device) for d in (right, left)}
        self._lean = {side: LeanHand(layer) for side, layer in self.layers.items()}  # fast M(p, s)
        self.topology = {side: MeshTopology.from_faces(layer.data.faces, layer.data.num_vertices,
                                                       self.device)
                         for side, layer in self.layers.items()}
        self._topology_arrays: dict = {}  # (side, NumPy dtype) -> core.refine.fused.TopologyArrays
        with torch.no_grad():  # mean edge length of the mean-shape rest mesh, metres
            self._edge_unit = {side: mean_edge_length(layer.rest().vertices, self.topology[side])
                               for side, layer in self.layers.items()}
        self._edge_unit_np = {side: float(e) for side, e in self._edge_unit.items()}

    # ------------------------------------------------------------------------------ public

    def refine(self, fits: Sequence[HandFit], targets: Sequence[RefineTarget],
               iterations: int | None = None, settings: RefineSettings | None = None,
               ) -> list[RefineResult]:
        """Refine every hand of one frame (batched per side; jointly, for the penetration term).

        Args:
            fits: the tailor's fits (any mix of sides, perspective or weak).
            targets: one per fit, same order.
            iterations: overrides ``settings.iterations``.
            settings: overrides the refiner's settings for this call.

        Returns:
            One :class:`RefineResult` per fit, in order.

        Raises:
            InputError: mismatched fits and targets, or malformed target arrays.
        """
        st = settings or self.settings
        n_iter = st.iterations if iterations is None else int(iterations)
        if len(fits) != len(targets):
            raise InputError(f"{len(fits)} fits but {len(targets)} refinement targets")
        if not fits:
            return []
        n_views = {len(t.views) for t in targets}
        if len(n_views) > 1:
            raise InputError("every refinement target of one call needs the same number of views")
        start = time.perf_counter()
        results = self._refine_native(fits, targets, n_iter, st)
        if results is None:
            groups = self._groups(fits, targets, st)
            results = self._optimize(groups, n_iter, st, len(fits))
        results = [self._guard(f, t, r, st) for f, t, r in zip(fits, targets, results)]
        ms = (time.perf_counter() - start) * 1e3
        return [dataclasses.replace(r, ms=ms) for r in results]

    def _guard(self, fit: HandFit, target: RefineTarget, r: RefineResult, st: RefineSettings) -> RefineResult:
        """``r`` with the fit's reprojection error beside its own, or the fit itself where ``r``
        is worse by more than the keypoint guard's slack (:class:`RefineSettings`).

        The fit's error is measured as the refinement measures its own: its 3D keypoints through
        the image camera the refinement started from (the nominal one on the weak path).
        """
        K0 = self._image_K(target)
        kp = np.asarray(target.keypoints_2d, dtype=np.float64)
        fit_kp2 = project_points(np.asarray(fit.keypoints_3d, np.float32)[None], K0[None])[0]
        fit_err = float(np.linalg.norm(fit_kp2 - kp, axis=1).mean())
        r = dataclasses.replace(r, fit_reprojection_error_px=fit_err)
        if st.keypoint_guard_px is None:
            return r
        slack = max(st.keypoint_guard_px, st.keypoint_guard_fraction * fit_err)
        if r.reprojection_error_px <= fit_err + slack:
            return r
        log.debug("refinement: keypoint error %.2f px > fit's %.2f + %.2f px; keeping the fit",
                  r.reprojection_error_px, fit_err, slack)
        with torch.no_grad():
            verts = self._lean[fit.side](*(torch.as_tensor(np.asarray(a, np.float32))[None]
                                           for a in (fit.pose, fit.betas, fit.transl))).vertices[0].numpy()
        f32 = np.float32
        return dataclasses.replace(
            r, vertices=verts.astype(f32), pose=np.asarray(fit.pose, f32), betas=np.asarray(fit.betas, f32),
            transl=np.asarray(fit.transl, f32), vertex_offsets=np.zeros_like(verts, dtype=f32),
            keypoints_3d=np.asarray(fit.keypoints_3d, f32), keypoints_2d=fit_kp2.astype(f32), K=K0.astype(f32),
            reprojection_error_px=fit_err, iou_after=r.iou_before, edge_length_error=0.0, normal_error=0.0,
            best_iteration=0, fell_back=True)

    # ------------------------------------------------------------------------------ live path

    def _refine_native(self, fits: Sequence[HandFit], targets: Sequence[RefineTarget], n_iter: int,
                       st: RefineSettings) -> list[RefineResult] | None:
        """:meth:`refine` for the live case, on NumPy arrays and one C call per side, or None
        where it does not apply (the general path then runs).

        It applies where :meth:`_fusable` would hold: the CPU and the C kernels, one camera, no
        depth, no second hand to keep apart. It computes what ``_groups``, ``_optimize`` and
        ``_results`` compute, with the same helpers, but without PyTorch tensors (at live rates
        their dispatch cost more than the setup's arithmetic), and runs the whole loop (the
        evaluations, Adam, the kept iterate) in :meth:`core.refine._fused_native.NativeEvaluation.run`.
        Adam is elementwise, so each side's loop is independent of the other's.
        """
        from core.refine.fused import FusedView
        from core.render import _native as raster_native

        if (self.device.type != "cpu" or st.saturate_interior or st.raster_backend not in ("auto", "native")
                or any(t.views for t in targets) or (st.w_depth and any(t.depth is not None for t in targets))
                or (len(fits) > 1 and st.w_penetration > 0) or raster_native.library() is None
                or not _fused_native.available(np.float32)):
            return None
        by_side = self._by_side(fits)
        if not all(self._lean[side].uses_native(torch.zeros(1, 48)) for side in by_side):
            return None
        f32 = np.float32
        weights = self._fused_weights(st)
        results: list[RefineResult | None] = [None] * len(fits)
        for side, idx in by_side.items():
            lean, topo = self._lean[side], self._topology_numpy(side)
            m = lean.arrays()
            b, s_dim, v_dim = len(idx), m.shapedirs_flat.shape[0], m.v_template.shape[0]
            pose0, betas0, transl0, kp0 = (np.ascontiguousarray(np.stack([getattr(fits[i], k) for i in idx]), f32)
                                           for k in ("pose", "betas", "transl", "keypoints_3d"))
            depth0 = np.maximum(kp0[:, 0, 2], f32(1e-3))
            K = np.ascontiguousarray(np.stack([self._image_K(targets[i]) for i in idx]), f32)
            boxes, affine, tgt, wts, kps = _crop_arrays(kp0, K, [targets[i] for i in idx], st)
            area = np.maximum((tgt * wts).reshape(b, -1).sum(1), f32(1.0))
            t_scale = _translation_scale(affine, K, depth0, st).astype(f32)
            free_focal = _free_focal(st, [targets[i] for i in idx])
            view = FusedView(pose0, betas0, transl0, t_scale, np.full(b, self._edge_unit_np[side], f32), K, affine,
                             tgt, wts, area, kps, self._start_faces(side, pose0, betas0, transl0, st), topo,
                             free_focal)
            spec = _layout_spec(b, s_dim, v_dim, free_focal, st)
            theta = np.zeros(sum(math.prod(shape) for _, shape, _, _ in spec), f32)
            lr = np.concatenate([np.full(math.prod(shape), step if free else 0.0, f32)
                                 for _, shape, step, free in spec])
            best = _fused_native.NativeEvaluation(lean, view, st.soft, st.keypoint_scale_px).run(
                theta, lr, n_iter, st.keep_best, weights, None, st.keypoint_slack, st.keypoint_tolerance_px,
                torch.get_num_threads())
            edge_err, normal_err = refine_kernels.plausibility(best["verts"], best["base"], topo.faces)
            offsets, col = {}, 0
            for name, shape, _, _ in spec:  # each hand's row of every block
                width = math.prod(shape[1:])
                offsets[name] = best["theta"][:, col:col + width]
                col += width
            transl = transl0 + offsets["translation"] * t_scale
            for j, i in enumerate(idx):
                results[i] = _result(side, boxes[j], kps[j], pose0[j] + offsets["pose"][j],
                                     betas0[j] + offsets["shape"][j], transl[j], best["verts"][j],
                                     best["base"][j], best["keypoints"][j], best["K"][j],
                                     float(best["iou_before"][j]), float(best["iou"][j]), n_iter,
                                     int(best["iteration"][j]), float(edge_err[j]), float(normal_err[j]))
        return results  # type: ignore[return-value]

    def _topology_numpy(self, side: str, dtype=np.float32):
        """The side's :class:`core.refine.fused.TopologyArrays` (``inv_deg`` in ``dtype``), made once."""
        from core.refine.fused import TopologyArrays

        key = (side, np.dtype(dtype))
        if key not in self._topology_arrays:
            self._topology_arrays[key] = TopologyArrays.of(self.topology[side], key[1])
        return self._topology_arrays[key]

    def _start_faces(self, side: str, pose0: np.ndarray, betas0: np.ndarray, transl0: np.ndarray,
                     st: RefineSettings) -> np.ndarray:
        """(F', 3) int64 the faces the refinement draws: with ``cull_backfaces`` those facing the
        camera at the start (the fit's mesh, skinned and culled by the C kernels), else all."""
        faces = self._topology_numpy(side).faces
        if not st.cull_backfaces:
            return faces
        m = self._lean[side].arrays()
        start, _, _ = refine_kernels.lbs_forward(
            pose0 if m.pose_mean is None else pose0 + m.pose_mean, betas0, transl0, m.v_template,
            m.shapedirs_flat, m.j_template, m.j_shapedirs, m.posedirs, m.weights, m.parents_all)
        return np.ascontiguousarray(refine_kernels.front_faces(start, faces))

    # ------------------------------------------------------------------------------ setup

    def _by_side(self, fits: Sequence[HandFit]) -> dict[str, list[int]]:
        """The positions of the call's hands, per side (each side is one batch)."""
        by_side: dict[str, list[int]] = {}
        for i, f in enumerate(fits):
            if f.side not in self.layers:
                raise InputError(f"unknown hand side {f.side!r}")
            by_side.setdefault(f.side, []).append(i)
        return by_side

    def _groups(self, fits: Sequence[HandFit], targets: Sequence[RefineTarget],
                st: RefineSettings) -> list[_Group]:
        dev = self.device
        groups = []
        for side, idx in self._by_side(fits).items():
            layer, topo = self.layers[side], self.topology[side]
            pose0 = as_tensor(np.stack([fits[i].pose for i in idx]), dev)
            betas0 = as_tensor(np.stack([fits[i].betas for i in idx]), dev)
            transl0 = as_tensor(np.stack([fits[i].transl for i in idx]), dev)
            # The fit's keypoints frame the crops (no model pass needed before the first step).
            kp0_np = np.stack([fits[i].keypoints_3d for i in idx]).astype(np.float32)
            kp0 = as_tensor(kp0_np, dev)
            depth0 = kp0[:, 0, 2].clamp_min(1e-3)
            edge0 = self._edge_unit[side].expand(len(idx))
            Ks = [self._image_K(targets[i]) for i in idx]
            views = [self._primary_view(kp0_np, Ks, [targets[i] for i in idx], st)]
            for k in range(len(targets[idx[0]].views)):
                views.append(self._extra_view(kp0, [targets[i].views[k] for i in idx], st))
            depth_target = None
            if any(targets[i].depth is not None for i in idx):
                maps = []
                for j, i in enumerate(idx):
                    d = targets[i].depth
                    box = views[0].boxes[j]
                    maps.append(np.zeros((box.size, box.size), np.float32) if d is None
                                else box.resample_depth(_check_image(d, "depth")))
                depth_target = as_tensor(np.stack(maps), dev)
            g = _Group(side, idx, layer, topo, pose0, betas0, transl0, depth0, edge0, views,
                       depth_target, _free_focal(st, [targets[i] for i in idx]))
            g.t_scale = self._translation_scale(g, st)
            groups.append(g)
        return groups

    def _image_K(self, target: RefineTarget) -> np.ndarray:
        mask = _check_image(target.mask, "mask")
        if target.K is None:
            h, w = mask.shape
            return nominal_intrinsics((w, h), self.nominal_fov_deg)
        K = np.asarray(target.K, dtype=np.float32)
        if K.shape != (3, 3):
            raise InputError(f"K must be (3, 3), got {K.shape}")
        return K

    def _primary_view(self, points0: np.ndarray, Ks: list[np.ndarray], targets: list[RefineTarget],
                      st: RefineSettings) -> _View:
        dev = self.device
        boxes, affine, tgt, wts, kps = _crop_arrays(points0, np.stack(Ks), targets, st)
        return _View(affine=as_tensor(affine, dev), K=as_tensor(np.stack(Ks), dev), R=None, t=None,
                     target=as_tensor(tgt, dev), weight=as_tensor(wts, dev), keypoints=as_tensor(kps, dev),
                     boxes=boxes)

    def _extra_view(self, points0: Tensor, views: list[RefineView], st: RefineSettings) -> _View:
        dev = self.device
        K = as_tensor(np.stack([np.asarray(v.K, np.float32) for v in views]), dev)
        R = as_tensor(np.stack([np.asarray(v.R, np.float32) for v in views]), dev)
        t = as_tensor(np.stack([np.asarray(v.t, np.float32).reshape(3) for v in views]), dev)
        with torch.no_grad():
            uv = project_points(points0 @ R.transpose(1, 2) + t[:, None], K).cpu().numpy()
        boxes, tgt, wts, kps = [], [], [], []
        has_kp = all(v.keypoints_2d is not None for v in views)
        for j, v in enumerate(views):
            pts = uv[j] if v.keypoints_2d is None else np.concatenate([uv[j], v.keypoints_2d])
            mask = _check_image(v.mask, "view mask")
            box = crop_box(pts, st.image_size, st.crop_margin, max_side=2 * max(mask.shape))
            boxes.append(box)
            tgt.append(box.resample_mask(mask))
            if has_kp and st.ignore_beyond_wrist:
                wts.append(_wrist_weight(box, np.asarray(v.keypoints_2d, np.float64)))
            else:
                wts.append(np.ones((box.size, box.size), np.float32))
            if has_kp:
                kps.append(box.to_crop(v.keypoints_2d))
        return _View(
            affine=as_tensor(np.stack([b.affine() for b in boxes]), dev), K=K, R=R, t=t,
            target=as_tensor(np.stack(tgt), dev), weight=as_tensor(np.stack(wts), dev),
            keypoints=as_tensor(np.stack(kps), dev) if has_kp else None, boxes=boxes,
        )

    # ------------------------------------------------------------------------------ loss

    def _layout(self, g: _Group, st: RefineSettings) -> list[tuple[Tensor, float, bool]]:
        """Lay out the group's offsets in the flat parameter vector; returns (zeros, lr, free) each.

        Offsets (all zero at the start): pose (B, 48) radians, shape (B, S), vertices (B, V, 3)
        in mean edge lengths, translation (B, 3) crop pixels, focal (B, 1) log focal scale.
        """
        spec = _layout_spec(g.pose0.shape[0], g.betas0.shape[1], g.topo.num_vertices, g.free_focal, st)
        g.layout = [(name, shape, math.prod(shape)) for name, shape, _, _ in spec]
        return [(torch.zeros(math.prod(shape)), lr, free) for _, shape, lr, free in spec]

    @staticmethod
    def _bind(groups: list[_Group], theta: Tensor) -> None:
        """Point every group's ``params`` at its slices of the flat offsets ``theta``."""
        offset = 0
        for g in groups:
            for name, shape, n in g.layout:
                g.params[name] = theta[offset:offset + n].view(shape)
                offset += n

    def _mesh(self, g: _Group, st: RefineSettings) -> tuple[HandOutput, Tensor, Tensor, Tensor]:
        """The model's output, the parametric mesh M, the refined mesh H (B, V, 3) and the
        primary camera's intrinsics (B, 3, 3), from the group's current offsets."""
        p = g.params
        pose = g.pose0 + p["pose"]
        betas = g.betas0 + p["shape"]
        transl = g.transl0 + p["translation"] * g.t_scale
        out = self._lean[g.side](pose, betas, transl)
        base = out.vertices
        verts = base + p["vertices"] * g.edge0[:, None, None]
        if g.free_focal:
            focal = torch.exp(p["focal"])  # (B, 1): fx and fy scaled (columns 0, 1 of K)
            scale = torch.cat([focal, focal, torch.ones_like(focal)], dim=1)  # (B, 3)
            K_img = g.views[0].K * scale[:, None, :]
        else:
            K_img = g.views[0].K
        return out, base, verts, K_img

    def _fusable(self, groups: list[_Group], st: RefineSettings, theta: Tensor,
                 pen_pairs: list) -> bool:
        """Whether this call can use the hand-written loss and gradient (:mod:`core.refine.fused`):
        one camera, no depth, no second hand to keep apart, the C kernels for these tensors."""
        from core.refine import _native as refine_native
        from core.render import _native as raster_native

        return (not pen_pairs and not st.saturate_interior and st.raster_backend in ("auto", "native")
                and all(len(g.views) == 1 and (g.depth_target is None or not st.w_depth) for g in groups)
                and raster_native.native_supported(theta) and raster_native.library() is not None
                and all(self._lean[g.side].uses_native(theta) for g in groups)
                and refine_native.supported(theta))

    def _fused_setup(self, g: _Group, st: RefineSettings) -> None:
        """What the fused evaluations of a group keep for the call: the start's front faces (as
        :meth:`_evaluate`), NumPy views of the fixed tensors and, where it builds, the C
        evaluation (:mod:`core.refine._fused_native`)."""
        from core.refine.fused import FusedView, numpy_view

        view = g.views[0]
        if view.faces is None:  # as _evaluate: the start's front faces
            view.faces = torch.from_numpy(self._start_faces(g.side, g.pose0.numpy(), g.betas0.numpy(),
                                                            g.transl0.numpy(), st))
        if g.fused is None:  # NumPy arrays sharing the tensors' memory, once per call
            topo = self._topology_numpy(g.side, g.pose0.numpy().dtype)
            g.fused = numpy_view(FusedView(g.pose0, g.betas0, g.transl0, g.t_scale, g.edge0, view.K,
                                           view.affine, view.target, view.weight, view.area,
                                           view.keypoints, view.faces, topo, g.free_focal))
            if _fused_native.available(g.fused.pose0.dtype):
                g.fused_native = _fused_native.NativeEvaluation(self._lean[g.side], g.fused, st.soft,
                                                                st.keypoint_scale_px)

    @staticmethod
    def _fused_weights(st: RefineSettings) -> dict[str, float]:
        """The loss weights as :func:`core.refine.fused.loss_and_grad` takes them (0: term off)."""
        free_v = st.optimize_vertices
        return {"silhouette": st.w_silhouette, "keypoints": st.w_keypoints,
                "vertex": st.w_vertex if free_v else 0.0, "laplacian": st.w_laplacian if free_v else 0.0,
                "edge": st.w_edge if free_v else 0.0, "normal": st.w_normal if free_v else 0.0,
                "pose": st.w_pose if st.optimize_pose else 0.0,
                "shape": st.w_shape if st.optimize_shape else 0.0}

    def _evaluate_fused(self, g: _Group, st: RefineSettings, need_grad: bool):
        """:meth:`_evaluate` (one view, no depth) and its gradient by :func:`core.refine.fused.loss_and_grad`
        (or its C version)."""
        from core.refine.fused import FusedOutput, loss_and_grad

        self._fused_setup(g, st)
        view = g.views[0]
        weights = self._fused_weights(st)
        key = tuple(p.data_ptr() for p in g.params.values())  # the flat offsets, stepped in place
        if g.fused_params is None or g.fused_params[0] != key:
            g.fused_params = (key, {name: p.detach().numpy() for name, p in g.params.items()})
        params = g.fused_params[1]
        slack = None if view.slack is None else view.slack.numpy()
        threads = torch.get_num_threads()
        if g.fused_native is not None:  # one C call, the GIL released
            out = g.fused_native(params, weights, slack, st.keypoint_slack, st.keypoint_tolerance_px,
                                 need_grad, threads)
        else:  # the C kernels joined by NumPy glue (the reference)
            out = loss_and_grad(self._lean[g.side], g.fused, params, weights, st.soft, st.keypoint_scale_px,
                                slack, st.keypoint_slack, st.keypoint_tolerance_px, need_grad, threads)
        t = torch.from_numpy
        if st.keypoint_slack and out.slack is not None:
            view.slack = t(out.slack)
        grads = None if out.grads is None else {k: t(v) for k, v in out.grads.items()}
        return FusedOutput(t(out.loss), t(out.iou), t(out.verts), t(out.base), t(out.keypoints),
                           t(np.ascontiguousarray(out.K)), view.slack, grads)

    def _evaluate(self, g: _Group, st: RefineSettings, with_depth: bool) -> _Eval:
        p = g.params
        out, base, verts, K_img = self._mesh(g, st)
        faces = g.topo.faces
        soft = st.soft
        sil_terms, ious = [], None
        kp_terms = []
        for k, view in enumerate(g.views):
            Kv = K_img if k == 0 else view.K
            Kc = view.affine @ Kv
            v = verts if view.R is None else verts @ view.R.transpose(1, 2) + view.t[:, None]
            if view.faces is None:  # the start's front faces, and those near grazing
                view.faces = _front_faces(v, faces) if st.cull_backfaces else faces
            sil = rasterize_silhouette(v, view.faces, Kc, soft)
            w = view.weight
            sil_terms.append(((sil - view.target).pow(2) * w).flatten(1).sum(1) / view.area)
            if k == 0:
                with torch.no_grad():
                    a, t = (sil > 0.5) & (w > 0), (view.target > 0.5) & (w > 0)
                    inter = (a & t).flatten(1).sum(1).float()
                    union = (a | t).flatten(1).sum(1).float()
                    ious = torch.where(union > 0, inter / union.clamp_min(1.0), torch.ones_like(union))
            if view.keypoints is not None and st.w_keypoints > 0:
                kp3 = out.keypoints if view.R is None else out.keypoints @ view.R.transpose(1, 2) + view.t[:, None]
                dist = (project_points(kp3, Kc) - view.keypoints).norm(dim=-1)  # (B, 21) crop px
                if st.keypoint_slack:
                    if view.slack is None:  # the fit's own distances, taken at the first evaluation
                        view.slack = dist.detach()
                        if st.keypoint_tolerance_px is not None:
                            view.slack = view.slack.clamp(max=st.keypoint_tolerance_px)
                    dist = torch.relu(dist - view.slack)
                kp_terms.append(dist.pow(2).mean(1) / st.keypoint_scale_px ** 2)
        terms = {"silhouette": st.w_silhouette * torch.stack(sil_terms).mean(0)}  # Eq. 8
        if kp_terms:
            terms["keypoints"] = st.w_keypoints * torch.stack(kp_terms).mean(0)
        if st.optimize_vertices:
            if st.w_vertex or st.w_laplacian:  # offsets in mean edge lengths
                vertex, lap = offset_losses(p["vertices"], g.topo)
                terms["vertex"] = st.w_vertex * vertex
                terms["laplacian"] = st.w_laplacian * lap
            if st.w_edge or st.w_normal:
                edge, normal = edge_normal_losses(verts, base, g.topo)
                if st.w_edge:
                    terms["edge"] = st.w_edge * edge
                if st.w_normal:
                    terms["normal"] = st.w_normal * normal
        if st.optimize_pose and st.w_pose:
            terms["pose"] = st.w_pose * p["pose"].pow(2).mean(1)
        if st.optimize_shape and st.w_shape:
            terms["shape"] = st.w_shape * p["shape"].pow(2).mean(1)
        if with_depth and g.depth_target is not None and st.w_depth:
            terms["depth"] = st.w_depth * self._depth_term(g, verts, g.views[0].affine @ K_img, st)
        loss = torch.stack(list(terms.values())).sum(0)
        return _Eval(loss, ious, verts, base, out.keypoints, K_img, terms)

    @staticmethod
    def _translation_scale(g: _Group, st: RefineSettings) -> Tensor:
        """(B, 3) metres per crop pixel of the translation offsets (primary view): see
        :func:`_translation_scale`."""
        return _translation_scale(g.views[0].affine, g.views[0].K, g.depth0, st)

    def _depth_term(self, g: _Group, verts: Tensor, Kc: Tensor, st: RefineSettings) -> Tensor:
        """(B,) smooth-L1 of rendered vs measured depth, in mean edge lengths (paper 003 Eq. 7)."""
        size = (st.image_size, st.image_size)
        with torch.no_grad():
            frags = rasterize(verts.detach(), g.topo.faces, Kc.detach(), RasterSettings(image_size=size))
        depth = render_depth_differentiable(verts, g.topo.faces, Kc, frags)
        unit = g.edge0[:, None, None]
        valid = (frags.pix_to_face >= 0) & (g.views[0].weight > 0)
        terms = [smooth_l1_depth_loss(depth[j:j + 1] / unit[j], g.depth_target[j:j + 1] / unit[j],
                                      valid[j:j + 1], beta=1.0) for j in range(depth.shape[0])]
        return torch.stack(terms)

    # ------------------------------------------------------------------------------ loop

    def _optimize(self, groups: list[_Group], n_iter: int, st: RefineSettings,
                  n_hands: int) -> list[RefineResult]:
        # Every offset of every hand lives in one flat vector, stepped by one Adam update with
        # per-entry step sizes (frozen offsets: step 0): a handful of ops per iteration.
        parts = [p for g in groups for p in self._layout(g, st)]
        dev = self.device
        theta = torch.cat([z for z, _, _ in parts]).to(dev).requires_grad_(True)
        lr = torch.cat([torch.full_like(z, lr if free else 0.0) for z, lr, free in parts]).to(dev)
        adam = _Adam(theta, lr) if n_iter > 0 and bool((lr > 0).any()) else None
        pen_pairs = self._pen_pairs(groups) if st.w_penetration > 0 else []
        fused = self._fusable(groups, st, theta, pen_pairs)
        best: list[dict[str, Tensor] | None] = [None] * len(groups)
        iou_before: list[Tensor | None] = [None] * len(groups)
        for it in range(n_iter + 1):
            final = it == n_iter or adam is None
            self._bind(groups, theta)
            if fused:  # the hand-written loss and gradient (core.refine.fused)
                outs = evals = [self._evaluate_fused(g, st, need_grad=not final) for g in groups]
                losses, ious = [o.loss for o in outs], [o.iou for o in outs]
            else:
                with torch.set_grad_enabled(not final):
                    evals = [self._evaluate(g, st, with_depth=True) for g in groups]
                    losses, ious = [e.loss for e in evals], [e.sil_iou for e in evals]
                    if pen_pairs:
                        losses = self._add_penetration(groups, evals, losses, pen_pairs, st)
            for gi, (iou, loss) in enumerate(zip(ious, losses)):
                if it == 0:
                    iou_before[gi] = iou
                e = evals[gi]
                meshes = {"verts": e.verts, "base": e.base, "keypoints": e.keypoints, "K": e.K}
                self._keep(best, gi, groups[gi], iou, loss.detach(), it, st.keep_best, meshes)
            if final:
                break
            if fused:
                grad = torch.cat([o.grads[name].reshape(-1) for g, o in zip(groups, outs)
                                  for name, _, _ in g.layout])
            else:
                grad, = torch.autograd.grad(torch.stack([loss.sum() for loss in losses]).sum(), theta)
            adam.step(grad)
        return self._results(groups, best, iou_before, n_iter, st, n_hands)

    def _results(self, groups: list[_Group], best: list[dict[str, Tensor] | None],
                 iou_before: list[Tensor | None], n_iter: int, st: RefineSettings,
                 n_hands: int) -> list[RefineResult]:
        """The kept iterates (their offsets and the meshes of their evaluation) as results."""
        results: list[RefineResult | None] = [None] * n_hands
        with torch.no_grad():
            for gi, g in enumerate(groups):
                b = best[gi]
                offset = 0
                for name, shape, n in g.layout:  # (B, P) rows, one hand each
                    per_hand = n // shape[0]
                    g.params[name] = b["theta"][:, offset:offset + per_hand].reshape(shape)
                    offset += per_hand
                verts, base = b["verts"], b["base"]
                edge_err, normal_err = plausibility(verts, base, g.topo)
                pose = (g.pose0 + g.params["pose"]).cpu().numpy()
                betas = (g.betas0 + g.params["shape"]).cpu().numpy()
                transl = (g.transl0 + g.params["translation"] * g.t_scale).cpu().numpy()
                crop_kp = g.views[0].keypoints.cpu().numpy()
                n = {k: b[k].cpu().numpy() for k in ("keypoints", "verts", "base", "K", "iou", "iteration")}
                for j, i in enumerate(g.index):
                    results[i] = _result(g.side, g.views[0].boxes[j], crop_kp[j], pose[j], betas[j], transl[j],
                                         n["verts"][j], n["base"][j], n["keypoints"][j], n["K"][j],
                                         float(iou_before[gi][j]), float(n["iou"][j]), n_iter,
                                         int(n["iteration"][j]), float(edge_err[j]), float(normal_err[j]))
        return [r for r in results if r is not None]

    def _pen_pairs(self, groups: list[_Group]) -> list[tuple[int, int, int, int]]:
        """(group a, hand a, group b, hand b) for every pair of hands of the call."""
        hands = [(gi, j) for gi, g in enumerate(groups) for j in range(len(g.index))]
        return [(*hands[x], *hands[y]) for x in range(len(hands)) for y in range(x + 1, len(hands))]

    def _add_penetration(self, groups, evals, losses, pairs, st) -> list[Tensor]:
        losses = list(losses)
        for ga, ja, gb, jb in pairs:
            unit = 0.5 * (groups[ga].edge0[ja] + groups[gb].edge0[jb])
            pen = penetration_loss(evals[ga].verts[ja], groups[ga].topo.faces,
                                   evals[gb].verts[jb], groups[gb].topo.faces) / unit
            # Each hand of the pair carries half of the pair's term.
            for gi, j in ((ga, ja), (gb, jb)):
                add = torch.zeros_like(losses[gi])
                add = add.index_put((torch.tensor([j], device=add.device),), 0.5 * st.w_penetration * pen.reshape(1))
                losses[gi] = losses[gi] + add
        return losses

    @staticmethod
    def _keep(best: list[dict[str, Tensor] | None], gi: int, g: _Group, iou: Tensor, loss: Tensor,
              it: int, keep_best: bool, meshes: dict[str, Tensor]) -> None:
        """Remember, per hand, the offsets with the lowest loss (or the last ones) and the
        meshes they gave (``verts``, ``base``, ``keypoints``, ``K``: the evaluation's outputs)."""
        b = g.pose0.shape[0]
        theta = torch.cat([g.params[name].detach().reshape(b, -1) for name, _, _ in g.layout], 1)
        snap = {"loss": loss, "iteration": torch.full_like(loss, it), "iou": iou, "theta": theta,
                **{k: v.detach() for k, v in meshes.items()}}
        if best[gi] is None:
            best[gi] = {k: v.clone() for k, v in snap.items()}
            return
        cur = best[gi]
        better = snap["loss"] < cur["loss"] if keep_best else torch.ones_like(loss, dtype=torch.bool)
        for k, v in snap.items():
            cur[k] = torch.where(better.reshape(-1, *([1] * (v.ndim - 1))), v, cur[k])

class _Adam:
    """Adam (Kingma & Ba; ``torch.optim.Adam``'s update, betas (0.9, 0.99)) on one flat tensor
    with a step size per entry (0 freezes an entry)."""

    def __init__(self, theta: Tensor, lr: Tensor, betas: tuple[float, float] = (0.9, 0.99),
                 eps: float = 1e-8) -> None:
        self.theta, self.lr, self.betas, self.eps = theta, lr, betas, eps
        self.m = torch.zeros_like(lr)
        self.v = torch.zeros_like(lr)
        self.t = 0

    @torch.no_grad()
    def step(self, grad: Tensor) -> None:
        b1, b2 = self.betas
        self.t += 1
        self.m.mul_(b1).add_(grad, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (self.v / (1 - b2 ** self.t)).sqrt_().add_(self.eps)
        self.theta.addcdiv_(self.m * self.lr, denom, value=-1 / (1 - b1 ** self.t))


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _free_focal(st: RefineSettings, targets: Sequence[RefineTarget]) -> bool:
    """Whether a batch's focal offset is free: ``st.optimize_focal``, or where it is None, when
    no target knows its camera (the weak-perspective path's focal length is nominal)."""
    if st.optimize_focal is None:
        return all(t.K is None for t in targets)
    return bool(st.optimize_focal)


def _layout_spec(b: int, num_betas: int, num_vertices: int, free_focal: bool,
                 st: RefineSettings) -> list[tuple[str, tuple[int, ...], float, bool]]:
    """The offsets of B hands, in the order they lie in the flat parameter vector: (name, shape,
    step size, free) each. All zero at the start: pose (B, 48) radians, shape (B, S), vertices
    (B, V, 3) in mean edge lengths, translation (B, 3) crop pixels, focal (B, 1) log focal scale."""
    return [("pose", (b, 48), st.lr_pose, st.optimize_pose),
            ("shape", (b, num_betas), st.lr_shape, st.optimize_shape),
            ("vertices", (b, num_vertices, 3), st.lr_vertices, st.optimize_vertices),
            ("translation", (b, 3), st.lr_translation, st.optimize_translation),
            ("focal", (b, 1), st.lr_focal, free_focal)]


def _translation_scale(affine, K, depth0, st: RefineSettings):
    """(B, 3) metres per crop pixel of the translation offsets (tensors or NumPy arrays).

    x, y: the shift that moves the wrist by one crop pixel; z: the change of depth that grows
    the hand's image (about ``image_size / (1 + 2 margin)`` crop pixels across) by one crop
    pixel. ``affine``, ``K`` (B, 3, 3) the primary view's; ``depth0`` (B,) the fit's wrist depth.
    """
    fc = affine[:, 0, 0] * K[:, 0, 0]  # (B,) crop focal, px
    extent = st.image_size / (1.0 + 2.0 * st.crop_margin)
    stack = np.stack if isinstance(depth0, np.ndarray) else torch.stack
    return stack([depth0 / fc, depth0 / fc, -depth0 / extent], -1)


def _crop_arrays(points0: np.ndarray, K: np.ndarray, targets: Sequence[RefineTarget], st: RefineSettings):
    """The primary view's crops of B hands, as float32 NumPy arrays.

    Args:
        points0: (B, N, 3) points the crop must hold (the fit's keypoints), camera frame.
        K: (B, 3, 3) image intrinsics. targets: the hands' targets.

    Returns:
        (boxes, affine (B, 3, 3) image to crop, target (B, S, S) in [0, 1], weight (B, S, S)
        0/1 (0 past the wrist line), keypoints (B, 21, 2) MediaPipe's in crop pixels).
    """
    uv = project_points(points0, K)
    boxes, tgt, wts, kps = [], [], [], []
    for j, t in enumerate(targets):
        kp = np.asarray(t.keypoints_2d, dtype=np.float64)
        if kp.shape != (21, 2):
            raise InputError(f"keypoints_2d must be (21, 2), got {kp.shape}")
        mask = _check_image(t.mask, "mask")
        box = crop_box(np.concatenate([uv[j], kp]), st.image_size, st.crop_margin,
                       max_side=2 * max(mask.shape))
        boxes.append(box)
        tgt.append(box.resample_mask(mask))
        wts.append(_wrist_weight(box, kp) if st.ignore_beyond_wrist else
                   np.ones((box.size, box.size), np.float32))
        kps.append(box.to_crop(kp))
    def c32(arrays):  # one C-contiguous float32 array (inputs may come in any memory order)
        return np.ascontiguousarray(np.stack(arrays), dtype=np.float32)

    return boxes, c32([b.affine() for b in boxes]), c32(tgt), c32(wts), c32(kps)


def _result(side: str, box: CropBox, crop_keypoints: np.ndarray, pose: np.ndarray, betas: np.ndarray,
            transl: np.ndarray, verts: np.ndarray, base: np.ndarray, keypoints: np.ndarray, K: np.ndarray,
            iou_before: float, iou_after: float, n_iter: int, best_iteration: int, edge_error: float,
            normal_error: float) -> RefineResult:
    """One hand's :class:`RefineResult` from its kept iterate (NumPy arrays: the offsets already
    added to the fit; ``crop_keypoints`` (21, 2) MediaPipe's keypoints in ``box``'s pixels)."""
    kp2 = project_points(keypoints[None], K[None])[0]
    target_kp = box.to_image(crop_keypoints)
    f32 = np.float32
    return RefineResult(
        side=side, vertices=verts.astype(f32), pose=pose.astype(f32), betas=betas.astype(f32),
        transl=transl.astype(f32), vertex_offsets=(verts - base).astype(f32), keypoints_3d=keypoints.astype(f32),
        keypoints_2d=kp2.astype(f32), K=K.astype(f32),
        reprojection_error_px=float(np.linalg.norm(kp2 - target_kp, axis=1).mean()),
        iou_before=iou_before, iou_after=iou_after, edge_length_error=edge_error, normal_error=normal_error,
        iterations=n_iter, best_iteration=best_iteration, ms=0.0,
    )


def _front_faces(verts: Tensor, faces: Tensor) -> Tensor:
    """(F', 3) the faces that face the camera in at least one mesh of the batch (``verts``
    (B, V, 3), camera frame; :func:`core.refine._native.front_faces` is its C twin).

    For a closed surface the silhouette is the union of its front faces; drawing only those
    halves the renderer's work. (The hand is open at the wrist, where a few back faces would
    show through the opening; that region is past the wrist line and ignored.)
    """
    with torch.no_grad():
        # Corner-major gather (index_select is the fast one): three contiguous (B, F, 3) planes.
        c0, c1, c2 = verts.detach().index_select(1, faces.t().reshape(-1)).view(
            verts.shape[0], 3, -1, 3).unbind(1)
        n = torch.linalg.cross(c1 - c0, c2 - c0, dim=-1)
        front = ((n * (c0 + c1 + c2)).sum(-1) < 0).any(0)  # normal against the view ray
    return faces[front]


def _check_image(a: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2 or min(arr.shape) < 1:
        raise InputError(f"the refinement {what} must be (H, W), got shape {arr.shape}")
    return arr


def _wrist_weight(box: CropBox, keypoints_2d: np.ndarray) -> np.ndarray:
    """(size, size) float32: 1 on the hand's side of the wrist line, 0 past it (the forearm).

    The line is the segmentation's (:func:`core.segment.wrist_cut`), so the refinement ignores
    exactly the pixels the target mask was cut off at.
    """
    from core.segment.geometry import hand_scale, wrist_halfplane

    kp = np.asarray(keypoints_2d, dtype=np.float64)
    n, c = wrist_halfplane(kp, hand_scale(kp))  # the segmentation's own offset
    xs, ys = box.image_axes()  # (x, y) . n >= c, separably
    return ((xs * n[0])[None, :] + (ys * n[1])[:, None] >= c).astype(np.float32)
