"""Calibration as one joint optimization over the chosen frames (a bundle adjustment).

Unknowns: one **identity** shared by all frames - the personal skeleton
(:mod:`core.model.skeleton`: 15 bone length factors and the palm's 5 points, about the
Eq. 7 shape's rest skeleton) and, when the intrinsics are unknown, one focal length - and each
frame's pose (48 axis-angle) and translation. The hand length is the gauge (monocular views
cannot see absolute size): the skeleton is scaled to the given length at every step (a known
length, the ArUco sheet or stereo, else the population prior).

Terms, per frame i with weight ``a_i`` (the confidence attention of Eq. 6, times K):

* 2D keypoints in the frame's camera: Geman-McClure of each keypoint's reprojection error
  relative to the hand's size in the image (scale c = :attr:`BundleSettings.robust_scale`);
* MediaPipe world-landmark bone directions, a weak prior (``1 - cos`` per bone);
* a weak pull of each pose toward its start and a hinge on the anatomical joint limits;
* the anatomical skeleton prior (:func:`core.model.skeleton.skeleton_prior`), once.

Robustness across frames: after each solve every frame's median relative reprojection error
``m_i`` gives it a Geman-McClure weight ``(1 + (m_i / c_f)^2)^-2`` with ``c_f`` a multiple of
the median over frames; the problem is solved again with ``a_i`` times that weight. Frames
whose weight ends below :attr:`BundleSettings.reject_weight` are reported as rejected with the
reason (wrong side, wrong detection, blur: they cannot agree with the shared skeleton).

The forward model is the keypoints' forward kinematics on the skeleton
(:class:`core.fit.skeleton.Skeleton`'s segment form), which is exactly what the personal model
(:func:`core.model.personal.personal_model`) yields for that skeleton.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from core.camera import weak_perspective_camera
from core.errors import Cancelled
from core.fit.kinematics import LEVELS, KeypointModel
from core.fit.skeleton import Skeleton
from core.keypoints import BONES, KEYPOINT_PARENTS, MANO_JOINT_TO_KEYPOINT, Keypoint
from core.model import anatomy
from core.model.data import HandModelData
from core.model.personal import model_rest_keypoints
from core.model.skeleton import SkeletonParams, skeleton_from_params, skeleton_prior_residuals
from core.rotations import axis_angle_to_matrix, skew
from core.threads import BLAS_THREADS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundleFrame:
    """One calibration frame's observations and starting point.

    Attributes:
        keypoints_2d: (21, 2) detected keypoints, pixels, MediaPipe order.
        image_size: (width, height) pixels.
        K: (3, 3) intrinsics in pixels, or None when unknown (a shared focal is estimated;
            the principal point is the image centre).
        pose: (48,) starting pose, axis-angle radians (the frame's own fit).
        world_landmarks: (21, 3) MediaPipe world landmarks (metres, camera axes) or None.
        weight: the frame's attention weight (Eq. 6); any positive scale.
        score: detector confidence in [0, 1].
    """

    keypoints_2d: np.ndarray
    image_size: tuple[int, int]
    K: np.ndarray | None
    pose: np.ndarray
    world_landmarks: np.ndarray | None = None
    weight: float = 1.0
    score: float = 1.0


@dataclass(frozen=True)
class BundleSettings:
    """Weights and schedule (residuals are relative to the hand's size in the image).

    Attributes:
        robust_scale: Geman-McClure scale c of a keypoint's relative reprojection error (a
            keypoint's term is ``r^2 / (r^2 + c^2)``, about ``(r / c)^2`` for small errors).
        w_dir: weight of a world-landmark bone direction (1 - cos), per bone.
        w_pose: pull of a frame's pose toward its start, per radian squared.
        w_limits: anatomical joint-limit hinge, per radian squared.
        hinge_sigma: radians of twist and spread a hinge joint (PIP, DIP, thumb MCP/IP) is
            allowed (soft, Gaussian), and of twist of a finger MCP; 0 turns it off.
        w_skeleton: weight of the anatomical skeleton prior.
        rounds: solve / reweight rounds. iterations: Levenberg-Marquardt iterations per round.
        tolerance: a round ends once a step lowers the energy by less than this fraction (with
            a free focal length: 30 times less, and three times the iterations).
        frame_scale: ``c_f`` is this times the median frame error (at least ``min_frame_scale``).
        reject_weight: frames whose robust weight ends below this are rejected.
        min_score: frames detected below this score are rejected up front.
    """

    robust_scale: float = 0.05
    w_dir: float = 3.0
    w_pose: float = 0.05
    w_limits: float = 10.0
    hinge_sigma: float = 0.05
    w_skeleton: float = 0.3
    rounds: int = 2
    iterations: int = 10
    tolerance: float = 3e-3
    frame_scale: float = 2.5
    min_frame_scale: float = 0.015
    reject_weight: float = 0.1
    min_score: float = 0.3


@dataclass(frozen=True)
class BundleResult:
    """The calibrated identity and per-frame poses.

    Attributes:
        skeleton: (21, 3) float64 personal rest keypoints, metres, the model's rest frame,
            scaled to ``hand_length_m`` (wrist to middle fingertip).
        params: the skeleton parameters (numpy arrays: ``bone_log`` (15,), ``palm`` (5, 3)).
        poses: (K, 48) float64 per-frame poses. transl: (K, 3) per-frame translations, metres.
        focal_scale: the estimated focal length over the starting one (1.0 when known).
        focal_px: (K,) the focal length used for each frame, pixels.
        frame_weights: (K,) final weights (attention x robust), summing to 1.
        residual_rel: (K,) median relative reprojection error per frame.
        residual_px: (K,) mean reprojection error per frame, pixels.
        rejected: ((frame, reason), ...) frames given (near) zero weight, and why.
        seconds: wall time.
        focal_log_sd: the estimated focal length's standard deviation in log units (about its
            relative error) at the solution: the Gauss-Newton covariance of the log focal,
            the poses and skeleton marginalized (Schur complement), times the residuals'
            variance per degree of freedom. NaN when the focal length is known.
        energy: the final robust energy per frame (the last round's frame weights, which sum
            to the number of frames): solutions of one problem from different starts compare.
    """

    skeleton: np.ndarray
    params: dict[str, np.ndarray]
    poses: np.ndarray
    transl: np.ndarray
    focal_scale: float
    focal_px: np.ndarray
    frame_weights: np.ndarray
    residual_rel: np.ndarray
    residual_px: np.ndarray
    rejected: tuple[tuple[int, str], ...] = field(default_factory=tuple)
    seconds: float = 0.0
    focal_log_sd: float = float("nan")
    energy: float = float("nan")


def global_rotations(local: torch.Tensor, parents: tuple[int, ...]) -> torch.Tensor:
    """(B, 16, 3, 3) global joint rotations from local ones (B, 16, 3, 3), level by level."""
    glob = {0: local[:, 0]}
    for level in LEVELS:
        par = torch.stack([glob[parents[j]] for j in level], 1)
        g = par @ local[:, list(level)]
        for k, j in enumerate(level):
            glob[j] = g[:, k]
    return torch.stack([glob[j] for j in range(16)], 1)


def posed_keypoints(skel: Skeleton, skeleton: torch.Tensor, pose: torch.Tensor, transl: torch.Tensor,
                    parents: tuple[int, ...]) -> torch.Tensor:
    """Keypoints of rest skeletons posed and moved: (..., K, 21, 3).

    Args:
        skeleton: (..., 21, 3) rest keypoints (one per leading index), metres.
        pose: (..., K, 48) axis-angle, radians. transl: (..., K, 3) metres (smplx's: the wrist
            turns about its rest position, then everything moves by ``transl``).
    """
    lead = pose.shape[:-1]
    b = int(np.prod(lead)) if lead else 1
    g = global_rotations(axis_angle_to_matrix(pose.reshape(b, 16, 3)), parents)
    par = [p for p, _ in BONES]
    ch = [c for _, c in BONES]
    segs = (skeleton[..., ch, :] - skeleton[..., par, :]).unsqueeze(-3).expand(*lead, 20, 3).reshape(b, 20, 3)
    wrist = (skeleton[..., Keypoint.WRIST, :].unsqueeze(-2) + transl).reshape(b, 3)
    kp, _ = skel.keypoints(g, wrist, segs)
    return kp.reshape(*lead, 21, 3)


def _hand_length(kp: torch.Tensor) -> torch.Tensor:
    return (kp[..., Keypoint.MIDDLE_TIP, :] - kp[..., Keypoint.WRIST, :]).norm(dim=-1)


def _solve_translation(kp: np.ndarray, uv: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Translation t (3,) minimizing the algebraic reprojection error of posed points ``kp`` + t."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    u, v = (uv[:, 0] - cx) / fx, (uv[:, 1] - cy) / fy
    n = len(kp)
    a = np.zeros((2 * n, 3))
    b = np.zeros(2 * n)
    a[:n, 0], a[:n, 2], b[:n] = 1.0, -u, u * kp[:, 2] - kp[:, 0]
    a[n:, 1], a[n:, 2], b[n:] = 1.0, -v, v * kp[:, 2] - kp[:, 1]
    return np.linalg.lstsq(a, b, rcond=None)[0]


class _Problem:
    """Tensors and residuals of one bundle adjustment (float64).

    Variables: ``xid`` (31 or 32,) = bone_log (15), palm (15), [log focal]; ``X`` (K, 51) =
    each frame's pose (48) and translation (3).
    """

    N_ID = 30

    def __init__(self, base: HandModelData, betas: np.ndarray | None, frames: list[BundleFrame],
                 hand_length_m: float, nominal_fov_deg: float, settings: BundleSettings) -> None:
        f64 = torch.float64
        self.st = settings
        self.parents = tuple(int(p) for p in base.parents)
        self.skel = Skeleton(KeypointModel(base, dtype=f64))
        self.base_kp = torch.as_tensor(model_rest_keypoints(base, betas), dtype=f64)
        self.length = float(hand_length_m)
        self.free_focal = any(f.K is None for f in frames)
        ks = []
        for f in frames:
            if f.K is not None:
                ks.append(np.asarray(f.K, dtype=np.float64))
            else:
                cam = weak_perspective_camera(f.image_size, nominal_fov_deg)
                ks.append(np.array([[cam.fx, 0, cam.cx], [0, cam.fy, cam.cy], [0, 0, 1]], dtype=np.float64))
        self.K = torch.as_tensor(np.stack(ks), dtype=f64)
        self.focal_free_mask = torch.tensor([f.K is None for f in frames], dtype=f64)
        self.uv = torch.as_tensor(np.stack([f.keypoints_2d for f in frames]), dtype=f64)
        span = self.uv.amax(1) - self.uv.amin(1)
        self.size_px = span.norm(dim=-1).clamp_min(1.0)  # (K,) keypoint box diagonal
        self.world = None
        self.par = [p for p, _ in BONES]
        self.ch = [c for _, c in BONES]
        wl = [f.world_landmarks for f in frames]
        if settings.w_dir > 0 and all(w is not None for w in wl):
            w = torch.as_tensor(np.stack(wl), dtype=f64)
            d = w[:, self.ch] - w[:, self.par]
            self.world = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        self.pose0 = torch.as_tensor(np.stack([f.pose for f in frames]), dtype=f64)
        self.frames_n = len(frames)
        self.rest_frames = torch.as_tensor(base.rest_frames, dtype=f64)[1:]
        self.limits = torch.as_tensor(base.joint_limits, dtype=f64)[1:]
        self.n_id = self.N_ID + (1 if self.free_focal else 0)

    def params(self, xid: torch.Tensor) -> SkeletonParams:
        """Skeleton parameters of identity variables (..., n_id)."""
        return SkeletonParams(xid.new_zeros(xid.shape[:-1]), xid[..., :15],
                              xid[..., 15:30].reshape(*xid.shape[:-1], 5, 3))

    def skeleton(self, params: SkeletonParams) -> torch.Tensor:
        """(..., 21, 3) the skeleton scaled to the hand length about its wrist."""
        s = skeleton_from_params(self.base_kp, params)
        wrist = s[..., Keypoint.WRIST:Keypoint.WRIST + 1, :]
        return wrist + (s - wrist) * (self.length / _hand_length(s))[..., None, None]

    def log_focal(self, xid: torch.Tensor) -> torch.Tensor:
        return xid[..., self.N_ID] if self.free_focal else xid.new_zeros(xid.shape[:-1])

    def project(self, kp: torch.Tensor, log_f: torch.Tensor) -> torch.Tensor:
        """(..., K, 21, 2) pixels of camera-frame keypoints (..., K, 21, 3); log_f (...,)."""
        scale = torch.exp(log_f[..., None] * self.focal_free_mask)[..., None]
        z = kp[..., 2].clamp_min(1e-3)
        u = self.K[:, None, 0, 0] * scale * kp[..., 0] / z + self.K[:, None, 0, 2]
        v = self.K[:, None, 1, 1] * scale * kp[..., 1] / z + self.K[:, None, 1, 2]
        return torch.stack([u, v], -1)

    def keypoints(self, xid: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """(..., K, 21, 3) posed keypoints; xid (..., n_id), X (..., K, 51)."""
        return posed_keypoints(self.skel, self.skeleton(self.params(xid)), X[..., :48], X[..., 48:], self.parents)

    def relative_errors(self, xid: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """(K, 21) reprojection errors relative to each frame's hand size in the image."""
        uv = self.project(self.keypoints(xid, X), self.log_focal(xid))
        return (uv - self.uv).norm(dim=-1) / self.size_px[:, None]

    def frame_residuals(self, xid: torch.Tensor, X: torch.Tensor, sqrt_w: torch.Tensor,
                        sqrt_kw: torch.Tensor) -> torch.Tensor:
        """(..., K, M) weighted residuals of every frame (squared sum: the IRLS model of the
        energy); xid (..., n_id), X (..., K, 51).

        sqrt_w: (K,) square roots of the frame weights; sqrt_kw: (K, 21) of the keypoints' IRLS
        weights (Geman-McClure)."""
        kp = self.keypoints(xid, X)
        out = self._keypoint_terms(kp, self.log_focal(xid), sqrt_w, sqrt_kw) + self._pose_terms(X[..., :48])
        return torch.cat(out, -1)

    def _keypoint_terms(self, kp: torch.Tensor, log_f: torch.Tensor, sqrt_w: torch.Tensor,
                        sqrt_kw: torch.Tensor) -> list[torch.Tensor]:
        """The 2D keypoint residuals (..., K, 42) and world-direction residuals (..., K, 60)."""
        e = (self.project(kp, log_f) - self.uv) / (self.size_px[:, None, None] * self.st.robust_scale)
        out = [(e * (sqrt_w[:, None] * sqrt_kw)[..., None]).flatten(-2)]
        if self.world is not None:
            d = kp[..., self.ch, :] - kp[..., self.par, :]
            d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-9)
            out.append(((d - self.world) * (sqrt_w * (0.5 * self.st.w_dir) ** 0.5)[:, None, None]).flatten(-2))
        return out

    def _angles(self, pose: torch.Tensor) -> torch.Tensor:
        return anatomy.axis_angle_to_anatomical(pose[..., 3:].reshape(*pose.shape[:-1], 15, 3), self.rest_frames)

    def _angle_terms(self, ang: torch.Tensor) -> list[torch.Tensor]:
        st, out = self.st, []
        if st.w_limits > 0:
            hinge = torch.relu(self.limits[:, :, 0] - ang) + torch.relu(ang - self.limits[:, :, 1])
            out.append(st.w_limits**0.5 * hinge.flatten(-2))
        if st.hinge_sigma > 0:  # hinge joints bend only; no finger joint twists
            out.append(ang[..., _HINGE_JOINTS, :2].flatten(-2) / st.hinge_sigma)
            out.append(ang[..., _TWIST_JOINTS, 0] / st.hinge_sigma)
        return out

    def _pose_terms(self, pose: torch.Tensor) -> list[torch.Tensor]:
        """The pose-only residuals: pull toward the start (..., K, 45), joint limits, hinges."""
        out = []
        if self.st.w_pose > 0:
            out.append(self.st.w_pose**0.5 * (pose[..., 3:] - self.pose0[:, 3:]))
        if self.st.w_limits > 0 or self.st.hinge_sigma > 0:
            out += self._angle_terms(self._angles(pose))
        return out

    def identity_residuals(self, xid: torch.Tensor) -> torch.Tensor:
        return self.st.w_skeleton**0.5 * skeleton_prior_residuals(self.base_kp, self.params(xid))

    def energy(self, xid: torch.Tensor, X: torch.Tensor, weights: torch.Tensor) -> float:
        """The robust energy (Geman-McClure keypoints) at a point."""
        c2 = self.st.robust_scale**2
        err = self.relative_errors(xid, X)
        gm = (weights[:, None] * err.pow(2) / (err.pow(2) + c2)).sum() / c2
        rest = self.frame_residuals(xid, X, weights.sqrt(), torch.zeros_like(err))
        return float(gm + rest.pow(2).sum() + self.identity_residuals(xid).pow(2).sum())

    def irls_weights(self, xid: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """(K, 21) square roots of the Geman-McClure IRLS weights ``c^2 / (e^2 + c^2)``."""
        c2 = self.st.robust_scale**2
        err = self.relative_errors(xid, X)
        return c2 / (err.pow(2) + c2)

    def _posed(self, g: torch.Tensor, segs: torch.Tensor, origin: torch.Tensor) -> torch.Tensor:
        """Keypoints (..., 21, 3) from global rotations (..., 16, 3, 3), rest segments
        (..., 20, 3) and the wrist's position (..., 3)."""
        rotated = (g[..., self.skel.seg_joint, :, :] @ segs[..., None])[..., 0]
        return origin[..., None, :] + self.skel.incidence @ rotated

    def jacobians(self, xid: torch.Tensor, X: torch.Tensor, sqrt_w: torch.Tensor, sqrt_kw: torch.Tensor):
        """Residuals and Jacobians.

        Keypoints are linear in the rest segments and the translation, so their derivatives in
        the identity and the translation are exact products; in the pose they are forward
        differences, one perturbation of pose entry d in every frame at once (frame i's
        keypoints see only frame i's pose). The projection and the direction normalization are
        differentiated analytically; the joint angles (one per joint) by three perturbations.

        Returns r (K, M), J_frame (K, M, 51), J_id (K, M, n_id), r_id (R,), J_prior (R, n_id).
        """
        f64, k, h = X.dtype, X.shape[0], _FD_STEP
        n_id = self.n_id
        pose, t = X[:, :48], X[:, 48:]
        skel0 = self.skeleton(self.params(xid))
        segs0 = skel0[self.ch] - skel0[self.par]
        aa = pose.reshape(k, 16, 3)
        g0 = global_rotations(axis_angle_to_matrix(aa), self.parents)  # (K, 16, 3, 3)
        kp = self._posed(g0, segs0.expand(k, 20, 3), skel0[Keypoint.WRIST] + t)
        # Pose: turning joint j's local rotation by d(theta) turns everything below its keypoint
        # about it by the world rotation vector G_j J_r(theta_j) d(theta) (J_r: SO(3)'s right
        # Jacobian), so d kp = omega x (kp - p_j) there.
        omega = (g0 @ _right_jacobian(aa)).transpose(-1, -2)  # (K, 16, 3 columns, 3)
        rel = kp[:, None] - kp[:, list(MANO_JOINT_TO_KEYPOINT)][:, :, None]  # (K, 16, 21, 3)
        d_pose = torch.linalg.cross(omega[:, :, :, None, :].expand(k, 16, 3, 21, 3),
                                    rel[:, :, None].expand(k, 16, 3, 21, 3), dim=-1)
        d_pose = d_pose * _BELOW[:, None, :, None].to(f64)
        tangents = [d_pose.reshape(k, 48, 21, 3).permute(1, 0, 2, 3)]  # pose (48, K, 21, 3)
        tangents.append(torch.eye(3, dtype=f64)[:, None, None, :].expand(3, k, 21, 3))  # translation
        # Identity: the skeleton's derivative (differences of a tiny function), rotated.
        eye_id = torch.eye(self.N_ID, dtype=f64)
        skels = self.skeleton(self.params(torch.cat([xid[None].expand(self.N_ID, n_id)[:, :self.N_ID] + h * eye_id,
                                                     xid[None, self.N_ID:].expand(self.N_ID, n_id - self.N_ID)], 1)))
        dsegs = ((skels[:, self.ch] - skels[:, self.par]) - segs0) / h  # (N_ID, 20, 3)
        dwrist = (skels[:, Keypoint.WRIST] - skel0[Keypoint.WRIST]) / h
        g_seg = g0[:, self.skel.seg_joint]  # (K, 20, 3, 3)
        rotated = torch.einsum("ksab,nsb->nksa", g_seg, dsegs)
        tangents.append(dwrist[:, None, None, :] + torch.einsum("cs,nksa->nkca", self.skel.incidence, rotated))
        tan = torch.cat(tangents)  # (51 + N_ID, K, 21, 3)
        # 2D keypoints: d(u, v) = f s (dx / z - x dz / z^2, dy / z - y dz / z^2).
        log_f = self.log_focal(xid)
        fs = torch.exp(log_f * self.focal_free_mask)[:, None] * self.K[:, None, 0, 0]  # (K, 1)
        fsy = torch.exp(log_f * self.focal_free_mask)[:, None] * self.K[:, None, 1, 1]
        z = kp[..., 2].clamp_min(1e-3)
        x_z, y_z = kp[..., 0] / z, kp[..., 1] / z
        scale = (sqrt_w[:, None] * sqrt_kw) / (self.size_px[:, None] * self.st.robust_scale)  # (K, 21)
        du = fs * (tan[..., 0] - x_z * tan[..., 2]) / z * scale
        dv = fsy * (tan[..., 1] - y_z * tan[..., 2]) / z * scale
        jac_kp = [torch.stack([du, dv], -1).flatten(-2)]  # (n_t, K, 42)
        terms = self._keypoint_terms(kp, log_f, sqrt_w, sqrt_kw)
        focal_col = torch.stack([fs * x_z * scale, fsy * y_z * scale], -1).flatten(-2) * self.focal_free_mask[:, None]
        focal_cols = [focal_col]
        if self.world is not None:
            d = kp[:, self.ch] - kp[:, self.par]
            n = d.norm(dim=-1, keepdim=True).clamp_min(1e-9)
            dh = d / n
            dd = tan[:, :, self.ch] - tan[:, :, self.par]
            ddh = (dd - dh * (dh * dd).sum(-1, keepdim=True)) / n
            jac_kp.append((ddh * (sqrt_w * (0.5 * self.st.w_dir) ** 0.5)[:, None, None]).flatten(-2))
            focal_cols.append(torch.zeros(k, 60, dtype=f64))
        jac_kp = torch.cat(jac_kp, -1)  # (n_t, K, Mk)
        # Pose-only terms: columns of the pose only.
        pose_terms = self._pose_terms(pose)
        pose_jac = []
        if self.st.w_pose > 0:
            pose_jac.append(self.st.w_pose**0.5 * torch.eye(48, dtype=f64)[3:].expand(k, 45, 48))
        if self.st.w_limits > 0 or self.st.hinge_sigma > 0:
            ang0 = self._angles(pose)
            per = torch.zeros(3, 48, dtype=f64)
            for c in range(3):
                per[c, 3 + c::3] = h
            ang_p = self._angles(pose[None] + per[:, None])  # (3, K, 15, 3)
            a0 = self._angle_terms(ang0)
            ap = [torch.stack(v) for v in zip(*[self._angle_terms(a) for a in ang_p])]  # per term (3, K, m)
            for base_term, pert, in zip(a0, ap):
                # Each residual of a term belongs to one joint; its column c of that joint.
                rows = base_term.shape[-1]
                joint = _angle_term_joints(self.st, rows, len(pose_jac) - (1 if self.st.w_pose > 0 else 0))
                jac = torch.zeros(k, rows, 48, dtype=f64)
                diff = (pert - base_term) / h  # (3, K, rows)
                for c in range(3):
                    jac[:, torch.arange(rows), 3 + 3 * joint + c] = diff[c]
                pose_jac.append(jac)
        r = torch.cat(terms + pose_terms, -1)
        m_kp, m_pose = jac_kp.shape[-1], sum(p.shape[-1] for p in pose_terms)
        j_frame = torch.zeros(k, m_kp + m_pose, 51, dtype=f64)
        j_frame[:, :m_kp] = jac_kp[:51].permute(1, 2, 0)
        if pose_jac:
            j_frame[:, m_kp:, :48] = torch.cat(pose_jac, 1)
        j_id = torch.zeros(k, m_kp + m_pose, n_id, dtype=f64)
        j_id[:, :m_kp, :self.N_ID] = jac_kp[51:].permute(1, 2, 0)
        if self.free_focal:
            j_id[:, :m_kp, self.N_ID] = torch.cat(focal_cols, -1)
        r_id = self.identity_residuals(xid)
        eye_i = torch.eye(n_id, dtype=f64)
        j_prior = (self.identity_residuals(xid + h * eye_i) - r_id).T / h
        return r, j_frame, j_id, r_id, j_prior


def _right_jacobian(aa: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) right Jacobians of SO(3) at axis-angle vectors (..., 3):
    ``exp(theta + d) = exp(theta) exp(J_r(theta) d)`` to first order."""
    t2 = (aa * aa).sum(-1)[..., None, None]
    t = torch.sqrt(t2 + 1e-30)
    small = t2 < 1e-8
    a = torch.where(small, 0.5 - t2 / 24.0, (1.0 - torch.cos(t)) / (t2 + 1e-30))
    b = torch.where(small, 1.0 / 6.0 - t2 / 120.0, (t - torch.sin(t)) / (t2 * t + 1e-30))
    k = skew(aa)
    return torch.eye(3, dtype=aa.dtype) - a * k + b * (k @ k)


def _below() -> torch.Tensor:
    """(16, 21) bool: keypoint k lies below joint j's keypoint in the keypoint tree (it moves
    when joint j turns; the wrist's rotation moves every keypoint but the wrist)."""
    out = torch.zeros(16, 21, dtype=torch.bool)
    for j, q in enumerate(MANO_JOINT_TO_KEYPOINT):
        for kk in range(21):
            p = kk
            while p != -1 and p != q:
                p = KEYPOINT_PARENTS[p]
            out[j, kk] = p == q and kk != q
    return out


_BELOW = _below()


def _angle_term_joints(st: BundleSettings, rows: int, index: int) -> torch.Tensor:
    """The joint (0..14) of each residual of the ``index``-th angle term (limits, hinge, twist)."""
    kinds = ([] if st.w_limits <= 0 else ["limits"]) + ([] if st.hinge_sigma <= 0 else ["hinge", "twist"])
    kind = kinds[index]
    if kind == "limits":
        return torch.arange(15).repeat_interleave(3)
    if kind == "hinge":
        return torch.tensor(_HINGE_JOINTS).repeat_interleave(2)
    return torch.tensor(_TWIST_JOINTS)


#: Hinge joints (PIP, DIP, thumb MCP and IP), indices into the 15 non-wrist MANO joints: their
#: twist and spread are held near 0 (:attr:`BundleSettings.hinge_sigma`).
_HINGE_JOINTS = [1, 2, 4, 5, 7, 8, 10, 11, 13, 14]
#: The finger MCPs, which spread but do not twist.
_TWIST_JOINTS = [0, 3, 6, 9]

#: Forward-difference step of the Jacobians (radians, metres, log factors; float64).
_FD_STEP = 1e-7


def _lm_step(r, j_frame, j_id, r_id, j_prior, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One damped Gauss-Newton step by the Schur complement on the frames' blocks."""
    h_ff = j_frame.transpose(1, 2) @ j_frame  # (K, 51, 51)
    h_fi = j_frame.transpose(1, 2) @ j_id  # (K, 51, n)
    h_ii = (j_id.transpose(1, 2) @ j_id).sum(0) + j_prior.T @ j_prior
    g_f = (j_frame.transpose(1, 2) @ r[..., None])[..., 0]
    g_i = (j_id.transpose(1, 2) @ r[..., None])[..., 0].sum(0) + j_prior.T @ r_id
    eye_f = torch.eye(h_ff.shape[-1], dtype=r.dtype)
    h_ff = h_ff + lam * (h_ff * eye_f + 1e-6 * eye_f)
    eye_i = torch.eye(h_ii.shape[-1], dtype=r.dtype)
    h_ii = h_ii + lam * (h_ii * eye_i + 1e-6 * eye_i)
    chol = torch.linalg.cholesky(h_ff)
    a_fi = torch.cholesky_solve(h_fi, chol)  # H_ff^-1 H_fi
    a_g = torch.cholesky_solve(g_f[..., None], chol)[..., 0]
    schur = h_ii - (h_fi.transpose(1, 2) @ a_fi).sum(0)
    rhs = g_i - (h_fi.transpose(1, 2) @ a_g[..., None])[..., 0].sum(0)
    d_id = -torch.linalg.solve(schur, rhs)
    d_f = -(a_g + (a_fi @ d_id[:, None])[..., 0])
    return d_id, d_f


def _focal_log_sd(prob: _Problem, xid: torch.Tensor, X: torch.Tensor, w: torch.Tensor) -> float:
    """The log focal's standard deviation at a solution (see :attr:`BundleResult.focal_log_sd`)."""
    if not prob.free_focal:
        return float("nan")
    r, j_frame, j_id, r_id, j_prior = prob.jacobians(xid, X, w.sqrt(), prob.irls_weights(xid, X))
    h_ff = j_frame.transpose(1, 2) @ j_frame
    eye = torch.eye(h_ff.shape[-1], dtype=r.dtype)
    h_ff = h_ff + 1e-9 * eye * h_ff.diagonal(dim1=-2, dim2=-1).mean(-1)[:, None, None]
    h_fi = j_frame.transpose(1, 2) @ j_id
    schur = (j_id.transpose(1, 2) @ j_id).sum(0) + j_prior.T @ j_prior \
        - (h_fi.transpose(1, 2) @ torch.linalg.solve(h_ff, h_fi)).sum(0)
    dof = max(r.numel() + r_id.numel() - j_frame.shape[0] * j_frame.shape[-1] - prob.n_id, 1)
    s2 = float((r.pow(2).sum() + r_id.pow(2).sum()) / dof)
    try:
        var = float(torch.linalg.inv(schur)[prob.N_ID, prob.N_ID]) * s2
    except RuntimeError:  # singular: the focal length is not observed at all
        return float("inf")
    return math.sqrt(var) if var > 0 and math.isfinite(var) else float("inf")


def bundle_adjust(
    base: HandModelData,
    frames: list[BundleFrame],
    hand_length_m: float,
    betas: np.ndarray | None = None,
    settings: BundleSettings | None = None,
    nominal_fov_deg: float = 60.0,
    progress: Callable[[float, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    limit_threads: bool = True,
) -> BundleResult:
    """Calibrate the personal skeleton (and a focal length) jointly with every frame's pose.

    Levenberg-Marquardt on the robust energy (iteratively reweighted keypoints), the frames'
    blocks eliminated by the Schur complement; the frames' own robust weights are updated
    between rounds (see the module docstring).

    Args:
        base: the hand model of the frames' side (open hand or MANO).
        frames: the calibration frames (at least one).
        hand_length_m: the hand length the skeleton is scaled to (the metric anchor, or the
            population prior when there is none), metres.
        betas: (S,) the shape whose rest skeleton is the start (the Eq. 7 solution).
        settings: weights and schedule.
        nominal_fov_deg: horizontal field of view that starts an unknown focal length.
        progress: called after every Levenberg-Marquardt iteration with (fraction of the
            iteration budget done, message); it may raise to stop the optimization.
        cancel: polled at the same points; once it returns True the optimization stops.
        limit_threads: run on one PyTorch and one BLAS thread (both process-wide settings,
            restored afterwards); False leaves them as they are (for a caller in a background
            thread: the process's other threads own those settings).

    Returns:
        The :class:`BundleResult` (skeleton at ``betas``, in ``base``'s rest frame).

    Raises:
        Cancelled: ``cancel()`` returned True (nothing is returned).
    """
    if not limit_threads:
        return _bundle_adjust(base, frames, hand_length_m, betas, settings or BundleSettings(), nominal_fov_deg,
                              progress, cancel)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead (and spin on a busy machine)
    try:
        with BLAS_THREADS.limit(1):
            return _bundle_adjust(base, frames, hand_length_m, betas, settings or BundleSettings(), nominal_fov_deg,
                                  progress, cancel)
    finally:
        torch.set_num_threads(threads)


def _report(progress: Callable[[float, str], None] | None, cancel: Callable[[], bool] | None, fraction: float,
            message: str) -> None:
    """Report progress and honour a cancel request (see :func:`bundle_adjust`)."""
    if cancel is not None and cancel():
        raise Cancelled("the calibration was cancelled")
    if progress is not None:
        progress(fraction, message)


def _bundle_adjust(base: HandModelData, frames: list[BundleFrame], hand_length_m: float, betas: np.ndarray | None,
                   st: BundleSettings, nominal_fov_deg: float, progress: Callable[[float, str], None] | None = None,
                   cancel: Callable[[], bool] | None = None) -> BundleResult:
    t0 = time.perf_counter()
    if not frames:
        raise ValueError("bundle_adjust needs at least one frame")
    if not np.isfinite(hand_length_m) or hand_length_m <= 0:
        raise ValueError(f"hand_length_m must be a positive length in metres, got {hand_length_m}")
    prob = _Problem(base, betas, frames, hand_length_m, nominal_fov_deg, st)
    f64 = torch.float64
    k = len(frames)
    xid = torch.zeros(prob.n_id, dtype=f64)
    # Start each translation where the start skeleton, posed, best reprojects.
    with torch.no_grad():
        kp0 = prob.keypoints(xid, torch.cat([prob.pose0, torch.zeros(k, 3, dtype=f64)], 1)).numpy()
    t_init = np.stack([_solve_translation(kp0[i], prob.uv[i].numpy(), prob.K[i].numpy()) for i in range(k)])
    zmin = kp0[:, :, 2].min(1)
    t_init[:, 2] = np.maximum(t_init[:, 2] + zmin, 0.05) - zmin
    X = torch.cat([prob.pose0, torch.as_tensor(t_init, dtype=f64)], 1)

    attention = np.array([max(float(f.weight), 0.0) for f in frames], dtype=np.float64)
    attention = attention / attention.sum() if attention.sum() > 0 else np.full(k, 1.0 / k)
    low_score = np.array([f.score < st.min_score for f in frames])
    robust = np.where(low_score, 0.0, 1.0)
    lam = 1e-2
    m_judged = None
    # A free focal length is weakly observed (perspective only): stopping early leaves it near
    # its start, so it gets a tighter tolerance and more iterations.
    iterations = st.iterations * (3 if prob.free_focal else 1)
    tolerance = st.tolerance / (30.0 if prob.free_focal else 1.0)
    rounds = max(1, st.rounds)
    for round_ in range(rounds):
        w = attention * robust
        w = torch.as_tensor(w / max(w.sum(), 1e-12) * k, dtype=f64)
        energy = prob.energy(xid, X, w)
        for it in range(iterations):
            _report(progress, cancel, (round_ * iterations + it) / (rounds * iterations),
                    f"joint calibration: round {round_ + 1} of {rounds}, iteration {it + 1}")
            sqrt_kw = prob.irls_weights(xid, X)
            r, jf, ji, rid, jp = prob.jacobians(xid, X, w.sqrt(), sqrt_kw)
            improved = False
            for _ in range(6):
                try:
                    d_id, d_f = _lm_step(r, jf, ji, rid, jp, lam)
                except RuntimeError:  # not positive definite: damp more
                    lam *= 10.0
                    continue
                xid_new, X_new = xid + d_id, X + d_f
                e_new = prob.energy(xid_new, X_new, w)
                if e_new < energy:
                    improved = True
                    rel = (energy - e_new) / max(energy, 1e-12)
                    xid, X, energy = xid_new, X_new, e_new
                    lam = max(lam / 3.0, 1e-6)
                    break
                lam *= 10.0
            if not improved or rel < tolerance:
                break
        with torch.no_grad():
            m = prob.relative_errors(xid, X).median(dim=1).values.numpy()
        if m_judged is None:  # errors with every frame weighted (a rejected frame drifts later)
            m_judged = m
        usable = ~low_score
        c_f = max(st.frame_scale * float(np.median(m[usable])) if usable.any() else 0.0, st.min_frame_scale)
        new_robust = np.where(low_score, 0.0, 1.0 / (1.0 + (m / c_f) ** 2) ** 2)
        if np.allclose(new_robust, robust, atol=0.02):
            robust = new_robust
            break
        robust = new_robust
    with torch.no_grad():
        kp = prob.keypoints(xid, X)
        skeleton = prob.skeleton(prob.params(xid)).numpy()
        uv = prob.project(kp, prob.log_focal(xid))
        px = (uv - prob.uv).norm(dim=-1).mean(1).numpy()
        m = prob.relative_errors(xid, X).median(dim=1).values.numpy()
        w = attention * robust
        w_t = torch.as_tensor(w / max(w.sum(), 1e-12) * k, dtype=f64)
        focal_sd = _focal_log_sd(prob, xid, X, w_t)
        final_energy = prob.energy(xid, X, w_t) / k
    judged = np.where(robust < st.reject_weight, m_judged, m)
    med = float(np.median(judged[~low_score])) if (~low_score).any() else float("nan")
    rejected = []
    for i in range(k):
        if low_score[i]:
            rejected.append((i, f"detector score {frames[i].score:.2f} below {st.min_score:.2f}"))
        elif robust[i] < st.reject_weight:
            rejected.append((i, f"disagrees with the shared hand: reprojection {100 * judged[i]:.1f}% of the hand's "
                                f"size, {judged[i] / max(med, 1e-9):.1f}x the median frame (wrong side, wrong "
                                "detection or blur?)"))
    final = attention * robust
    final = final / final.sum() if final.sum() > 0 else final
    log_f = prob.log_focal(xid)
    params = prob.params(xid)
    return BundleResult(
        skeleton=skeleton,
        params={"bone_log": params.bone_log.numpy().copy(), "palm": params.palm.numpy().copy()},
        poses=X[:, :48].numpy().copy(),
        transl=X[:, 48:].numpy().copy(),
        focal_scale=float(torch.exp(log_f)),
        focal_px=(prob.K[:, 0, 0] * torch.exp(log_f * prob.focal_free_mask)).numpy(),
        frame_weights=final,
        residual_rel=m,
        residual_px=px,
        rejected=tuple(rejected),
        seconds=time.perf_counter() - t0,
        focal_log_sd=focal_sd,
        energy=final_energy,
    )
