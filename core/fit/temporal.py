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
- **the root** as (u, v, log s): with a camera, the pixel position of the hand's keypoint
  centroid and the log of fx over its depth (:func:`centroid_root`); on the weak-perspective
  path the wrist's pixels and the log of the fit's scale (:func:`fit_root`). The centroid, not
  the wrist: a fit trades its wrist's position against its global rotation (turning the hand a
  little about the wrist moves every fingertip), so the wrist and the rotation jitter together
  and filtering them apart broke that balance (on the rendered moving and fast clips the
  residual jitter was 1.02 and 1.06x MediaPipe's with the wrist, 0.78 and 0.86x with the
  centroid and the settings below). The position's speed is measured in hand sizes (the detected keypoints' box
  diagonal) per second, so one setting fits hands of any image size; the scale (depth) has its
  own filter.

The shape is not filtered (with a profile it is fixed; without one the tailor's warm start
keeps it steady). :class:`HandSmoother` keeps one filter state per hand; the engine keys them
by the hand's identity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

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
    # With the centroid root, rotations (2 Hz, beta 1) and the position (6 Hz, 3): residual
    # jitter 0.78 / 0.86x MediaPipe's on the rendered moving / fast clips (wrist root with
    # (2, 3) / (4, 3): 1.02 / 1.06), 0.61 on the demo; the real clip's plain jitter 0.78x
    # (0.77 before) at a median reprojection error of 4.65 px (3.99 before). With the default
    # hand of data version 6 (`bench --only temporal`): 0.68 / 0.81, demo 0.56, real 0.78. A higher position
    # cutoff (8 Hz) jittered less on the clips but more on tests/test_temporal.py's synthetic
    # fit noise; a lower rotation beta (0.5) smoothed more and raised the real clip's error to 5.3 px.
    rotation: OneEuro = field(default_factory=lambda: OneEuro(2.0, 1.0))
    position: OneEuro = field(default_factory=lambda: OneEuro(6.0, 3.0))
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


def centroid_root(fit: HandFit, K: np.ndarray) -> np.ndarray:
    """(3,) the root of a perspective fit as (u, v, log s): the pixels of its keypoints'
    centroid and the log of fx over the centroid's depth. K: (3, 3) intrinsics."""
    c = np.asarray(fit.keypoints_3d, dtype=np.float64).mean(0)
    z = max(float(c[2]), 1e-6)
    return np.array([K[0, 0] * c[0] / z + K[0, 2], K[1, 1] * c[1] / z + K[1, 2], math.log(K[0, 0] / z)])


def _at_centroid(fit: HandFit, root: np.ndarray, K: np.ndarray, keypoints_2d: np.ndarray) -> HandFit:
    """The perspective ``fit`` moved (not turned) so that its keypoints' centroid is at ``root``
    (:func:`centroid_root`); its 2D keypoints, error and scale follow (as the fitter reports them)."""
    u, v, log_s = (float(x) for x in root)
    z = K[0, 0] / math.exp(log_s)
    target = np.array([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z])
    kp3 = np.asarray(fit.keypoints_3d, dtype=np.float64)
    delta = target - kp3.mean(0)
    kp3 = kp3 + delta
    depth = np.maximum(kp3[:, 2:], 1e-6)
    kp2 = kp3[:, :2] / depth * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    return replace(fit, transl=(np.asarray(fit.transl, np.float64) + delta).astype(np.float32),
                   keypoints_3d=kp3.astype(np.float32), keypoints_2d=kp2.astype(np.float32),
                   reprojection_error_px=float(np.linalg.norm(kp2 - keypoints_2d, axis=1).mean()),
                   scale=float(K[0, 0] / depth[0, 0]))


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
        Kd = None if K is None else np.asarray(K, dtype=np.float64)
        root = fit_root(fit) if Kd is None else centroid_root(fit, Kd)
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
        # Root: the centroid's (or weak wrist's) pixels (hand sizes per second) and the log scale.
        d_root = root - self._root
        a_pos = self._pos.step(d_root[None, :2], dt, unit=size)[0, 0]
        a_scale = self._scale.step(d_root[None, 2:], dt)[0, 0]
        self._root = self._root + np.array([a_pos, a_pos, a_scale]) * d_root
        self._time = t
        R = be.numpy(solver.local_from_global(be.const(self._G[None])))[0]
        if Kd is None:
            return self.fitter.compose(fit.side, R, fit.betas, self._root, K, image_size, kp, fit.iterations)
        # Turned at the raw fit's wrist, then moved to the smoothed centroid.
        turned = self.fitter.compose(fit.side, R, fit.betas, fit_root(fit), K, image_size, kp, fit.iterations)
        return _at_centroid(turned, self._root, Kd, kp)
