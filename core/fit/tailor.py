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
tensor ops, batched over hands, identical on CPU and CUDA.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from core.fit.kinematics import KeypointModel
from core.fit.skeleton import Skeleton
from core.keypoints import BONES, MANO_JOINT_TO_KEYPOINT
from core.model.data import HandModelData
from core.rotations import (
    axis_angle_to_matrix,
    euler_zyx_to_matrix,
    matrix_to_axis_angle,
    matrix_to_euler_zyx,
    skew,
)

Projection = Literal["perspective", "weak"]

_PALM = (5, 9, 13, 17)  # MCP keypoints used with the wrist for the global rotation


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
        iterations: tailor iterations run.
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


@dataclass(frozen=True)
class FitSettings:
    """Weights and schedule of the tailor (residuals are in pixels, radians or unit directions).

    Attributes:
        iterations: Levenberg-Marquardt iterations (HandTailor uses 20).
        w_dir: weight of a bone direction error (unit vectors) against world landmarks.
        w_identity: weight of the rotation change from the initialization, per radian.
        w_temporal: weight of the change from the previous frame (rotation, per radian).
        w_temporal_transl: weight of the root's move from the previous frame, per metre.
        w_shape: weight of the shape prior ||beta|| (beta ~ N(0, I)).
        w_limits: weight of an anatomical angle outside the joint's limits, per radian.
        lm_lambda: initial Levenberg-Marquardt damping (relative to the diagonal).
        project_every: project onto the joint limits every this many iterations (and at the end).
        nominal_fov_deg: field of view assumed to report depth in weak-perspective mode.
    """

    iterations: int = 20
    w_dir: float = 30.0
    w_identity: float = 3.0
    w_temporal: float = 6.0
    w_temporal_transl: float = 300.0
    w_shape: float = 2.0
    w_limits: float = 100.0
    lm_lambda: float = 0.3
    project_every: int = 5
    nominal_fov_deg: float = 60.0


@dataclass
class _SideModel:
    kp: KeypointModel
    skel: Skeleton
    frames: torch.Tensor  # (16, 3, 3)
    limits: torch.Tensor  # (16, 3, 2)
    seg_len: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.seg_len = self.skel.b0.norm(dim=-1)


def _kabsch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) rotations R minimizing sum |R a_i - b_i|^2 for point sets (B, N, 3)."""
    h = a.transpose(1, 2) @ b  # (B, 3, 3) = sum a b^T
    u, _, vt = torch.linalg.svd(h)
    d = torch.sign(torch.linalg.det(vt.transpose(1, 2) @ u.transpose(1, 2)))
    diag = torch.ones_like(h[:, 0])
    diag[:, 2] = d
    return vt.transpose(1, 2) @ torch.diag_embed(diag) @ u.transpose(1, 2)


def _vee_antisym(a: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis of the antisymmetric part of (..., 3, 3): ~ the rotation vector of a."""
    return 0.5 * torch.stack([a[..., 2, 1] - a[..., 1, 2], a[..., 0, 2] - a[..., 2, 0], a[..., 1, 0] - a[..., 0, 1]], -1)


def _rotation_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) minimal rotations taking unit vectors a onto unit vectors b (..., 3)."""
    v = torch.cross(a, b, dim=-1)
    c = (a * b).sum(-1, keepdim=True)[..., None]
    k = skew(v)
    eye = torch.eye(3, dtype=a.dtype, device=a.device).expand_as(k)
    return eye + k + (k @ k) / (1.0 + c).clamp(min=1e-6)


class TailorFitter:
    """Fits right and left hands; thin state: the two models' precomputed data.

    Args:
        right: the right-hand model data; left: the left (mirrored) one.
        settings: weights and schedule.
        device: "cpu" or "cuda".
    """

    def __init__(self, right: HandModelData, left: HandModelData, settings: FitSettings = FitSettings(), device: str | torch.device = "cpu") -> None:
        self.settings = settings
        self.device = torch.device(device)
        self.dtype = torch.float32
        self.models: dict[str, _SideModel] = {}
        for data in (right, left):
            kp = KeypointModel(data, self.device, self.dtype)
            self.models[data.side] = _SideModel(
                kp=kp,
                skel=Skeleton(kp),
                frames=torch.as_tensor(data.rest_frames, dtype=self.dtype, device=self.device),
                limits=torch.as_tensor(data.joint_limits, dtype=self.dtype, device=self.device),
            )
        self.num_betas = right.num_betas

    # ----------------------------------------------------------------- initialization

    def initialize(self, side: str, world: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
        """Global joint rotations (B, 16, 3, 3) from world landmarks (B, 21, 3) by swing IK."""
        m = self.models[side]
        segs = m.skel.segments(betas)
        rest = m.skel.incidence @ segs  # (B, 21, 3) rest keypoints relative to the wrist
        palm = list(_PALM)
        world_rel = world - world[:, :1]
        b = world.shape[0]
        G = torch.eye(3, dtype=self.dtype, device=self.device).repeat(b, 16, 1, 1)
        G[:, 0] = _kabsch(rest[:, palm], world_rel[:, palm])
        parents_kp = [p for p, _ in BONES]
        children_kp = [c for _, c in BONES]
        out_seg = {}
        for s, p in enumerate(parents_kp):
            if p != 0:
                out_seg[p] = s  # each non-wrist keypoint with a child has one outgoing segment
        from core.fit.kinematics import LEVELS

        for level in LEVELS:
            joints = list(level)
            segs_idx = [out_seg[MANO_JOINT_TO_KEYPOINT[j]] for j in joints]
            par = [int(m.skel.parents[j]) for j in joints]
            rest_dir = segs[:, segs_idx]
            rest_dir = rest_dir / rest_dir.norm(dim=-1, keepdim=True)
            obs = world[:, [children_kp[s] for s in segs_idx]] - world[:, [parents_kp[s] for s in segs_idx]]
            obs = obs / obs.norm(dim=-1, keepdim=True).clamp(min=1e-9)
            gp = G[:, par]
            target_local = (gp.transpose(-1, -2) @ obs[..., None])[..., 0]
            G[:, joints] = gp @ _rotation_between(rest_dir, target_local)
        return self._project_limits(side, G)

    def _root_from_2d(self, side: str, G: torch.Tensor, betas: torch.Tensor, uv: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
        """Wrist position (B, 3) minimizing reprojection error for fixed rotations (Eq. 12).

        With X the keypoints relative to the wrist: (u - cx)(Z + tz) = fx (X + tx), linear in t.
        """
        m = self.models[side]
        rel, _ = m.skel.keypoints(G, torch.zeros_like(uv[:, 0, :1]).expand(-1, 3), m.skel.segments(betas))
        fx, fy, cx, cy = K[:, 0, 0, None], K[:, 1, 1, None], K[:, 0, 2, None], K[:, 1, 2, None]
        du, dv = uv[..., 0] - cx, uv[..., 1] - cy
        zero = torch.zeros_like(du)
        a_u = torch.stack([fx.expand_as(du), zero, -du], dim=-1)
        a_v = torch.stack([zero, fy.expand_as(dv), -dv], dim=-1)
        rhs_u = du * rel[..., 2] - fx * rel[..., 0]
        rhs_v = dv * rel[..., 2] - fy * rel[..., 1]
        A = torch.cat([a_u, a_v], dim=1)
        y = torch.cat([rhs_u, rhs_v], dim=1)
        t = torch.linalg.lstsq(A, y[..., None]).solution[..., 0]
        return t

    def _weak_from_2d(self, side: str, G: torch.Tensor, betas: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
        """(B, 3) weak-perspective (log scale, tu, tv) by HandTailor Eq. 17, t at the wrist."""
        m = self.models[side]
        rel, _ = m.skel.keypoints(G, torch.zeros(G.shape[0], 3, dtype=self.dtype, device=self.device), m.skel.segments(betas))
        xy = rel[..., :2]
        d = uv - uv[:, :1]
        s = (xy * d).sum((1, 2)) / (xy * xy).sum((1, 2)).clamp(min=1e-12)
        return torch.stack([torch.log(s.clamp(min=1e-3)), uv[:, 0, 0], uv[:, 0, 1]], dim=-1)

    # ----------------------------------------------------------------- the pose prior

    def _project_limits(self, side: str, G: torch.Tensor) -> torch.Tensor:
        """Clamp each joint's anatomical angles (twist, spread, bend) into the model's limits."""
        m = self.models[side]
        local = m.skel.local_from_global(G)
        F = m.frames[1:]
        ang = matrix_to_euler_zyx(F.transpose(-1, -2) @ local[:, 1:] @ F)
        lim = m.limits[1:]
        ang = torch.maximum(torch.minimum(ang, lim[..., 1]), lim[..., 0])
        fixed = F @ euler_zyx_to_matrix(ang) @ F.transpose(-1, -2)
        return m.skel.global_from_local(torch.cat([local[:, :1], fixed], dim=1))

    # ----------------------------------------------------------------- the tailor

    def fit(
        self,
        observations: list[HandObservation],
        betas: np.ndarray | None = None,
        previous: list[HandFit | None] | None = None,
        iterations: int | None = None,
    ) -> list[HandFit]:
        """Fit every observed hand (batched per side and projection).

        Args:
            observations: the detected hands.
            betas: (S,) a fixed shape (identity-aware mode, from a profile), or None to fit it.
            previous: per observation, last frame's fit of the same hand (warm start and
                temporal term), or None.
            iterations: overrides ``settings.iterations``.

        Returns:
            one :class:`HandFit` per observation, in order.
        """
        previous = previous or [None] * len(observations)
        results: list[HandFit | None] = [None] * len(observations)
        groups: dict[tuple[str, bool], list[int]] = {}
        for i, obs in enumerate(observations):
            groups.setdefault((obs.side, obs.K is not None), []).append(i)
        for (side, has_k), idx in groups.items():
            fits = self._fit_group(side, [observations[i] for i in idx], betas, [previous[i] for i in idx], iterations, has_k)
            if not has_k:
                fits = [self._place_weak(f, observations[i].image_size) for f, i in zip(fits, idx)]
            for i, f in zip(idx, fits):
                results[i] = f
        return [r for r in results if r is not None]

    def _tensor(self, x: np.ndarray | list) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=self.dtype, device=self.device)

    def _fit_group(self, side, obs, betas, previous, iterations, has_k) -> list[HandFit]:
        st = self.settings
        m = self.models[side]
        n_iter = st.iterations if iterations is None else iterations
        b = len(obs)
        S = self.num_betas
        fit_shape = betas is None
        uv = self._tensor([o.keypoints_2d for o in obs])
        world = None if any(o.world_landmarks is None for o in obs) else self._tensor([o.world_landmarks for o in obs])
        beta = self._tensor(np.zeros((b, S)) if betas is None else np.broadcast_to(np.asarray(betas, dtype=np.float32), (b, S)))
        K = self._tensor([o.K for o in obs]) if has_k else None

        # Initialization: analytic IK from the world landmarks; warm start from the last frame.
        if world is not None:
            G_init = self.initialize(side, world, beta)
        else:
            G_init = torch.eye(3, dtype=self.dtype, device=self.device).repeat(b, 16, 1, 1)
        G = G_init.clone()
        prev_G = None
        prev_t = None
        has_prev = [p is not None and p.projection == ("perspective" if has_k else "weak") for p in previous]
        if any(has_prev):
            prev_G = G_init.clone()
            prev_t = torch.zeros(b, 3, dtype=self.dtype, device=self.device)
            for i, p in enumerate(previous):
                if has_prev[i]:
                    local = axis_angle_to_matrix(self._tensor(p.pose).reshape(16, 3))
                    prev_G[i] = m.skel.global_from_local(local[None])[0]
                    prev_t[i] = self._tensor(p.keypoints_3d[0]) if has_k else self._tensor([np.log(p.scale), p.keypoints_2d[0, 0], p.keypoints_2d[0, 1]])
                    if fit_shape:
                        beta[i] = self._tensor(p.betas)
            mask = torch.tensor(has_prev, device=self.device)
            G = torch.where(mask[:, None, None, None], prev_G, G)
        beta_init = beta.clone()

        # Step 1: analytic scale / root.
        cam = self._root_from_2d(side, G, beta, uv, K) if has_k else self._weak_from_2d(side, G, beta, uv)

        # Step 2: damped Gauss-Newton (Levenberg) with closed-form Jacobians.
        ctx = self._context(side, beta, world, G_init, prev_G, prev_t, has_prev, fit_shape, uv, K)
        lam = torch.full((b, 1), st.lm_lambda, dtype=self.dtype, device=self.device)
        H, g, cost = self._normal_equations(ctx, G, cam, beta)
        for it in range(n_iter):
            diag = torch.diagonal(H, dim1=-2, dim2=-1)
            delta = -torch.linalg.solve(H + torch.diag_embed(lam * diag + 1e-6), g)
            G_new = G @ axis_angle_to_matrix(delta[:, :48].reshape(b, 16, 3))
            if (it + 1) % st.project_every == 0:
                G_new = self._project_limits(side, G_new)
            cam_new = cam + delta[:, 48:51]
            beta_new = beta + delta[:, 51:] if fit_shape else beta
            H_new, g_new, cost_new = self._normal_equations(ctx, G_new, cam_new, beta_new)
            # Levenberg-Marquardt: keep a step only where it lowered the cost.
            ok = cost_new < cost
            G = torch.where(ok[:, None, None, None], G_new, G)
            cam = torch.where(ok[:, None], cam_new, cam)
            beta = torch.where(ok[:, None], beta_new, beta)
            H = torch.where(ok[:, None, None], H_new, H)
            g = torch.where(ok[:, None], g_new, g)
            cost = torch.where(ok, cost_new, cost)
            lam = torch.where(ok[:, None], lam * 0.5, lam * 4.0)
        G = self._project_limits(side, G)
        return self._results(side, G, cam, beta, uv, K, n_iter)

    def _context(self, side, beta, world, G_init, prev_G, prev_t, has_prev, fit_shape, uv, K) -> dict:
        """Everything constant over the iterations of one fit."""
        st = self.settings
        m = self.models[side]
        b = beta.shape[0]
        S = beta.shape[1]
        n_par = 51 + (S if fit_shape else 0)
        dev, dt = self.device, self.dtype
        ctx: dict = {"m": m, "uv": uv, "K": K, "fit_shape": fit_shape, "G_init": G_init}
        # Constant diagonal of the priors; the direction term's H is constant too:
        # B_s^T B_s = skew(b_s)^T skew(b_s) / |b_s|^2 = I - u u^T, whatever the rotation.
        h_const = torch.zeros(b, n_par, n_par, dtype=dt, device=dev)
        idx = torch.arange(48, device=dev)
        h_const[:, idx, idx] += st.w_identity**2
        if world is not None:
            parents_kp = [p for p, _ in BONES]
            children_kp = [c for _, c in BONES]
            obs = world[:, children_kp] - world[:, parents_kp]
            ctx["obs_dir"] = obs / obs.norm(dim=-1, keepdim=True).clamp(min=1e-9)
            u = m.skel.b0 / m.seg_len[:, None]
            block = torch.eye(3, dtype=dt, device=dev) - u[:, :, None] * u[:, None, :]
            for s_idx in range(20):
                a = int(m.skel.seg_joint[s_idx])
                h_const[:, 3 * a:3 * a + 3, 3 * a:3 * a + 3] += st.w_dir**2 * block[s_idx]
        if prev_G is not None:
            w = st.w_temporal * torch.tensor(has_prev, dtype=dt, device=dev)[:, None]
            wt = (st.w_temporal_transl if K is not None else st.w_temporal) * w
            h_const[:, idx, idx] += (w * w).expand(b, 48)
            t_idx = torch.arange(48, 51, device=dev)
            h_const[:, t_idx, t_idx] += (wt * wt).expand(b, 3)
            ctx.update(prev_G=prev_G, prev_t=prev_t, w_prev=w, wt_prev=wt)
        if fit_shape:
            s_idx = torch.arange(51, n_par, device=dev)
            h_const[:, s_idx, s_idx] += st.w_shape**2
        else:
            ctx["segs"] = m.skel.segments(beta)
        ctx["h_const"] = h_const
        ctx["joint_kp"] = torch.as_tensor(MANO_JOINT_TO_KEYPOINT, device=dev)
        ctx["child_rows"] = torch.arange(15, device=dev)
        ctx["child_cols"] = torch.arange(1, 16, device=dev)
        ctx["parent_cols"] = m.skel.parents[1:]
        return ctx

    def _normal_equations(self, ctx: dict, G: torch.Tensor, cam: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The Gauss-Newton system H (B, P, P), g (B, P) and the cost (B,) at the current state."""
        st = self.settings
        m, uv, K = ctx["m"], ctx["uv"], ctx["K"]
        b = G.shape[0]
        segs = ctx["segs"] if not ctx["fit_shape"] else m.skel.segments(beta)
        wrist = cam if K is not None else torch.zeros_like(cam)
        kp, rotated = m.skel.keypoints(G, wrist, segs)
        px, dproj = self._project(kp, cam, K)
        r2 = (px - uv).reshape(b, 42, 1)

        # d keypoint_k / d delta_a = -skew(kp_k - P_a) G_a for every ancestor joint a of k.
        diff = kp[:, :, None] - kp[:, None, ctx["joint_kp"]]  # (B, 21, 16, 3)
        j3 = -(skew(diff) @ G[:, None]) * m.skel.ancestor[None, :, :, None, None]
        j3 = j3.permute(0, 1, 3, 2, 4).reshape(b, 21, 3, 48)
        if K is not None:
            j2 = torch.cat([dproj @ j3, dproj], dim=-1).reshape(b, 42, 51)
        else:
            rel = kp - kp[:, :1]
            s = torch.exp(cam[:, 0])[:, None, None]
            ones = torch.ones_like(rel[..., :1])
            zeros = torch.zeros_like(ones)
            jcam = torch.stack([
                torch.cat([s * rel[..., :1], ones, zeros], -1),
                torch.cat([s * rel[..., 1:2], zeros, ones], -1),
            ], dim=-2)
            j2 = torch.cat([dproj @ j3, jcam], dim=-1).reshape(b, 42, 51)
        if ctx["fit_shape"]:
            gb = G[:, m.skel.seg_joint] @ m.skel.bdirs  # (B, 20, 3, S)
            jb = torch.einsum("ks,bscm->bkcm", m.skel.incidence, gb)
            j2 = torch.cat([j2, (dproj @ jb).reshape(b, 42, -1)], dim=-1)
        jt = j2.transpose(1, 2)
        H = jt @ j2 + ctx["h_const"]
        g = (jt @ r2)[..., 0]
        cost = (r2 * r2).sum((1, 2))

        grot = torch.zeros(b, 16, 3, dtype=G.dtype, device=G.device)
        if "obs_dir" in ctx:
            # g = sum_s B_s^T r_s with B_s = -G_a skew(u_s): B_s^T r = u_s x (G_a^T r) ... sign:
            # -skew(u)^T G^T r = skew(u) G^T r = u x (G^T r).
            u = segs / m.seg_len[:, None]
            r = st.w_dir * (rotated / m.seg_len[:, None] - ctx["obs_dir"])
            local_r = (G[:, m.skel.seg_joint].transpose(-1, -2) @ r[..., None])[..., 0]
            grot.index_add_(1, m.skel.seg_joint, st.w_dir * torch.cross(u, local_r, dim=-1))
            cost = cost + (r * r).sum((1, 2))
        phi = _vee_antisym(ctx["G_init"].transpose(-1, -2) @ G)
        grot = grot + st.w_identity**2 * phi
        cost = cost + st.w_identity**2 * (phi * phi).sum((1, 2))
        if "prev_G" in ctx:
            phi = _vee_antisym(ctx["prev_G"].transpose(-1, -2) @ G)
            w2 = (ctx["w_prev"] ** 2)[..., None]
            grot = grot + w2 * phi
            dt = cam - ctx["prev_t"]
            g[:, 48:51] += ctx["wt_prev"] ** 2 * dt
            cost = cost + (w2 * phi * phi).sum((1, 2)) + (ctx["wt_prev"] ** 2 * dt * dt).sum(1)
        g[:, :48] += grot.reshape(b, 48)

        # Joint limits: hinge on each anatomical angle. With R_j = G_p^T G_j, a perturbation
        # G_j exp(d_j) moves the angles by ~F^T d_j, and G_p exp(d_p) by ~-F^T R_j^T d_p.
        local = m.skel.local_from_global(G)[:, 1:]
        F = m.frames[1:]
        ang = matrix_to_euler_zyx(F.transpose(-1, -2) @ local @ F)
        lim = m.limits[1:]
        viol = torch.clamp(ang - lim[..., 1], min=0) + torch.clamp(ang - lim[..., 0], max=0)
        active = (viol != 0).to(G.dtype)
        r_lim = st.w_limits * viol  # (B, 15, 3)
        ft = F.transpose(-1, -2).expand(b, -1, -1, -1) * (st.w_limits * active)[..., None]
        jl = torch.zeros(b, 15, 3, 16, 3, dtype=G.dtype, device=G.device)
        rows = ctx["child_rows"]
        # Advanced indices around a slice come first: the assigned values are (15, B, 3, 3).
        jl[:, rows, :, ctx["child_cols"]] = ft.transpose(0, 1)
        jl[:, rows, :, ctx["parent_cols"]] = -(ft @ local.transpose(-1, -2)).transpose(0, 1)
        jl = jl.reshape(b, 45, 48)
        H[:, :48, :48] += jl.transpose(1, 2) @ jl
        g[:, :48] += (jl.transpose(1, 2) @ r_lim.reshape(b, 45, 1))[..., 0]
        cost = cost + (r_lim * r_lim).sum((1, 2))
        if ctx["fit_shape"]:
            g[:, 51:] += st.w_shape**2 * beta
            cost = cost + st.w_shape**2 * (beta * beta).sum(1)
        return H, g, cost

    def _place_weak(self, fit: HandFit, image_size: tuple[int, int]) -> HandFit:
        """Put a weak-perspective fit into a nominal pinhole camera (``nominal_fov_deg``).

        Weak perspective sees scale, not depth: with a nominal focal length f, the wrist is
        placed at depth f / s behind its pixel, so the 3D result projects close to the fit.
        """
        w, h = image_size
        f = (w / 2) / np.tan(np.radians(self.settings.nominal_fov_deg) / 2)
        z = f / fit.scale
        u, v = fit.keypoints_2d[0]
        wrist = np.array([(u - (w - 1) / 2) * z / f, (v - (h - 1) / 2) * z / f, z], dtype=np.float32)
        return dataclasses.replace(
            fit,
            keypoints_3d=(fit.keypoints_3d + wrist).astype(np.float32),
            transl=(fit.transl + wrist).astype(np.float32),
        )

    def _project(self, kp: torch.Tensor, cam: torch.Tensor, K: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels (B, 21, 2) and d(pixels)/d(keypoints) (B, 21, 2, 3)."""
        if K is None:
            s = torch.exp(cam[:, 0])[:, None, None]
            rel = kp - kp[:, :1]
            px = s * rel[..., :2] + cam[:, None, 1:3]
            d = torch.zeros(kp.shape[:2] + (2, 3), dtype=kp.dtype, device=kp.device)
            d[..., 0, 0] = s[..., 0]
            d[..., 1, 1] = s[..., 0]
            return px, d
        fx, fy = K[:, 0, 0, None], K[:, 1, 1, None]
        z = kp[..., 2].clamp(min=1e-3)
        x, y = kp[..., 0] / z, kp[..., 1] / z
        px = torch.stack([fx * x + K[:, 0, 2, None], fy * y + K[:, 1, 2, None]], dim=-1)
        zero = torch.zeros_like(z)
        d = torch.stack(
            [torch.stack([fx / z, zero, -fx * x / z], -1), torch.stack([zero, fy / z, -fy * y / z], -1)], dim=-2
        )
        return px, d

    def _results(self, side, G, cam, beta, uv, K, n_iter) -> list[HandFit]:
        m = self.models[side]
        b = G.shape[0]
        segs = m.skel.segments(beta)
        if K is not None:
            wrist = cam
            scale = K[:, 0, 0] / cam[:, 2].clamp(min=1e-3)
        else:
            wrist = torch.zeros_like(cam)  # placed in a nominal camera by _place_weak
            scale = torch.exp(cam[:, 0])
        kp, _ = m.skel.keypoints(G, wrist, segs)
        px, _ = self._project(kp, cam, K)
        err = (px - uv).norm(dim=-1).mean(-1)
        local = m.skel.local_from_global(G)
        pose = matrix_to_axis_angle(local).reshape(b, 48)
        transl = wrist - m.kp.rest_joints(beta)[:, 0]
        out = []
        for i in range(b):
            out.append(HandFit(
                side=side,
                pose=pose[i].detach().cpu().numpy().astype(np.float32),
                betas=beta[i].detach().cpu().numpy().astype(np.float32),
                transl=transl[i].detach().cpu().numpy().astype(np.float32),
                keypoints_3d=kp[i].detach().cpu().numpy().astype(np.float32),
                keypoints_2d=px[i].detach().cpu().numpy().astype(np.float32),
                reprojection_error_px=float(err[i]),
                projection="perspective" if K is not None else "weak",
                scale=float(scale[i]),
                iterations=n_iter,
            ))
        return out
