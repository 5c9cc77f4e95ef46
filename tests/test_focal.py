"""The focal length of an unknown camera estimated from a stream (core/focal.py, the engine's switch).

Keypoint-level synthetic sequences (the model's keypoints projected by a known camera, 1 px
noise): a hand that turns and changes depth gives the focal length within 10%; a hand that
never turns or changes depth leaves the stream in the assumed camera.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from core.camera import DEFAULT_FOV_DEG, intrinsics_from_fov
from core.capture.frame import Frame
from core.engine import Engine, EngineSettings
from core.focal import FocalEstimator, FocalFrame, FocalSettings, motion_spread
from core.synth import default_layers
from core.synth.sequences import SequenceFrame, detections, two_hand_sequence

W, H = 640, 480
FPS = 15.0


@pytest.fixture(scope="module")
def layers():
    return default_layers()


@pytest.fixture(scope="module")
def engine():
    settings = EngineSettings(detector_process=False, focal=FocalSettings(background=False))
    with Engine(settings, stream=True) as e:
        yield e


def _one_hand(layers, fov: float, seed: int, frames: int = 40) -> list[SequenceFrame]:
    """The right hand of a two-hand sequence (turning, tilting, depth +-8 cm) seen at ``fov``."""
    K = intrinsics_from_fov(fov, W, H).K
    seq = two_hand_sequence(layers, frames, K, (W, H), seed=seed, depth_m=0.3, crossing=False)
    return [SequenceFrame(f.sides[:1], f.keypoints_2d[:1], f.joints_3d[:1], f.K, f.image_size) for f in seq]


def _stream(engine, seq: list[SequenceFrame], seed: int = 0, noise_px: float = 1.0):
    """Feed the sequence in the assumed camera; the last frame's result."""
    assumed = intrinsics_from_fov(DEFAULT_FOV_DEG, W, H)
    image = np.zeros((H, W, 3), np.uint8)
    rng = np.random.default_rng(seed)
    engine.reset()
    result = None
    for i, f in enumerate(seq):
        result = engine.process_detections(Frame(i, i / FPS, image, assumed, "synthetic", "assumed"),
                                           detections(f, noise_px=noise_px, rng=rng))
    return result


def test_a_turning_hand_gives_the_focal_length(engine, layers) -> None:
    """120 degrees (the assumed 70 is 147% too long): the stream switches to an estimate within 10%."""
    seq = _one_hand(layers, 120.0, seed=0)
    result = _stream(engine, seq)
    f_true = seq[0].K[0, 0]
    assert result.camera_source == "estimated"
    assert result.camera.fx == pytest.approx(f_true, rel=0.1)
    assert (result.camera.cx, result.camera.cy) == ((W - 1) / 2, (H - 1) / 2)
    est = engine.focal.accepted
    assert est is not None and est.accepted and est.reason == "" and est.log_sd < 0.02
    line = result.to_json()
    assert line["camera_source"] == "estimated" and line["camera"]["fx"] == pytest.approx(result.camera.fx, abs=1e-3)
    assert line["camera_cue"] == result.camera_cue == "hand"
    # a new stream starts in the assumed camera again
    engine.reset()
    assert engine.focal.accepted is None and not engine.focal.estimates
    first = _stream(engine, seq[:3])
    assert first.camera_source == "assumed" and first.camera_cue is None and first.to_json()["camera_cue"] is None


def test_the_summary_names_the_cue() -> None:
    """Where an estimated camera came from, in words, for ``track``'s summary."""
    from core.tools.cli_track import camera_origin

    assert camera_origin("estimated", "scene") == "estimated from the background's motion"
    assert camera_origin("estimated", "hand") == "estimated from the hand"
    assert camera_origin("assumed", None) == "assumed" and camera_origin("estimated", None) == "estimated"


def test_a_hand_that_never_turns_or_changes_depth_keeps_the_assumed_camera(engine, layers) -> None:
    """One pose, one depth, a little sideways drift: the estimate is rejected as degenerate."""
    f0 = _one_hand(layers, 90.0, seed=0)[0]
    seq = []
    for i in range(40):
        shift = np.array([3.0 * np.sin(i / 5), 2.0 * np.cos(i / 7)], np.float32)
        seq.append(SequenceFrame(f0.sides, f0.keypoints_2d + shift, f0.joints_3d, f0.K, f0.image_size))
    result = _stream(engine, seq)
    assert result.camera_source == "assumed"
    assert result.camera.fx == pytest.approx(intrinsics_from_fov(DEFAULT_FOV_DEG, W, H).fx)
    assert engine.focal.estimates and not engine.focal.estimates[0].accepted
    assert "degenerate" in engine.focal.estimates[0].reason


def test_motion_spread_measures_turn_and_depth() -> None:
    pose = np.zeros(48)
    turned = pose.copy()
    turned[:3] = [0.0, np.radians(30.0), 0.0]
    kp = np.random.default_rng(0).uniform(100, 200, (21, 2))
    frames = [FocalFrame(kp, pose, 1.0), FocalFrame(kp * 1.5, turned, 1.0)]
    turn, ratio = motion_spread(frames)
    assert turn == pytest.approx(30.0, abs=1e-6)
    assert ratio == pytest.approx(1.5)


def _still_frames(estimator: FocalEstimator, hands_per_frame: list[list[tuple[int, str]]], start: int = 0) -> None:
    """Feed one still hand (no turn, no depth change: any estimate is rejected up front as
    degenerate, without a bundle adjustment) under the given (track id, side) per frame."""
    kp = np.random.default_rng(0).uniform(100, 200, (21, 2))
    camera = intrinsics_from_fov(DEFAULT_FOV_DEG, W, H)
    for i, hands in enumerate(hands_per_frame, start):
        estimator.observe(i / FPS, camera, [(tid, side, kp, np.zeros(48), 0.9) for tid, side in hands])


def test_frames_pool_across_tracks_of_one_side() -> None:
    """A hand lost and found again (a new track id) goes on counting toward its side's set; a
    frame with two hands of one side counts for neither; the other side counts apart."""
    from core.model import load_model_data, mirror_model

    right = load_model_data(None, "right")
    models = {"right": right, "left": mirror_model(right)}
    settings = FocalSettings(frames=4, interval_s=0.0, background=False, attempts=1)
    est = FocalEstimator(models, settings)
    _still_frames(est, [[(1, "right")], [(1, "right")], [], [(2, "right")], [(2, "right"), (3, "right")],
                        [(4, "left")]])
    assert not est.estimates  # 3 right frames: the doubled frame and the left one do not count
    _still_frames(est, [[(5, "right")]], start=6)
    assert len(est.estimates) == 1 and est.estimates[0].side == "right" and est.estimates[0].frames == 4
    assert "degenerate" in est.estimates[0].reason and est.done


def test_background_estimate_and_reset(layers) -> None:
    """In a background thread the estimate lands later; a reset drops it and its frames."""
    from core.model import load_model_data, mirror_model

    right = load_model_data(None, "right")
    models = {"right": right, "left": mirror_model(right)}
    settings = FocalSettings(frames=4, interval_s=0.0, starts_deg=(70.0,), max_log_sd=10.0, min_turn_deg=0.0,
                             min_size_ratio=1.0, fov_range_deg=(1.0, 179.0))
    est = FocalEstimator(models, settings)
    camera = intrinsics_from_fov(DEFAULT_FOV_DEG, W, H)
    seq = _one_hand(layers, 90.0, seed=1, frames=8)
    for i, f in enumerate(seq[:4]):
        est.observe(i / FPS, camera, [(1, "right", f.keypoints_2d[0], np.zeros(48), 0.9)])
    est.wait(60.0)
    assert est.done and est.accepted is not None
    assert est.camera(camera) is not None and est.camera(camera).size == (W, H)
    half = intrinsics_from_fov(DEFAULT_FOV_DEG, W // 2, H // 2)
    assert est.camera(half).fx == pytest.approx(est.accepted.focal_px / 2, rel=1e-3)  # scaled to the frame
    est.reset()
    assert est.accepted is None and not est.estimates and not est.done


def _models():
    from core.model import load_model_data, mirror_model

    right = load_model_data(None, "right")
    return {"right": right, "left": mirror_model(right)}


@pytest.mark.parametrize("retry_log_sd", [1e-9, 10.0])
def test_a_far_rejected_estimate_is_retried_only_when_the_motion_spreads(layers, retry_log_sd: float) -> None:
    """Every estimate rejected as poorly constrained (gate 0; the residual rule off): one whose standard deviation is
    far above ``retry_log_sd`` is retried only if the next set shows more motion; the same four
    frames again do not, so no second bundle adjustment runs. Within ``retry_log_sd`` it is."""
    settings = FocalSettings(frames=4, interval_s=0.0, starts_deg=(70.0,), max_log_sd=0.0, background=False)
    est = FocalEstimator(_models(), dataclasses.replace(settings, retry_log_sd=retry_log_sd, retry_max_residual=1.0))
    camera = intrinsics_from_fov(DEFAULT_FOV_DEG, W, H)
    seq = _one_hand(layers, 90.0, seed=1, frames=4)
    rng = np.random.default_rng(0)
    for rep in range(2):
        for i, f in enumerate(seq):
            est.observe((4 * rep + i) / FPS, camera,
                        [(1, "right", f.keypoints_2d[0] + rng.normal(0.0, 0.5, (21, 2)), np.zeros(48), 0.9)])
    first = est.estimates[0]
    assert "poorly constrained" in first.reason
    assert first.turn_deg == 0.0 and first.size_ratio > settings.min_size_ratio  # the start poses: no turn
    if retry_log_sd < 1.0:
        assert len(est.estimates) == 1 and est.done and "not spread" in est.stopped
    else:
        assert len(est.estimates) == 2 and not est.stopped and not est.done


@pytest.mark.parametrize("noise_px", [1.0, 5.0])
def test_a_rejected_estimate_with_a_large_misfit_is_not_retried(layers, noise_px: float) -> None:
    """Every estimate rejected (uncertainty gate 0), through the engine: true projections with
    1 px noise are retried with more frames; with 5 px noise (hands about 100-210 px across: a
    misfit of a few percent, over ``retry_max_residual``) the first rejection stops the estimation."""
    settings = FocalSettings(frames=8, max_log_sd=0.0, background=False)
    with Engine(EngineSettings(detector_process=False, smoothing=None, focal=settings), stream=True) as engine:
        result = _stream(engine, _one_hand(layers, 90.0, seed=1, frames=16), noise_px=noise_px)
        est = engine.focal
        estimates, stopped, done = est.estimates, est.stopped, est.done
    first = estimates[0]
    assert result.camera_source == "assumed" and not any(e.accepted for e in estimates)
    assert "poorly constrained" in first.reason
    if noise_px > 1.0:
        assert first.residual > settings.retry_max_residual
        assert len(estimates) == 1 and done and "misfit" in stopped
    else:
        assert first.residual < settings.retry_max_residual
        assert len(estimates) == 2 and not stopped


DATA = __import__("pathlib").Path(__file__).parent / "data" / "wide_angle_detections.npz"


@pytest.mark.skipif(not DATA.is_file(), reason="tests/data/wide_angle_detections.npz is missing")
@pytest.mark.parametrize("fov", [90, 120])
def test_mediapipe_keypoints_of_a_wide_angle_clip_do_not_switch_to_a_wrong_camera(fov: int) -> None:
    """Real MediaPipe detections of a hand rendered by a 90 or 120 degree camera: they show
    less perspective than the image, the free focal length runs long; the estimate must be
    rejected (the stream keeps the assumed camera) rather than accepted more than 10% off.
    At 120 degrees MediaPipe loses the hand for 4 frames and labels it left now and then
    (RLRRRRR....RRRRRRRRLLRLR): frames pooled per side still make an estimate."""
    from core.detect import Detection

    data = np.load(DATA)
    found = data[f"fov{fov}_found"]
    f_true = intrinsics_from_fov(float(fov), W, H).fx
    assumed = intrinsics_from_fov(DEFAULT_FOV_DEG, W, H)
    image = np.zeros((H, W, 3), np.uint8)
    settings = EngineSettings(detector_process=False, smoothing=None, focal=FocalSettings(frames=8, background=False))
    with Engine(settings, stream=True) as engine:
        for i in np.flatnonzero(found):
            key = f"fov{fov}"
            det = Detection("right" if data[f"{key}_right"][i] else "left", float(data[f"{key}_score"][i]),
                            data[f"{key}_keypoints_2d"][i], data[f"{key}_z"][i], data[f"{key}_world"][i], (W, H))
            result = engine.process_detections(Frame(int(i), i / FPS, image, assumed, "x", "assumed"), [det])
        estimates, done, stopped = engine.focal.estimates, engine.focal.done, engine.focal.stopped
    assert estimates  # an estimate was made
    if result.camera_source == "estimated":
        assert result.camera.fx == pytest.approx(f_true, rel=0.1)
    else:
        assert result.camera_source == "assumed" and not any(e.accepted for e in estimates)
    # MediaPipe's keypoints misfit any perspective view of one hand: one bundle adjustment, no
    # retry with more frames
    assert estimates[0].residual > FocalSettings().retry_max_residual
    assert len(estimates) == 1 and done and "misfit" in stopped


def test_exact_hand_fov_recovers_the_camera_of_true_projections(layers) -> None:
    """The bench's ceiling of a keypoint-based estimate: with the exact 3D hand and its true
    projections (0.5 px noise) it finds the camera's field of view."""
    from core.tools.bench_tracking import exact_hand_fov

    seq = _one_hand(layers, 100.0, seed=2, frames=12)
    rng = np.random.default_rng(0)
    uv = [f.keypoints_2d[0] + rng.normal(0.0, 0.5, (21, 2)) for f in seq]
    assert exact_hand_fov([f.joints_3d[0] for f in seq], uv, (W, H)) == 100.0
    assert exact_hand_fov([f.joints_3d[0] for f in seq], uv, (W, H), fovs=(60.0, 70.0, 130.0)) == 70.0


def test_world_landmark_turn_measures_a_known_turn_toward_the_ray(layers) -> None:
    """The bench's measure of MediaPipe's world landmarks: landmarks built as the true hand
    turned back by 0.4 of its ray's angle (about the axis taking the optical axis onto the ray)
    read 0.4; the true keypoints themselves read 0; hands on the optical axis are skipped."""
    from core.rotations import axis_angle_to_matrix
    from core.tools.bench_tracking import world_landmark_turn

    seq = _one_hand(layers, 100.0, seed=3, frames=10)
    joints = [f.joints_3d[0].astype(np.float64) for f in seq]
    world = []
    for j in joints:
        ray = j.mean(0) / np.linalg.norm(j.mean(0))
        axis = np.cross([0.0, 0.0, 1.0], ray)
        angle = np.arcsin(np.linalg.norm(axis))
        R = axis_angle_to_matrix(torch.as_tensor(-0.4 * angle * axis / np.linalg.norm(axis))).numpy()
        world.append((j - j.mean(0)) @ R.T)
    assert world_landmark_turn(world, joints) == pytest.approx(0.4, abs=1e-3)
    assert world_landmark_turn(joints, joints) == pytest.approx(0.0, abs=1e-3)
    on_axis = [j - j.mean(0) + [0.0, 0.0, 0.5] for j in joints]
    assert np.isnan(world_landmark_turn(on_axis, on_axis))


def test_best_rotation_recovers_a_rotation_and_keeps_procrustes() -> None:
    """Kabsch against a known rotation (with noise), and PA-MPJPE zero for a similar copy."""
    from core.metrics import best_rotation, pa_mpjpe
    from core.rotations import axis_angle_to_matrix

    rng = np.random.default_rng(4)
    p = rng.normal(size=(21, 3))
    R = axis_angle_to_matrix(torch.tensor([0.3, -1.1, 0.7], dtype=torch.float64)).numpy()
    g = p @ R.T + [0.1, 0.2, 0.3] + rng.normal(0, 1e-4, (21, 3))
    assert np.abs(best_rotation(p, g) - R).max() < 1e-3
    assert pa_mpjpe(2.5 * p @ R.T + 1.0, p) < 1e-9
    mirrored = p * [1.0, 1.0, -1.0]  # a reflection is not a rotation: the best proper one leaves an error
    assert np.linalg.det(best_rotation(mirrored, p)) == pytest.approx(1.0)
