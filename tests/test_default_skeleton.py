"""The open hand's default skeleton: derivation from world landmarks and its application at load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.errors import ModelFileError
from core.keypoints import bone_lengths
from core.model.data import OPEN_HAND_SKELETON_JSON, apply_default_skeleton, load_open_hand
from core.model.personal import model_rest_keypoints
from core.tools import build_mean_skeleton as ms


@pytest.fixture(scope="module")
def raw():
    return load_open_hand("right", default_skeleton=False)


def _random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_mean_palm_undoes_similarities_and_mirrors(raw) -> None:
    rng = np.random.default_rng(0)
    base = model_rest_keypoints(raw)
    target = base.copy()
    target[list(ms.PALM)[1:]] += rng.normal(0, 0.004, (5, 3))  # a different palm
    world, left = [], []
    for i in range(12):
        kp = 0.9 * target @ _random_rotation(rng).T + rng.normal(0, 0.01, 3)
        if i % 3 == 0:
            kp[:, 0] *= -1.0  # a left hand
        world.append(kp)
        left.append(i % 3 == 0)
    palm = ms.mean_palm(np.array(world), np.array(left), base)
    expected = target[list(ms.PALM)]
    mid = list(ms.PALM).index(9)
    expected = base[0] + ((expected - expected[0]) * np.linalg.norm(base[9] - base[0])
                          / np.linalg.norm(expected[mid] - expected[0]))
    # Same shape as the target palm, in the base's frame and palm length (up to the final alignment).
    d = palm - palm[0]
    e = expected - expected[0]
    np.testing.assert_allclose(np.linalg.norm(d[:, None] - d[None], axis=-1),
                               np.linalg.norm(e[:, None] - e[None], axis=-1), atol=1e-6)
    assert np.linalg.norm(palm[mid] - palm[0]) == pytest.approx(np.linalg.norm(base[9] - base[0]), rel=1e-9)


def test_default_skeleton_moves_the_palm_and_keeps_the_fingers(raw) -> None:
    base = model_rest_keypoints(raw)
    palm = base[list(ms.PALM)] + np.array([0.0, 0.0, 0.01])
    np.testing.assert_allclose(ms.default_skeleton(base, palm, 0.0), base)
    skel = ms.default_skeleton(base, palm, 0.5)
    np.testing.assert_allclose(skel[list(ms.PALM)[1:], 2] - base[list(ms.PALM)[1:], 2], 0.005, atol=1e-12)
    finger = [i for i in range(20) if i not in (0, 4, 8, 12, 16)]  # bones not leaving the wrist
    np.testing.assert_allclose(bone_lengths(skel)[finger], bone_lengths(base)[finger], atol=1e-12)


def test_the_bundled_hand_follows_its_default_skeleton(raw, tmp_path) -> None:
    if not OPEN_HAND_SKELETON_JSON.exists():
        pytest.skip("no default skeleton bundled")
    doc = json.loads(OPEN_HAND_SKELETON_JSON.read_text())
    hand = load_open_hand("right")
    np.testing.assert_allclose(model_rest_keypoints(hand), np.array(doc["skeleton_m"]), atol=2e-6)
    assert hand.provenance["default_skeleton"]["version"] == doc["version"] and hand.name == raw.name
    left = load_open_hand("left")
    np.testing.assert_allclose(bone_lengths(model_rest_keypoints(left)), bone_lengths(model_rest_keypoints(hand)),
                               atol=1e-6)
    # A malformed file is one clear error; one made for another model file is not applied.
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": ms.FORMAT, "skeleton_m": [[0, 0, 0]] * 20}))
    with pytest.raises(ModelFileError):
        apply_default_skeleton(raw, bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps(dict(doc, base_sha256="0" * 64)))
    assert apply_default_skeleton(raw, other) is raw
