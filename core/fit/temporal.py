"""Causal temporal smoothing of a tracked hand's fit: a constant-velocity filter on its
keypoints, then a short refit of the hand to the filtered keypoints.

The tailor already pulls each frame toward the previous one (its temporal term), but a fit
follows its detections, and MediaPipe's keypoints jitter by a pixel or more even on a hand at
rest. This stage runs after the fit, on its output only: the unfiltered fit stays the next
frame's warm start and temporal term, so the filter never feeds back into the fit.

**Where it filters.** Filtering the fit's parameters (joint rotations, root, shape) one by one
does not work well: a fit trades its parameters against each other (turning the hand a little
about the wrist against its wrist's position, the depth against the shape's size, a finger's
base against its tip), so their frame-to-frame noise is large and correlated while the
keypoints hardly move. Filtered apart, the parameters lose that balance: on the rendered
clips, smoothing only the rotations, only the root or only the shape *raised* the residual
jitter (e.g. 1.17 -> 1.31x MediaPipe's for the scale alone), and a One Euro filter on all of
them left 0.84x where the same filter on the keypoints leaves 0.52x. So the filter runs on the
fit's keypoints, where the noise is what one sees, and the hand is then refitted to them:

1. **Keypoint filter** (:class:`KeypointFilter`): each of the 21 keypoints, its pixels and its
   3D position about the keypoints' centroid, goes through a critically damped alpha-beta
   (g-h) filter, a constant-velocity Kalman filter in its steady state. Per step, with ``dt``
   the time since the last frame, the prediction ``p = x_hat + v dt``, the innovation
   ``e = x - p`` and ``theta = exp(-2 pi fc dt)``:

       x_hat = p + (1 - theta^2) e,    v = v + (1 - theta)^2 e / dt

   It follows a constant velocity without lag (a first-order low-pass such as the One Euro
   filter trails a moving hand by about ``1 / (2 pi fc)`` seconds), so its bandwidth can stay
   low. As in the One Euro filter (Casiez, Roussel and Vogel, CHI 2012), the cutoff rises with
   speed, ``fc = f_min + beta s``, where ``s`` is the keypoint's unpredicted speed (its
   innovation's pixels per second, in hand sizes: the detected keypoints' box diagonal),
   low-passed at ``d_cutoff_hz``: a hand that changes course is followed within a few frames.
2. **Refit** (:meth:`HandSmoother.__call__`): the tailor fits the hand to the filtered
   keypoints (pixels and, as its bone-direction target, the 3D keypoints) in a few
   Levenberg-Marquardt iterations, warm-started from and pulled toward the last smoothed fit
   (its temporal term). On the weak-perspective path it starts from the keypoints alone: there
   the root's pull toward the last fit outweighs the keypoints, and the smoothed hand drifted
   off them (17 px in three seconds on the test trajectory). The shape is held, the profile's
   when one is loaded, else the fits' shapes low-passed (a person's shape is a constant; on the
   rendered clips as good as refitting it). The result is a hand of the model, as every fit
   is; the refit costs about 0.9 ms a hand (mostly the tailor's set-up, not its iterations).

The settings below were tuned on the rendered ``moving`` and ``fast`` clips of
``bench --only temporal`` and checked on rendered clips of other seeds and speeds, the demo and
the real clip (figures in :class:`SmoothingSettings`). :class:`HandSmoother` keeps one state
per hand; the engine keys them by the hand's track.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from core.fit.tailor import HandFit, HandObservation, TailorFitter


@dataclass(frozen=True)
class AlphaBeta:
    """The keypoint filter's parameters (:class:`KeypointFilter`).

    Attributes:
        min_cutoff_hz: bandwidth at rest, Hz (lower: smoother; a constant velocity is followed
            without lag at any bandwidth).
        beta: how fast the bandwidth rises with the unpredicted speed, Hz per hand size per
            second (higher: follows a change of course sooner, smooths less).
        d_cutoff_hz: cutoff of the speed estimate's own low-pass filter, Hz.
    """

    min_cutoff_hz: float
    beta: float
    d_cutoff_hz: float = 1.0


@dataclass(frozen=True)
class SmoothingSettings:
    """The temporal filter of a tracked hand's fit (:class:`HandSmoother`).

    Attributes:
        keypoints: the keypoint filter's parameters.
        iterations: Levenberg-Marquardt iterations of the refit to the filtered keypoints.
        shape_cutoff_hz: cutoff of the first-order low-pass on the fits' shapes (without a
            profile), Hz.
        max_gap_s: a hand unseen for longer starts its filter afresh.
    """

    # (1 Hz, beta 1, 1 Hz) with the tailor's temporal term at 15 (`bench --only temporal`,
    # residual jitter / MediaPipe's and lag against the true keypoints in frames): demo 0.42 /
    # 0.86 (15 fps; MediaPipe itself trails by 0.3), rendered moving 0.47 / 0.22, fast 0.74 /
    # 0.15, real clip (plain jitter) 0.78; rendered clips of other seeds and speeds (moving,
    # fast, 1.5x, 2.5x, slow): 0.46, 0.74, 0.56, 0.77, 0.32 at 0.68 frames. The One Euro filter
    # on the bones' rotations and the root that this replaces: demo 0.57 / 1.00, 0.64, 0.81,
    # real 0.75; 0.84, 0.84, 0.66, 0.88, 0.45 at 1.04 frames; the real clip's median distance to
    # MediaPipe's keypoints 4.3 px (now 3.1; unfiltered 1.7). Tried on the training clips: a
    # speed low-pass at 0.5 Hz smoothed the fast clip more (0.70) but not the other seeds and
    # the real clip (0.80); half the velocity gain, 2 or 5 refit iterations, the refit pulled
    # toward the unfiltered fit, or the unfiltered 3D keypoints as its target were no better.
    keypoints: AlphaBeta = field(default_factory=lambda: AlphaBeta(1.0, 1.0))
    iterations: int = 3
    shape_cutoff_hz: float = 0.5
    max_gap_s: float = 0.5


def alpha(cutoff_hz: np.ndarray | float, dt: float) -> np.ndarray:
    """The exponential smoothing factor of a first-order low-pass at ``cutoff_hz`` for step dt."""
    return 1.0 / (1.0 + 1.0 / (2.0 * math.pi * np.asarray(cutoff_hz, dtype=np.float64) * dt))


class KeypointFilter:
    """Critically damped alpha-beta filters on N points with a speed-adaptive bandwidth.

    State: each point's smoothed value and velocity, and its smoothed unpredicted speed. The
    first call (or the first after :meth:`reset`) passes its points unchanged.

    Args:
        params: the filter's parameters.
        speed_dims: the leading columns whose innovation drives the bandwidth (pixels).
    """

    def __init__(self, params: AlphaBeta, speed_dims: int = 2) -> None:
        self.params = params
        self.speed_dims = speed_dims
        self.reset()

    def reset(self) -> None:
        """Forget the points."""
        self.value: np.ndarray | None = None  # (N, k) smoothed
        self.velocity: np.ndarray | None = None  # (N, k) per second
        self.speed: np.ndarray | None = None  # (N,) unpredicted speed, units per second

    def __call__(self, x: np.ndarray, dt: float, unit: float = 1.0) -> np.ndarray:
        """(N, k) this frame's points, ``dt`` seconds after the last -> (N, k) filtered points.

        ``unit`` divides the innovation's speed before it drives the bandwidth (a hand size in
        pixels, so the speed is in hand sizes per second).
        """
        x = np.asarray(x, dtype=np.float64)
        if self.value is None:
            self.value, self.velocity = x.copy(), np.zeros_like(x)
            return x.copy()
        p = self.params
        dt = max(dt, 1e-6)
        predicted = self.value + self.velocity * dt
        innovation = x - predicted
        rate = np.linalg.norm(innovation[:, :self.speed_dims], axis=-1) / (dt * max(unit, 1e-9))
        self.speed = rate if self.speed is None else self.speed + alpha(p.d_cutoff_hz, dt) * (rate - self.speed)
        theta = np.exp(-2.0 * math.pi * (p.min_cutoff_hz + p.beta * self.speed) * dt)[:, None]
        self.value = predicted + (1.0 - theta * theta) * innovation
        self.velocity = self.velocity + (1.0 - theta) ** 2 * innovation / dt
        return self.value.copy()


class HandSmoother:
    """The filter state of one tracked hand; :meth:`__call__` smooths its next fit.

    Args:
        fitter: refits the hand to its filtered keypoints.
        settings: the filter's parameters.
    """

    def __init__(self, fitter: TailorFitter, settings: SmoothingSettings = SmoothingSettings()) -> None:
        self.fitter = fitter
        self.settings = settings
        self._filter = KeypointFilter(settings.keypoints)
        self._last: HandFit | None = None  # the last smoothed fit
        self._betas: np.ndarray | None = None  # (S,) float64 the fits' low-passed shape
        self._time = -math.inf
        self._key: tuple[str, str] | None = None  # (side, projection) the state belongs to

    @property
    def time(self) -> float:
        """Seconds of the last fit this filter saw (-inf: none)."""
        return self._time

    def reset(self) -> None:
        """Forget the hand (the next fit passes unchanged and starts the filter)."""
        self._filter.reset()
        self._last, self._betas, self._time, self._key = None, None, -math.inf, None

    def __call__(self, fit: HandFit, t: float, keypoints_2d: np.ndarray, K: np.ndarray | None,
                 image_size: tuple[int, int], betas: np.ndarray | None = None) -> HandFit:
        """Smooth ``fit`` (this frame's, at time ``t`` seconds) and return the smoothed fit.

        Args:
            keypoints_2d: (21, 2) the detected keypoints, pixels (the smoothed fit's
                reprojection error is measured against them; their box sets the hand's size).
            K: (3, 3) intrinsics, or None on the weak-perspective path.
            image_size: (width, height), pixels.
            betas: (S,) the profile's fixed shape, or None (the fits' shapes, low-passed).

        The first fit, or a fit after a gap longer than ``max_gap_s``, starts the filter afresh
        and is returned as it is. A fit of another side (the track's side was corrected) or
        projection keeps the keypoint filter going, and the new model is refitted to it from
        the keypoints alone in the fitter's full iterations. The smoothed fit reports the
        unfiltered fit's iteration count.
        """
        dt = t - self._time
        key = (fit.side, fit.projection)
        kp = np.asarray(keypoints_2d, dtype=np.float64)
        k3 = np.asarray(fit.keypoints_3d, dtype=np.float64)
        points = np.concatenate([np.asarray(fit.keypoints_2d, dtype=np.float64), k3 - k3.mean(0)], 1)  # (21, 5)
        if self._last is None or not 0.0 < dt <= self.settings.max_gap_s:
            self.reset()
            self._filter(points, 1.0)
            self._last, self._time, self._key = fit, t, key
            self._betas = np.asarray(fit.betas, dtype=np.float64)
            return fit
        size = float(np.linalg.norm(kp.max(0) - kp.min(0)))
        target = self._filter(points, dt, unit=size)
        if key == self._key:
            self._betas = self._betas + alpha(self.settings.shape_cutoff_hz, dt) * (fit.betas - self._betas)
            previous, iterations = (self._last if K is not None else None), self.settings.iterations
        else:  # another model: nothing of the last smoothed fit carries over
            self._betas = np.asarray(fit.betas, dtype=np.float64)
            previous, iterations = None, None
        shape = self._betas if betas is None else betas
        obs = HandObservation(fit.side, target[:, :2], target[:, 2:], K, image_size)
        out = self.fitter.fit([obs], shape, [previous], iterations=iterations)[0]
        out = replace(out, iterations=fit.iterations,
                      reprojection_error_px=float(np.linalg.norm(out.keypoints_2d - kp, axis=1).mean()))
        self._last, self._time, self._key = out, t, key
        return out
