"""Temporal quality: the keypoint filter and refit of a tracked hand's fit, jitter and lag metrics.

The keypoint filter is checked on signals with known motion (a ramp, a step, a noisy
trajectory); the whole smoother on fits with known motion (a hand turning, curling its fingers
and sliding across the image at 30 fps) composed exactly by the fitter, with noise on the pose
and root of the kind a per-frame fit has; the engine test runs the demo clip through MediaPipe.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from core.fit import TailorFitter
from core.fit.temporal import AlphaBeta, HandSmoother, KeypointFilter, SmoothingSettings, alpha
from core.metrics import jitter_px, lag_frames
from core.model import load_open_hand
from core.synth.render import PALM_TO_CAMERA

K = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
FPS = 30.0
SIZE = (640, 480)


@pytest.fixture(scope="module")
def fitter():
    return TailorFitter(load_open_hand("right"), load_open_hand("left"))


def _rotvec(m: np.ndarray) -> np.ndarray:
    import torch

    from core.rotations import matrix_to_axis_angle

    return matrix_to_axis_angle(torch.as_tensor(m)).numpy()


def _rot(v: np.ndarray) -> np.ndarray:
    import torch

    from core.rotations import axis_angle_to_matrix

    return axis_angle_to_matrix(torch.as_tensor(np.asarray(v, dtype=np.float64))).numpy()


def trajectory(fitter: TailorFitter, n: int = 90, seed: int = 0, pose_noise: float = 0.03, px_noise: float = 1.0,
               K: np.ndarray | None = K):
    """Clean and noisy fits of a right hand in known motion; (clean fits, noisy fits, detections)."""
    rng = np.random.default_rng(seed)
    betas = np.zeros(10, dtype=np.float32)
    curl = rng.uniform(0.0, 0.3, 45)
    clean, noisy, dets = [], [], []
    for i in range(n):
        t = i / FPS
        glob = _rotvec(_rot([0.0, 0.0, 0.8 * np.sin(2 * np.pi * 0.4 * t)]) @ PALM_TO_CAMERA)
        pose = np.concatenate([glob, curl * (0.5 + 0.5 * np.sin(2 * np.pi * 0.3 * t))])
        root = np.array([320.0 + 120.0 * np.sin(2 * np.pi * 0.3 * t), 260.0, np.log(500.0 / 0.5)])
        f = fitter.compose("right", pose, betas, root, K, SIZE, np.zeros((21, 2)))
        det = f.keypoints_2d + rng.normal(0.0, px_noise, (21, 2))
        g = fitter.compose("right", pose + rng.normal(0.0, pose_noise, 48), betas,
                           root + rng.normal(0.0, 1.0, 3) * [px_noise, px_noise, 0.01], K, SIZE, det)
        clean.append(f)
        noisy.append(g)
        dets.append(det)
    return clean, noisy, dets


def smooth_all(fitter, noisy, dets, settings=SmoothingSettings(), K=K, times=None, betas=None):
    sm = HandSmoother(fitter, settings)
    times = [i / FPS for i in range(len(noisy))] if times is None else times
    return [sm(f, t, d, K, SIZE, betas) for f, t, d in zip(noisy, times, dets)]


def root_of(fit) -> np.ndarray:
    """(3,) a fit's root as :meth:`TailorFitter.compose` takes it: wrist pixels, log scale."""
    return np.array([*fit.keypoints_2d[0], np.log(fit.scale)], dtype=np.float64)


def kp(fits) -> np.ndarray:
    return np.stack([f.keypoints_2d for f in fits]).astype(np.float64)


# --------------------------------------------------------------------------- metrics


def test_jitter_is_the_median_second_difference_and_skips_missing_frames() -> None:
    t = np.arange(20, dtype=np.float64)
    line = np.stack([3 * t, -2 * t], -1)[:, None].repeat(21, 1)  # constant velocity: no jitter
    assert jitter_px(line) == pytest.approx(0.0, abs=1e-12)
    zigzag = line.copy()
    zigzag[1::2, :, 0] += 1.0  # +1 on odd frames: every second difference is 2 px
    assert jitter_px(zigzag) == pytest.approx(2.0)
    zigzag[5] = np.nan  # the three differences touching frame 5 are left out, not NaN
    assert jitter_px(zigzag) == pytest.approx(2.0)
    assert np.isnan(jitter_px(np.full((5, 21, 2), np.nan)))


@pytest.mark.parametrize("shift", [0.0, 1.0, 2.0, 0.5, -1.5])
def test_lag_recovers_a_known_delay(shift: float) -> None:
    t = np.arange(120, dtype=np.float64)
    ref = np.stack([np.sin(2 * np.pi * t / 40), np.cos(2 * np.pi * t / 55)], -1)[:, None] * 50
    late = np.stack([np.sin(2 * np.pi * (t - shift) / 40), np.cos(2 * np.pi * (t - shift) / 55)], -1)[:, None] * 50
    assert lag_frames(late, ref) == pytest.approx(shift, abs=0.05)


# --------------------------------------------------------------------------- the filter


def test_keypoint_filter_follows_a_constant_velocity_without_lag() -> None:
    """A ramp is followed exactly once the velocity is learnt (a first-order low-pass at the
    same bandwidth trails it by v / (2 pi fc): 48 px here)."""
    f = KeypointFilter(AlphaBeta(1.0, 1.0))
    for i in range(60):
        x = np.array([[10.0 + 9.0 * i, -6.0 * i, 0.01 * i]])  # 9 px a frame
        y = f(x, 1 / FPS, unit=100.0)
    np.testing.assert_allclose(y, x, atol=0.01)


def test_keypoint_filter_removes_noise_without_lag() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(120) / FPS
    truth = np.stack([200 + 80 * np.sin(2 * np.pi * 0.5 * t), 150 + 40 * np.cos(2 * np.pi * 0.3 * t)], -1)
    truth = truth[:, None].repeat(21, 1) + rng.uniform(-30, 30, (1, 21, 2))  # (T, 21, 2)
    noisy = truth + rng.normal(0.0, 1.5, truth.shape)
    f = KeypointFilter(SmoothingSettings().keypoints)
    out = np.stack([f(x, 1 / FPS, unit=100.0) for x in noisy])
    assert jitter_px(out - truth) < 0.6 * jitter_px(noisy - truth)
    assert abs(lag_frames(out, truth)) <= 0.3


def test_keypoint_filter_follows_a_step_within_frames() -> None:
    """A jump of half a hand size: the speed-adaptive bandwidth follows it within 2% in 6
    frames; the same filter at its resting bandwidth alone (beta 0) overshoots by 10% and is
    still 4% off two thirds of a second later."""
    def response(beta: float) -> np.ndarray:
        f = KeypointFilter(AlphaBeta(1.0, beta))
        return np.array([f(np.array([[0.0 if i < 10 else 50.0, 0.0]]), 1 / FPS, unit=100.0)[0, 0]
                         for i in range(40)])
    adaptive, fixed = response(1.0), response(0.0)
    assert np.all(np.abs(adaptive[16:] - 50.0) < 1.0)
    assert np.abs(fixed[16:] - 50.0).max() > 5.0 and abs(fixed[29] - 50.0) > 1.5
    assert adaptive.max() < 55.0  # a small overshoot, no ringing
    assert 0.0 < alpha(1.0, 1 / FPS) < alpha(10.0, 1 / FPS) < 1.0


@pytest.mark.parametrize("camera", [True, False], ids=["perspective", "weak"])
def test_compose_reproduces_a_fit(fitter, camera: bool) -> None:
    from core.fit import HandObservation

    clean, _, dets = trajectory(fitter, n=1, K=K if camera else None)
    f = clean[0]
    world = f.keypoints_3d - f.keypoints_3d.mean(0)
    fit = fitter.fit([HandObservation("right", f.keypoints_2d, world, K if camera else None, SIZE)])[0]
    again = fitter.compose("right", fit.pose, fit.betas, root_of(fit), K if camera else None, SIZE, f.keypoints_2d)
    for name in ("pose", "transl", "keypoints_3d", "keypoints_2d"):
        np.testing.assert_allclose(getattr(again, name), getattr(fit, name), atol=1e-3)
    assert again.reprojection_error_px == pytest.approx(fit.reprojection_error_px, abs=1e-3)
    assert again.projection == fit.projection


@pytest.mark.parametrize("camera", [True, False], ids=["perspective", "weak"])
def test_filter_removes_jitter_without_lag(fitter, camera: bool) -> None:
    k = K if camera else None
    clean, noisy, dets = trajectory(fitter, K=k)
    smooth = smooth_all(fitter, noisy, dets, K=k)
    truth, raw, out = kp(clean), kp(noisy), kp(smooth)
    assert jitter_px(out - truth) < 0.6 * jitter_px(raw - truth)
    assert jitter_px(out) < 0.8 * jitter_px(raw)
    assert abs(lag_frames(out, truth)) <= 1.0
    # The smoothed hand stays near the truth (under a frame of lag at up to 7.5 px a frame).
    assert np.linalg.norm(out - truth, axis=-1).mean() < 2.0 * np.linalg.norm(raw - truth, axis=-1).mean()
    assert all(s.side == "right" and s.projection == n.projection for s, n in zip(smooth, noisy))
    np.testing.assert_array_equal(smooth[0].keypoints_2d, noisy[0].keypoints_2d)  # the first passes as it is


def test_a_hand_at_rest_settles(fitter) -> None:
    clean, noisy, dets = trajectory(fitter, n=60)
    still = [clean[0]] * 60
    rng = np.random.default_rng(1)
    noisy = [fitter.compose("right", still[0].pose + rng.normal(0, 0.03, 48), still[0].betas,
                            root_of(still[0]) + rng.normal(0, 1.0, 3) * [1, 1, 0.01], K, SIZE, dets[0])
             for _ in range(60)]
    out = kp(smooth_all(fitter, noisy, [dets[0]] * 60))
    raw = kp(noisy)
    assert jitter_px(out) < 0.5 * jitter_px(raw)


def test_smoothed_fits_are_hands_of_the_model_with_the_profile_shape(fitter) -> None:
    """Each smoothed fit is the model posed by its own parameters (not moved keypoints), keeps
    a profile's fixed shape, and reports its error against the detected keypoints."""
    clean, noisy, dets = trajectory(fitter, n=8)
    shape = np.linspace(-1.0, 1.0, 10).astype(np.float32)
    smooth = smooth_all(fitter, noisy, dets, betas=shape)
    for s, d in zip(smooth[1:], dets[1:]):
        again = fitter.compose("right", s.pose, s.betas, root_of(s), K, SIZE, d)
        np.testing.assert_allclose(again.keypoints_2d, s.keypoints_2d, atol=1e-3)
        np.testing.assert_allclose(s.betas, shape, atol=1e-6)
        assert s.reprojection_error_px == pytest.approx(np.linalg.norm(s.keypoints_2d - d, axis=1).mean(), rel=1e-5)


def test_gaps_restart_the_filter_and_side_changes_refit(fitter) -> None:
    clean, noisy, dets = trajectory(fitter, n=6)
    sm = HandSmoother(fitter, SmoothingSettings(max_gap_s=0.2))
    for i in range(3):
        sm(noisy[i], i / FPS, dets[i], K, SIZE)
    assert sm.time == pytest.approx(2 / FPS)
    late = sm(noisy[3], 2 / FPS + 0.5, dets[3], K, SIZE)  # 0.5 s later: a new start
    np.testing.assert_array_equal(late.keypoints_2d, noisy[3].keypoints_2d)
    moved = sm(noisy[4], 2 / FPS + 0.5 + 1 / FPS, dets[4], K, SIZE)
    assert not np.array_equal(moved.keypoints_2d, noisy[4].keypoints_2d)
    # The track's side corrected: the keypoints' filter goes on, the other model is refitted.
    left = dataclasses.replace(noisy[5], side="left")
    mirrored = sm(left, 2 / FPS + 0.5 + 2 / FPS, dets[5], K, SIZE)
    assert mirrored.side == "left" and mirrored is not left and sm.time == pytest.approx(2 / FPS + 0.5 + 2 / FPS)
    again = fitter.compose("left", mirrored.pose, mirrored.betas, root_of(mirrored), K, SIZE, dets[5])
    np.testing.assert_allclose(again.keypoints_2d, mirrored.keypoints_2d, atol=1e-3)
    sm.reset()
    assert sm.time == -np.inf


def test_engine_smooths_the_demo_without_lag() -> None:
    """The engine's smoothed fits on the demo: less jitter than MediaPipe's keypoints and than
    the unfiltered fits, at most a frame behind the true keypoints (MediaPipe's trail them by
    a third of a frame here)."""
    from core.capture import DEMO_CLIP_PATH, open_source
    from core.tools.bench_fit import hand_tracks

    with open_source("demo") as src:
        frames = list(src)
    truth = np.load(DEMO_CLIP_PATH.with_name("demo_groundtruth.npz"))["keypoints_2d"]
    det, smooth = hand_tracks(frames, smoothing=True)
    _, raw = hand_tracks(frames, smoothing=False)
    assert np.isfinite(smooth).all()
    assert jitter_px(smooth - truth) < 0.8 * jitter_px(det - truth)
    assert jitter_px(smooth) < 0.8 * jitter_px(raw)
    assert lag_frames(smooth, det) <= 1.0
    assert lag_frames(smooth, truth) <= 1.0
