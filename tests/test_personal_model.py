"""The personal hand model (core.model.personal) and its skeleton parametrization (core.model.skeleton)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import ModelFileError
from core.keypoints import BONES, Keypoint, bone_lengths
from core.mirror import mirror_points
from core.model import HandModel, mirror_model
from core.model.personal import model_rest_keypoints, personal_model
from core.model.skeleton import (
    MAX_BONE_LOG,
    SkeletonParams,
    params_from_skeleton,
    skeleton_from_params,
    skeleton_prior,
)
from tests.test_model import winding_number


def person_skeleton(base_kp: np.ndarray, rng: np.random.Generator, sd: float = 0.05,
                    palm_sd: float = 0.05) -> np.ndarray:
    """A plausible off-template skeleton: per-bone length factors ~ N(1, sd), palm width varied."""
    s = base_kp.copy()
    s[:, 2] = s[:, 2] * (1.0 + palm_sd * rng.standard_normal())  # across the palm (model z)
    out = s.copy()
    for p, c in BONES:
        if p != Keypoint.WRIST:
            out[c] = out[p] + (s[c] - s[p]) * (1.0 + sd * rng.standard_normal())
    return out


def extreme_skeleton(base_kp: np.ndarray, long: bool) -> np.ndarray:
    """Alternating 0.78 / 1.28 bone factors, palm 15 % wider or narrower."""
    s = base_kp.copy()
    s[:, 2] *= 1.15 if long else 0.85
    out = s.copy()
    for i, (p, c) in enumerate(BONES):
        if p != Keypoint.WRIST:
            f = 1.28 if (i % 2 == 0) == long else 0.78
            out[c] = out[p] + (s[c] - s[p]) * f
    return out


def _normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def test_rest_keypoints_equal_the_skeleton(open_hand):
    rng = np.random.default_rng(1)
    base_kp = model_rest_keypoints(open_hand)
    for _ in range(3):
        skel = person_skeleton(base_kp, rng)
        pm = personal_model(open_hand, skel)
        got = HandModel(pm, dtype=torch.float64).rest().keypoints[0].numpy()
        np.testing.assert_allclose(got, skel, atol=1e-6)
        np.testing.assert_allclose(bone_lengths(got), bone_lengths(skel), atol=1e-6)
        assert not np.allclose(bone_lengths(skel), bone_lengths(base_kp), atol=1e-3)


def test_skeleton_is_reached_at_the_profile_shape_and_with_offsets(open_hand):
    rng = np.random.default_rng(2)
    betas = rng.standard_normal(open_hand.num_betas)
    skel = person_skeleton(model_rest_keypoints(open_hand, betas), rng)
    offsets = 0.001 * rng.standard_normal((open_hand.num_vertices, 3))
    pm = personal_model(open_hand, skel, offsets=offsets, betas=betas)
    got = HandModel(pm, dtype=torch.float64).rest(torch.as_tensor(betas)[None]).keypoints[0].numpy()
    np.testing.assert_allclose(got, skel, atol=1e-6)
    # The offsets really are on the surface (away from the fingertips they are kept as given).
    plain = personal_model(open_hand, skel, betas=betas)
    moved = np.linalg.norm(pm.v_template - plain.v_template, axis=1)
    assert np.median(moved) > 0.001


def test_identity_skeleton_gives_the_same_model(open_hand):
    assert personal_model(open_hand, model_rest_keypoints(open_hand)) is open_hand
    pm = personal_model(open_hand, model_rest_keypoints(open_hand) + 1e-12)
    np.testing.assert_allclose(pm.v_template, open_hand.v_template, atol=1e-6)


def test_structure_is_kept_for_every_later_stage(open_hand):
    skel = person_skeleton(model_rest_keypoints(open_hand), np.random.default_rng(3))
    pm = personal_model(open_hand, skel)
    assert pm.faces is open_hand.faces and pm.uv is open_hand.uv and pm.weights is open_hand.weights
    assert pm.shapedirs.shape == open_hand.shapedirs.shape and pm.posedirs.shape == open_hand.posedirs.shape
    np.testing.assert_allclose(pm.j_regressor.sum(1), 1.0, atol=1e-5)
    assert pm.side == "right" and "personal" in pm.provenance
    # A posed personal hand: bones keep the personal lengths (rigid bones under pose).
    pose = torch.zeros(1, 48, dtype=torch.float64)
    pose[0, 3:] = 0.3 * torch.randn(45, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kp = HandModel(pm, dtype=torch.float64)(pose).keypoints[0].numpy()
    np.testing.assert_allclose(bone_lengths(kp), bone_lengths(skel), atol=1e-6)


@pytest.mark.parametrize("long", [True, False])
def test_extreme_skeletons_stay_smooth(open_hand, long):
    base_kp = model_rest_keypoints(open_hand)
    skel = extreme_skeleton(base_kp, long)
    pm = personal_model(open_hand, skel)
    v0, v1 = open_hand.v_template.astype(np.float64), pm.v_template.astype(np.float64)
    f = open_hand.faces
    # No flipped faces; no edge collapses or explodes.
    assert (_normals(v0, f) * _normals(v1, f)).sum(1).min() > 0.2
    e0 = np.linalg.norm(v0[f[:, 1]] - v0[f[:, 0]], axis=1)
    e1 = np.linalg.norm(v1[f[:, 1]] - v1[f[:, 0]], axis=1)
    assert 0.3 < (e1 / e0).min() and (e1 / e0).max() < 2.5
    # The skeleton stays inside the surface (a surface folded through itself would not hold it).
    inside = np.concatenate([
        (skel[[k, k + 1]].mean(0)[None]) for k in (1, 2, 5, 6, 7, 9, 10, 11, 13, 14, 15, 17, 18, 19)
    ])
    assert (winding_number(inside, v1, f) > 0.5).all()


def test_left_side_is_the_mirror_image(open_hand):
    skel = person_skeleton(model_rest_keypoints(open_hand), np.random.default_rng(4))
    right = personal_model(open_hand, skel)
    left = personal_model(mirror_model(open_hand), mirror_points(skel))
    np.testing.assert_allclose(left.v_template, mirror_points(right.v_template), atol=1e-6)
    np.testing.assert_allclose(model_rest_keypoints(left), mirror_points(skel), atol=1e-6)
    np.testing.assert_allclose(left.rest_frames, mirror_model(right).rest_frames, atol=1e-5)


def test_bad_skeletons_are_refused(open_hand):
    kp = model_rest_keypoints(open_hand)
    with pytest.raises(ModelFileError):
        personal_model(open_hand, kp[:20])
    bad = kp.copy()
    bad[3] = np.nan
    with pytest.raises(ModelFileError):
        personal_model(open_hand, bad)
    with pytest.raises(ModelFileError):
        personal_model(open_hand, kp, offsets=np.zeros((3, 3)))


def test_skeleton_parameters_round_trip_and_bound_the_hand(open_hand):
    base = model_rest_keypoints(open_hand)
    zero = SkeletonParams.zeros()
    bt = torch.as_tensor(base)
    np.testing.assert_allclose(skeleton_from_params(bt, zero).numpy(), base, atol=1e-12)
    assert float(skeleton_prior(bt, zero)) == pytest.approx(0.0, abs=1e-12)
    # Lengths and palm points of a personal skeleton are recovered exactly.
    skel = person_skeleton(base, np.random.default_rng(5))
    p = params_from_skeleton(base, skel)
    got = skeleton_from_params(bt, p).numpy()
    np.testing.assert_allclose(bone_lengths(got), bone_lengths(skel), atol=1e-9)
    assert 0.0 < float(skeleton_prior(bt, p)) < 50.0
    # Wild raw parameters cannot make a grotesque hand: every bone within the clamp.
    wild = SkeletonParams(torch.tensor(0.0, dtype=torch.float64), torch.full((15,), 50.0, dtype=torch.float64),
                          torch.full((5, 3), -50.0, dtype=torch.float64))
    ratio = bone_lengths(skeleton_from_params(bt, wild).numpy()) / bone_lengths(base)
    finger = [i for i, (pp, _) in enumerate(BONES) if pp != Keypoint.WRIST]
    assert ratio[finger].max() <= np.exp(MAX_BONE_LOG) + 1e-9
    assert float(skeleton_prior(bt, wild)) > 100.0
