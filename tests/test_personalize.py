"""Personalization: selection, attention calibration, scale pinning, ArUco/stereo geometry,
the calibration session and the confidence predictor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import InputError
from core.personalize import CalibrationFrame, CalibrationSession, ScaleOption, select_frames
from core.personalize.features import FEATURE_NAMES, NUM_FEATURES
from core.personalize.scale import (
    SheetSpec,
    StereoCalibration,
    keypoints_on_plane,
    measures,
    pin_hand_length,
    pin_scale,
    scale_from_keypoints,
    sheet_pose,
    triangulate_keypoints,
)


@pytest.fixture(scope="module")
def session() -> CalibrationSession:
    return CalibrationSession(k=20, confidence="heuristic")


def _rest_keypoints(layer, betas) -> np.ndarray:
    with torch.no_grad():
        return layer.rest(torch.as_tensor(np.asarray(betas, dtype=np.float32))[None]).keypoints[0].double().numpy()


# ----------------------------------------------------------------------------- selection


def test_selection_prefers_quality_then_diversity() -> None:
    conf = np.array([0.9, 0.89, 0.88, 0.1, 0.5])
    desc = np.array([[0.0, 0], [0.0, 0.001], [0.0, 0.002], [5.0, 5], [3.0, 0]])
    chosen = select_frames(conf, desc, 2, diversity=1.0, min_quality=0.0)
    assert 0 in chosen and chosen != [0, 1]  # the near-duplicates of frame 0 lose to a new view
    assert select_frames(conf, desc, 2, diversity=0.0) == [0, 1]  # quality only


def test_selection_honours_forced_and_excluded() -> None:
    conf = np.linspace(0, 1, 10)
    desc = np.random.default_rng(0).normal(size=(10, 3))
    chosen = select_frames(conf, desc, 4, forced=[0], excluded=[9, 8])
    assert len(chosen) == 4 and 0 in chosen and 9 not in chosen and 8 not in chosen
    assert select_frames(conf, desc, 20) == list(range(10))
    assert select_frames(np.zeros(0), np.zeros((0, 3)), 5) == []


# ----------------------------------------------------------------------------- scale


def test_pin_hand_length_is_exact_and_keeps_proportions(hand_layer) -> None:
    b = np.random.default_rng(1).normal(size=10).clip(-2, 2).astype(np.float32)
    L, W, _ = measures(hand_layer, b)
    pinned = pin_hand_length(hand_layer, b, 1.08 * L)
    L2, W2, _ = measures(hand_layer, pinned)
    assert L2 == pytest.approx(1.08 * L, abs=1e-5)
    assert W2 / W == pytest.approx(1.08, abs=0.03)  # proportions kept (to the shape space)
    same = pin_scale(hand_layer, b, 1.0)
    assert np.abs(same - b).max() < 1e-3


def test_pin_scale_is_exact_when_a_shape_component_hits_its_bound(hand_layer) -> None:
    """The length stays exact when the projected shape leaves the box: the clipped components
    stay at their bound and the others carry the length."""
    b = np.zeros(10, np.float32)
    free = pin_scale(hand_layer, b, 1.12, max_beta=10.0)
    box = 0.6 * float(np.abs(free).max())
    pinned = pin_scale(hand_layer, b, 1.12, max_beta=box)
    assert np.abs(pinned).max() == pytest.approx(box)  # a component sits on the bound
    L0 = measures(hand_layer, b)[0]
    assert measures(hand_layer, pinned)[0] == pytest.approx(1.12 * L0, abs=2e-6)


def test_scale_from_measured_keypoints(hand_layer) -> None:
    b = np.zeros(10, np.float32)
    kp = _rest_keypoints(hand_layer, b) * 1.12
    rot = np.linalg.qr(np.random.default_rng(2).normal(size=(3, 3)))[0]
    measured = np.stack([kp @ rot.T + 0.3, kp + 0.1])
    assert scale_from_keypoints(hand_layer, b, measured) == pytest.approx(1.12, rel=1e-6)
    opt = ScaleOption("stereo", keypoints_3d=measured)
    from core.personalize.scale import apply_scale

    L, _, _ = measures(hand_layer, apply_scale(hand_layer, b, opt))
    assert L == pytest.approx(1.12 * measures(hand_layer, b)[0], abs=1e-5)


def test_scale_option_validation() -> None:
    with pytest.raises(InputError):
        ScaleOption("ruler")
    with pytest.raises(InputError):
        ScaleOption.from_hand_length(20.0)
    with pytest.raises(InputError):
        ScaleOption("aruco")
    assert ScaleOption.from_hand_length(185).hand_length_mm == 185


def _look_at_sheet(rng) -> tuple[np.ndarray, np.ndarray]:
    """A sheet pose: tilted ~20 degrees, 0.45 m in front of the camera."""
    import cv2

    rvec = np.array([rng.uniform(-0.35, 0.35), rng.uniform(-0.35, 0.35), rng.uniform(-0.3, 0.3)])
    R, _ = cv2.Rodrigues(rvec)
    t = np.array([-0.08, -0.1, 0.45])
    return R, t


def test_charuco_sheet_pose_and_ray_plane_intersection() -> None:
    import cv2

    rng = np.random.default_rng(3)
    sheet = SheetSpec("charuco", (5, 7), 30.0, 22.0, "DICT_4X4_50")
    board = sheet.board()
    px_per_m = 4000.0
    art = board.generateImage((int(0.15 * px_per_m), int(0.21 * px_per_m)), marginSize=0, borderBits=1)
    K = np.array([[900.0, 0, 640], [0, 900.0, 360], [0, 0, 1]])
    R, t = _look_at_sheet(rng)
    # Sheet pixel (u, v) -> sheet point (u, v, 0) / px_per_m -> camera pixels: a homography.
    S = np.diag([1 / px_per_m, 1 / px_per_m, 1.0])
    H = K @ np.column_stack([R[:, 0], R[:, 1], t]) @ S
    image = cv2.warpPerspective(art, H, (1280, 720), flags=cv2.INTER_AREA, borderValue=200)
    image = np.repeat(image[..., None], 3, axis=2)
    found = sheet_pose(image, K, sheet)
    assert found is not None
    R_est, t_est = found
    assert np.linalg.norm(t_est - t) < 0.004
    assert np.degrees(np.arccos(np.clip((np.trace(R_est.T @ R) - 1) / 2, -1, 1))) < 1.5
    # Points 1 cm above the sheet (camera side), seen by the camera, recovered by the rays.
    pts_sheet = np.column_stack([rng.uniform(0, 0.15, 21), rng.uniform(0, 0.21, 21), np.full(21, -0.01)])
    pts_cam = pts_sheet @ R.T + t
    uv = pts_cam @ K.T
    uv = uv[:, :2] / uv[:, 2:]
    back = keypoints_on_plane(uv, K, R, t, height_m=0.01)
    assert np.abs(back - pts_cam).max() < 1e-9


def test_stereo_triangulation_is_exact_for_exact_pixels() -> None:
    import cv2

    rng = np.random.default_rng(4)
    K = np.array([[800.0, 0, 320], [0, 800.0, 240], [0, 0, 1]])
    R, _ = cv2.Rodrigues(np.array([0.0, -0.2, 0.0]))
    cal = StereoCalibration(K, K, R, np.array([-0.12, 0.0, 0.01]))
    X = rng.uniform(-0.1, 0.1, (21, 3)) + [0, 0, 0.6]
    p1 = X @ K.T
    x2 = X @ R.T + cal.T
    p2 = x2 @ K.T
    got = triangulate_keypoints(p1[:, :2] / p1[:, 2:], p2[:, :2] / p2[:, 2:], cal)
    assert np.abs(got - X).max() < 1e-6


# ----------------------------------------------------------------------------- attention


def test_attention_beats_uniform_when_confidence_tracks_error(session) -> None:
    rng = np.random.default_rng(5)
    true = rng.normal(size=10).clip(-2, 2)
    frames = []
    for i in range(20):
        noise = 0.05 if i % 2 == 0 else 1.0  # good and bad frames
        pose = np.concatenate([rng.normal(0, 0.5, 3), rng.normal(0, 0.2, 45)]).astype(np.float32)
        frames.append(CalibrationFrame(
            source="t", frame_index=i, side="right", thumbnail=np.zeros((96, 96, 3), np.uint8),
            features=np.zeros(NUM_FEATURES, np.float32), pose=pose,
            betas=(true + rng.normal(0, noise, 10)).astype(np.float32),
            confidence=1.0 if noise < 0.5 else 0.0, descriptor=rng.normal(size=8).astype(np.float32),
        ))
    s = CalibrationSession(k=20, confidence="heuristic")
    s.add_candidates(frames)
    att = s.calibrate()
    uni = s.calibrate(uniform=True)
    assert len(att.frames) == 20 and att.weights.sum() == pytest.approx(1.0)
    assert att.weights[0] > 10 * att.weights[1]  # softmax(c / 0.33)
    truth = _rest_keypoints(s.layer, true)
    err_att = np.linalg.norm(_rest_keypoints(s.layer, att.shape) - truth, axis=1).mean()
    err_uni = np.linalg.norm(_rest_keypoints(s.layer, uni.shape) - truth, axis=1).mean()
    assert err_att < 0.8 * err_uni
    assert np.abs(att.unscaled_shape - true).mean() < np.abs(uni.unscaled_shape - true).mean()
    pinned = s.calibrate(ScaleOption.from_hand_length(190.0))
    assert pinned.hand_length_mm == pytest.approx(190.0, abs=0.01) and pinned.scale_source == "hand_length"
    assert att.frame_lengths_mm.shape == (20,) and att.bone_lengths_mm.shape == (20,)


def test_user_overrides(session) -> None:
    s = CalibrationSession(k=3, confidence="heuristic")
    rng = np.random.default_rng(6)
    s.add_candidates([
        CalibrationFrame("t", i, "right", np.zeros((96, 96, 3), np.uint8), np.zeros(NUM_FEATURES, np.float32),
                         np.zeros(48, np.float32), np.zeros(10, np.float32), float(i),
                         rng.normal(size=8).astype(np.float32))
        for i in range(6)
    ])
    auto = s.selected
    assert len(auto) == 3 and 5 in auto
    s.drop(5)
    assert 5 not in s.selected and len(s.selected) == 3
    s.add(0)
    assert 0 in s.selected and len(s.selected) == 3
    with pytest.raises(IndexError):
        s.add(6)
    with pytest.raises(InputError):
        CalibrationSession(k=3, confidence="heuristic").calibrate()


# ----------------------------------------------------------------------------- a real candidate


class _FakeDetection:
    def __init__(self, kp2d, world, score=0.95):
        self.handedness = "right"
        self.score = score
        self.keypoints_2d = kp2d
        self.keypoints_z = np.zeros(21, np.float32)
        self.world_landmarks = world


def test_offer_refits_a_free_shape_and_describes_the_frame(session) -> None:
    from core.synth.render import SynthSettings, default_layers, render_hand_sample

    rng = np.random.default_rng(7)
    sample = render_hand_sample(rng, default_layers(), SynthSettings(supersample=1, back_facing=0.0))
    world = sample.joints_3d - sample.joints_3d[0]
    det = _FakeDetection(sample.keypoints_2d, world)

    class Frame:
        index, timestamp_s, image, source = 3, 0.2, sample.image, "synthetic"

        class intrinsics:  # noqa: N801
            K = sample.K

    class Result:
        hands = (type("H", (), {"detection": det})(),)

    s = CalibrationSession(k=20, confidence="heuristic")
    cand = s.offer(Frame, Result)
    assert cand is not None and s.candidates == [cand]
    assert cand.thumbnail.shape == (96, 96, 3) and cand.thumbnail.dtype == np.uint8
    assert cand.features.shape == (len(FEATURE_NAMES),) and np.isfinite(cand.features).all()
    assert cand.pose.shape == (48,) and cand.betas.shape == (10,) and cand.frame_index == 3
    named = dict(zip(FEATURE_NAMES, cand.features))
    assert named["reprojection_rel"] < 0.02 and named["inside_fraction"] == 1.0
    assert named["reprojection_rel"] <= named["reprojection_max_rel"] < 0.1
    # The world landmarks are the true joints: the fit agrees with them up to a similarity.
    assert named["world_shape_residual"] < 0.01
    assert 0.0 < named["brightness"] < 1.0 and 0.0 <= named["clipped_fraction"] < 0.5
    # Exact keypoints: the refit reproduces the true skeleton's proportions within a few mm.
    true_bones = measures(s.layer, sample.betas)[2]
    fit_bones = measures(s.layer, cand.betas)[2]
    scale = true_bones.sum() / fit_bones.sum()
    assert np.abs(fit_bones * scale - true_bones).mean() < 0.003
    # A left-hand result offers nothing to a right-hand session.
    det.handedness = "left"
    assert s.offer(Frame, Result) is None


# ----------------------------------------------------------------------------- confidence


def test_confidence_predictor_roundtrip_and_fallback(tmp_path) -> None:
    from core.personalize.confidence import ConfidenceNet, ConfidencePredictor, save_confidence_net

    net = ConfidenceNet(NUM_FEATURES, 8)
    path = tmp_path / "c.safetensors"
    save_confidence_net(net, path)
    x = np.random.default_rng(8).normal(size=(5, NUM_FEATURES)).astype(np.float32)
    with torch.no_grad():
        expect = net(torch.as_tensor(x)).numpy()
    pred = ConfidencePredictor(path)
    assert pred.net is not None and np.allclose(pred(x), expect, atol=1e-6)
    assert ConfidencePredictor(tmp_path / "missing.safetensors").net is None
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    assert ConfidencePredictor(tmp_path / "bad.safetensors").source == "heuristic"
    assert ConfidencePredictor("heuristic")(x).shape == (5,)


def test_bundled_predictor_loads() -> None:
    from core.personalize.confidence import WEIGHTS_PATH, ConfidencePredictor

    if not WEIGHTS_PATH.exists():
        pytest.skip("no bundled confidence weights")
    pred = ConfidencePredictor()
    assert pred.net is not None and pred.source == WEIGHTS_PATH.name


def test_training_tables_of_several_sets_keep_their_people_apart() -> None:
    from core.tools.train_confidence import merge_tables, within_subject_pairs

    a = {"features": np.zeros((4, 2)), "subject": np.array([0, 0, 1, 1]), "error": np.array([1.0, 2, 3, 4])}
    b = {"features": np.ones((3, 2)), "subject": np.array([0, 0, 0]), "error": np.array([5.0, 6, 7])}
    m = merge_tables([a, b])
    assert m["features"].shape == (7, 2) and m["subject"].tolist() == [0, 0, 1, 1, 2, 2, 2]
    i, j, _ = within_subject_pairs(m["subject"], m["error"])
    assert len(i) == 1 + 1 + 3  # pairs within each person only


def test_margin_ranking_training_learns_a_ranking() -> None:
    from core.tools.train_confidence import ranking_quality, train

    rng = np.random.default_rng(9)
    n = 200
    feats = rng.normal(size=(n, NUM_FEATURES)).astype(np.float32)
    error = np.exp(feats[:, 2] + 0.2 * rng.normal(size=n))  # the error follows feature 2
    subject = np.repeat(np.arange(10), 20)
    net = train({"features": feats, "error": error, "subject": subject}, epochs=150)
    with torch.no_grad():
        c = net(torch.as_tensor(feats)).numpy()
    q = ranking_quality(c, error, subject)
    assert q["pairwise_accuracy"] > 0.85 and q["spearman"] > 0.8
