"""Synthetic people: skeletons off the template by the spreads the generator documents."""

from __future__ import annotations

import numpy as np
import pytest

from core.keypoints import BONES, Keypoint, bone_lengths
from core.model.personal import model_rest_keypoints
from core.synth import people


@pytest.fixture(scope="module")
def base_keypoints() -> np.ndarray:
    from core.model.data import OPEN_HAND_NPZ, read_npz_model

    return model_rest_keypoints(read_npz_model(OPEN_HAND_NPZ))


def test_identity_factors_give_the_base(base_keypoints) -> None:
    one = people.PersonFactors(1.0, 1.0, 1.0, np.ones(5), np.ones(20), np.zeros(3))
    np.testing.assert_allclose(people.person_skeleton(base_keypoints, one), base_keypoints, atol=1e-12)


def test_segment_and_palm_spreads_match_the_documented_sigmas(base_keypoints) -> None:
    rng = np.random.default_rng(0)
    n = 1500
    skels = np.stack([people.sample_person_skeleton(base_keypoints, rng) for _ in range(n)])
    base_bones = bone_lengths(base_keypoints)
    log_ratio = np.log(bone_lengths(skels) / base_bones)
    length = np.linalg.norm(skels[:, Keypoint.MIDDLE_TIP] - skels[:, Keypoint.WRIST], axis=1)
    # Overall size: hand length spread about SIGMA_SIZE (plus a little from the proportions).
    assert np.log(length).std() == pytest.approx(people.SIGMA_SIZE, rel=0.25)
    # A phalanx relative to the whole hand's size varies by finger and segment factors together.
    size_free = log_ratio - np.log(length / np.linalg.norm(base_keypoints[12] - base_keypoints[0]))[:, None]
    finger_bones = [i for i, (p, _) in enumerate(BONES) if p != Keypoint.WRIST]
    expected = np.hypot(people.SIGMA_FINGER, people.SIGMA_SEGMENT)
    assert np.median(size_free[:, finger_bones].std(0)) == pytest.approx(expected, rel=0.3)
    # Neighbouring phalanges vary independently of each other (segment factors): their ratio
    # spreads by sqrt(2) * SIGMA_SEGMENT.
    index_ratio = log_ratio[:, 6] - log_ratio[:, 5]
    assert index_ratio.std() == pytest.approx(np.sqrt(2) * people.SIGMA_SEGMENT, rel=0.15)
    # Palm width over palm length.
    width = np.linalg.norm(skels[:, Keypoint.PINKY_MCP] - skels[:, Keypoint.INDEX_MCP], axis=1)
    palm = np.linalg.norm(skels[:, Keypoint.MIDDLE_MCP] - skels[:, Keypoint.WRIST], axis=1)
    ratio = np.log(width / palm)
    assert ratio.std() == pytest.approx(np.hypot(people.SIGMA_PALM_WIDTH, people.SIGMA_PALM_LENGTH), rel=0.3)
    # Clipped: no bone beyond the clip of all its factors together.
    assert np.abs(log_ratio).max() < 2.5 * (people.SIGMA_SIZE + people.SIGMA_FINGER + people.SIGMA_SEGMENT) + 0.2


def test_person_layers_follow_the_skeleton(base_keypoints) -> None:
    import torch

    from core.model.data import OPEN_HAND_NPZ, read_npz_model

    skel = people.sample_person_skeleton(base_keypoints, np.random.default_rng(4))
    layers = people.person_layers(read_npz_model(OPEN_HAND_NPZ), skel)
    with torch.no_grad():
        rest = layers["right"].rest().keypoints[0].double().numpy()
        left = layers["left"].rest().keypoints[0].double().numpy()
    np.testing.assert_allclose(rest, skel, atol=1e-5)
    np.testing.assert_allclose(bone_lengths(left), bone_lengths(skel), atol=1e-5)
