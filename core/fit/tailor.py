"""Fitting the hand model to detected keypoints: analytic initialization, then the tailor.

Two stages, as in HandTailor (paper 002, Sec. 3.4) and the identity-aware paper (000, Sec. 3.2):

1. **Initialization without learning** (:func:`initialize`): joint rotations recovered
   analytically from MediaPipe's metric world landmarks by swing decomposition along the
   kinematic chain (paper 004, Sec. 3.3: each bone's rest direction is swung onto the observed
   one in its parent's frame; twist, which one bone direction cannot show, starts at zero),
   the global rotation from the palm by Kabsch, then the root by the analytic scale/root step
   (HandTailor Eq. 12 for a known camera, Eq. 17 for weak perspective).
2. **The tailor** (:class:`TailorFitter`): Levenberg-Marquardt over joint rotations, root
   (and shape when no profile fixes it) with

   - the 2D joint term (Eq. 9): reprojected keypoints against the detected ones, pixels;
   - a 3D direction term: each bone's direction against MediaPipe's world landmarks;
   - the identity term (Eq. 11) toward the initialization, and a shape prior;
   - for streams, a temporal term toward the previous frame;
   - the pose prior: every few iterations the local joint rotations are projected into the
     model's anatomical limits (twist nearly locked on the fingers, which is what the
     unnatural-twist term of Eq. 10 guards against).

The Jacobian is closed form (:mod:`core.fit.skeleton`), so an iteration is a few dozen small
array ops, batched over hands. The numerics live in :mod:`core.fit.solver`, written once for
PyTorch (the reference path, CPU or CUDA) and NumPy (the default on the CPU: same code, a
fraction of the per-operation overhead).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from core.camera import (
    HandCamera,
    Intrinsics,
    intrinsics_from_matrix,
    project,
    weak_perspective_camera,
    weak_perspective_origin,
)
from core.fit.solver import NumpyBackend, SideSolver, TorchBackend, Weights
from core.model.data import HandModelData

Projection = Literal["perspective", "weak"]


@dataclass(frozen=True)
class HandObservation:
    """What the detector saw of one hand.

    Attributes:
        side: "right" or "left" (the subject's hand).
        keypoints_2d: (21, 2) float pixels, MediaPipe order.
        world_landmarks: (21, 3) float metres, hand-centred, camera axes; or None.
        K: (3, 3) intrinsics in pixels, or None for the weak-perspective path.
        image_size: (width, height) in pixels (places the weak-perspective result).
        score: detector confidence in [0, 1].
    """

    side: str
    keypoints_2d: np.ndarray
    world_landmarks: np.ndarray | None
    K: np.ndarray | None
    image_size: tuple[int, int] = (640, 480)
    score: float = 1.0


@dataclass(frozen=True)
class HandFit:
    """A fitted hand in the camera frame (OpenCV axes, metres).

    Attributes:
        side: "right" or "left".
        pose: (48,) float32 axis-angle, radians, smplx layout (global rotation first).
        betas: (S,) float32 shape.
        transl: (3,) float32 smplx translation (added after posing), metres.
        keypoints_3d: (21, 3) float32 camera frame, metres, MediaPipe order.
        keypoints_2d: (21, 2) float32 reprojected keypoints, pixels.
        reprojection_error_px: mean distance to the detected keypoints, pixels.
        projection: "perspective" (known K) or "weak" (scale only; depth is nominal).
        scale: weak-perspective scale in pixels per metre (perspective: fx / wrist depth).
        iterations: tailor iterations run (fewer than asked when it converged first).
    """

    side: str
    pose: np.ndarray
    betas: np.ndarray
    transl: np.ndarray
    keypoints_3d: np.ndarray
    keypoints_2d: np.ndarray
    reprojection_error_px: float
    projection: Projection
    scale: float
    iterations: int


def fit_camera(fit: HandFit, camera: Intrinsics) -> HandCamera:
    """The camera ``fit``'s mesh lines up with the image in: ``camera`` (the frame's) for a
    perspective fit; for a weak-perspective one its own weak camera, anchored at its wrist
    (which the fitter placed in ``camera``, the nominal one: :func:`weak_perspective_origin`)."""
    if fit.projection == "weak":
        return HandCamera.weak(camera, fit.scale, fit.keypoints_3d[0], fit.keypoints_2d[0])
    return HandCamera(camera)


@dataclass(frozen=True)
class FitSettings:
    """Weights and schedule of the tailor (residuals are in pixels, radians or unit directions).

    Attributes:
        iterations: Levenberg-Marquardt iterations (HandTailor uses 20).
        w_dir: weight of a bone direction error (unit vectors) against world landmarks.
        w_identity: weight of the rotation change from the initialization, per radian.
        w_temporal: weight of the change from the previous frame (rotation, per radian). A fit
            trades its joints' rotations against each other where the keypoints barely tell
            them apart; the term keeps those from wandering frame to frame: 15 (was 6) lowered
            the unfiltered fit's residual jitter on the rendered moving and fast clips from
            1.07 and 0.98x MediaPipe's to 0.88 and 0.82x at the same lag (0.1 frame), the real
            clip's median reprojection error 1.4 -> 1.7 px; 30 raised that to 3.1 px and, after
            the temporal filter (:mod:`core.fit.temporal`), lagged the demo by over a frame.
        w_temporal_transl: weight of the root's move from the previous frame, per metre.
        w_temporal_weak: on the weak-perspective path, weight of the root's move from the
            previous frame (log scale, and wrist pixels in fitting units).
        w_shape: weight of the shape prior ||beta|| (beta ~ N(0, I)).
        w_limits: weight of an anatomical angle outside the joint's limits, per radian.
        lm_lambda: initial Levenberg-Marquardt damping (relative to the diagonal).
        project_every: project onto the joint limits every this many iterations (and at the end).
        tolerance: stop a hand early, after at least ``project_every`` iterations, once its
            last accepted step lowered its cost by less than this fraction (0: always run
            ``iterations``). On the demo through the stream engine the hands stop after 8.7
            of 20 iterations on average, with the same mean reprojection error (3.23 px with
            every iteration, 3.27 px).
        nominal_fov_deg: field of view assumed to report depth in weak-perspective mode.
    """

    iterations: int = 20
    w_dir: float = 10.0
    w_identity: float = 3.0
    w_temporal: float = 15.0
    w_temporal_transl: float = 300.0
    w_temporal_weak: float = 6.0
    w_shape: float = 5.0
    w_limits: float = 100.0
    lm_lambda: float = 0.3
    project_every: int = 5
    tolerance: float = 3e-3
    nominal_fov_deg: float = 60.0


def _weights(st: FitSettings) -> Weights:
    return Weights(
        w_dir=st.w_dir, w_identity=st.w_identity, w_temporal=st.w_temporal,
        w_temporal_transl=st.w_temporal_transl, w_temporal_weak=st.w_temporal_weak, w_shape=st.w_shape,
        w_limits=st.w_limits,
        lm_lambda=st.lm_lambda, project_every=max(1, int(st.project_every)), tolerance=max(0.0, float(st.tolerance)),
    )


#: Hand size (keypoint bounding-box diagonal) that the weights are tuned for, in fitting units.
REFERENCE_HAND_SIZE = 200.0


def _pixel_scale(keypoints_2d: np.ndarray) -> float:
    """Factor taking pixels to fitting units (the hand's box diagonal becomes 200)."""
    kp = np.asarray(keypoints_2d, dtype=np.float64)
    size = float(np.linalg.norm(kp.max(0) - kp.min(0)))
    return REFERENCE_HAND_SIZE / max(size, 1.0)


def _scale_observation(o: HandObservation, k: float) -> HandObservation:
    K = None if o.K is None else (np.diag([k, k, 1.0]) @ np.asarray(o.K, dtype=np.float64)).astype(np.float32)
    return dataclasses.replace(o, keypoints_2d=np.asarray(o.keypoints_2d, dtype=np.float64) * k, K=K)


def _scale_fit(f: HandFit, k: float) -> HandFit:
    """A fit with its pixel quantities multiplied by k (3D quantities do not change)."""
    return dataclasses.replace(
        f,
        keypoints_2d=(f.keypoints_2d * k).astype(np.float32),
        reprojection_error_px=f.reprojection_error_px * k,
        scale=f.scale * k,
    )


#: A perspective fit whose mean error exceeds this fraction of the hand's size has diverged.
DIVERGED = 0.15


def _place_in_camera(fit: HandFit, K: np.ndarray, keypoints_2d: np.ndarray) -> HandFit:
    """A weak-perspective fit put into the pinhole camera K: the wrist at depth fx / scale
    behind its pixel; the 2D keypoints and the error are the perspective projection's."""
    wrist = weak_perspective_origin(intrinsics_from_matrix(K), fit.keypoints_2d[0], fit.scale).astype(np.float64)
    kp3 = fit.keypoints_3d.astype(np.float64) + wrist
    px = project(kp3, K)
    err = float(np.linalg.norm(px - keypoints_2d, axis=1).mean())
    return dataclasses.replace(fit, keypoints_3d=kp3.astype(np.float32), transl=(fit.transl + wrist).astype(np.float32),
                               keypoints_2d=px.astype(np.float32), reprojection_error_px=err)


class TailorFitter:
    """Fits right and left hands; thin state: the two models' precomputed data.

    Args:
        right: the right-hand model data; left: the left (mirrored) one.
        settings: weights and schedule.
        device: "cpu" or "cuda".
        backend: "auto" (NumPy on the CPU, PyTorch elsewhere), "numpy" (CPU only) or "torch"
            (the reference path, any device). Both run the same numerics
            (:mod:`core.fit.solver`); NumPy's smaller per-operation overhead makes it several
            times faster for the few hands of a frame.
    """

    def __init__(
        self,
        right: HandModelData,
        left: HandModelData,
        settings: FitSettings = FitSettings(),
        device: str | torch.device = "cpu",
        backend: Literal["auto", "numpy", "torch"] = "auto",
    ) -> None:
        self.settings = settings
        self.device = torch.device(device)
        self.dtype = torch.float32
        if backend not in ("auto", "numpy", "torch"):
            raise ValueError(f"unknown fitting backend {backend!r}")
        if backend == "numpy" and self.device.type != "cpu":
            raise ValueError("the numpy fitting backend runs on the CPU only")
        self.backend = ("numpy" if self.device.type == "cpu" else "torch") if backend == "auto" else backend
        self._data = {right.side: right, left.side: left}
        self._solvers: dict[tuple[str, str], SideSolver] = {}
        self.num_betas = right.num_betas
        for side in self._data:
            self._solver(side, self.backend)  # build the constants up front

    def solver(self, side: str) -> SideSolver:
        """The numerics of one side on this fitter's backend (rotations, keypoints, projection)."""
        return self._solver(side, self.backend)

    def _solver(self, side: str, backend: str) -> SideSolver:
        key = (side, backend)
        if key not in self._solvers:
            be = NumpyBackend() if backend == "numpy" else TorchBackend(self.device, self.dtype)
            self._solvers[key] = SideSolver(self._data[side], be)
        return self._solvers[key]

    # ----------------------------------------------------------------- the tailor

    def fit(
        self,
        observations: list[HandObservation],
        betas: np.ndarray | None = None,
        previous: list[HandFit | None] | None = None,
        iterations: int | None = None,
        tolerance: float | None = None,
    ) -> list[HandFit]:
        """Fit every observed hand (batched per side and projection).

        Args:
            observations: the detected hands.
            betas: (S,) a fixed shape (identity-aware mode, from a profile), or None to fit it.
            previous: per observation, last frame's fit of the same hand (warm start and
                temporal term), or None.
            iterations: overrides ``settings.iterations``.
            tolerance: overrides ``settings.tolerance`` (0: run every iteration).

        Returns:
            one :class:`HandFit` per observation, in order.
        """
        previous = previous or [None] * len(observations)
        # Work in hand-relative pixel units, so the priors weigh the same against the 2D term
        # whether the hand spans 60 or 600 pixels: scaling pixels and K together leaves the
        # 3D problem unchanged.
        factors = [_pixel_scale(o.keypoints_2d) for o in observations]
        observations = [_scale_observation(o, k) for o, k in zip(observations, factors)]
        previous = [None if p is None else _scale_fit(p, k) for p, k in zip(previous, factors)]
        results: list[HandFit | None] = [None] * len(observations)
        groups: dict[tuple[str, bool, bool], list[int]] = {}
        for i, obs in enumerate(observations):
            groups.setdefault((obs.side, obs.K is not None, obs.world_landmarks is not None), []).append(i)
        for (side, has_k, _), idx in groups.items():
            fits = self._fit_group(side, [observations[i] for i in idx], betas, [previous[i] for i in idx], iterations,
                                   has_k, tolerance=tolerance)
            if has_k:
                fits = self._guard_perspective(side, [observations[i] for i in idx], betas, fits, iterations, tolerance)
            fits = [_scale_fit(f, 1.0 / factors[i]) for f, i in zip(fits, idx)]
            if not has_k:
                fits = [self._place_weak(f, observations[i].image_size) for f, i in zip(fits, idx)]
            for i, f in zip(idx, fits):
                results[i] = f
        return [r for r in results if r is not None]

    def _fit_group(self, side, obs, betas, previous, iterations, has_k, backend: str | None = None,
                   tolerance: float | None = None) -> list[HandFit]:
        st = self.settings if tolerance is None else dataclasses.replace(self.settings, tolerance=tolerance)
        n_iter = st.iterations if iterations is None else int(iterations)
        solver = self._solver(side, backend or self.backend)
        be = solver.be
        b = len(obs)
        S = self.num_betas
        fit_shape = betas is None
        uv = np.asarray([o.keypoints_2d for o in obs], dtype=np.float64)
        world = (None if any(o.world_landmarks is None for o in obs)
                 else np.asarray([o.world_landmarks for o in obs], dtype=np.float64))
        beta = (np.zeros((b, S)) if betas is None
                else np.broadcast_to(np.asarray(betas, dtype=np.float64), (b, S)).copy())
        K = np.asarray([o.K for o in obs], dtype=np.float64) if has_k else None
        projection = "perspective" if has_k else "weak"
        has_prev = np.array([p is not None and p.projection == projection for p in previous])
        prev_pose = prev_t = mask = None
        if has_prev.any():
            prev_pose = np.zeros((b, 48))
            prev_t = np.zeros((b, 3))
            for i, p in enumerate(previous):
                if has_prev[i]:
                    prev_pose[i] = p.pose
                    prev_t[i] = p.keypoints_3d[0] if has_k else (np.log(p.scale), p.keypoints_2d[0, 0],
                                                                 p.keypoints_2d[0, 1])
                    if fit_shape:
                        beta[i] = np.clip(p.betas, -3.0, 3.0)
            prev_pose, prev_t, mask = be.const(prev_pose), be.const(prev_t), be.index(has_prev) > 0
        c = be.const
        with torch.inference_mode(), be.threads:
            out = solver.fit(
                _weights(st), c(uv), None if world is None else c(world), None if K is None else c(K), c(beta),
                fit_shape, n_iter, prev_pose, prev_t, mask,
            )
        return [
            HandFit(
                side=side,
                pose=out.pose[i],
                betas=out.betas[i],
                transl=out.transl[i],
                keypoints_3d=out.keypoints_3d[i],
                keypoints_2d=out.keypoints_2d[i],
                reprojection_error_px=float(out.error_px[i]),
                projection=projection,
                scale=float(out.scale[i]),
                iterations=int(out.iterations[i]),
            )
            for i in range(b)
        ]

    def _guard_perspective(self, side: str, obs: list[HandObservation], betas: np.ndarray | None,
                           fits: list[HandFit], iterations: int | None, tolerance: float | None) -> list[HandFit]:
        """Replace perspective fits that diverged (a hand close to the camera can be pulled
        through its plane: errors of thousands of pixels on real egocentric frames) by the best
        reprojecting of: the weak-perspective fit put into the same camera, and a perspective
        fit started from it.

        The placed weak fit alone reprojects poorly where perspective matters (a hand near the
        camera): on real EgoHands frames under the assumed camera it left 26-58% of the hand's
        size, and the perspective fit started from it 3-6% (unipd_handseg30 frame 15's left
        hand: diverged to 60000, placed 57.5, restarted 6.0 fitting units).

        Works in fitting units (the hand's box diagonal is :data:`REFERENCE_HAND_SIZE`).
        """
        bad = [i for i, f in enumerate(fits)
               if not np.isfinite(f.reprojection_error_px) or f.reprojection_error_px > DIVERGED * REFERENCE_HAND_SIZE]
        if not bad:
            return fits
        weak = self._fit_group(side, [dataclasses.replace(obs[i], K=None) for i in bad], betas, [None] * len(bad),
                               iterations, False, tolerance=tolerance)
        placed = [dataclasses.replace(_place_in_camera(w, np.asarray(obs[i].K, dtype=np.float64),
                                                       np.asarray(obs[i].keypoints_2d)), projection="perspective")
                  for i, w in zip(bad, weak)]
        # the placed fits as the warm start (and temporal anchor) of a perspective fit
        restarted = self._fit_group(side, [obs[i] for i in bad], betas, placed, iterations, True, tolerance=tolerance)
        out = list(fits)
        for i, p, r in zip(bad, placed, restarted):
            out[i] = min((fits[i], p, r), key=lambda f: f.reprojection_error_px
                         if np.isfinite(f.reprojection_error_px) else np.inf)
        return out

    def compose(self, side: str, pose: np.ndarray, betas: np.ndarray, root: np.ndarray, K: np.ndarray | None,
                image_size: tuple[int, int], keypoints_2d: np.ndarray, iterations: int = 0) -> HandFit:
        """The fit with given parameters (e.g. temporally smoothed ones), as :meth:`fit` reports it.

        Args:
            side: "right" or "left". pose: (48,) axis-angle, or (16, 3, 3) local rotations.
            betas: (S,).
            root: (3,) (u, v, log s): the wrist's pixel position and the log of the scale in
                pixels per metre (with ``K``, the wrist's depth is fx / s).
            K: (3, 3) intrinsics (perspective), or None (weak perspective, placed in the
                nominal camera as :meth:`fit` places it).
            image_size: (width, height) pixels. keypoints_2d: (21, 2) the detected keypoints,
                pixels (for ``reprojection_error_px``). iterations: reported as the fit's.
        """
        solver = self.solver(side)
        be, c = solver.be, solver.be.const
        u, v, log_s = (float(x) for x in root)
        if K is not None:
            Kd = np.asarray(K, dtype=np.float64)
            z = Kd[0, 0] / math.exp(log_s)
            cam = np.array([[(u - Kd[0, 2]) * z / Kd[0, 0], (v - Kd[1, 2]) * z / Kd[1, 1], z]])
            Kb = c(Kd[None])
        else:
            cam, Kb = np.array([[log_s, u, v]]), None
        with torch.inference_mode():
            pose = np.asarray(pose, dtype=np.float64)
            R = c(pose[None]) if pose.shape == (16, 3, 3) else solver.rodrigues(c(pose.reshape(1, 16, 3)))
            beta = c(np.asarray(betas, dtype=np.float64)[None])
            out = solver._outputs(R, solver.global_from_local(R), c(cam), beta,
                                  c(np.asarray(keypoints_2d, dtype=np.float64)[None]), Kb,
                                  be.const(np.array([iterations])))
        fit = HandFit(
            side=side, pose=out.pose[0], betas=out.betas[0], transl=out.transl[0], keypoints_3d=out.keypoints_3d[0],
            keypoints_2d=out.keypoints_2d[0], reprojection_error_px=float(out.error_px[0]),
            projection="perspective" if K is not None else "weak", scale=float(out.scale[0]),
            iterations=int(iterations),
        )
        return fit if K is not None else self._place_weak(fit, image_size)

    def _place_weak(self, fit: HandFit, image_size: tuple[int, int]) -> HandFit:
        """Put a weak-perspective fit into a nominal pinhole camera (``nominal_fov_deg``).

        Weak perspective sees scale, not depth: with a nominal focal length f, the wrist is
        placed at depth f / s behind its pixel, so the 3D result projects close to the fit.
        """
        cam = weak_perspective_camera(image_size, self.settings.nominal_fov_deg)
        wrist = weak_perspective_origin(cam, fit.keypoints_2d[0], fit.scale)
        return dataclasses.replace(
            fit,
            keypoints_3d=(fit.keypoints_3d + wrist).astype(np.float32),
            transl=(fit.transl + wrist).astype(np.float32),
        )
