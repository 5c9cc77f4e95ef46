"""Synthetic hands: exact ground truth, determinism, and the real MediaPipe finds them."""

from __future__ import annotations

import numpy as np
import pytest

from core.synth import SynthSettings, default_layers, render_hand_sample


@pytest.fixture(scope="module")
def layers():
    return default_layers()


def test_ground_truth_is_consistent(layers) -> None:
    s = render_hand_sample(np.random.default_rng(3), layers, SynthSettings(image_size=(160, 128), supersample=1))
    assert s.image.shape == (128, 160, 3) and s.image.dtype == np.uint8
    uv = (s.K @ s.joints_3d.T).T
    np.testing.assert_allclose(s.keypoints_2d, uv[:, :2] / uv[:, 2:], atol=1e-3)
    # The model with the stored parameters reproduces the stored 3D keypoints.
    import torch

    with torch.no_grad():
        out = layers[s.side](torch.as_tensor(s.pose)[None], torch.as_tensor(s.betas)[None],
                             torch.as_tensor(s.transl)[None])
    np.testing.assert_allclose(out.keypoints[0].numpy(), s.joints_3d, atol=1e-5)
    ys, xs = np.nonzero(s.mask)
    assert len(ys) > 500
    # The wrist projects onto (or right next to) the hand's pixels.
    u, v = np.round(s.keypoints_2d[0]).astype(int)
    assert np.hypot(xs - u, ys - v).min() < 3


def test_same_seed_same_image(layers) -> None:
    a = render_hand_sample(np.random.default_rng(5), layers, SynthSettings(image_size=(96, 96), supersample=1))
    b = render_hand_sample(np.random.default_rng(5), layers, SynthSettings(image_size=(96, 96), supersample=1))
    np.testing.assert_array_equal(a.image, b.image)


def test_left_hands_mirror_the_right(layers) -> None:
    from core.camera import intrinsics_from_fov
    from core.synth import PALM_TO_CAMERA

    K = intrinsics_from_fov(60, 129, 129).K  # principal point at the image centre
    common = dict(betas=np.zeros(10, np.float32), global_rotation=PALM_TO_CAMERA, K=K, transl_jitter=0.0)
    settings = SynthSettings(image_size=(129, 129), supersample=1)
    pose = np.random.default_rng(4).normal(0, 0.2, 45).astype(np.float32)
    right = render_hand_sample(np.random.default_rng(1), layers, settings, pose=pose, **common)
    mirror = np.diag([-1.0, 1.0, 1.0])
    left_settings = SynthSettings(image_size=(129, 129), supersample=1, left_probability=1.0)
    left = render_hand_sample(np.random.default_rng(1), layers, left_settings, pose=pose,
                              **{**common, "global_rotation": mirror @ PALM_TO_CAMERA @ mirror})
    assert right.side == "right" and left.side == "left"
    # The left hand is the right one reflected in the camera's x (about the image centre).
    np.testing.assert_allclose(left.joints_3d, right.joints_3d * [-1.0, 1.0, 1.0], atol=1e-5)
    np.testing.assert_allclose(left.mask, right.mask[:, ::-1])


def test_mediapipe_finds_a_synthetic_hand(layers) -> None:
    from core.detect import HandDetector

    s = render_hand_sample(np.random.default_rng(2), layers, SynthSettings())
    with HandDetector(max_hands=1, mode="static") as det:
        found = det.detect(s.image)
    assert found, "MediaPipe should find this rendered hand"
    err = np.linalg.norm(found[0].keypoints_2d - s.keypoints_2d, axis=1).mean()
    assert err < 12.0
    assert found[0].handedness == s.side
