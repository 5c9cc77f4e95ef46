"""Calibration as one joint optimization (core.personalize.bundle) on fast synthetic people."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from core.keypoints import bone_lengths
from core.model import HandModel, mirror_model
from core.model.personal import model_rest_keypoints
from core.personalize.bundle import BundleSettings, _Problem, bundle_adjust, posed_keypoints
from core.personalize.people import synthetic_person


def _hand_length(kp: np.ndarray) -> float:
    return float(np.linalg.norm(kp[12] - kp[0]))


def _template_error_mm(base, person) -> float:
    kp = model_rest_keypoints(base)
    kp = kp * (_hand_length(person.skeleton) / _hand_length(kp))
    return float(np.abs(bone_lengths(kp) - bone_lengths(person.skeleton)).mean() * 1000)


def test_forward_kinematics_is_the_personal_model(open_hand):
    person = synthetic_person(open_hand, np.random.default_rng(0), 3, fit_start=False)
    prob = _Problem(open_hand, None, person.frames, 0.19, 60.0, BundleSettings())
    pose = torch.as_tensor(person.poses)
    transl = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ours = posed_keypoints(prob.skel, torch.as_tensor(person.skeleton), pose, transl, prob.parents)
    model = HandModel(person.model, dtype=torch.float64)(pose, None, transl).keypoints
    np.testing.assert_allclose(ours.numpy(), model.numpy(), atol=1e-9)


def test_jacobians_match_finite_differences(open_hand):
    person = synthetic_person(open_hand, np.random.default_rng(1), 4, fit_start=False, known_intrinsics=False)
    prob = _Problem(open_hand, None, person.frames, 0.19, 60.0, BundleSettings())
    g = torch.Generator().manual_seed(1)
    xid = 0.05 * torch.randn(prob.n_id, generator=g, dtype=torch.float64)
    X = torch.cat([prob.pose0 + 0.05 * torch.randn(4, 48, generator=g, dtype=torch.float64),
                   torch.tensor([[0.0, 0.0, 0.5]] * 4, dtype=torch.float64)], 1)
    w = (torch.rand(4, generator=g, dtype=torch.float64) + 0.5).sqrt()
    kw = prob.irls_weights(xid, X)
    r, jf, ji, _, _ = prob.jacobians(xid, X, w, kw)
    np.testing.assert_allclose(r.numpy(), prob.frame_residuals(xid, X, w, kw).numpy(), atol=1e-12)
    h = 1e-6
    for d in (0, 5, 20, 47, 49):
        step = torch.zeros(51, dtype=torch.float64)
        step[d] = h
        num = (prob.frame_residuals(xid, X + step, w, kw) - prob.frame_residuals(xid, X - step, w, kw)) / (2 * h)
        np.testing.assert_allclose(jf[:, :, d].numpy(), num.numpy(), atol=2e-5 * max(1.0, float(num.abs().max())))
    for d in (0, 14, 17, prob.n_id - 1):
        step = torch.zeros(prob.n_id, dtype=torch.float64)
        step[d] = h
        num = (prob.frame_residuals(xid + step, X, w, kw) - prob.frame_residuals(xid - step, X, w, kw)) / (2 * h)
        np.testing.assert_allclose(ji[:, :, d].numpy(), num.numpy(), atol=2e-5 * max(1.0, float(num.abs().max())))


@pytest.fixture(scope="module")
def people(open_hand):
    return [synthetic_person(open_hand, np.random.default_rng(10 + s), 20, noise_px=2.0)
            for s in range(2)]


def test_calibration_recovers_an_off_template_skeleton(open_hand, people):
    for person in people:
        result = bundle_adjust(open_hand, person.frames, _hand_length(person.skeleton))
        err = float(np.abs(bone_lengths(result.skeleton) - bone_lengths(person.skeleton)).mean() * 1000)
        template = _template_error_mm(open_hand, person)
        assert err < 0.75 * template, (err, template)
        assert err < 2.0
        assert _hand_length(result.skeleton) == pytest.approx(_hand_length(person.skeleton), rel=1e-9)
        assert not result.rejected
        np.testing.assert_allclose(result.frame_weights.sum(), 1.0)


def test_bad_frames_are_rejected_with_a_reason(open_hand, people):
    person = people[0]
    frames = list(person.frames)
    rng = np.random.default_rng(3)
    # A wrong detection: the keypoints of another frame shifted across the image; a mirrored hand.
    frames[4] = dataclasses.replace(frames[4], keypoints_2d=frames[9].keypoints_2d[rng.permutation(21)])
    mirrored = frames[7].keypoints_2d.copy()
    mirrored[:, 0] = 2 * mirrored[:, 0].mean() - mirrored[:, 0]
    frames[7] = dataclasses.replace(frames[7], keypoints_2d=mirrored)
    frames[11] = dataclasses.replace(frames[11], score=0.05)
    result = bundle_adjust(open_hand, frames, _hand_length(person.skeleton))
    rejected = dict(result.rejected)
    assert set(rejected) == {4, 7, 11}, result.rejected
    assert "disagrees with the shared hand" in rejected[4] and "score" in rejected[11]
    assert result.frame_weights[[4, 7, 11]].max() < 0.01
    err = float(np.abs(bone_lengths(result.skeleton) - bone_lengths(person.skeleton)).mean() * 1000)
    assert err < 0.85 * _template_error_mm(open_hand, person)


def test_unknown_focal_length_is_estimated(open_hand):
    person = synthetic_person(open_hand, np.random.default_rng(21), 20, noise_px=1.0, known_intrinsics=False,
                              fov_deg=45.0)
    result = bundle_adjust(open_hand, person.frames, _hand_length(person.skeleton), nominal_fov_deg=60.0)
    assert result.focal_px[0] / person.K[0, 0] == pytest.approx(1.0, abs=0.1)
    assert abs(result.focal_scale - 1.0) > 0.2  # it moved from the nominal 60 degree camera


def test_left_hand_calibrates_like_the_right(open_hand):
    left = mirror_model(open_hand)
    person = synthetic_person(left, np.random.default_rng(30), 12, noise_px=1.0)
    result = bundle_adjust(left, person.frames, _hand_length(person.skeleton))
    err = float(np.abs(bone_lengths(result.skeleton) - bone_lengths(person.skeleton)).mean() * 1000)
    assert err < 0.8 * _template_error_mm(left, person)


def _candidates(person, side: str = "right"):
    from core.personalize import CalibrationFrame
    from core.personalize.features import NUM_FEATURES

    rng = np.random.default_rng(0)
    return [CalibrationFrame(
        source="synthetic", frame_index=i, side=side, thumbnail=np.zeros((96, 96, 3), np.uint8),
        features=np.zeros(NUM_FEATURES, np.float32), pose=f.pose.astype(np.float32),
        betas=np.zeros(10, np.float32), confidence=0.5, descriptor=rng.normal(size=8).astype(np.float32),
        keypoints_2d=f.keypoints_2d.astype(np.float32), K=f.K, image_size=f.image_size,
        world_landmarks=f.world_landmarks.astype(np.float32), score=0.9,
    ) for i, f in enumerate(person.frames)]


@pytest.mark.parametrize("side", ["right", "left"])
def test_session_calibrates_the_skeleton_into_a_version_2_profile(open_hand, side, tmp_path) -> None:
    from core.mirror import mirror_points
    from core.personalize import CalibrationSession, ScaleOption
    from core.profile_io import load_profile, save_profile

    base = open_hand if side == "right" else mirror_model(open_hand)
    person = synthetic_person(base, np.random.default_rng(40), 12, noise_px=1.0)
    cands = _candidates(person, side)
    cands[5] = dataclasses.replace(cands[5], keypoints_2d=cands[5].keypoints_2d[::-1].copy())  # a wrong detection
    s = CalibrationSession(side=side, k=12, confidence="heuristic")
    s.convention = None  # exact keypoints in the model's own convention: no MediaPipe bias to remove
    s.add_candidates(cands)
    result = s.calibrate(ScaleOption.from_hand_length(_hand_length(person.skeleton) * 1000.0))
    assert result.skeleton is not None and [i for i, _ in result.rejected] == [5]
    err = float(np.abs(bone_lengths(result.skeleton) - bone_lengths(person.skeleton)).mean() * 1000)
    # Over seeds 40-45 the ratio is 0.47-0.81 (mean 0.66); this seed's is the highest.
    assert err < 0.85 * _template_error_mm(base, person)
    assert result.bone_lengths_mm == pytest.approx(bone_lengths(result.skeleton) * 1000.0)
    assert "measurement" in result.scale_note
    save_profile(tmp_path / "p.json", s.to_profile(result, "me"))
    p = load_profile(tmp_path / "p.json")
    right_frame = result.skeleton if side == "right" else mirror_points(result.skeleton)
    np.testing.assert_allclose(p.skeleton_mm / 1000.0, right_frame, atol=1e-5)  # stored in the right hand's frame
    assert p.rejected_frames[0]["frame"] == 5 and p.scale_note == result.scale_note


def test_progress_is_reported_and_cancel_stops_promptly(open_hand, people):
    from core.errors import Cancelled

    person = people[0]
    seen: list[float] = []
    result = bundle_adjust(open_hand, person.frames, _hand_length(person.skeleton),
                           progress=lambda f, m: seen.append(f))
    assert len(seen) >= 3 and seen == sorted(seen) and 0.0 <= seen[0] and seen[-1] < 1.0
    # Cancel once the third iteration reported: the optimization stops at the next check.
    polls: list[int] = []

    def cancel() -> bool:
        polls.append(len(seen2))
        return len(seen2) >= 3

    seen2: list[float] = []
    with pytest.raises(Cancelled):
        bundle_adjust(open_hand, person.frames, _hand_length(person.skeleton),
                      progress=lambda f, m: seen2.append(f), cancel=cancel)
    assert len(seen2) == 3 and len(polls) == 4
    assert np.isfinite(result.skeleton).all()


def test_session_calibration_can_be_cancelled(open_hand) -> None:
    from core.errors import Cancelled
    from core.personalize import CalibrationSession

    person = synthetic_person(open_hand, np.random.default_rng(41), 8, noise_px=1.0)
    s = CalibrationSession(side="right", k=8, confidence="heuristic")
    s.add_candidates(_candidates(person))
    selected = s.selected
    messages: list[str] = []
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    with pytest.raises(Cancelled):
        s.calibrate(progress=lambda f, m: messages.append(m), cancel=cancel)
    assert any("joint calibration" in m for m in messages)
    assert s.selected == selected and len(s.candidates) == 8
    done = s.calibrate(cancel=lambda: False)  # the same session calibrates afterwards
    assert done.skeleton is not None
