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

Execution paths (one module each; :meth:`Refiner.refine` picks the first that applies):

1. :mod:`core.refine.path_native`, the live case: NumPy arrays and the whole loop (evaluations,
   Adam, the kept iterate) in one C call per side. The CPU and the C kernels, one camera, no
   depth. It has no penetration term: where two hands it refined interpenetrate at the end,
   the general path refines them again (apart, the term is zero and adds nothing).
2. :mod:`core.refine.path_fused`: the loop of path 3 with each evaluation's loss and gradient
   written by hand (:mod:`core.refine.fused`, or its C twin) instead of autograd, where path 1
   does not apply but the same conditions hold.
3. :mod:`core.refine.path_torch`, the general one: PyTorch tensors and autograd, every term
   (extra views, depth, penetration), any device.

What they share (the refiner's state, the crops, the offsets' layout, the results) is in
:mod:`core.refine.common`; the settings, targets and results in :mod:`core.refine.contracts`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Sequence

import numpy as np
import torch

from core.camera import HandCamera, Intrinsics
from core.errors import InputError
from core.fit import HandFit, fit_camera
from core.refine.contracts import (
    LIVE_ITERATIONS,
    OFFLINE_ITERATIONS,
    RefineResult,
    RefineSettings,
    RefineTarget,
    RefineView,
    nominal_intrinsics,
)
from core.refine.path_native import NativePath
from core.refine.path_torch import TorchPath
from core.refine.penetration import penetration_stats
from core.render import project_points

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


class Refiner(NativePath, TorchPath):
    """Refines fitted hands against target silhouettes; thin state: the models and topology.

    Args:
        right, left: the two hand models' data (the fit's).
        settings: weights, steps and rendering.
        device: "cpu" or "cuda"; every tensor of the optimization lives there.
        nominal_fov_deg: the fit's ``FitSettings.nominal_fov_deg`` (weak-perspective camera).
    """

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
        cameras = [self._fit_camera(f, t) for f, t in zip(fits, targets)]
        work = [self._in_pinhole(f, t, c) for f, t, c in zip(fits, targets, cameras)]
        work_fits, work_targets = [w[0] for w in work], [w[1] for w in work]
        run = st
        if len(fits) > 1 and any(c.is_weak for c in cameras):
            run = dataclasses.replace(st, w_penetration=0.0)  # each weak hand in its own frame
        results = self._refine_native(work_fits, work_targets, n_iter, run)
        if results is not None and run.w_penetration > 0 and self._interpenetrate(results):
            results = None  # the hands touch: the general path's penetration term keeps them apart
        if results is None:
            groups = self._groups(work_fits, work_targets, run)
            results = self._optimize(groups, n_iter, run, len(fits))
        results = [self._guard(f, t, c, self._from_pinhole(r, c, t), st)
                   for f, t, c, r in zip(fits, targets, cameras, results)]
        ms = (time.perf_counter() - start) * 1e3
        return [dataclasses.replace(r, ms=ms) for r in results]

    def _interpenetrate(self, results: Sequence[RefineResult]) -> bool:
        """Whether any two of the refined hands interpenetrate (where the penetration term,
        paper 004 Eq. 6, is not zero)."""
        for i, a in enumerate(results):
            for b in results[i + 1:]:
                _, deepest = penetration_stats(torch.as_tensor(a.vertices), self.topology[a.side].faces,
                                               torch.as_tensor(b.vertices), self.topology[b.side].faces)
                if deepest > 0.0:
                    return True
        return False

    def _fit_camera(self, fit: HandFit, target: RefineTarget) -> HandCamera:
        """The camera the fit lines up with the target's image in (:func:`core.fit.fit_camera`):
        the target's K (else the nominal one, :func:`nominal_intrinsics`), or for a
        weak-perspective fit without a K its own weak camera, placed in the nominal camera as
        the fitter placed the hand."""
        h, w = np.shape(target.mask)[:2]
        K0 = self._image_K(target)
        intrinsics = _intrinsics(K0, (w, h))
        camera = fit_camera(fit, intrinsics) if target.K is None else HandCamera(intrinsics)
        if camera.is_weak and (target.depth is not None or target.views):
            raise InputError("a weak-perspective fit has no metric camera: a depth map or extra views need the "
                             "target's K")
        return camera

    @staticmethod
    def _in_pinhole(fit: HandFit, target: RefineTarget, camera: HandCamera) -> tuple[HandFit, RefineTarget]:
        """A weak-perspective fit and its target in the fit's weak camera's pinhole form
        (:meth:`core.camera.HandCamera.pinhole_frame`), where the refinement's pinhole renders
        and projects the hand exactly as the fit does; a perspective one as it is."""
        if not camera.is_weak:
            return fit, target
        offset, K = camera.pinhole_frame()
        moved = dataclasses.replace(fit, transl=(fit.transl + offset).astype(np.float32),
                                    keypoints_3d=(fit.keypoints_3d + offset).astype(np.float32))
        return moved, dataclasses.replace(target, K=K.astype(np.float32))

    def _from_pinhole(self, r: RefineResult, camera: HandCamera, target: RefineTarget) -> RefineResult:
        """``r`` with its camera; a weak hand's moved back from its camera's pinhole form to
        where the fitter places weak hands, with its weak camera as the refinement left it
        (:meth:`core.camera.HandCamera.from_pinhole_frame`), its keypoints through that camera
        and the nominal ``K``."""
        if not camera.is_weak:
            h, w = np.shape(target.mask)[:2]
            return dataclasses.replace(r, camera=HandCamera(_intrinsics(r.K, (w, h))))
        moved, offset = camera.from_pinhole_frame(r.keypoints_3d[0])

        def back(a: np.ndarray) -> np.ndarray:
            return (np.asarray(a, np.float64) + offset).astype(np.float32)

        kp3 = back(r.keypoints_3d)
        kp2 = moved.project(kp3)  # the pinhole form's, to the second order of depth / distance
        err = float(np.linalg.norm(kp2 - np.asarray(target.keypoints_2d, np.float64), axis=1).mean())
        return dataclasses.replace(r, vertices=back(r.vertices), transl=back(r.transl), keypoints_3d=kp3,
                                   keypoints_2d=kp2, reprojection_error_px=err, K=camera.K.astype(np.float32),
                                   camera=moved)

    def _guard(self, fit: HandFit, target: RefineTarget, camera: HandCamera, r: RefineResult,
               st: RefineSettings) -> RefineResult:
        """``r`` with the fit's reprojection error beside its own, or the fit itself where ``r``
        is worse by more than the keypoint guard's slack (:class:`RefineSettings`).

        Both are measured in the camera the refinement worked in: the frame's for a perspective
        fit; a weak fit's own weak camera (its keypoints, ``HandFit.keypoints_2d``), whose
        pinhole form the refinement works in.
        """
        K0 = self._image_K(target)
        kp = np.asarray(target.keypoints_2d, dtype=np.float64)
        if camera.is_weak:
            fit_kp2 = np.asarray(fit.keypoints_2d, np.float64)
        else:
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
            best_iteration=0, fell_back=True, camera=camera)


def _intrinsics(K: np.ndarray, image_size: tuple[int, int]) -> Intrinsics:
    """The refiner's (3, 3) pinhole matrix (checked by the target, or its own) as
    :class:`Intrinsics` of an image ``(width, height)``."""
    k = np.asarray(K, np.float64)
    return Intrinsics(k[0, 0], k[1, 1], k[0, 2], k[1, 2], *image_size)
