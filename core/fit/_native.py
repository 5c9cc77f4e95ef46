"""The tailor's Gauss-Newton system in C: ``system(R, G, cam, beta) -> (H, g, cost)`` in one call.

:meth:`core.fit.solver.SideSolver.problem` builds the system of one Levenberg-Marquardt
iteration from about forty small NumPy operations; on the CPU that closure is dispatch-bound
(~0.3 ms for a few thousand flops) and is half of a hand's fit. :class:`FitSystem` computes
the same quantities, for the same batch, in one C call; the NumPy closure stays the reference
(the tests compare the two to float rounding) and the path where nothing compiles.

Per hand (B hands, S shape coefficients, P = 51 or 51 + S unknowns), with segments
``b_s = b0_s + bdirs_s beta`` (or the fixed ``segs0``), rotated segments ``r_s = G_a(s) b_s``,
keypoints ``kp_k = t + sum_{s on the path to k} r_s`` (t = cam in perspective, 0 in weak):

* 2D term, rows ``px_k - uv_k``: perspective ``px = (K kp)_xy / max(z, 1e-3)`` with
  ``d px / d kp = (K_xy - px e3^T) / z``; weak ``px = exp(cam_0) kp_xy + cam_12``. The rotation
  columns of joint a for keypoint k are ``d px / d kp (-skew(kp_k - P_a)) G_a``, the camera
  columns ``d px / d kp`` (perspective) or ``[exp(cam_0) kp_xy, I]`` (weak), the shape columns
  ``d px / d kp sum_s G_a(s) bdirs_s``. ``H = J^T J + h_dyn`` (the slowly refreshed blocks of the
  other terms, an input), ``g = J^T r``.
* the priors ``w_i vee(G_init^T G_d)`` (and ``w_t vee(G_prev^T G_d)``, ``w_tt (cam - prev_t)``
  with temporal data), the bone directions ``w_dir / |b0_s| r_s - w_obs_s``, the shape prior
  ``w_s beta``: their world-frame gradients per joint, carried to the local parameterization
  by subtree sums ``g_c = G_c^T sum_{d >= c} y_d``; the direction term's shape gradient.
* the joint-limit hinge ``w_l (angle - clamp(angle, lo, hi))`` on the anatomical angles, with
  its blocks ``w_l^2 f f^T`` on the joint's diagonal block and its gradient, where violated.
  The violations and where the hinge is on are an input, computed by the caller with the
  reference's own NumPy code (``SideSolver._hinge``: a state just projected onto the limits
  has its angles on them, where the switch depends on the last bit of atan2 / asin unless it
  has a margin, ``solver._LIMIT_EPS``).

``cost`` is the sum of all squared residuals, as the NumPy closure's.

:meth:`FitSystem.run` runs ``SideSolver.fit``'s whole Levenberg-Marquardt loop in one call
(``fit_loop_f64``), each hand on its own: the damped solve (Cholesky, LU where that fails),
the Cayley retraction, the projection onto the joint limits (the anatomical angles, computed
in C, with the same margin), the system above, the refresh of the slowly varying blocks, the
accept / reject / damping logic and the tolerance freeze. A fit through it matches the NumPy
loop to float rounding with a margin on the hinge's switch (the tests compare them); without
one, fits where a joint sits on its limit part by the last bit of the angles (a few mm on
single fits, the same accuracy over sets).

The C source is ``fit.c``. Built on first use by :class:`core.native.NativeLibrary` (system
C compiler, cached).
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

import numpy as np

from core.native import NativeLibrary, address, kernel_source

__all__ = ["LIBRARY", "MAX_BETAS", "FitSystem", "Topology", "available"]

#: Most shape coefficients the kernel takes (the caller falls back to NumPy beyond).
MAX_BETAS = 32

def source() -> str:
    """The complete C source."""
    return kernel_source(__file__, "fit.c", [("MAX_BETAS_VALUE", str(MAX_BETAS))])


def _declare(lib: ctypes.CDLL) -> None:
    fn = lib.fit_system_f64
    fn.argtypes = [ctypes.c_void_p] * 4
    fn.restype = None
    fn = lib.fit_loop_f64
    fn.argtypes = [ctypes.c_void_p] * 6
    fn.restype = None


#: The kernel's library (built on first use).
LIBRARY = NativeLibrary("fit", source, _declare, hold_gil=True)  # ~10 us a call


def available() -> bool:
    """Whether the kernel built (builds it on the first call)."""
    return LIBRARY.get() is not None


def _f64(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float64)


@dataclass(frozen=True)
class Topology:
    """One hand model's constants the kernel reads (NumPy; built once per solver).

    Attributes:
        b0: (20, 3) rest segments, metres. bdirs: (20, 3, S) their shape directions.
        seg_parent, seg_child: (20,) int keypoints at each segment's ends (parents first).
        seg_joint: (20,) int joint turning each segment. parents: (16,) int MANO tree
            (parents[d] < d). joint_kp: (16,) int keypoint of each joint.
        pair_k, pair_a: (n,) int the (keypoint, joint above it) pairs, keypoints ascending.
        Fp: (15, 3, 3) each angle's axis (columns) in the joint's frame.
        Meul: (15, 9, 5) the anatomical angles' entries of ``F^T R F`` from ``R``'s.
        lo_p, hi_p: (15, 3) the joint limits (twist, bend, spread), radians.
        F: (15, 3, 3) the joints' rest frames (the loop's projection onto the limits).
    """

    b0: np.ndarray
    bdirs: np.ndarray
    seg_parent: np.ndarray
    seg_child: np.ndarray
    seg_joint: np.ndarray
    parents: np.ndarray
    joint_kp: np.ndarray
    pair_k: np.ndarray
    pair_a: np.ndarray
    Fp: np.ndarray
    Meul: np.ndarray
    lo_p: np.ndarray
    hi_p: np.ndarray
    F: np.ndarray

    def __post_init__(self) -> None:
        if not (np.all(np.diff(self.pair_k) >= 0) and np.all(self.parents[1:] < np.arange(1, 16))
                and np.all(self.seg_parent < self.seg_child)):
            raise ValueError("the kernel needs pairs sorted by keypoint and parents before children")

    @functools.cached_property
    def config_tail(self) -> np.ndarray:
        """The topology's part of a :class:`FitSystem`'s int64 configuration (after the eight
        per-fit entries), made once."""
        return np.concatenate([np.asarray(a, dtype=np.int64).reshape(-1) for a in (
            self.seg_parent, self.seg_child, self.seg_joint, self.parents, self.joint_kp, self.pair_k, self.pair_a)])


class FitSystem:
    """``system(G, cam, beta, viol, h_dyn) -> (H, g, cost)`` of one fit (one batch) in C.

    Args (NumPy float64; B hands):
        top: the model's :class:`Topology`. fit_shape: shape columns (P = 51 + S) or not (51).
        uv: (B, 21, 2) pixels. K: (B, 3, 3) or None (weak perspective). G_init: (B, 16, 3, 3)
        the identity prior's rotations. wlen: (20,) w_dir / |b0_s|. w_obs: (B, 20, 3) weighted
        observed directions, or None (no direction term). segs0: (B, 20, 3) the segments when
        the shape is fixed. prev_G: (B, 16, 3, 3), wt, wtt: (B,) weights (0 where a hand has no
        previous frame), prev_t: (B, 3), or all None (no temporal term). wi, ws, wl: identity,
        shape and limit weights. h_const: (B, P, P) the constant part of ``h_dyn`` and
        w_rot: (B,) the priors' weight on each rotation, squared (identity + temporal), both
        needed by :meth:`run` only.
    """

    def __init__(self, top: Topology, fit_shape: bool, uv, K, G_init, wlen, w_obs, segs0,
                 prev_G, wt, wtt, prev_t, wi: float, ws: float, wl: float,
                 h_const=None, w_rot=None) -> None:
        self._top = top
        self._loop_keep = None if h_const is None else [
            _f64(top.Meul), _f64(top.lo_p), _f64(top.hi_p), _f64(top.F), _f64(h_const),
            _f64(np.reshape(w_rot, -1))]
        lib = LIBRARY.require()
        self._fn = lib.fit_system_f64
        self.B = b = uv.shape[0]
        S = top.bdirs.shape[-1]
        if S > MAX_BETAS:
            raise ValueError(f"the kernel takes at most {MAX_BETAS} shape coefficients, not {S}")
        self.P = 51 + (S if fit_shape else 0)
        temporal = prev_G is not None
        head = [b, S, self.P, K is not None, fit_shape, w_obs is not None, temporal, len(top.pair_k)]
        self._cfg = np.concatenate([np.asarray(head, dtype=np.int64), top.config_tail])
        # The state is copied into one buffer per call (cheaper than looking up four addresses).
        self._state = np.zeros(b * (144 + 3 + S + 90))
        n = b * 144
        self._G = self._state[:n].reshape(b, 16, 3, 3)
        self._cam = self._state[n:n + 3 * b].reshape(b, 3)
        self._beta = self._state[n + 3 * b:n + 3 * b + b * S].reshape(b, S)
        self._viol = self._state[n + 3 * b + b * S:].reshape(b, 2, 15, 3)
        self._fit_shape = fit_shape
        arrays = [top.b0, top.bdirs, None if fit_shape else segs0, G_init, w_obs, wlen,
                  prev_G, None if wt is None else np.reshape(wt, b), None if wtt is None else np.reshape(wtt, b),
                  prev_t, K, uv, top.Fp, np.array([wi, ws, wl]), self._state]
        self._keep = [None if a is None else _f64(a) for a in arrays]
        self._cp = np.asarray([0 if a is None else address(a) for a in self._keep], dtype=np.int64)
        self._cfg_ptr, self._cp_ptr = address(self._cfg), address(self._cp)
        self._h = self._h_ptr = None
        self._h_shape = (b, self.P, self.P)

    def __call__(self, G: np.ndarray, cam: np.ndarray, beta: np.ndarray | None, viol: np.ndarray,
                 h_dyn: np.ndarray, on: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """H (B, P, P), g (B, P), cost (B,) at a state: G (B, 16, 3, 3) global rotations,
        cam (B, 3), beta (B, S) (read only when fitting the shape), viol (B, 15, 3) the
        anatomical angles' violations of the joint limits (twist, bend, spread; 0 inside),
        h_dyn (B, P, P), on (B, 15, 3) bool where the hinge's blocks enter H (default: where
        violated). Not reentrant (one state buffer): one call at a time."""
        b, P = self.B, self.P
        self._G[...] = G
        self._viol[:, 0] = viol
        self._viol[:, 1] = viol != 0 if on is None else on
        self._cam[...] = cam
        if self._fit_shape:
            self._beta[...] = beta
        if h_dyn is not self._h:  # h_dyn changes every few iterations: keep its address
            h = _f64(h_dyn)
            if h.shape != self._h_shape:
                raise ValueError(f"h_dyn is {h.shape}, not {self._h_shape}")
            self._h, self._h_ptr, self._h_keep = h_dyn, address(h), h
        out = np.empty(b * (P * P + P + 1))  # one allocation: H, then g, then cost
        self._fn(self._cfg_ptr, self._cp_ptr, self._h_ptr, address(out))
        n = b * P * P
        H = out[:n].reshape(b, P, P)
        g = out[n:n + b * P].reshape(b, P)
        cost = out[n + b * P:]
        return H, g, cost

    def run(self, R: np.ndarray, G: np.ndarray, cam: np.ndarray, beta: np.ndarray, *, n_iter: int,
            project_every: int, refresh_every: int, lm_lambda: float, tolerance: float,
            max_beta: float, limit_eps: float = 0.0):
        """The whole Levenberg-Marquardt loop of :meth:`core.fit.solver.SideSolver.fit` in one
        C call, each hand on its own: the damped solve (Cholesky, else LU), the Cayley
        retraction, the projection onto the limits every ``project_every`` iterations, the
        system, the refresh of ``h_dyn`` every ``refresh_every`` iterations, the accept / reject
        and damping logic and the tolerance freeze; then the final projection.

        Args:
            R, G: (B, 16, 3, 3) the start's local and global rotations; cam (B, 3); beta (B, S).
            limit_eps: the hinge's blocks enter H where an angle is outside its limits or
                within this (radians) of one (:func:`core.fit.solver.SideSolver._hinge`).

        Returns:
            R, G (projected onto the limits), cam, beta, ran: (B,) int64 iterations run.
        """
        if self._loop_keep is None:
            raise ValueError("this FitSystem was built without h_const / w_rot")
        b, P, S = self.B, self.P, self._beta.shape[1]
        io = np.concatenate([np.reshape(R, -1), np.reshape(G, -1), np.reshape(cam, -1),
                             np.reshape(beta, -1), np.zeros(b)]).astype(np.float64, copy=False)
        scalars = np.array([lm_lambda, tolerance, max_beta, limit_eps], dtype=np.float64)
        lp = np.asarray([address(a) for a in (*self._loop_keep, scalars)], dtype=np.int64)
        lcfg = np.array([n_iter, max(1, project_every), max(1, refresh_every)], dtype=np.int64)
        work = np.empty(6 * P * P)
        LIBRARY.require().fit_loop_f64(self._cfg_ptr, self._cp_ptr, address(lcfg), address(lp),
                                       address(io), address(work))
        n = b * 144
        R = io[:n].reshape(b, 16, 3, 3)
        G = io[n:2 * n].reshape(b, 16, 3, 3)
        cam = io[2 * n:2 * n + 3 * b].reshape(b, 3)
        beta_out = io[2 * n + 3 * b:2 * n + 3 * b + b * S].reshape(b, S)
        ran = io[2 * n + 3 * b + b * S:].astype(np.int64)
        return R, G, cam, beta_out, ran
