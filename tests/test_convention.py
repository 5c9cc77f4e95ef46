"""MediaPipe's per-bone keypoint convention: learned, applied, loaded."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.keypoints import Keypoint, bone_lengths
from core.personalize import convention as cv


@pytest.fixture(scope="module")
def skeleton() -> np.ndarray:
    from core.model.data import OPEN_HAND_NPZ, read_npz_model
    from core.model.personal import model_rest_keypoints

    return model_rest_keypoints(read_npz_model(OPEN_HAND_NPZ))


def test_a_constant_bias_is_learned_and_removed(skeleton) -> None:
    rng = np.random.default_rng(0)
    bias = rng.normal(0, 0.08, 20)
    true = np.stack([bone_lengths(skeleton) * np.exp(rng.normal(0, 0.05, 20)) for _ in range(9)])
    calibrated = true * np.exp(bias) * np.exp(rng.normal(0, 0.01, (9, 20)))
    delta = cv.fit_convention(calibrated, true)
    assert np.abs(delta - bias).max() < 0.02
    biased = skeleton.copy()
    from core.keypoints import BONES

    for b, (p, c) in enumerate(BONES):
        biased[c] = biased[p] + (skeleton[c] - skeleton[p]) * np.exp(bias[b])
    fixed = cv.correct_skeleton(biased, bias)
    np.testing.assert_allclose(fixed, skeleton, atol=1e-12)
    length = 0.2
    pinned = cv.correct_skeleton(biased, bias, length)
    assert np.linalg.norm(pinned[Keypoint.MIDDLE_TIP] - pinned[Keypoint.WRIST]) == pytest.approx(length)
    assert cv.bone_error_mm(pinned, pinned) == 0.0
    # Shrinkage: 0 gives the base at the length, 1 the corrected skeleton.
    base = skeleton * 1.1
    conv = cv.Convention(bias, 0.0)
    np.testing.assert_allclose(conv.apply(biased, base, length), cv.correct_skeleton(base, np.zeros(20), length),
                               atol=1e-12)
    np.testing.assert_allclose(cv.Convention(bias, 1.0).apply(biased, base, length), pinned, atol=1e-12)
    half = cv.Convention(bias, 0.5).apply(biased, skeleton, length)
    np.testing.assert_allclose(half, pinned, atol=1e-12)  # the corrected skeleton is the base here
    with pytest.raises(ValueError):
        cv.fit_convention(calibrated[:, :5], true[:, :5])


def test_load_checks_the_file(tmp_path) -> None:
    good = tmp_path / "c.json"
    good.write_text(json.dumps(cv.convention_document(cv.Convention(np.full(20, 0.01), 0.5), 30)))
    loaded = cv.load_convention(good)
    np.testing.assert_allclose(loaded.delta, 0.01)
    assert loaded.shrink == 0.5
    assert cv.load_convention(tmp_path / "missing.json") is None
    for doc in ({"format": "x", "delta": [0.0] * 20}, {"format": cv.FORMAT, "delta": [0.0] * 19},
                {"format": cv.FORMAT, "delta": [2.0] * 20}, {"format": cv.FORMAT},
                {"format": cv.FORMAT, "delta": [0.0] * 20, "shrink": 1.5}):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(doc))
        assert cv.load_convention(bad) is None
    (tmp_path / "junk.json").write_text("{not json")
    assert cv.load_convention(tmp_path / "junk.json") is None
