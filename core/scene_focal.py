"""The focal length of a moving camera from its static background (classical self-calibration).

The hand's own perspective does not pin the focal length through MediaPipe's keypoints
(:mod:`core.focal`), but a camera that moves (a head-mounted one, a phone in the hand) shows
it in the background: pairs of frames some 0.2 s apart give background correspondences
(corners tracked by pyramidal Lucas-Kanade with a forward-backward check, on a downscaled
grayscale image, the hands' keypoint boxes plus a margin masked out), and each pair's motion,
with the principal point at the assumed camera's, square pixels and no skew, constrains the
one unknown, the focal length ``f``:

* **rotation** (a camera turning, or a distant scene; the motion is a homography): the
  points map by ``H = K R K^-1`` (Hartley 1994, "Self-calibration from multiple views with a
  rotating camera"; de Agapito et al.): ``f`` and ``R`` are fitted to the correspondences (the
  transfer error, pixels), started from the field of view whose ``K^-1 H K`` is closest to a
  rotation (singular values equal);
* **general** (a translating camera in a 3D scene; the motion needs the fundamental
  matrix): ``F = K^-T [t]x R K^-1``, ``f``, ``R`` and ``t``'s direction fitted to the Sampson
  error, started from the field of view whose essential matrix ``K^T F K`` has the two equal
  singular values it must have (Mendonca and Cipolla 1999).

Each fit's Gauss-Newton covariance gives the pair's uncertainty (log units); motion that
leaves the focal length unobserved (no motion, a rotation only about the optical axis, a pure
translation, a plane seen while translating) gives a large one or an explicit reason and the
pair is left out. The informative pairs are pooled (:func:`pool_pairs`: an inverse-variance
mean of ``log f`` about their weighted median, its uncertainty inflated by their scatter),
and the pooled estimate is accepted once its uncertainty is small (:class:`SceneFocalSettings`).

Cost: nothing on a frame within ``gap_s`` of the key frame; a pair (downscale, corners, flow
both ways, two robust models, two or three small least-squares fits) about 20-30 ms at 480 px
(``bench --only wide_angle_moving``), once every ``gap_s``; and only until an estimate is
accepted or ``max_pairs`` pairs were measured. Deterministic for the same frames (OpenCV's
RANSAC is seeded per call; checked by the tests on OpenCV 4.11 and 5.1).

The rotation model also fits a one-parameter barrel lens distortion (division model) where it
clearly helps, so that the focal length is the paraxial one. Known bias: a camera that moves a
little while it turns (a head about the neck) over a near scene shows parallax too small for
the rotation model's misfit gate and biases the focal length long (bench: 2-4% for a table
40 cm below a camera 10 cm from its pivot; synthetic correspondences of a room 1.5-5 m away,
1.7% and 3.4% for 10 and 20 cm). Not modelled: the general model's distortion, rolling shutter,
independently moving objects beyond what RANSAC discards.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.camera import Intrinsics, focal_from_fov, fov_from_focal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SceneFocalSettings:
    """How the background's motion is measured and when its focal length is accepted.

    Attributes:
        gap_s: a pair's frames are at least this far apart (seconds of stream time); a
            frame within ``gap_s`` of the key frame costs nothing, and while the background
            has hardly moved, one every ``gap_s / 2``.
        max_gap_s: a key frame whose background has moved less than ``min_flow_px`` by then
            makes a "camera did not move" pair and is replaced.
        width: the analysis image's width (pixels; images are downscaled to at most it).
        max_corners, quality, min_distance_px: :func:`cv2.goodFeaturesToTrack`'s (the
            distance in analysis pixels).
        fb_max_px: the largest forward-backward tracking error kept (analysis pixels).
        hand_margin: the hands' keypoint boxes are grown by this share of their diagonal on
            every side before they are masked out (the forearm, a held object's edge).
        min_features: fewer tracked background points make a "too few features" pair.
        min_flow_px: the median background motion (analysis pixels) below which the camera
            did not move.
        ransac_px: RANSAC's inlier threshold (analysis pixels).
        homography_share: the motion is a homography (the rotation model) where the
            homography's inliers are at least this share of the fundamental matrix's.
        min_inlier_share: fewer inliers (share of the tracked points) reject the pair.
        max_rotation_rms_px: a rotation fit misfitting its inliers by more than this (RMS,
            analysis pixels) is not a rotation (a near plane seen while translating).
        min_tilt_deg: a rotation turning the optical axis by less than this is "only about
            the optical axis" (or none), which leaves the focal length unobserved.
        min_parallax_ratio: a pair of the general model is used only where a homography
            explains its inliers this many times worse than their epipolar geometry
            (:func:`homography_ratio`; noise alone: about 2.5): else the scene is a plane, or
            the motion a rotation, and the fundamental matrix does not pin the focal length.
        distortion, min_distortion, distortion_gain: the rotation model also fits a
            one-parameter lens distortion (:func:`undistort`), and uses it where it is barrel
            (``k`` below ``-min_distortion``) and explains the motion clearly better (its
            truncated squared transfer errors at most ``distortion_gain`` of the pinhole's),
            so that the focal length is the paraxial one: a free ``k`` also absorbed the
            parallax of a near table seen by a head turning about the neck (pincushion ``k``
            +0.06-0.13, the focal length 10-20% long where the pinhole's was 1-6%). Unmodelled
            barrel distortion biased it long (synthetic 90 degrees, 3 degree turns, a
            polynomial lens ``r (1 + k1 r^2)``: +11% at k1 -0.05, where the corners move in 6%,
            +24-35% at -0.1; with the division model fitted, within 2% for both). The general
            model stays a pinhole.
        fov_grid_deg: (lowest, highest, step) horizontal fields of view of the initial search.
        pair_max_log_sd: a pair whose focal length's standard deviation (log units) is above
            this is left out of the pool (motion that hardly observes it).
        min_pairs: informative pairs the pooled estimate needs.
        max_log_sd: the pooled estimate is accepted when its standard deviation (log units)
            is at most this.
        fov_range_deg: fields of view an accepted estimate may have.
        max_pairs: pairs measured (informative or not) before the collector gives up.
    """

    gap_s: float = 0.2
    max_gap_s: float = 0.6
    width: int = 480
    max_corners: int = 400
    quality: float = 0.01
    min_distance_px: float = 8.0
    fb_max_px: float = 0.5
    hand_margin: float = 0.25
    min_features: int = 40
    min_flow_px: float = 1.5
    ransac_px: float = 1.0
    homography_share: float = 0.9
    min_inlier_share: float = 0.5
    max_rotation_rms_px: float = 0.8
    min_tilt_deg: float = 0.5
    min_parallax_ratio: float = 4.0
    distortion: bool = True
    min_distortion: float = 0.01
    distortion_gain: float = 0.95
    fov_grid_deg: tuple[float, float, float] = (30.0, 150.0, 1.0)
    pair_max_log_sd: float = 0.15
    min_pairs: int = 5
    max_log_sd: float = 0.03
    fov_range_deg: tuple[float, float] = (25.0, 150.0)
    max_pairs: int = 60

    def __post_init__(self) -> None:
        if not 0.0 < self.gap_s <= self.max_gap_s:
            raise ValueError(f"SceneFocalSettings needs 0 < gap_s <= max_gap_s, got {self.gap_s}, {self.max_gap_s}")
        if self.min_pairs < 1 or self.width < 64:
            raise ValueError("SceneFocalSettings needs min_pairs >= 1 and width >= 64")


@dataclass(frozen=True)
class PairFocal:
    """What one pair of frames says about the focal length.

    Attributes:
        focal_px: the pair's focal length (full-resolution pixels; NaN when not estimated).
        log_sd: its standard deviation, log units (inf when not estimated).
        model: "rotation" (a homography K R K^-1), "general" (a fundamental matrix) or "".
        features: background points tracked both ways. inliers: the model's inliers.
        flow_px: the median background motion, full-resolution pixels.
        rms_px: the model's RMS misfit on its inliers, full-resolution pixels (the Sampson
            distance for "general").
        tilt_deg: how far the rotation turned the optical axis, degrees.
        dt_s: the time between the frames, seconds.
        reason: why the pair says nothing ("" when it is informative).
        distortion: the rotation model's division-model lens distortion ``k``
            (:func:`undistort`; the image's half-diagonal as unit, < 0 barrel; 0 when not fitted).
    """

    focal_px: float = math.nan
    log_sd: float = math.inf
    model: str = ""
    features: int = 0
    inliers: int = 0
    flow_px: float = 0.0
    rms_px: float = math.nan
    tilt_deg: float = math.nan
    dt_s: float = 0.0
    reason: str = ""
    distortion: float = 0.0

    @property
    def informative(self) -> bool:
        return not self.reason and math.isfinite(self.focal_px)


@dataclass(frozen=True)
class SceneFocalEstimate:
    """The pooled focal length of the pairs measured so far.

    Attributes:
        focal_px: the pooled focal length, full-resolution pixels (NaN without informative pairs).
        fov_deg: the horizontal field of view it gives, degrees.
        log_sd: its standard deviation, log units.
        pairs: informative pairs pooled (after outliers are left out). measured: pairs measured.
        accepted: whether it may be used. reason: why not ("" when accepted).
        intrinsics: the camera (the assumed one's principal point and size, this focal length).
        distortion: the median lens distortion ``k`` of the pooled rotation pairs
            (:attr:`PairFocal.distortion`; NaN without any): reported, the stream's camera
            stays a pinhole.
    """

    focal_px: float
    fov_deg: float
    log_sd: float
    pairs: int
    measured: int
    accepted: bool
    reason: str
    intrinsics: Intrinsics | None
    distortion: float = math.nan


# ----------------------------------------------------------------------------- images and tracks


def analysis_image(image: np.ndarray, width: int) -> tuple[np.ndarray, float]:
    """(grayscale image (h', w') uint8 at most ``width`` wide, scale: full-resolution pixels
    per analysis pixel) of an RGB (H, W, 3) or gray (H, W) uint8 image."""
    import cv2

    gray = image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    h, w = gray.shape[:2]
    if w <= width:
        return np.ascontiguousarray(gray), 1.0
    scale = w / float(width)
    return cv2.resize(gray, (width, max(int(round(h / scale)), 1)), interpolation=cv2.INTER_AREA), scale


def to_full(points: np.ndarray, scale: float) -> np.ndarray:
    """Analysis-image pixels (N, 2) to full-resolution pixels (pixel centres at integers)."""
    return (np.asarray(points, np.float64) + 0.5) * scale - 0.5


def background_mask(shape: tuple[int, int], boxes: Sequence[tuple[float, float, float, float]], scale: float,
                    margin: float) -> np.ndarray:
    """uint8 (h', w') mask of the analysis image, 255 on the background, 0 inside the hands'
    boxes ``(x0, y0, x1, y1)`` (full-resolution pixels), each grown by ``margin`` of its diagonal."""
    mask = np.full(shape, 255, np.uint8)
    h, w = shape
    for x0, y0, x1, y1 in boxes:
        grow = margin * math.hypot(x1 - x0, y1 - y0)
        a = [int(math.floor((v - grow + 0.5) / scale - 0.5)) for v in (x0, y0)]
        b = [int(math.ceil((v + grow + 0.5) / scale - 0.5)) + 1 for v in (x1, y1)]
        mask[max(a[1], 0):min(b[1], h), max(a[0], 0):min(b[0], w)] = 0
    return mask


def track_features(gray0: np.ndarray, gray1: np.ndarray, mask0: np.ndarray, mask1: np.ndarray,
                   settings: SceneFocalSettings = SceneFocalSettings()) -> tuple[np.ndarray, np.ndarray]:
    """Background points of ``gray0`` and where they are in ``gray1`` ((N, 2) float64 each,
    analysis pixels): corners outside ``mask0``'s zeros, tracked forward and back (kept where
    they come back within ``fb_max_px``) and landing outside ``mask1``'s zeros."""
    import cv2

    st = settings
    corners = cv2.goodFeaturesToTrack(gray0, st.max_corners, st.quality, st.min_distance_px, mask=mask0,
                                      blockSize=5)
    empty = np.zeros((0, 2), np.float64)
    if corners is None or len(corners) < 4:
        return empty, empty
    p0 = corners.astype(np.float32)
    lk = dict(winSize=(15, 15), maxLevel=4, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
    p1, ok1, _ = cv2.calcOpticalFlowPyrLK(gray0, gray1, p0, None, **lk)
    back, ok2, _ = cv2.calcOpticalFlowPyrLK(gray1, gray0, p1, None, **lk)
    good = (ok1[:, 0] == 1) & (ok2[:, 0] == 1) & (np.linalg.norm(back - p0, axis=-1)[:, 0] < st.fb_max_px)
    q0, q1 = p0[good, 0].astype(np.float64), p1[good, 0].astype(np.float64)
    h, w = gray1.shape
    xi, yi = np.round(q1[:, 0]).astype(int), np.round(q1[:, 1]).astype(int)
    inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    keep = inside.copy()
    keep[inside] = mask1[yi[inside], xi[inside]] > 0
    return q0[keep], q1[keep]


# ----------------------------------------------------------------------------- two-view models


def rotvec_matrix(w: np.ndarray) -> np.ndarray:
    """The (3, 3) rotation of an axis-angle (3,)."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(np.asarray(w, np.float64)).as_matrix()


def _skew(t: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -t[2], t[1]], [t[2], 0.0, -t[0]], [-t[1], t[0], 0.0]])


def focal_grid(width: int, grid_deg: tuple[float, float, float]) -> np.ndarray:
    """Focal lengths (pixels) of the horizontal fields of view ``grid_deg`` (lo, hi, step)."""
    lo, hi, step = grid_deg
    return np.array([focal_from_fov(fov, width) for fov in np.arange(lo, hi + 0.5 * step, step)])


def rotation_cost(H: np.ndarray, focals: np.ndarray) -> np.ndarray:
    """How far ``K^-1 H K`` is from a scaled rotation for each focal length (F,): the log of
    its largest over its smallest singular value. ``H`` (3, 3) maps centred pixels (the
    principal point at the origin) of the first image to the second's."""
    k = np.zeros((len(focals), 3, 3))
    k[:, 0, 0] = k[:, 1, 1] = focals
    k[:, 2, 2] = 1.0
    kinv = np.linalg.inv(k)
    s = np.linalg.svd(kinv @ H[None] @ k, compute_uv=False)
    return np.log(s[:, 0] / np.maximum(s[:, 2], 1e-300))


def essential_cost(F: np.ndarray, focals: np.ndarray) -> np.ndarray:
    """How far ``K^T F K`` is from an essential matrix for each focal length (F,): the
    difference of its two largest singular values over the largest (Mendonca-Cipolla). ``F``
    (3, 3) relates centred pixels: ``x1^T F x0 = 0``."""
    k = np.zeros((len(focals), 3, 3))
    k[:, 0, 0] = k[:, 1, 1] = focals
    k[:, 2, 2] = 1.0
    s = np.linalg.svd(k @ F[None] @ k, compute_uv=False)
    return (s[:, 0] - s[:, 1]) / np.maximum(s[:, 0], 1e-300)


def _least_squares(fun, x0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(solution, residuals, Jacobian) of a small nonlinear least-squares problem."""
    from scipy.optimize import least_squares

    res = least_squares(fun, x0, method="lm", x_scale="jac", max_nfev=200 * (len(x0) + 1))
    return res.x, res.fun, res.jac


def _log_sd(residuals: np.ndarray, jac: np.ndarray, params: int) -> float:
    """The Gauss-Newton standard deviation of the first parameter (the log focal length)."""
    dof = max(len(residuals) - params, 1)
    sigma2 = float(residuals @ residuals) / dof
    try:
        cov = np.linalg.inv(jac.T @ jac) * sigma2
    except np.linalg.LinAlgError:
        return math.inf
    var = float(cov[0, 0])
    return math.sqrt(var) if var >= 0 and math.isfinite(var) else math.inf


def undistort(q: np.ndarray, k: float, radius: float) -> np.ndarray:
    """Centred pixels (N, 2) of a lens with one-parameter division-model distortion
    (Fitzgibbon 2001: ``u = d / (1 + k |d / radius|^2)``; ``k`` < 0 is barrel distortion,
    ``radius`` the image's half-diagonal) to the pinhole's."""
    return q / (1.0 + k * np.sum((q / radius) ** 2, axis=1, keepdims=True))


def distort(u: np.ndarray, k: float, radius: float) -> np.ndarray:
    """The inverse of :func:`undistort`: pinhole centred pixels (N, 2) to the lens's."""
    if abs(k) < 1e-12:
        return u
    ru = np.sqrt(np.sum(u ** 2, axis=1, keepdims=True)) / radius
    disc = np.maximum(1.0 - 4.0 * k * ru ** 2, 1e-12)  # r_d solves k r_u r_d^2 - r_d + r_u = 0
    safe = np.maximum(ru, 1e-12)
    return u * np.where(ru > 1e-12, (1.0 - np.sqrt(disc)) / (2.0 * k * safe) / safe, 1.0)


def _transfer(x: np.ndarray, f0: float, q0: np.ndarray, q1: np.ndarray, radius: float) -> np.ndarray:
    """Residuals (2N,) of ``q1 ~ K R K^-1 q0`` (centred pixels), x = (log f/f0, axis-angle[,
    division-model distortion k: the points undistorted before and distorted after])."""
    f = f0 * math.exp(min(max(x[0], -5.0), 5.0))
    k = float(x[4]) if len(x) > 4 else 0.0
    rays = np.column_stack([undistort(q0, k, radius) / f, np.ones(len(q0))]) @ rotvec_matrix(x[1:4]).T
    z = np.where(np.abs(rays[:, 2]) < 1e-9, 1e-9, rays[:, 2])
    return (distort(f * rays[:, :2] / z[:, None], k, radius) - q1).ravel()


def fit_rotation(q0: np.ndarray, q1: np.ndarray, f0: float, R0: np.ndarray, outlier_px: float,
                 radius: float | None = None) -> tuple[float, float, np.ndarray, np.ndarray, float, float]:
    """A rotating camera's focal length from centred-pixel correspondences (N, 2) each.

    Fits ``f`` and ``R`` (started at ``f0``, ``R0``) and, given the image's half-diagonal
    ``radius``, the lens's division-model distortion (:func:`undistort`, started at 0) to the
    transfer error; leaves out points misfit by over ``max(outlier_px, 3 sigma)`` and fits
    again. ``f`` is then the paraxial focal length. Returns (focal, log_sd, rotation (3, 3),
    inlier mask (N,), RMS misfit on the inliers (pixels), distortion k (0 without ``radius``))."""
    x = np.concatenate([[0.0], _axis_angle(R0), [0.0] if radius is not None else []])
    rad = float(radius) if radius is not None else 1.0
    keep = np.ones(len(q0), bool)
    for _ in range(2):
        a0, a1 = q0[keep], q1[keep]
        x, r, jac = _least_squares(lambda p, a0=a0, a1=a1: _transfer(p, f0, a0, a1, rad), x)
        err = np.linalg.norm(_transfer(x, f0, q0, q1, rad).reshape(-1, 2), axis=1)
        sigma = math.sqrt(float(r @ r) / max(len(r) - len(x), 1))
        keep = err < max(outlier_px, 3.0 * sigma)
        if keep.sum() < 8:
            break
    x, r, jac = _least_squares(lambda p: _transfer(p, f0, q0[keep], q1[keep], rad), x)
    rms = math.sqrt(float(r @ r) / max(len(r) // 2, 1))
    k = float(x[4]) if len(x) > 4 else 0.0
    return f0 * math.exp(x[0]), _log_sd(r, jac, len(x)), rotvec_matrix(x[1:4]), keep, rms, k


def _sampson(x: np.ndarray, f0: float, t0: np.ndarray, basis: np.ndarray, R0: np.ndarray,
             h0: np.ndarray, h1: np.ndarray) -> np.ndarray:
    """Sampson distances (N,) of homogeneous centred pixels under ``F = K^-T [t]x R K^-1``,
    x = (log f/f0, axis-angle of R R0^T, two steps of t's direction)."""
    f = f0 * math.exp(min(max(x[0], -5.0), 5.0))
    R = rotvec_matrix(x[1:4]) @ R0
    t = t0 + basis @ x[4:6]
    t = t / np.linalg.norm(t)
    kinv = np.diag([1.0 / f, 1.0 / f, 1.0])
    F = kinv @ _skew(t) @ R @ kinv
    fx0 = h0 @ F.T
    ftx1 = h1 @ F
    e = np.einsum("ij,ij->i", h1, fx0)
    den = fx0[:, 0] ** 2 + fx0[:, 1] ** 2 + ftx1[:, 0] ** 2 + ftx1[:, 1] ** 2
    return e / np.sqrt(np.maximum(den, 1e-300))


def fit_general(q0: np.ndarray, q1: np.ndarray, f0: float, R0: np.ndarray,
                t0: np.ndarray) -> tuple[float, float, np.ndarray]:
    """A moving camera's focal length from centred-pixel correspondences (N, 2) each (inliers
    of a fundamental matrix): ``f``, ``R`` and ``t``'s direction fitted to the Sampson error,
    started at ``f0``, ``R0``, ``t0``. Returns (focal, log_sd, Sampson residuals (N,), pixels)."""
    t0 = t0 / np.linalg.norm(t0)
    basis = np.linalg.svd(t0[None])[2][1:].T  # (3, 2): orthonormal to t0
    h0 = np.column_stack([q0, np.ones(len(q0))])
    h1 = np.column_stack([q1, np.ones(len(q1))])
    x, r, jac = _least_squares(lambda p: _sampson(p, f0, t0, basis, R0, h0, h1), np.zeros(6))
    return f0 * math.exp(x[0]), _log_sd(r, jac, 6), r


def _grid_minimum(cost: np.ndarray, focals: np.ndarray) -> float:
    """The focal length at the grid's lowest cost, refined by a parabola through its neighbours."""
    i = int(np.nanargmin(cost))
    if 0 < i < len(cost) - 1:
        a, b, c = cost[i - 1], cost[i], cost[i + 1]
        den = a - 2 * b + c
        if den > 0:
            step = 0.5 * (a - c) / den
            lf = np.log(focals)
            return float(np.exp(lf[i] + step * (lf[i + 1] - lf[i - 1]) / 2.0))
    return float(focals[i])


def pair_focal(p0: np.ndarray, p1: np.ndarray, principal: tuple[float, float], width: int,
               settings: SceneFocalSettings = SceneFocalSettings(), scale: float = 1.0,
               dt_s: float = 0.0) -> PairFocal:
    """The focal length that one pair of frames' background correspondences give.

    Args:
        p0, p1: (N, 2) the same background points in the two frames, full-resolution pixels.
        principal: the principal point (cx, cy), pixels.
        width: the image's width, pixels (the field-of-view grid).
        scale: full-resolution pixels per analysis pixel (the settings' pixel thresholds are
            in analysis pixels).
        dt_s: the time between the frames (reported).
    """
    import cv2

    st = settings
    n = len(p0)
    flow = float(np.median(np.linalg.norm(p1 - p0, axis=1))) if n else 0.0
    base = dict(features=n, flow_px=flow, dt_s=dt_s)
    if n < st.min_features:
        return PairFocal(**base, reason=f"too few background features ({n} < {st.min_features})")
    if flow < st.min_flow_px * scale:
        return PairFocal(**base, reason=f"the camera did not move (background moved {flow:.1f} px)")
    c = np.asarray(principal, np.float64)
    q0, q1 = p0 - c, p1 - c
    thr = st.ransac_px * scale
    # a transfer error is 2-D, a distance to an epipolar line 1-D: the homography gets twice the threshold
    H, h_in = cv2.findHomography(q0, q1, cv2.RANSAC, 2.0 * thr, maxIters=2000, confidence=0.999)
    F, f_in = cv2.findFundamentalMat(q0, q1, cv2.FM_RANSAC, thr, 0.999, 2000)
    nh = 0 if H is None else int(h_in.sum())
    nf = 0 if F is None or F.shape != (3, 3) else int(f_in.sum())
    focals = focal_grid(width, st.fov_grid_deg)
    out = None
    if nh >= st.homography_share * nf and nh > 0:
        half = (float(principal[0]) + 0.5, float(principal[1]) + 0.5)  # the half-diagonal's sides
        out = _rotation_pair(q0, q1, H, h_in[:, 0].astype(bool), focals, base, st, scale, half)
        if out.reason.startswith("not a rotation") and nf:
            out = None  # a homography by RANSAC's count, but parallax after all: the general model
    if out is None:
        out = _general_pair(q0, q1, F, f_in[:, 0].astype(bool) if nf else np.zeros(n, bool), focals, base, st,
                            scale)
    if not out.reason and not (out.log_sd <= st.pair_max_log_sd):
        return dataclasses.replace(out, reason=f"the motion hardly observes the focal length (standard "
                                               f"deviation {100 * out.log_sd:.0f}%)")
    return out


def _axis_angle(R: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(R).as_rotvec()


def _tilt_deg(R: np.ndarray) -> float:
    """How far a rotation (3, 3) turns the optical axis, degrees."""
    return math.degrees(math.acos(min(max(float(R[2, 2]), -1.0), 1.0)))


def _rotation_pair(q0: np.ndarray, q1: np.ndarray, H: np.ndarray, keep: np.ndarray, focals: np.ndarray,
                   base: dict, st: SceneFocalSettings, scale: float, radius_of: tuple[float, float]) -> PairFocal:
    """:func:`pair_focal`'s rotation model on RANSAC's homography ``H`` and its inliers ``keep``."""
    n = len(q0)
    if keep.sum() < st.min_inlier_share * n:
        return PairFocal(**base, inliers=int(keep.sum()), reason=f"too few inliers ({int(keep.sum())} of {n})")
    f0 = _grid_minimum(rotation_cost(H, focals), focals)
    k = np.diag([f0, f0, 1.0])
    u, _, vt = np.linalg.svd(np.linalg.inv(k) @ H @ k)
    R0 = u @ vt * np.sign(np.linalg.det(u @ vt))
    if _tilt_deg(R0) < st.min_tilt_deg:  # K^-1 H K is this rotation whatever the focal length
        return PairFocal(**base, model="rotation", inliers=int(keep.sum()), tilt_deg=_tilt_deg(R0),
                         reason=f"a rotation only about the optical axis (its axis turned {_tilt_deg(R0):.2f} "
                                f"degrees < {st.min_tilt_deg})")
    thr = st.ransac_px * scale
    a0, a1 = q0[keep], q1[keep]
    focal, log_sd, R, inl, rms, k = fit = fit_rotation(a0, a1, f0, R0, thr)
    if st.distortion:  # a barrel lens, where it explains the motion clearly better than the pinhole
        radius = math.hypot(*radius_of)
        lens = fit_rotation(a0, a1, f0, R0, thr, radius)
        cap = (3.0 * thr) ** 2  # the same points, mistracked ones counted alike
        sq = [np.minimum(np.sum(_transfer(np.concatenate([[math.log(m[0] / f0)], _axis_angle(m[2]), [m[5]]]), f0,
                                          a0, a1, radius).reshape(-1, 2) ** 2, axis=1), cap).sum() for m in (fit, lens)]
        if lens[5] < -st.min_distortion and sq[1] <= st.distortion_gain * sq[0]:
            focal, log_sd, R, inl, rms, k = lens
    out = PairFocal(**base, focal_px=focal, log_sd=log_sd, model="rotation", inliers=int(inl.sum()), rms_px=rms,
                    tilt_deg=_tilt_deg(R), distortion=k)
    if rms > st.max_rotation_rms_px * scale:
        return dataclasses.replace(out, reason=f"not a rotation (misfit {rms:.2f} px): a near plane seen while "
                                               "moving")
    if out.tilt_deg < st.min_tilt_deg:
        return dataclasses.replace(out, reason=f"a rotation only about the optical axis (its axis turned "
                                               f"{out.tilt_deg:.2f} degrees < {st.min_tilt_deg})")
    return out


def _general_pair(q0: np.ndarray, q1: np.ndarray, F: np.ndarray | None, keep: np.ndarray, focals: np.ndarray,
                  base: dict, st: SceneFocalSettings, scale: float) -> PairFocal:
    """:func:`pair_focal`'s general model on RANSAC's fundamental matrix ``F`` and its inliers ``keep``."""
    import cv2

    n = len(q0)
    if F is None or keep.sum() < max(st.min_inlier_share * n, 8):
        return PairFocal(**base, inliers=int(keep.sum()), reason=f"too few inliers ({int(keep.sum())} of {n})")
    f0 = _grid_minimum(essential_cost(F, focals), focals)
    k = np.diag([f0, f0, 1.0])
    _, R0, t0, _ = cv2.recoverPose(k @ F @ k, q0[keep] / f0, q1[keep] / f0, focal=1.0, pp=(0.0, 0.0))
    focal, log_sd, r = fit_general(q0[keep], q1[keep], f0, R0, t0[:, 0])
    out = PairFocal(**base, focal_px=focal, log_sd=log_sd, model="general", inliers=int(keep.sum()),
                    rms_px=math.sqrt(float(np.mean(r ** 2))), tilt_deg=_tilt_deg(R0))
    ratio = homography_ratio(q0[keep], q1[keep], r, 2.0 * st.ransac_px * scale)
    if ratio < st.min_parallax_ratio:
        return dataclasses.replace(out, reason=f"a plane (or a rotation) seen while the camera moved: a homography "
                                               f"explains the motion (misfit {ratio:.1f}x the epipolar one), the "
                                               "focal length is not observed")
    return out


def homography_ratio(q0: np.ndarray, q1: np.ndarray, sampson: np.ndarray, ransac_px: float) -> float:
    """How much worse a homography explains correspondences (N, 2) than their epipolar
    geometry: the median transfer error of a homography (RANSAC, threshold ``ransac_px``: a
    least-squares one was dragged by the odd mistracked point) over the median absolute
    Sampson distance ``sampson`` (N,). Noise alone gives about 2.5 (a transfer error
    is 2-D and carries both images' noise: Rayleigh median 1.66 sigma against 0.67 sigma);
    parallax of a 3D scene seen from two places makes it larger. Where a homography explains
    them (a plane, or a pure rotation), the fundamental matrix is not determined and
    neither is the focal length it gives (Hartley and Zisserman, sec. 11.9)."""
    import cv2

    H, _ = cv2.findHomography(q0, q1, cv2.RANSAC, ransac_px, maxIters=2000, confidence=0.999)
    if H is None:
        return math.inf
    h = np.column_stack([q0, np.ones(len(q0))]) @ H.T
    z = np.where(np.abs(h[:, 2]) < 1e-12, 1e-12, h[:, 2])
    transfer = np.linalg.norm(h[:, :2] / z[:, None] - q1, axis=1)
    return float(np.median(transfer) / max(float(np.median(np.abs(sampson))), 1e-12))


# ----------------------------------------------------------------------------- pooling


def pool_pairs(pairs: Sequence[PairFocal], camera: Intrinsics,
               settings: SceneFocalSettings = SceneFocalSettings()) -> SceneFocalEstimate:
    """The pooled focal length of the informative pairs, for ``camera`` (the assumed one: its
    principal point and size are kept).

    Pairs farther than ``max(3 sd, 5%)`` from the weighted median of ``log f`` are left out
    (and the estimate is rejected when that is most of them); the rest give the
    inverse-variance mean, whose standard deviation is inflated by their scatter where it
    exceeds their own uncertainties (reduced chi-square over 1).
    """
    st = settings
    good = [p for p in pairs if p.informative]
    measured = len(pairs)
    nan = SceneFocalEstimate(math.nan, math.nan, math.inf, 0, measured, False, "", None)
    if not good:
        reasons = sorted({p.reason.split(" (")[0] for p in pairs if p.reason})
        why = f" ({'; '.join(reasons)})" if reasons else ""
        return dataclasses.replace(nan, reason=f"no informative pair of frames{why}")
    logs = np.log([p.focal_px for p in good])
    sds = np.array([max(p.log_sd, 1e-4) for p in good])
    w = 1.0 / sds ** 2
    order = np.argsort(logs)
    cum = np.cumsum(w[order])
    median = float(logs[order][np.searchsorted(cum, 0.5 * cum[-1])])
    keep = np.abs(logs - median) <= np.maximum(3.0 * sds, 0.05)
    lk, wk = logs[keep], w[keep]
    mean = float(np.sum(wk * lk) / np.sum(wk))
    sd = 1.0 / math.sqrt(float(np.sum(wk)))
    if len(lk) > 1:
        chi2 = float(np.sum(wk * (lk - mean) ** 2)) / (len(lk) - 1)
        sd *= math.sqrt(max(chi2, 1.0))
    focal = math.exp(mean)
    width = camera.size[0] if camera.size is not None else 2.0 * camera.cx + 1.0
    fov = fov_from_focal(focal, width)
    intr = Intrinsics(focal, focal * camera.fy / camera.fx, camera.cx, camera.cy, camera.width, camera.height)
    lo, hi = st.fov_range_deg
    if len(lk) < st.min_pairs:
        reason = f"{len(lk)} informative pairs of frames < {st.min_pairs}"
    elif 2 * len(lk) <= len(good):  # not a majority
        reason = f"the pairs of frames disagree (only {len(lk)} of {len(good)} agree)"
    elif not sd <= st.max_log_sd:
        reason = f"poorly constrained (standard deviation {100 * sd:.1f}% > {100 * st.max_log_sd:.1f}%)"
    elif not lo <= fov <= hi:
        reason = f"a field of view of {fov:.0f} degrees is outside {lo:.0f}-{hi:.0f}"
    else:
        reason = ""
    ks = [p.distortion for p, kept in zip(good, keep) if kept and p.model == "rotation"]
    return SceneFocalEstimate(focal, fov, sd, int(len(lk)), measured, not reason, reason, intr,
                              float(np.median(ks)) if ks else math.nan)


# ----------------------------------------------------------------------------- the collector


@dataclass(frozen=True)
class _Key:
    t: float
    gray: np.ndarray
    mask: np.ndarray
    scale: float
    size: tuple[int, int]


class SceneFocal:
    """A stream's background-motion focal length (one per stream; :meth:`reset` for a new one).

    Call :meth:`observe` with each frame (its time, image, the assumed camera and the hands'
    boxes); :attr:`accepted` is the estimate once one passes :class:`SceneFocalSettings`'s
    gates. Runs in the caller's thread; :attr:`seconds` is the wall time spent in it,
    :attr:`frames` the frames it was given and :attr:`looked` those whose image it analysed.
    """

    def __init__(self, settings: SceneFocalSettings = SceneFocalSettings()) -> None:
        self.settings = settings
        self.reset()

    def reset(self) -> None:
        """Forget the stream."""
        self._key: _Key | None = None
        self._next_t = -math.inf  # the next frame time worth measuring
        self.pairs: list[PairFocal] = []
        self.estimate: SceneFocalEstimate | None = None  # the latest pooled estimate
        self.accepted: SceneFocalEstimate | None = None
        self.seconds = 0.0
        self.frames = 0  # frames observed (measured or not)
        self.looked = 0  # frames whose image was analysed

    @property
    def done(self) -> bool:
        """An estimate was accepted or ``max_pairs`` pairs were measured."""
        return self.accepted is not None or len(self.pairs) >= self.settings.max_pairs

    def observe(self, t: float, image: np.ndarray, camera: Intrinsics,
                boxes: Sequence[tuple[float, float, float, float]] = ()) -> SceneFocalEstimate | None:
        """Take a frame: ``image`` (H, W, 3) RGB or (H, W) uint8, ``camera`` the assumed camera
        (its principal point), ``boxes`` the hands' keypoint boxes ``(x0, y0, x1, y1)``,
        pixels. Returns the new pooled estimate when this frame completed a pair, else None."""
        if self.done:
            return None
        self.frames += 1
        key = self._key
        if key is not None and key.t <= t < self._next_t:
            return None
        started = time.perf_counter()
        try:
            return self._measure(t, image, camera, boxes, key)
        finally:
            self.seconds += time.perf_counter() - started

    def _measure(self, t: float, image: np.ndarray, camera: Intrinsics,
                 boxes: Sequence[tuple[float, float, float, float]], key: _Key | None) -> SceneFocalEstimate | None:
        st = self.settings
        self.looked += 1
        gray, scale = analysis_image(image, st.width)
        mask = background_mask(gray.shape, boxes, scale, st.hand_margin)
        size = (int(image.shape[1]), int(image.shape[0]))
        here = _Key(t, gray, mask, scale, size)
        if key is None or key.size != size or t < key.t:
            self._key, self._next_t = here, t + st.gap_s
            return None
        p0, p1 = track_features(key.gray, gray, key.mask, mask, st)
        flow = float(np.median(np.linalg.norm(p1 - p0, axis=1))) if len(p0) else 0.0
        if len(p0) >= st.min_features and flow < st.min_flow_px and t - key.t < st.max_gap_s:
            self._next_t = t + 0.5 * st.gap_s  # hardly moved yet: a wider baseline, looked at again soon
            return None
        pair = pair_focal(to_full(p0, scale), to_full(p1, scale), (camera.cx, camera.cy), size[0], st, scale,
                          t - key.t)
        self._key, self._next_t = here, t + st.gap_s
        self.pairs.append(pair)
        est = pool_pairs(self.pairs, camera, st)
        self.estimate = est
        if est.accepted:
            self.accepted = est
            log.debug("the background's motion gives the focal length %.1f px (%.1f degree field of view, "
                      "+-%.1f%%) from %d pairs of frames", est.focal_px, est.fov_deg, 100 * est.log_sd, est.pairs)
        elif len(self.pairs) >= st.max_pairs:
            log.info("no focal length from the background's motion after %d pairs of frames: %s",
                     len(self.pairs), est.reason)
        return est
