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
