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


def test_forearm_continues_the_wrist_and_stays_out_of_the_mask(layers) -> None:
    from dataclasses import replace

    settings = SynthSettings(image_size=(160, 160), supersample=1)
    bare_settings = replace(settings, forearm=False, skin_detail=False)
    for seed in range(4):
        rng_new, rng_old = np.random.default_rng(seed), np.random.default_rng(seed)
        new = render_hand_sample(rng_new, layers, settings)
        old = render_hand_sample(rng_old, layers, bare_settings)
        # The forearm draws from its own generator: the same hand, the caller's stream untouched.
        np.testing.assert_array_equal(new.joints_3d, old.joints_3d)
        assert rng_new.random() == rng_old.random()
        assert old.forearm is None and new.forearm is not None and new.skin_detail
        # The mask is the hand's own pixels: the arm can hide some, never add any.
        assert not (new.mask & ~old.mask).any()
        assert new.mask.sum() > 0.8 * old.mask.sum()
        # The arm starts at the wrist and leads away from the fingers, 20+ cm.
        arm = new.forearm
        wrist, mcp = new.joints_3d[0].astype(np.float64), new.joints_3d[9].astype(np.float64)
        start = arm.vertices[np.abs(arm.along) < 1e-9].mean(0)
        assert np.linalg.norm(start - wrist) < 0.025
        away = (wrist - mcp) / np.linalg.norm(wrist - mcp)
        assert (arm.vertices[-1] - wrist) @ away > 0.7 * min(0.2, arm.along.max())
        # It is drawn: pixels off the hand that changed are there.
        changed = np.abs(new.image.astype(int) - old.image.astype(int)).max(-1) > 40
        assert (changed & ~old.mask).sum() > 50


def test_skin_detail_nails_on_the_back_of_the_distal_segments_and_palm_lines_on_the_palm(layers) -> None:
    import torch

    from core.synth.render import _hand_geometry, palm_tint, skin_detail, vertex_normals

    counts = {}
    for side, layer in layers.items():
        rest = _hand_geometry(layer).rest
        albedo = np.full((len(rest), 3), 200.0)
        out, gloss = skin_detail(layer, rest, palm_tint(layer), albedo)
        owner = layer.data.weights.argmax(1)
        nails = np.flatnonzero(gloss > 0.2)
        counts[side] = len(nails)
        assert set(owner[nails]) == {3, 6, 9, 12, 15}  # the five distal joints (MANO order), nothing else
        normals = vertex_normals(torch.as_tensor(rest[None]), layer.faces)[0].numpy()
        fingers = nails[owner[nails] != 15]
        # the back of the hand is +y (the palm -y), both sides; the nail curves over the tip
        assert normals[fingers, 1].min() > 0.1 and np.median(normals[fingers, 1]) > 0.8
        changed = np.abs(out - albedo).max(1) > 1.0
        tint = palm_tint(layer)
        assert not (changed & (owner == 0) & (tint == 0)).any()  # no palm lines on the back of the hand
        assert (changed & (owner == 0) & (tint > 0.5)).sum() >= 3  # but some on the palm
    assert abs(counts["left"] - counts["right"]) <= 2  # the left model's detail mirrors the right's


def test_per_layer_caches_go_with_their_layer() -> None:
    """Synthetic people make a layer per person: the palm tint and the geometry cached for a
    layer are dropped with it (an id() key kept them forever, and a later layer of another
    shape could be given them when Python reused the id)."""
    import gc

    from core.synth import render

    layer = default_layers()["right"]
    render.palm_tint(layer)
    render._hand_geometry(layer)  # noqa: SLF001
    assert layer in render._PALM_TINT and layer in render._GEOMETRY  # noqa: SLF001
    before = len(render._PALM_TINT), len(render._GEOMETRY)  # noqa: SLF001
    del layer
    gc.collect()
    assert (len(render._PALM_TINT), len(render._GEOMETRY)) == (before[0] - 1, before[1] - 1)  # noqa: SLF001
