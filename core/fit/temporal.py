"""Causal temporal smoothing of a tracked hand's fit: One Euro filters on its pose and root.

The tailor already pulls each frame toward the previous one (its temporal term), but a fit
follows its detections, and MediaPipe's keypoints jitter by a pixel or more even on a hand at
rest. The One Euro filter (Casiez, Roussel and Vogel, CHI 2012) is a first-order low-pass
filter whose cutoff rises with the signal's speed: at rest a low cutoff removes jitter, in fast
motion a high cutoff keeps the lag small. Per step, with ``dt`` the time since the last frame,

    alpha(fc) = 1 / (1 + 1 / (2 pi fc dt))
    dx  = (x - x_hat_prev) / dt,   dx_hat = dx_hat_prev + alpha(f_d) (dx - dx_hat_prev)
    fc  = f_min + beta |dx_hat|,   x_hat  = x_hat_prev + alpha(fc) (x - x_hat_prev)

Here it runs on the fit's parameters, not on its keypoints, so a smoothed hand stays a hand:

- **joint rotations** (16 local rotations, the pose's axis-angle): the difference ``x -
  x_hat_prev`` is the rotation taking the smoothed rotation to the new one, as an axis-angle
  vector (the logarithm of ``R_hat^T R``), and the step moves along it (``R_hat exp(alpha
  delta)``): a geodesic step on rotation matrices, free of axis-angle's wrap-around at pi. Each
  joint has its own cutoff, driven by its angular speed (rad/s). The exponential and logarithm
  are the fit's own (:class:`core.fit.solver.SideSolver`, NumPy: a fraction of a millisecond);
- **the root** as (u, v, log s): the wrist's pixel position and the log of the fit's scale
  (pixels per metre; fx / depth with a known camera). The position's speed is measured in hand
  sizes (the detected keypoints' box diagonal) per second, so one setting fits hands of any
  image size; the scale (depth) has its own filter.

The shape is not filtered (with a profile it is fixed; without one the tailor's warm start
keeps it steady). :class:`HandSmoother` keeps one filter state per hand; the engine keys them
by the hand's identity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from core.fit.tailor import HandFit, TailorFitter


@dataclass(frozen=True)
class OneEuro:
    """One One Euro filter's parameters.

    Attributes:
        min_cutoff_hz: cutoff frequency at rest, Hz (lower: smoother, more lag when slow).
        beta: how fast the cutoff rises with speed, Hz per unit of speed (higher: less lag
            in fast motion).
        d_cutoff_hz: cutoff of the speed estimate's own low-pass filter, Hz.
    """

    min_cutoff_hz: float
    beta: float
    d_cutoff_hz: float = 1.0


@dataclass(frozen=True)
class SmoothingSettings:
    """The temporal filter of a tracked hand's fit (:class:`HandSmoother`).

    Attributes:
        rotation: the joint rotations' filter; speed in rad/s.
        position: the wrist's pixel position's filter; speed in hand sizes per second.
        scale: the log scale's (depth's) filter; speed in 1/s.
        max_gap_s: a hand unseen for longer starts its filter afresh.
    """

    # Rotations: a low cutoff at rest but a steep rise with angular speed. (4 Hz, beta 0.3)
    # smoothed as well at rest, but on the real gesture clip (fingers articulating fast) it
    # tripled the fit's reprojection error (2.2 -> 7.5 px median); (2 Hz, 3) keeps the jitter
    # ratio under 0.8 on the demo and the real clip at 4.0 px (sweep in the issue 15 note).
    rotation: OneEuro = field(default_factory=lambda: OneEuro(2.0, 3.0))
    position: OneEuro = field(default_factory=lambda: OneEuro(4.0, 3.0))
    scale: OneEuro = field(default_factory=lambda: OneEuro(2.0, 2.0))
    max_gap_s: float = 0.5


def alpha(cutoff_hz: np.ndarray | float, dt: float) -> np.ndarray:
    """The exponential smoothing factor of a first-order low-pass at ``cutoff_hz`` for step dt."""
    return 1.0 / (1.0 + 1.0 / (2.0 * math.pi * np.asarray(cutoff_hz, dtype=np.float64) * dt))


class OneEuroStep:
    """The One Euro filter's adaptive step for a group of signals, on any manifold.

    The caller keeps the smoothed value and measures the innovation ``x - x_hat_prev`` in its
    own tangent space (a rotation's log, a vector's difference); :meth:`step` returns the
    fraction of it to move by. State: the smoothed speed of each signal.

    Args:
        params: the filter's parameters.
    """

    def __init__(self, params: OneEuro) -> None:
        self.params = params
        self.speed: np.ndarray | None = None

    def step(self, innovation: np.ndarray, dt: float, unit: float = 1.0) -> np.ndarray:
        """(N, k) innovations of N signals -> (N, 1) step fractions alpha(fc).

        ``unit`` divides the innovation's norm before it drives the cutoff (a hand size in
        pixels, so a position's speed is in hand sizes per second).
        """
        p = self.params
        rate = np.linalg.norm(innovation, axis=-1) / (max(dt, 1e-6) * max(unit, 1e-9))
        if self.speed is None:
            self.speed = rate
        else:
            self.speed = self.speed + alpha(p.d_cutoff_hz, dt) * (rate - self.speed)
        return alpha(p.min_cutoff_hz + p.beta * self.speed, dt)[:, None]


def fit_root(fit: HandFit) -> np.ndarray:
    """(3,) the fit's root as (u, v, log s): the wrist's pixels and the log of its scale."""
    u, v = fit.keypoints_2d[0]
    return np.array([u, v, math.log(max(fit.scale, 1e-9))], dtype=np.float64)


class HandSmoother:
    """The filter state of one tracked hand; :meth:`__call__` smooths its next fit.

    Args:
        fitter: poses the smoothed parameters into a fit (:meth:`TailorFitter.compose`).
        settings: the filters' parameters.
    """

    def __init__(self, fitter: TailorFitter, settings: SmoothingSettings = SmoothingSettings()) -> None:
        self.fitter = fitter
        self.settings = settings
        self._rot = OneEuroStep(settings.rotation)
        self._pos = OneEuroStep(settings.position)
        self._scale = OneEuroStep(settings.scale)
        self._G: np.ndarray | None = None  # (16, 3, 3) float64 smoothed global joint rotations
        self._root: np.ndarray | None = None  # (3,) smoothed (u, v, log s)
        self._time = -math.inf
        self._key: tuple[str, str] | None = None  # (side, projection) the state belongs to

    @property
    def time(self) -> float:
        """Seconds of the last fit this filter saw (-inf: none)."""
        return self._time

    def reset(self) -> None:
        """Forget the hand (the next fit passes unchanged and starts the filters)."""
        self.__init__(self.fitter, self.settings)

    def __call__(self, fit: HandFit, t: float, keypoints_2d: np.ndarray, K: np.ndarray | None,
                 image_size: tuple[int, int]) -> HandFit:
        """Smooth ``fit`` (this frame's, at time ``t`` seconds) and return the smoothed fit.

        Args:
            keypoints_2d: (21, 2) the detected keypoints, pixels (the smoothed fit's
                reprojection error is measured against them; their box sets the hand's size).
            K: (3, 3) intrinsics, or None on the weak-perspective path.
            image_size: (width, height), pixels.

        The first fit, a fit after a gap longer than ``max_gap_s``, or one of another side or
        projection starts the filters afresh and is returned as it is.
        """
        dt = t - self._time
        key = (fit.side, fit.projection)
        solver = self.fitter.solver(fit.side)
        be = solver.be
        R = be.numpy(solver.rodrigues(be.const(np.asarray(fit.pose, dtype=np.float64).reshape(1, 16, 3))))
        G = be.numpy(solver.global_from_local(be.const(R)))[0].astype(np.float64)  # bones' orientations
        root = fit_root(fit)
        if self._G is None or key != self._key or not 0.0 < dt <= self.settings.max_gap_s:
            self.reset()
            self._G, self._root, self._time, self._key = G, root, t, key
            return fit
        kp = np.asarray(keypoints_2d, dtype=np.float64)
        size = float(np.linalg.norm(kp.max(0) - kp.min(0)))
        # Rotations: geodesic steps from the smoothed orientation toward the new one, per bone.
        delta = be.numpy(solver.axis_angle(be.const(self._G.swapaxes(-1, -2) @ G))).astype(np.float64)  # (16, 3) rad
        a_rot = self._rot.step(delta, dt)
        self._G = self._G @ be.numpy(solver.rodrigues(be.const(delta * a_rot))).astype(np.float64)
        # Root: the wrist's pixels (hand sizes per second) and the log scale.
        d_root = root - self._root
        a_pos = self._pos.step(d_root[None, :2], dt, unit=size)[0, 0]
        a_scale = self._scale.step(d_root[None, 2:], dt)[0, 0]
        self._root = self._root + np.array([a_pos, a_pos, a_scale]) * d_root
        self._time = t
        R = be.numpy(solver.local_from_global(be.const(self._G[None])))[0]
        return self.fitter.compose(fit.side, R, fit.betas, self._root, K, image_size, kp, fit.iterations)
