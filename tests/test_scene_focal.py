"""The focal length from the background's motion (core/scene_focal.py) and its hook in the
engine's focal-length estimation (core/focal.py).

Oracles: correspondences of known cameras (rotations, a translating camera in a 3D scene,
0.5 px noise) and rendered views of a turning camera (a textured panorama warped by the exact
``K R K^-1``) with a hand-like blob moving in front; the true focal length is known.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from core.camera import DEFAULT_FOV_DEG, intrinsics_from_fov
from core.capture.frame import Frame
from core.scene_focal import (
    PairFocal,
    SceneFocal,
    SceneFocalSettings,
    background_mask,
    pair_focal,
    pool_pairs,
    rotvec_matrix,
    to_full,
)
from core.synth.render import textured_background, turned_view

W, H = 640, 480
FPS = 15.0


def _correspondences(fov: float, rotvec, transl, seed: int, noise_px: float = 0.5, n: int = 300,
                     size: tuple[int, int] = (1920, 1080), plane: bool = False):
    """Pixels (N, 2) of random scene points 1-4 m away in a camera of ``fov`` and in the same
    camera rotated by ``rotvec`` (axis-angle) and moved by ``transl`` (metres), with noise
    (0.5 px at 1920 wide: 0.125 px in the 480 px analysis image, ``scale`` 4). ``plane``: the
    points lie on a table 0.6 m in front, tilted 50 degrees (a head-mounted camera's view)."""
    w, h = size
    cam = intrinsics_from_fov(fov, w, h)
    rng = np.random.default_rng(seed)
    u, v, d = rng.uniform(0, w, n), rng.uniform(0, h, n), rng.uniform(1.0, 4.0, n)
    X = np.column_stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones(n)])
    if plane:
        normal = np.array([0.0, -math.sin(math.radians(50)), -math.cos(math.radians(50))])
        d = 0.6 * math.cos(math.radians(50)) / -(X @ normal)
        assert (d > 0).all()
    X = X * d[:, None]
    Y = X @ rotvec_matrix(np.asarray(rotvec, float)).T + np.asarray(transl, float)
    p0 = np.column_stack([u, v])
    p1 = np.column_stack([Y[:, 0] / Y[:, 2] * cam.fx + cam.cx, Y[:, 1] / Y[:, 2] * cam.fy + cam.cy])
    return p0 + rng.normal(0, noise_px, p0.shape), p1 + rng.normal(0, noise_px, p1.shape), cam


@pytest.mark.parametrize("fov", [50.0, 90.0, 120.0])
def test_a_rotating_camera_gives_its_focal_length(fov: float) -> None:
    """A pure rotation (a few degrees about a tilted axis): the rotation model, within 1%."""
    p0, p1, cam = _correspondences(fov, np.radians([2.0, 3.0, 0.5]), [0, 0, 0], seed=1)
    pair = pair_focal(p0, p1, (cam.cx, cam.cy), 1920, scale=4.0)
    assert pair.informative and pair.model == "rotation"
    assert pair.focal_px == pytest.approx(cam.fx, rel=0.01)
    assert pair.log_sd < 0.01 and abs(pair.distortion) < 0.01


def test_distortion_round_trips_and_a_barrel_lens_gives_the_paraxial_focal_length() -> None:
    """Division-model distortion: distort inverts undistort. A rotating 90 degree camera whose
    lens moves the corners in by 6% (k -0.08 in half-diagonals): each pair within 3%, the
    distortion recovered; the pinhole model alone was 10% long."""
    from core.scene_focal import distort, undistort

    q = np.random.default_rng(0).uniform(-900, 900, (50, 2))
    assert np.allclose(undistort(distort(q, -0.2, 1100.0), -0.2, 1100.0), q, atol=1e-6)
    cam = intrinsics_from_fov(90.0, 1920, 1080)
    radius = math.hypot(cam.cx + 0.5, cam.cy + 0.5)
    c = np.array([cam.cx, cam.cy])
    for seed in range(4):
        p0, p1, _ = _correspondences(90.0, np.radians([2.0, 3.0, 0.5]), [0, 0, 0], seed=seed, noise_px=0.0)
        rng = np.random.default_rng(seed)
        p0, p1 = (distort(p - c, -0.08, radius) + c + rng.normal(0, 0.5, p.shape) for p in (p0, p1))
        pair = pair_focal(p0, p1, (cam.cx, cam.cy), 1920, scale=4.0)
        assert pair.informative and pair.model == "rotation"
        assert pair.focal_px == pytest.approx(cam.fx, rel=0.03)
        assert pair.distortion == pytest.approx(-0.08, abs=0.02)
        pinhole = pair_focal(p0, p1, (cam.cx, cam.cy), 1920, SceneFocalSettings(distortion=False), scale=4.0)
        assert pinhole.focal_px > 1.06 * cam.fx


@pytest.mark.parametrize("fov", [50.0, 90.0, 120.0])
def test_a_translating_camera_in_a_3d_scene_gives_its_focal_length(fov: float) -> None:
    """Rotation and translation through a scene 1-4 m deep (the fundamental matrix's model):
    each pair within three of its standard deviations, the pool of eight within 1%, accepted."""
    rng = np.random.default_rng(7)
    pairs = []
    for seed in range(8):
        p0, p1, cam = _correspondences(fov, rng.normal(0, 0.04, 3), rng.normal(0, 0.15, 3), seed=seed)
        pairs.append(pair_focal(p0, p1, (cam.cx, cam.cy), 1920, scale=4.0))
    assert all(p.model == "general" and p.informative for p in pairs)
    assert all(abs(math.log(p.focal_px / cam.fx)) < 3 * p.log_sd + 0.005 for p in pairs)
    est = pool_pairs(pairs, cam, SceneFocalSettings())
    assert est.accepted and est.pairs >= 6
    assert est.focal_px == pytest.approx(cam.fx, rel=0.01)
    assert est.fov_deg == pytest.approx(fov, abs=1.0)


def test_exact_correspondences_give_the_exact_focal_length() -> None:
    for rotvec, transl in (([0.03, 0.05, 0.01], [0, 0, 0]), ([0.02, -0.04, 0.01], [0.3, 0.1, 0.05])):
        p0, p1, cam = _correspondences(90.0, rotvec, transl, seed=3, noise_px=0.0)
        assert pair_focal(p0, p1, (cam.cx, cam.cy), 1920, scale=4.0).focal_px == pytest.approx(cam.fx, rel=1e-4)


def test_degenerate_motion_is_rejected() -> None:
    """No motion, a rotation only about the optical axis (K^-1 H K is a rotation for every
    focal length) and a pure translation (every focal length gives an essential matrix) say
    nothing; pooled, they give no estimate."""
    cam = intrinsics_from_fov(90.0, 1920, 1080)

    def pair(rotvec, transl, n: int = 300) -> PairFocal:
        p0, p1, _ = _correspondences(90.0, rotvec, transl, seed=0, n=n)
        return pair_focal(p0, p1, (cam.cx, cam.cy), 1920, scale=4.0)

    static, roll, slide = pair([0, 0, 0], [0, 0, 0]), pair([0, 0, 0.08], [0, 0, 0]), pair([0, 0, 0], [0.3, 0.1, 0.05])
    assert "did not move" in static.reason
    assert "optical axis" in roll.reason
    assert slide.reason and not slide.informative
    few = pair([0.03, 0.05, 0], [0, 0, 0], n=20)
    assert "too few" in few.reason
    # a table seen by a head turning about the neck (the camera 10 cm in front of the pivot):
    # a plane while moving, the fundamental matrix is undetermined
    turn = rotvec_matrix(np.radians([2.0, 2.0, 0.3]))
    pivot = np.array([0.0, 0.1, -0.1])
    p0, p1, _ = _correspondences(90.0, np.radians([2.0, 2.0, 0.3]), pivot - turn @ pivot, seed=0, plane=True)
    table = pair_focal(p0, p1, (cam.cx, cam.cy), 1920, scale=4.0)
    assert "a plane" in table.reason and not table.informative
    est = pool_pairs([static, roll, slide, few, table], cam)
    assert not est.accepted and math.isnan(est.focal_px) and "no informative pair" in est.reason


def test_pooling_leaves_out_an_outlying_pair_and_needs_enough_pairs() -> None:
    cam = intrinsics_from_fov(90.0, 640, 480)
    good = [PairFocal(cam.fx * (1 + e), 0.01, "rotation") for e in (-0.01, 0.0, 0.01, 0.005, -0.005)]
    est = pool_pairs(good + [PairFocal(cam.fx * 1.6, 0.01, "rotation")], cam)
    assert est.accepted and est.pairs == 5 and est.focal_px == pytest.approx(cam.fx, rel=0.01)
    assert est.intrinsics.cx == cam.cx and est.intrinsics.size == cam.size
    two = pool_pairs(good[:2], cam, SceneFocalSettings(min_pairs=3))
    assert not two.accepted and "informative pairs" in two.reason
    # pairs that disagree beyond their uncertainties inflate the pooled one
    spread = pool_pairs([PairFocal(cam.fx * (1 + e), 0.005, "rotation") for e in (-0.02, 0.02, -0.015, 0.015, 0)],
                        cam)
    assert spread.pairs == 5 and 0.007 < spread.log_sd < 0.009  # 0.005 / sqrt(5) * sqrt(12.5)
    # two camps: the pooled estimate is not trusted
    split = pool_pairs([PairFocal(cam.fx * (1 + e), 0.005, "rotation") for e in (-0.1, -0.1, -0.1, 0.1, 0.1, 0.1)],
                       cam, SceneFocalSettings(min_pairs=3))
    assert not split.accepted and "disagree" in split.reason


def test_background_mask_covers_the_grown_boxes() -> None:
    mask = background_mask((120, 160), [(100.0, 100.0, 200.0, 180.0)], 4.0, 0.0)
    assert mask[30, 35] == 0 and mask[20, 20] == 255 and mask[30, 55] == 255
    grown = background_mask((120, 160), [(100.0, 100.0, 200.0, 180.0)], 4.0, 0.25)
    assert grown[30, 55] == 0 and grown[30, 62] == 255 and (grown == 0).sum() > (mask == 0).sum()
    assert np.allclose(to_full(np.array([[0.0, 0.0]]), 4.0), [[1.5, 1.5]])


def _turning_clip(fov: float, frames: int = 30, seed: int = 0, amplitude_deg: float = 8.0, size=(W, H),
                  static: bool = False, table_m: float | None = None, lever_m: float = 0.0):
    """Frames of a camera turning (yaw, pitch, a little roll) over a textured distant scene, a
    skin-coloured hand-like blob (palm and fingers) moving fast in front; with its box. With
    ``table_m``, a table that far below the camera, which turns about a point ``lever_m``
    behind it (parallax)."""
    import cv2

    from core.synth.render import table_view

    w, h = size
    cam = intrinsics_from_fov(fov, w, h)
    rng = np.random.default_rng(seed)
    panorama = textured_background(rng, 3 * w, 3 * h, feature_px=0.03 * w)
    K_pan = cam.K.copy()
    K_pan[0, 2] += w
    K_pan[1, 2] += h
    table = None if table_m is None else textured_background(rng, 3 * w, 3 * h, feature_px=0.03 * w)
    out = []
    for i in range(frames):
        phase = 2 * np.pi * i / frames
        a = 0.0 if static else amplitude_deg
        R = rotvec_matrix(np.radians([0.6 * a * np.sin(phase + 1.0), a * np.sin(phase), 0.2 * a * np.sin(2 * phase)]))
        image = turned_view(panorama, K_pan, cam.K, R, (w, h))
        if table is not None:
            pivot = np.array([0.0, 0.0, -lever_m])
            near, on_table = table_view(table, K_pan, cam.K, R, pivot - R @ pivot, table_m, (w, h))
            image[on_table] = near[on_table]
        cx, cy, r = w / 2 + 0.3 * w * np.cos(3 * phase), h / 2 + 0.25 * h * np.sin(3 * phase), 0.1 * w
        cv2.ellipse(image, (int(cx), int(cy)), (int(r), int(1.2 * r)), 25.0 * i, 0, 360, (225, 172, 140), -1)
        for k in range(4):  # fingers
            x = int(cx - 0.75 * r + 0.5 * r * k)
            cv2.rectangle(image, (x, int(cy - 2.4 * r)), (x + int(0.35 * r), int(cy - r)), (215, 160, 130), -1)
        kp = np.array([[cx - r, cy - 2.4 * r], [cx + r, cy + 1.2 * r]])
        out.append((image, kp))
    return out, cam


@pytest.mark.parametrize("fov", [60.0, 90.0, 120.0])
def test_a_turning_camera_behind_a_moving_hand_gives_its_focal_length(fov: float) -> None:
    """Image level: the collector tracks the background (the blob masked out), within 5%."""
    clip, cam = _turning_clip(fov)
    collector = SceneFocal()
    for i, (image, kp) in enumerate(clip):
        collector.observe(i / FPS, image, cam, [(*kp[0], *kp[1])])
        if collector.done:
            break
    est = collector.accepted
    assert est is not None, collector.estimate
    assert est.focal_px == pytest.approx(cam.fx, rel=0.05)
    assert est.intrinsics.cx == cam.cx and est.intrinsics.size == (W, H)
    assert collector.seconds > 0 and collector.frames <= 30


@pytest.mark.parametrize("fov", [90.0, 120.0])
def test_a_head_turning_over_a_table_gives_its_focal_length(fov: float) -> None:
    """A table 0.4 m below a camera turning about a point 0.1 m behind it (a head about the
    neck: the camera moves, the near table shows parallax): within 5%, and no pincushion lens
    distortion is used (free, it absorbs parallax: 2% long here, 10-20% on the bench's
    ``wide_angle_moving_table`` clips; the pinhole's: 0.2%, 2%)."""
    clip, cam = _turning_clip(fov, frames=45, table_m=0.4, lever_m=0.1)
    collector = SceneFocal()
    for i, (image, kp) in enumerate(clip):
        collector.observe(i / FPS, image, cam, [(*kp[0], *kp[1])])
    est = collector.accepted
    assert est is not None, collector.estimate
    assert est.focal_px == pytest.approx(cam.fx, rel=0.05)
    assert all(p.distortion == 0.0 for p in collector.pairs if p.informative)


def test_the_collector_is_deterministic_and_waits_out_the_gap() -> None:
    clip, cam = _turning_clip(90.0, frames=12)
    runs = []
    for _ in range(2):
        collector = SceneFocal(SceneFocalSettings(min_pairs=2))
        for i, (image, kp) in enumerate(clip):
            collector.observe(i / FPS, image, cam, [(*kp[0], *kp[1])])
        runs.append(collector.pairs)
    assert runs[0] == runs[1] and runs[0]
    assert all(p.dt_s >= SceneFocalSettings().gap_s - 1e-9 for p in runs[0])


def test_a_static_camera_gives_no_scene_estimate() -> None:
    clip, cam = _turning_clip(90.0, static=True)
    collector = SceneFocal()
    for i, (image, kp) in enumerate(clip):
        collector.observe(i / FPS, image, cam, [(*kp[0], *kp[1])])
    assert collector.accepted is None and collector.pairs
    assert all("did not move" in p.reason for p in collector.pairs)
    # a key frame every 0.6 s, looked at again every 0.1 s from 0.2 s: 5 of every 9 frames at 15 fps
    assert collector.looked <= 0.6 * len(clip)
    assert not collector.estimate.accepted and "did not move" in collector.estimate.reason


# ----------------------------------------------------------------------------- the engine


@pytest.fixture(scope="module")
def layers():
    from core.synth import default_layers

    return default_layers()


def _stream(engine, images, dets, assumed):
    engine.reset()
    result = None
    for i, (image, d) in enumerate(zip(images, dets)):
        result = engine.process_detections(Frame(i, i / FPS, image, assumed, "synthetic", "assumed"), d)
    return result


def test_the_engine_switches_to_the_scene_estimate_of_a_moving_camera(layers) -> None:
    """A hand (synthetic keypoints) in front of a turning camera, no intrinsics: the stream
    ends in the scene's estimate (``camera_source`` "estimated", cue "scene"), within 5%."""
    from core.engine import Engine, EngineSettings
    from core.focal import FocalSettings
    from core.synth.sequences import detections
    from tests.test_focal import _one_hand

    fov = 100.0
    seq = _one_hand(layers, fov, seed=3, frames=30)
    clip, cam = _turning_clip(fov, frames=30, seed=3)
    rng = np.random.default_rng(0)
    dets = [detections(f, noise_px=1.0, rng=rng) for f in seq]
    assumed = intrinsics_from_fov(DEFAULT_FOV_DEG, W, H)
    # 7 pairs (frames 3, 6, ... 21): the hand's 16 frames are complete first (frame 15)
    focal = FocalSettings(background=False, scene=SceneFocalSettings(min_pairs=7))
    settings = EngineSettings(detector_process=False, focal=focal)
    with Engine(settings, stream=True) as engine:
        result = _stream(engine, [c[0] for c in clip], dets, assumed)
        assert engine.focal.scene.accepted.pairs >= 7
        accepted, hand_estimates = engine.focal.accepted, engine.focal.estimates
    assert accepted is not None and accepted.cue == "scene" and accepted.side == ""
    # the hand's bundle adjustment waited for the scene's verdict and was never needed
    assert hand_estimates == ()
    assert result.camera_source == "estimated" and result.camera_cue == "scene"
    assert result.to_json()["camera_cue"] == "scene"
    assert result.camera.fx == pytest.approx(cam.fx, rel=0.05)
    assert result.camera.cx == assumed.cx and result.camera.cy == assumed.cy


def test_a_static_camera_leaves_the_hand_cue_unchanged(layers) -> None:
    """A static textured background: no scene estimate, and the hand's estimates are the
    ones made with the scene's cue switched off."""
    from core.engine import Engine, EngineSettings
    from core.focal import FocalSettings
    from core.synth.sequences import detections
    from tests.test_focal import _one_hand

    seq = _one_hand(layers, 100.0, seed=3, frames=24)
    clip, _ = _turning_clip(100.0, frames=24, seed=3, static=True)
    assumed = intrinsics_from_fov(DEFAULT_FOV_DEG, W, H)
    out = []
    for scene in (SceneFocalSettings(), None):
        rng = np.random.default_rng(0)
        dets = [detections(f, noise_px=1.0, rng=rng) for f in seq]
        focal = FocalSettings(background=False, frames=8, scene=scene)
        with Engine(EngineSettings(detector_process=False, focal=focal), stream=True) as engine:
            result = _stream(engine, [c[0] for c in clip], dets, assumed)
            out.append((engine.focal.estimates, engine.focal.scene_estimate, result))
    (hand_on, scene_est, res_on), (hand_off, none, res_off) = out
    assert none is None and scene_est is not None and not scene_est.accepted and scene_est.cue == "scene"
    assert [dataclasses.replace(e, seconds=0.0) for e in hand_on] == [dataclasses.replace(e, seconds=0.0)
                                                                      for e in hand_off]
    assert hand_on and all(e.cue == "hand" for e in hand_on)
    assert res_on.camera == res_off.camera and res_on.camera_source == res_off.camera_source
