"""The tailor's numerics, written once for two array backends.

:class:`SideSolver` holds one hand model's constant data (segments, tree, joint frames and
limits, the Jacobian's sparsity layout) on a backend and runs the whole fit there: swing IK
initialization, the analytic root, Levenberg-Marquardt with a closed-form Jacobian, the
joint-limit projection and the outputs. The algorithm uses only operations that NumPy arrays
and PyTorch tensors spell the same way (``@``, ``reshape``, ``swapaxes``, indexing, and the
``xp`` namespace's ``sqrt``/``sin``/``where``/``concatenate``/...), plus the few methods of the
backend objects below, so the two paths cannot drift apart:

* :class:`TorchBackend` (float32, any device): the reference path, and the one for CUDA;
* :class:`NumpyBackend` (float64, CPU): the fast path for small CPU problems. The fit is a
  few hundred tiny array operations, and NumPy's per-operation overhead (~1 us) is several
  times smaller than PyTorch's, which is what the per-hand budget is made of.

The unknowns are the local joint rotations, perturbed on the right (``R_a <- R_a exp(delta_a)``
turns joint a's whole subtree, which makes the damped steps natural for a kinematic chain and
converges in a few iterations), the root / camera and, without a profile, the shape. One
Levenberg-Marquardt iteration builds only the 42 x P Jacobian of the reprojection term (its
rotation part is 50 fixed 3 x 3 blocks written with one indexed assignment); the other terms
enter ``H`` and ``g`` in closed form: their gradients are formed per joint in the world frame
and carried to the local parameterization by subtree sums, and their Gauss-Newton blocks
(``G_c^T Y G_c'`` for joints c, c' on one chain) are refreshed every few iterations, since they
change slowly while the cost and the gradient stay exact. The anatomical angles come from one
product with the local rotations; the joint-limit hinge adds its blocks only when violated.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.linalg.lapack import dposv as _posv

from core.fit import _native as _fit_native
from core.fit.kinematics import LEVELS, KeypointModel
from core.fit.skeleton import Skeleton
from core.keypoints import BONES, MANO_JOINT_TO_KEYPOINT
from core.model.data import HandModelData
from core.threads import BLAS_THREADS

_PALM = (5, 9, 13, 17)  # MCP keypoints used with the wrist for the global rotation
_REFRESH = 4  # iterations between recomputations of the priors' and directions' H blocks

# skew(v).reshape(9) == v @ _E9
_E9 = np.zeros((3, 9))
_E9[2, 1], _E9[1, 2], _E9[2, 3], _E9[0, 5], _E9[1, 6], _E9[0, 7] = -1, 1, 1, -1, -1, 1
# The axis of the antisymmetric part: vee(A) == A.reshape(9) @ _V9.
_V9 = np.zeros((9, 3))
_V9[7, 0], _V9[5, 0], _V9[2, 1], _V9[6, 1], _V9[3, 2], _V9[1, 2] = 0.5, -0.5, 0.5, -0.5, 0.5, -0.5


#: The joint-limit hinge's switch: right after the projection onto the limits an angle sits on
#: its limit, where whether it counts as violated (and a 1e4-weighted block enters H) would
#: depend on the last bit of atan2 / asin. Switched that way (margin 0: on where angle !=
#: clamp(angle)), the first step from the (projected) initialization already depends on the
#: rounding: the NumPy and the C paths, two BLAS builds or two NumPy versions gave fits 2-7 mm
#: apart, and the tolerance stop 9 to 15 iterations for one hand. None (the default): the
#: backend's margin (``limit_eps``: 1e-9 rad in float64, 1e-5 in float32, above the angles'
#: rounding): the blocks are on within it of a limit, inside too, so an angle on its limit
#: always counts as on and every path and platform takes the same steps to float rounding.
#: Measured on 43 rendered hands through MediaPipe (seed 0, default tolerance; 2D px /
#: PA-MPJPE mm / iterations / warm-started iterations): margin 0: 9.33 / 15.54 / 15.3 / 9.0;
#: +1e-9: 8.98 / 15.04 / 15.6 / 7.4; -1e-9 (off within it, outside too): 9.90 / 15.61 / 14.1 /
#: 10.6. A number overrides the backend's margin: positive or negative as above, 0 the
#: last-bit switch.
_LIMIT_EPS: float | None = None

#: Largest |beta| the fit may reach (standard deviations of the shape space).
MAX_BETA = 3.0


class NumpyBackend:
    """float64 NumPy arrays on the CPU."""

    name = "numpy"
    xp = np
    limit_eps = 1e-9  # the hinge's margin (see _LIMIT_EPS): angles are exact to ~1e-15 rad

    def __init__(self) -> None:
        self.dtype = np.float64

    @property
    def threads(self):
        """One OpenBLAS thread during the fit (its products and solves are tiny; see
        :mod:`core.threads`)."""
        return BLAS_THREADS.limit(1)

    def const(self, x) -> np.ndarray:
        return np.array(x, dtype=self.dtype)

    def index(self, x) -> np.ndarray:
        return np.asarray(x, dtype=np.int64)

    def zeros(self, *shape: int) -> np.ndarray:
        return np.zeros(shape, self.dtype)

    def clamp(self, x, lo=None, hi=None):
        if lo is not None:
            x = np.maximum(x, lo)
        return x if hi is None else np.minimum(x, hi)

    def copy(self, x):
        return x.copy()

    def solve(self, a, b):
        return np.linalg.solve(a, b[..., None])[..., 0]

    def solve_spd(self, a, b):
        """Solve symmetric positive definite systems (B, n, n) x = (B, n) by Cholesky (LAPACK
        posv, a third faster than NumPy's batched LU at n ~ 60), LU where one is not SPD."""
        if a.shape[0] == 1:
            _, x, info = _posv(a[0].T, b[0])
            if info == 0:
                return x[None]
        out = np.empty_like(b)
        for i in range(a.shape[0]):
            _, x, info = _posv(a[i].T, b[i])  # a is symmetric; its transpose is Fortran-ordered
            out[i] = x if info == 0 else np.linalg.solve(a[i], b[i])
        return out

    def svd(self, a):
        return np.linalg.svd(a)

    def det(self, a):
        return np.linalg.det(a)

    def numpy(self, x) -> np.ndarray:
        return np.asarray(x)




class TorchBackend:
    """PyTorch tensors (float32 by default) on any device."""

    name = "torch"
    xp = torch

    def __init__(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        # The hinge's margin (see _LIMIT_EPS) above the angles' rounding (float32: ~1e-7 rad).
        self.limit_eps = 1e-9 if dtype == torch.float64 else 1e-5
        self.threads = contextlib.nullcontext()

    def const(self, x) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return x.to(dtype=self.dtype, device=self.device)
        return torch.as_tensor(np.asarray(x), dtype=self.dtype, device=self.device)

    def index(self, x) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x, dtype=np.int64), device=self.device)

    def zeros(self, *shape: int) -> torch.Tensor:
        return torch.zeros(shape, dtype=self.dtype, device=self.device)

    def clamp(self, x, lo=None, hi=None):
        return torch.clamp(x, lo, hi)

    def copy(self, x):
        return x.clone()

    def solve(self, a, b):
        return torch.linalg.solve(a, b[..., None])[..., 0]

    def solve_spd(self, a, b):
        return torch.linalg.solve(a, b[..., None])[..., 0]

    def svd(self, a):
        return torch.linalg.svd(a)

    def det(self, a):
        return torch.linalg.det(a)

    def numpy(self, x) -> np.ndarray:
        return x.detach().cpu().numpy()


@dataclass(frozen=True)
class Weights:
    """The weights of :class:`core.fit.tailor.FitSettings` the numerics need."""

    w_dir: float
    w_identity: float
    w_temporal: float
    w_temporal_transl: float
    w_temporal_weak: float
    w_shape: float
    w_limits: float
    lm_lambda: float
    project_every: int
    tolerance: float = 0.0


@dataclass
class FitOutput:
    """NumPy results of one batch (B hands), model frame = camera frame."""

    pose: np.ndarray  # (B, 48) local axis-angle
    betas: np.ndarray  # (B, S)
    transl: np.ndarray  # (B, 3)
    keypoints_3d: np.ndarray  # (B, 21, 3), wrist at the origin in weak-perspective mode
    keypoints_2d: np.ndarray  # (B, 21, 2)
    error_px: np.ndarray  # (B,) mean distance to the detected keypoints
    scale: np.ndarray  # (B,) pixels per metre
    iterations: np.ndarray  # (B,) int Levenberg-Marquardt iterations each hand ran


class SideSolver:
    """One hand model's fitting data and numerics on one backend.

    Args:
        data: the hand model.
        backend: :class:`NumpyBackend` or :class:`TorchBackend`.
        native: with NumPy, build each iteration's Gauss-Newton system with the C kernel of
            :mod:`core.fit._native` (same results to float rounding): None where it builds
            (else the NumPy closure, the reference), True to require it, False never.
            Ignored by the torch backend. An attribute: tests switch it.
        native_loop: where the kernel builds the system, run the whole Levenberg-Marquardt
            loop in C too (:meth:`core.fit._native.FitSystem.run`; the same algorithm, equal to
            float rounding with the hinge's default margin, see :data:`_LIMIT_EPS`), else the
            NumPy loop below around the C system. An attribute: tests switch it.
    """

    def __init__(self, data: HandModelData, backend: NumpyBackend | TorchBackend, native: bool | None = None,
                 native_loop: bool = True) -> None:
        self.native = native
        self.native_loop = native_loop
        self._topology: _fit_native.Topology | None = None
        self.be = be = backend
        self.xp = backend.xp
        kp = KeypointModel(data, "cpu", torch.float64)
        sk = Skeleton(kp)
        b0 = sk.b0.numpy()
        bdirs = sk.bdirs.numpy()  # (20, 3, S)
        S = self.num_betas = bdirs.shape[-1]
        seg_joint = sk.seg_joint.numpy()
        inc = sk.incidence.numpy()
        parents = sk.parents.numpy()
        frames = np.asarray(data.rest_frames, dtype=np.float64)
        u, _, vt = np.linalg.svd(frames)
        frames = u @ vt  # stored as float32: make them orthonormal in float64
        limits = np.asarray(data.joint_limits, dtype=np.float64)
        seg_len = np.linalg.norm(b0, axis=-1)

        self.b0 = be.const(b0)
        self.bdirs = be.const(bdirs)
        self.bdirs_t = be.const(bdirs.reshape(60, S).T)  # (S, 60)
        self.seg_joint = be.index(seg_joint)
        self.inc = be.const(inc)
        self.seg_len = be.const(seg_len)
        self.E9 = be.const(_E9)
        self.E9h = be.const(0.5 * _E9)
        # Elementary rotations about x, y, z: R_i(t) = ea[i] + cos t ca[i] + sin t sa[i], kept
        # in the anatomical angles' order (twist x, bend z, spread y).
        ea, ca, sa = np.zeros((3, 3, 3)), np.zeros((3, 3, 3)), np.zeros((3, 3, 3))
        for i in range(3):
            j, k = (i + 1) % 3, (i + 2) % 3
            ea[i, i, i] = 1.0
            ca[i, j, j] = ca[i, k, k] = 1.0
            sa[i, k, j], sa[i, j, k] = 1.0, -1.0
        self.EAp, self.CAp, self.SAp = be.const(ea[[0, 2, 1]]), be.const(ca[[0, 2, 1]]), be.const(sa[[0, 2, 1]])
        vt = np.zeros((9, 4))
        vt[:, :3] = _V9
        vt[[0, 4, 8], 3] = 0.5
        self.VT = be.const(vt)  # R.reshape(9) @ VT = (vee of the antisymmetric part, tr / 2)
        self.V9 = be.const(_V9)
        self.I3 = be.const(np.eye(3))
        self.I2 = be.const(np.eye(2))
        self.P23 = be.const(np.eye(3)[:2])
        # Every (keypoint k, segment s) with s on the path wrist -> k; the segment turns with
        # joint a(s), so the pair is one nonzero 3 x 3 block of d keypoints / d rotations.
        kk, ss, aa = np.nonzero(sk.inc_joint.numpy())
        self._kk, self._ss, self._aa = kk, ss, aa
        self.kk, self.ss = be.index(kk), be.index(ss)
        self.par15 = be.index(parents[1:])
        self.F = be.const(frames[1:])
        self.FT = be.const(frames[1:].transpose(0, 2, 1))
        self.j0w = be.const(kp.j0[0].numpy())
        self.jdirs_w_t = be.const(kp.jdirs[0].numpy().T)  # (S, 3)
        # Swing IK: per level, the joints, their outgoing segments and those segments' ends.
        parents_kp = [p for p, _ in BONES]
        children_kp = [c for _, c in BONES]
        out_seg = {p: s for s, p in enumerate(parents_kp) if p != 0}
        self.ik_levels = []  # (joints, their parents, their outgoing segments = bones)
        for lv in LEVELS:
            segs_idx = [out_seg[MANO_JOINT_TO_KEYPOINT[j]] for j in lv]
            self.ik_levels.append((be.index(lv), be.index([parents[j] for j in lv]), be.index(segs_idx)))
        self.palm = be.index(_PALM)
        self.bone_child = be.index(children_kp)
        self.bone_parent = be.index(parents_kp)
        self._parents = parents
        self._seg_joint = seg_joint
        # Subtrees: sub16[c, d] = 1 when joint d is c or below it; subseg[c, s] likewise for
        # the joint turning segment s. Ordered pairs (c, c') of joints on one chain and the
        # deeper of the two: the nonzero 3 x 3 blocks of the rotation part of H.
        below = np.eye(16)
        for d in range(16):
            p = int(parents[d])
            while p >= 0:
                below[p, d] = 1.0
                p = int(parents[p])
        self.sub16 = be.const(below)
        self.subseg = be.const(below[:, seg_joint])
        self.n_sub = be.const(below.sum(1))
        pairs = [(c1, c2, c2 if below[c1, c2] else c1)
                 for c1 in range(16) for c2 in range(16) if below[c1, c2] or below[c2, c1]]
        self._pair_c, self._pair_c2, pair_deep = (np.array(v) for v in zip(*pairs))
        self.pair_c, self.pair_c2, self.pair_deep = be.index(self._pair_c), be.index(self._pair_c2), be.index(pair_deep)
        self.aa = be.index(aa)
        self.mpair = be.const(-(inc[kk] - inc[np.asarray(MANO_JOINT_TO_KEYPOINT)[aa]]))  # -(kp_k - P_a) from rot
        # Anatomical angles in the order (twist, bend, spread), and the five entries of
        # A = F^T R F they need, as one product with R's entries: A21, A10, A22, A00, -A20.
        perm = [0, 2, 1]
        f15 = frames[1:]
        self.Fp = be.const(f15[:, :, perm])
        self.lo_p = be.const(limits[1:, perm, 0])
        self.hi_p = be.const(limits[1:, perm, 1])
        meul = np.zeros((15, 9, 5))
        for e, (i, j, sgn) in enumerate(((2, 1, 1), (1, 0, 1), (2, 2, 1), (0, 0, 1), (2, 0, -1))):
            meul[:, :, e] = sgn * (f15[:, :, i, None] * f15[:, None, :, j]).reshape(15, 9)
        self.Meul = be.const(meul)
        # Outer products F[:, i] F[:, i]^T of each angle's axis: the hinge's Gauss-Newton blocks.
        self.FF = be.const(np.einsum("jai,jbi->jiab", f15[:, :, perm], f15[:, :, perm]).reshape(15, 3, 9))
        self.kp_of_aa = be.index(np.asarray(MANO_JOINT_TO_KEYPOINT)[aa])
        sel = np.zeros((16, 20))
        sel[seg_joint, np.arange(20)] = 1.0
        self.sel = be.const(sel)  # (16, 20) joint of each segment, to sum per joint
        self._layouts: dict[int, tuple] = {}
        self._shape_blocks: dict[float, Any] = {}  # w_dir -> _direction_shape_block

    # ------------------------------------------------------------------ small pieces

    def skew(self, v):
        """(..., 3) -> (..., 3, 3) cross-product matrices."""
        return (v @ self.E9).reshape(v.shape[:-1] + (3, 3))

    def rodrigues(self, v):
        """(..., 3) axis-angle -> (..., 3, 3); stable at zero without branches."""
        xp = self.xp
        th = self.be.clamp(xp.sqrt((v * v).sum(-1)), 1e-12)[..., None, None]
        k = self.skew(v)
        a = xp.sin(th) / th
        h = xp.sin(0.5 * th) / th
        return self.I3 + a * k + (2.0 * h * h) * (k @ k)

    def cayley(self, v):
        """(..., 3) -> (..., 3, 3) rotations (I - W)^-1 (I + W), W = skew(v / 2): a cheap
        retraction, exp(skew(v)) to second order."""
        k = (v @ self.E9h).reshape(v.shape[:-1] + (3, 3))
        s = 2.0 / (1.0 + (v * v).sum(-1) * 0.25)
        return self.I3 + s[..., None, None] * (k + k @ k)

    def segments(self, beta):
        """(B, 20, 3) rest segments for shapes (B, S)."""
        return self.b0 + (beta @ self.bdirs_t).reshape(beta.shape[0], 20, 3)

    def keypoints(self, G, t, segs):
        """(B, 21, 3) keypoints, (B, 20, 3) rotated segments and (B, 20, 3, 3) G per segment."""
        Gs = G[:, self.seg_joint]
        rot = (Gs @ segs[..., None])[..., 0]
        return t[:, None] + self.inc @ rot, rot, Gs

    def local_from_global(self, G):
        """(B, 16, 3, 3) local rotations R_j = G_parent^T G_j (R_0 = G_0)."""
        return self.xp.concatenate([G[:, :1], G[:, self.par15].swapaxes(-1, -2) @ G[:, 1:]], 1)

    def global_from_local(self, R):
        """(B, 16, 3, 3) global rotations from local ones. MANO's joints 1 + 3 f + l are level
        l of finger f, so each level is a strided slice and its parent level the previous one."""
        xp = self.xp
        g1 = R[:, :1] @ R[:, 1::3]
        g2 = g1 @ R[:, 2::3]
        g3 = g2 @ R[:, 3::3]
        b = R.shape[0]
        return xp.concatenate([R[:, :1], xp.stack([g1, g2, g3], 2).reshape(b, 15, 3, 3)], 1)

    def anatomical_angles(self, R):
        """(B, 15, 3) anatomical angles of the local rotations, ordered (twist, bend, spread):
        the five entries A21, A10, A22, A00, -A20 of A = F^T R F come from one product."""
        xp = self.xp
        a5 = (R[:, 1:].reshape(R.shape[0], 15, 1, 9) @ self.Meul)[:, :, 0]
        return xp.concatenate([xp.arctan2(a5[..., :2], a5[..., 2:4]),
                               xp.arcsin(self.be.clamp(a5[..., 4:], -1.0, 1.0))], -1)

    def clamp_local(self, R):
        """Clamp each joint's anatomical angles into the model's limits (local rotations in and
        out; returns R itself when every joint is inside)."""
        xp = self.xp
        ang = self.anatomical_angles(R)
        cl = xp.minimum(xp.maximum(ang, self.lo_p), self.hi_p)
        if not bool((cl != ang).any()):
            return R
        # Rz(bend) Ry(spread) Rx(twist) from elementary rotations (basis in angle order).
        r = self.EAp + xp.cos(cl)[..., None, None] * self.CAp + xp.sin(cl)[..., None, None] * self.SAp
        fixed = self.F @ (r[..., 1, :, :] @ r[..., 2, :, :] @ r[..., 0, :, :]) @ self.FT
        return xp.concatenate([R[:, :1], fixed], 1)

    def _hinge(self, R):
        """The joint-limit hinge at local rotations R: (B, 15, 3) the anatomical angles'
        violations of the limits, angle - clamp(angle), and (B, 15, 3) bool where its
        Gauss-Newton blocks are on: outside the limits or within :data:`_LIMIT_EPS` of one."""
        xp = self.xp
        eps = self.limit_eps
        ang = self.anatomical_angles(R)
        viol = ang - xp.minimum(xp.maximum(ang, self.lo_p), self.hi_p)
        on = (ang < self.lo_p + eps) | (ang > self.hi_p - eps)
        return (viol if eps >= 0 else xp.where(on, viol, 0.0 * viol)), on

    @property
    def limit_eps(self) -> float:
        """The hinge's switch margin in use: :data:`_LIMIT_EPS`, else the backend's."""
        return self.be.limit_eps if _LIMIT_EPS is None else _LIMIT_EPS

    def project_limits(self, G):
        """The same for global rotations."""
        R = self.local_from_global(G)
        R2 = self.clamp_local(R)
        return G if R2 is R else self.global_from_local(R2)

    def axis_angle(self, R):
        """(..., 3, 3) rotations -> (..., 3) axis-angle: from sin(t) axis (the antisymmetric
        part) and cos(t) (the trace) by atan2; Shepperd's method where t is near pi."""
        xp = self.xp
        m = R.reshape(R.shape[:-2] + (1, 9)) @ self.VT  # (..., 1, 4): sin(t) axis, (tr - 1) / 2
        s, c = m[..., 0, :3], m[..., 0, 3:] - 0.5
        n = xp.sqrt((s * s).sum(-1))[..., None]
        if bool((c < -0.9).any()):
            return self.matrix_to_axis_angle(R)
        t = xp.arctan2(n, c)
        return s * xp.where(n < 1e-12, 1.0 + 0.0 * n, t / self.be.clamp(n, 1e-12))

    def keypoint_jacobian(self, R, t, beta):
        """Keypoints and their closed-form Jacobian, as the fit uses them.

        Args:
            R: (B, 16, 3, 3) local rotations, t: (B, 3) wrist position, beta: (B, S).

        Returns:
            keypoints (B, 21, 3) and d keypoints / d (delta, t, beta) (B, 21, 3, 51 + S), for
            the perturbations R_a <- R_a exp(delta_a) (columns 3a..3a+2), t <- t + dt (48..50)
            and beta <- beta + dbeta (51..).
        """
        xp, be = self.xp, self.be
        b = R.shape[0]
        S = self.num_betas
        G = self.global_from_local(R)
        segs = self.segments(beta)
        kp, rot, Gs = self.keypoints(G, t, segs)
        sk = (rot @ self.E9).reshape(b, 20, 9)
        blocks = (self.mpair @ sk).reshape(b, 50, 3, 3) @ G[:, self.aa]  # (B, 50, 3, 3)
        J = be.zeros(b, 21, 3, 16, 3)
        J[:, self.kk, :, self.aa] = blocks.swapaxes(0, 1)
        jb = (self.inc @ (Gs @ self.bdirs).reshape(b, 20, 3 * S)).reshape(b, 21, 3, S)
        jt = be.zeros(b, 21, 3, 3) + self.I3
        return kp, xp.concatenate([J.reshape(b, 21, 3, 48), jt, jb], -1)

    def rotation_between(self, a, b):
        """(..., 3, 3) minimal rotations taking unit vectors a onto unit vectors b."""
        v = (self.skew(a) @ b[..., None])[..., 0]
        c = (a * b).sum(-1)[..., None, None]
        k = self.skew(v)
        return self.I3 + k + (k @ k) / self.be.clamp(1.0 + c, 1e-6)

    def kabsch(self, a, b):
        """(B, 3, 3) rotations R minimizing sum |R a_i - b_i|^2 for point sets (B, N, 3)."""
        xp = self.xp
        u, _, vt = self.be.svd(a.swapaxes(1, 2) @ b)
        v = vt.swapaxes(1, 2)
        ut = u.swapaxes(1, 2)
        d = xp.sign(self.be.det(v @ ut))
        flip = xp.concatenate([xp.ones_like(d)[:, None], xp.ones_like(d)[:, None], d[:, None]], 1)
        return (v * flip[:, None, :]) @ ut

    def matrix_to_axis_angle(self, m):
        """(..., 3, 3) rotations -> (..., 3) axis-angle, angle in [0, pi] (Shepperd)."""
        xp, be = self.xp, self.be
        e = m.reshape(m.shape[:-2] + (9,))
        m00, m01, m02, m10, m11, m12, m20, m21, m22 = (e[..., i] for i in range(9))
        q_abs = xp.sqrt(be.clamp(xp.stack(
            [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1), 1e-12))
        cand = xp.stack([
            xp.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], -1),
            xp.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], -1),
            xp.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m21 + m12], -1),
            xp.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], -1),
        ], -2) / (2.0 * be.clamp(q_abs[..., None], 0.1))
        best = xp.argmax(q_abs, -1)
        onehot = (be.index(np.arange(4)) == best[..., None]) * 1.0
        q = (cand * onehot[..., None]).sum(-2)
        q = q / xp.sqrt((q * q).sum(-1))[..., None]
        q = xp.where(q[..., :1] < 0, -q, q)
        xyz = q[..., 1:]
        sin_half = xp.sqrt((xyz * xyz).sum(-1))[..., None]
        half = xp.arctan2(sin_half, q[..., :1])
        scale = xp.where(sin_half < 1e-6, 2.0 / be.clamp(q[..., :1], 1e-6), 2 * half / be.clamp(sin_half, 1e-12))
        return xyz * scale

    # ------------------------------------------------------------------ initialization

    def initialize(self, world, beta, clamp: bool = True):
        """Global joint rotations (B, 16, 3, 3) from world landmarks (B, 21, 3) by swing IK,
        projected into the joint limits unless ``clamp`` is False."""
        xp = self.xp
        b = world.shape[0]
        segs = self.segments(beta)
        rest = self.inc @ segs
        world_rel = world - world[:, :1]
        G = self.be.zeros(b, 16, 3, 3) + self.I3
        G[:, 0] = self.kabsch(rest[:, self.palm], world_rel[:, self.palm])
        # Every segment's rest direction and every bone's observed one, normalized at once (the
        # levels below take their bones' rows: elementwise, the same numbers level by level).
        rest_unit = segs / xp.sqrt((segs * segs).sum(-1))[..., None]
        bones = world[:, self.bone_child] - world[:, self.bone_parent]
        obs_unit = bones / self.be.clamp(xp.sqrt((bones * bones).sum(-1)), 1e-9)[..., None]
        for joints, par, segs_idx in self.ik_levels:
            rest_dir = rest_unit[:, segs_idx]
            obs = obs_unit[:, segs_idx]
            gp = G[:, par]
            target = (gp.swapaxes(-1, -2) @ obs[..., None])[..., 0]
            G[:, joints] = gp @ self.rotation_between(rest_dir, target)
        return self.project_limits(G) if clamp else G

    def initialize_local(self, world, beta):
        """The same as clamped local rotations (B, 16, 3, 3)."""
        return self.clamp_local(self.local_from_global(self.initialize(world, beta, clamp=False)))

    def root_from_2d(self, G, segs, uv, K):
        """Wrist position (B, 3) minimizing reprojection error for fixed rotations (Eq. 12).

        With X the keypoints relative to the wrist: (u - cx)(Z + tz) = fx (X + tx), linear in
        t; solved through its 3 x 3 normal equations.
        """
        xp = self.xp
        rel, _, _ = self.keypoints(G, self.be.zeros(G.shape[0], 3), segs)
        fx, fy, cx, cy = K[:, 0, 0, None], K[:, 1, 1, None], K[:, 0, 2, None], K[:, 1, 2, None]
        du, dv = uv[..., 0] - cx, uv[..., 1] - cy
        n = du.shape[1]
        A = self.be.zeros(G.shape[0], 2 * n, 3)  # rows (fx, 0, -du) then (0, fy, -dv)
        A[:, :n, 0], A[:, :n, 2], A[:, n:, 1], A[:, n:, 2] = fx, -du, fy, -dv
        y = xp.concatenate([du * rel[..., 2] - fx * rel[..., 0], dv * rel[..., 2] - fy * rel[..., 1]], 1)
        At = A.swapaxes(1, 2)
        return self.be.solve(At @ A, (At @ y[..., None])[..., 0])

    def _reprojection(self, G, cam, segs, uv, K):
        """(B,) mean squared reprojection error of a state, pixels^2."""
        xp = self.xp
        if K is not None:
            kp, _, _ = self.keypoints(G, cam, segs)
            z = self.be.clamp(kp[..., 2], 1e-3)
            u = K[:, None, 0, 0] * kp[..., 0] / z + K[:, None, 0, 2]
            v = K[:, None, 1, 1] * kp[..., 1] / z + K[:, None, 1, 2]
        else:
            rel, _, _ = self.keypoints(G, self.be.zeros(G.shape[0], 3), segs)
            s = xp.exp(cam[:, :1])
            u = s * rel[..., 0] + cam[:, 1:2]
            v = s * rel[..., 1] + cam[:, 2:3]
        return ((u - uv[..., 0]) ** 2 + (v - uv[..., 1]) ** 2).mean(-1)

    def weak_from_2d(self, G, segs, uv):
        """(B, 3) weak-perspective (log scale, tu, tv) by HandTailor Eq. 17, t at the wrist."""
        xp = self.xp
        rel, _, _ = self.keypoints(G, self.be.zeros(G.shape[0], 3), segs)
        xy = rel[..., :2]
        d = uv - uv[:, :1]
        xx = self.be.clamp((xy * xy).sum((1, 2)), 1e-12)
        s = (xy * d).sum((1, 2)) / xx
        # The least-squares scale collapses when the start orientation disagrees with the 2D
        # (a fist seen end-on, a mirrored start): fall back to the ratio of spreads, which is
        # always positive and of the right size.
        s_spread = xp.sqrt((d * d).sum((1, 2)) / xx)
        s = xp.where(s > 0.5 * s_spread, s, s_spread)
        return xp.stack([xp.log(self.be.clamp(s, 1e-3)), uv[:, 0, 0], uv[:, 0, 1]], -1)

    # ------------------------------------------------------------------ the tailor

    def _layout(self, P: int):
        """Flat positions in J2 (42 x P) and H (P x P) of the blocks each iteration writes."""
        if P not in self._layouts:
            i2, i3 = np.arange(2), np.arange(3)
            kk, aa = self._kk, self._aa
            pos2 = ((2 * kk[:, None, None] + i2[None, :, None]) * P + 3 * aa[:, None, None] + i3).reshape(-1)
            pc, pc2 = self._pair_c, self._pair_c2
            posh = ((3 * pc[:, None, None] + i3[None, :, None]) * P + 3 * pc2[:, None, None] + i3).reshape(-1)
            j = np.arange(1, 16)
            posl = ((3 * j[:, None, None] + i3[None, :, None]) * P + 3 * j[:, None, None] + i3).reshape(-1)
            # The direction term's Jacobian at G = I (only its shape columns are needed).
            rows = 3 * np.arange(20)[:, None, None] + i3[None, :, None]
            posd = (rows * P + 3 * self._seg_joint[:, None, None] + i3).reshape(-1)
            self._layouts[P] = tuple(self.be.index(x) for x in (pos2, posh, posl, posd))
        return self._layouts[P]

    def _direction_shape_block(self, w_dir: float):
        """(S, S) the direction term's shape-shape block of H, J^T J with J = (w_dir / |b0_s|)
        bdirs: it depends on the model and the weight only (made once per weight)."""
        block = self._shape_blocks.get(w_dir)
        if block is None:
            jdb = ((w_dir / self.seg_len)[:, None, None] * self.bdirs).reshape(60, self.num_betas)
            block = self._shape_blocks[w_dir] = jdb.swapaxes(0, 1) @ jdb
        return block

    def _use_kernel(self, native: bool | None) -> bool:
        """Whether :meth:`problem` builds its system with the C kernel (see ``native``)."""
        native = self.native if native is None else native
        if native is False or self.be.name != "numpy" or self.num_betas > _fit_native.MAX_BETAS:
            return False
        if native:
            _fit_native.LIBRARY.require()
            return True
        return _fit_native.available()

    def _kernel_topology(self) -> _fit_native.Topology:
        """This model's constants for the C kernel (NumPy backend; built once)."""
        if self._topology is None:
            self._topology = _fit_native.Topology(
                b0=self.b0, bdirs=self.bdirs, seg_parent=np.array([p for p, _ in BONES]),
                seg_child=np.array([c for _, c in BONES]), seg_joint=self._seg_joint, parents=self._parents,
                joint_kp=np.asarray(MANO_JOINT_TO_KEYPOINT), pair_k=self._kk, pair_a=self._aa,
                Fp=self.Fp, Meul=self.Meul, lo_p=self.lo_p, hi_p=self.hi_p, F=self.F,
            )
        return self._topology

    def fit(self, w: Weights, uv, world, K, beta, fit_shape: bool, n_iter: int,
            prev_pose=None, prev_t=None, has_prev=None) -> FitOutput:
        """Fit one batch of hands of this side (arguments as :meth:`problem`)."""
        xp, be = self.xp, self.be
        system, refresh, R, G, cam, beta = self.problem(w, uv, world, K, beta, fit_shape, prev_pose, prev_t, has_prev)
        b = uv.shape[0]
        kernel = getattr(system, "kernel", None)
        if kernel is not None and self.native_loop:  # the loop below, in one C call
            R, G, cam, beta, ran = kernel.run(
                R, G, cam, beta, n_iter=n_iter, project_every=w.project_every, refresh_every=_REFRESH,
                lm_lambda=w.lm_lambda, tolerance=w.tolerance, max_beta=MAX_BETA if fit_shape else 0.0,
                limit_eps=self.limit_eps)
            return self._outputs(R, G, cam, beta, uv, K, ran)
        P = 51 + (self.num_betas if fit_shape else 0)
        eyeP = be.const(np.eye(P))
        # Levenberg-Marquardt with closed-form Jacobians.
        lam = be.zeros(b, 1) + w.lm_lambda
        refresh(G, beta)
        H, g, cost = system(R, G, cam, beta)
        # A hand has converged when its last accepted step lowered its cost by less than the
        # tolerance (a fraction of the cost). After the first ``project_every`` iterations a
        # converged hand is frozen, so a batch gives each hand what fitting it alone gives.
        converged = be.zeros(b) > 0
        active = ~converged
        ran = be.zeros(b)
        for it in range(n_iter):
            if w.tolerance > 0 and it >= w.project_every:
                active = ~converged
                if not bool(active.any()):
                    break
            ran = ran + active
            if it and it % _REFRESH == 0:
                H = H + refresh(G, beta)
            diag = H.reshape(b, P * P)[:, :: P + 1]
            delta = -be.solve_spd(H + (lam * diag + 1e-6)[:, None, :] * eyeP, g)
            R_new = R @ self.cayley(delta[:, :48].reshape(b, 16, 3))
            if (it + 1) % w.project_every == 0:
                R_new = self.clamp_local(R_new)
            G_new = self.global_from_local(R_new)
            cam_new = cam + delta[:, 48:51]
            # Shapes beyond 3 SD are not hands the model describes: keep beta in the box, or
            # the optimizer trades size for depth to chase detector noise.
            beta_new = be.clamp(beta + delta[:, 51:], -MAX_BETA, MAX_BETA) if fit_shape else beta
            H_new, g_new, cost_new = system(R_new, G_new, cam_new, beta_new)
            # Keep a step only where it lowered the cost.
            ok = (cost_new < cost) & active
            converged = xp.where(ok, cost - cost_new < w.tolerance * cost, converged)
            if bool(ok.all()):
                R, G, cam, beta, H, g, cost = R_new, G_new, cam_new, beta_new, H_new, g_new, cost_new
                lam = lam * 0.5
            elif bool(ok.any()):
                R = xp.where(ok[:, None, None, None], R_new, R)
                G = xp.where(ok[:, None, None, None], G_new, G)
                cam = xp.where(ok[:, None], cam_new, cam)
                beta = xp.where(ok[:, None], beta_new, beta)
                H = xp.where(ok[:, None, None], H_new, H)
                g = xp.where(ok[:, None], g_new, g)
                cost = xp.where(ok, cost_new, cost)
                lam = xp.where(ok[:, None], lam * 0.5, lam * 4.0)
            else:
                lam = lam * 4.0
        R = self.clamp_local(R)
        return self._outputs(R, self.global_from_local(R), cam, beta, uv, K, ran)

    def problem(self, w: Weights, uv, world, K, beta, fit_shape: bool,
                prev_pose=None, prev_t=None, has_prev=None, native: bool | None = None):
        """Initialize a batch and set up its Gauss-Newton system.

        The unknowns are the local joint rotations, perturbed as ``R_a <- R_a exp(delta_a)``
        (a perturbation turns joint a's whole subtree, which is what makes the damped steps
        natural for a kinematic chain), the root / camera and, optionally, the shape.

        Args:
            w: weights. uv: (B, 21, 2) pixels. world: (B, 21, 3) or None. K: (B, 3, 3) or None
            (weak perspective). beta: (B, S) initial (or fixed) shape. fit_shape: optimize it.
            prev_pose: (B, 48) last frame's local pose (rows without one are ignored),
            prev_t: (B, 3) its wrist (perspective) or (log s, u, v) (weak), has_prev: (B,)
            bool, or all None. All arrays are of this solver's backend. native: overrides
            :attr:`native` (the C kernel for ``system``, or the NumPy closure).

        Returns:
            ``system(R, G, cam, beta) -> (H, g, cost)`` (the Gauss-Newton matrix, the gradient
            and the cost at a state, local parameterization) and the initial state
            ``R`` (B, 16, 3, 3) local rotations, ``G`` their global rotations, ``cam``, ``beta``.
        """
        xp, be = self.xp, self.be
        b = uv.shape[0]
        S = self.num_betas
        persp = K is not None
        has_world = world is not None
        P = 51 + (S if fit_shape else 0)
        pos2, posh, posl, posd = self._layout(P)

        # Initialization: analytic IK from the world landmarks; warm start from the last frame.
        if has_world:
            R = self.initialize_local(world, beta)
            G_init = G = self.global_from_local(R)
        else:
            R = G_init = G = be.zeros(b, 16, 3, 3) + self.I3
        temporal = has_prev is not None
        segs0 = self.segments(beta)
        # Step 1: the analytic scale / root.
        cam = self.root_from_2d(G, segs0, uv, K) if persp else self.weak_from_2d(G, segs0, uv)
        if temporal:
            prev_R = self.rodrigues(prev_pose.reshape(b, 16, 3))
            prev_G = self.global_from_local(prev_R)
            mask = has_prev[:, None]
            # Warm start from the last frame, unless the hand moved so fast that this frame's
            # own initialization reprojects better (a stale start ends in a wrong basin).
            cam_prev = self.root_from_2d(prev_G, segs0, uv, K) if persp else self.weak_from_2d(prev_G, segs0, uv)
            warm = mask[:, 0] & (self._reprojection(prev_G, cam_prev, segs0, uv, K)
                                 < self._reprojection(G, cam, segs0, uv, K))
            R = xp.where(warm[:, None, None, None], prev_R, R)
            G = self.global_from_local(R)
            cam = xp.where(warm[:, None], cam_prev, cam)

        # Constants of this fit.
        wi, ws, wl = w.w_identity, w.w_shape, w.w_limits
        hdiag = be.zeros(b, P)
        if fit_shape:
            hdiag[:, 51:] += ws * ws
        w_rot = be.zeros(b, 1) + wi * wi  # identity (+ temporal) weight on each joint's rotation
        if temporal:
            wt = w.w_temporal * mask  # (B, 1) rotations
            wtt = (w.w_temporal_transl if persp else w.w_temporal_weak) * mask  # (B, 1) root / camera
            w_rot = w_rot + wt * wt
            hdiag[:, 48:51] += wtt * wtt
            wt = wt[..., None]
            prev_GT = prev_G.swapaxes(-1, -2)
        h_const = be.zeros(b, P, P)
        diag = be.index(np.arange(P))
        h_const[:, diag, diag] = hdiag
        wlen = (w.w_dir / self.seg_len)[:, None, None]  # (20, 1, 1)
        wlen2 = wlen * wlen
        if has_world:
            obs = world[:, self.bone_child] - world[:, self.bone_parent]
            w_obs = w.w_dir * obs / be.clamp(xp.sqrt((obs * obs).sum(-1)), 1e-9)[..., None]
            if fit_shape:  # shape-shape block of the direction term: constant (G^T G = I)
                h_const[:, 51:, 51:] += self._direction_shape_block(w.w_dir)
        # The priors' rotation blocks: n_sub(d) w_rot I summed over the deeper joint's subtree.
        y_const = (self.n_sub[:, None, None] * self.I3) * w_rot[:, :, None, None]  # (B, 16, 3, 3)
        G_initT = G_init.swapaxes(-1, -2)
        J2buf = be.zeros(b, 42 * P)
        J2 = J2buf.reshape(b, 42, P)
        if persp:
            wrist = None
            KT = K.swapaxes(1, 2)
            K2 = K[:, None, :2, :]  # d(pixels)/d(point) = (K[:2] - pixel e3^T) / z
            e3 = self.I3[2]
        else:
            wrist = be.zeros(b, 1, 3)
            I2b = be.zeros(b, 21, 2, 2) + self.I2
            P23b = be.zeros(b, 21, 2, 3) + self.P23
        kk, aa, pc, pc2, pdeep = self.kk, self.aa, self.pair_c, self.pair_c2, self.pair_deep
        sub16, subseg, sel, inc = self.sub16, self.subseg, self.sel, self.inc
        seg_joint, mpair = self.seg_joint, self.mpair
        Fp = self.Fp
        wl2 = wl * wl
        h_dyn = h_const
        zeros3 = be.zeros(b, 3)
        FF = self.FF

        def refresh(G, beta):
            """Recompute the slowly varying part of H (the priors' and directions' rotation
            blocks) at the current state; returns its change."""
            nonlocal h_dyn
            Gs = G[:, seg_joint]
            rot = (Gs @ (self.segments(beta) if fit_shape else segs0)[..., None])[..., 0]
            y = y_const
            if has_world:
                # Bone directions: blocks w^2/|b0|^2 skew(r)^T skew(r) in the world frame.
                X = wlen2 * ((rot * rot).sum(-1)[..., None, None] * self.I3 - rot[..., :, None] * rot[..., None, :])
                y = y + (subseg @ X.reshape(b, 20, 9)).reshape(b, 16, 3, 3)
            new = be.copy(h_const)
            new.reshape(b, P * P)[:, posh] += (G[:, pc].swapaxes(-1, -2) @ y[:, pdeep] @ G[:, pc2]).reshape(b, -1)
            if fit_shape and has_world:
                gb = Gs @ self.bdirs
                Z = (subseg @ (wlen2 * (self.skew(rot) @ gb)).reshape(b, 20, 3 * S)).reshape(b, 16, 3, S)
                C = (G.swapaxes(-1, -2) @ Z).reshape(b, 48, S)
                new[:, :48, 51:] += C
                new[:, 51:, :48] += C.swapaxes(1, 2)
            change = new - h_dyn
            h_dyn = new
            return change

        def system(R, G, cam, beta):
            """H (B, P, P), g (B, P), cost (B,) at a state, in the local parameterization."""
            segs = self.b0 + (beta @ self.bdirs_t).reshape(b, 20, 3) if fit_shape else segs0
            Gs = G[:, seg_joint]
            rot = (Gs @ segs[..., None])[..., 0]  # (B, 20, 3) rotated segments
            kp = inc @ rot + (cam[:, None] if persp else wrist)
            if persp:
                iz = 1.0 / be.clamp(kp[..., 2:3], 1e-3)
                px = (kp @ KT)[..., :2] * iz
                dproj = iz[..., None] * (K2 - px[..., None] * e3)  # (B, 21, 2, 3)
                jcam = dproj
            else:
                s = xp.exp(cam[:, 0])[:, None, None]
                sxy = s * kp[..., :2]
                px = sxy + cam[:, None, 1:3]
                dproj = s[..., None] * P23b
                jcam = xp.concatenate([sxy[..., None], I2b], -1)
            # The 2D term: turning joint a's subtree by G_a delta about its joint P_a moves a
            # keypoint k below it by -skew(kp_k - P_a) G_a delta (one 3 x 3 block per pair).
            sk = (rot @ self.E9).reshape(b, 20, 9)  # skew(rot), flattened
            J2buf[:, pos2] = (dproj[:, kk] @ ((mpair @ sk).reshape(b, 50, 3, 3) @ G[:, aa])).reshape(b, -1)
            J2[:, :, 48:51] = jcam.reshape(b, 42, 3)
            if fit_shape:
                gb = Gs @ self.bdirs  # (B, 20, 3, S)
                J2[:, :, 51:] = (dproj @ (inc @ gb.reshape(b, 20, 3 * S)).reshape(b, 21, 3, S)).reshape(b, 42, S)
            r2 = (px - uv).reshape(b, 42, 1)
            J2t = J2.swapaxes(1, 2)
            H = J2t @ J2 + h_dyn
            g = (J2t @ r2)[..., 0]
            # The rotation priors, as gradients x_d w.r.t. each joint's own rotation G_d exp(x).
            wphi = wi * ((G_initT @ G).reshape(b, 16, 9) @ self.V9)
            x = wi * wphi
            pieces = [r2.reshape(b, 42), wphi.reshape(b, 48)]
            if temporal:
                wphi_t = wt * ((prev_GT @ G).reshape(b, 16, 9) @ self.V9)
                x = x + wt * wphi_t
                wdt = wtt * (cam - prev_t)
                g_cam = wtt * wdt
                pieces += [wphi_t.reshape(b, 48), wdt]
            else:
                g_cam = zeros3
            yw = (G @ x[..., None])[..., 0]  # in the world frame
            if has_world:
                # r_s = w (G_a b_s / |b0_s| - o_s); its gradient in the world frame: skew(r) w r_s.
                r_dir = wlen[..., 0] * rot - w_obs  # (B, 20, 3)
                pieces.append(r_dir.reshape(b, 60))
                wr = wlen * r_dir[..., None]  # (B, 20, 3, 1)
                yw = yw + sel @ (sk.reshape(b, 20, 3, 3) @ wr)[..., 0]
            if fit_shape:
                g_beta = ws * ws * beta
                pieces.append(ws * beta)
                if has_world:
                    g_beta = g_beta + (gb.reshape(b, 60, S).swapaxes(1, 2) @ wr.reshape(b, 60, 1))[..., 0]
            # To the local parameterization: delta_c turns joint c and every joint d below it
            # by G_c delta_c, so g_c = G_c^T sum_{d >= c} (world-frame gradient of d).
            g_rot = (G.swapaxes(-1, -2) @ (sub16 @ yw)[..., None])[..., 0]
            # Joint limits: a hinge on each anatomical angle (here ordered twist, bend, spread);
            # R_j exp(d_j) moves them by ~F^T d_j.
            viol, on = self._hinge(R)
            if bool(on.any()):
                H.reshape(b, P * P)[:, posl] += (((wl2 * on)[..., None, :] @ FF)).reshape(b, -1)
                g_rot[:, 1:] += (Fp @ (wl2 * viol)[..., None])[..., 0]
                pieces.append(wl * viol.reshape(b, 45))
            v = xp.concatenate(pieces, 1)
            parts = [g_rot.reshape(b, 48), g_cam, g_beta] if fit_shape else [g_rot.reshape(b, 48), g_cam]
            return H, g + xp.concatenate(parts, 1), (v * v).sum(1)

        if self._use_kernel(native):
            kernel = _fit_native.FitSystem(
                self._kernel_topology(), fit_shape, uv, K, G_init, wlen.reshape(20), w_obs if has_world else None,
                segs0, *((prev_G, wt, wtt, prev_t) if temporal else (None,) * 4), wi, ws, wl,
                h_const=h_const, w_rot=w_rot)

            def system_native(R, G, cam, beta):
                """``system``'s H, g, cost from one C call (:mod:`core.fit._native`); the limits'
                violations as above, bit for bit (the hinge switches on at the last bit)."""
                viol, on = self._hinge(R)
                return kernel(G, cam, beta, viol, h_dyn, on)

            system_native.kernel = kernel  # SideSolver.fit runs its whole loop through it
            return system_native, refresh, R, G, cam, beta
        return system, refresh, R, G, cam, beta

    def _outputs(self, R, G, cam, beta, uv, K, iterations) -> FitOutput:
        xp, be = self.xp, self.be
        b = G.shape[0]
        if K is not None:
            wrist = cam
        else:
            wrist = be.zeros(b, 3)  # placed in a nominal camera by the caller
        kp, _, _ = self.keypoints(G, wrist, self.segments(beta))
        if K is not None:
            f = xp.stack([K[:, 0, 0], K[:, 1, 1]], -1)[:, None]
            c = xp.stack([K[:, 0, 2], K[:, 1, 2]], -1)[:, None]
            px = kp[..., :2] / be.clamp(kp[..., 2:3], 1e-3) * f + c
            scale = K[:, 0, 0] / be.clamp(cam[:, 2], 1e-3)
        else:
            s = xp.exp(cam[:, 0])
            px = s[:, None, None] * kp[..., :2] + cam[:, None, 1:3]
            scale = s
        d = px - uv
        err = xp.sqrt((d * d).sum(-1)).mean(-1)
        pose = self.axis_angle(R).reshape(b, 48)
        transl = wrist - (self.j0w + beta @ self.jdirs_w_t)
        n = be.numpy
        return FitOutput(
            pose=n(pose).astype(np.float32), betas=n(beta).astype(np.float32), transl=n(transl).astype(np.float32),
            keypoints_3d=n(kp).astype(np.float32), keypoints_2d=n(px).astype(np.float32),
            error_px=n(err).astype(np.float64), scale=n(scale).astype(np.float64),
            iterations=n(iterations).astype(np.int64),
        )
