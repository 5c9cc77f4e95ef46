"""Identity-aware tracking with a profile's whole identity: the personal model, never moved."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from core.capture import DEMO_CLIP_PATH, open_source
from core.engine import Engine, EngineSettings
from core.keypoints import bone_lengths
from core.model import HandModel
from core.model.personal import PersonalIdentity, model_rest_keypoints
from core.synth.people import sample_person_skeleton
from tests.test_refine import FAST

needs_demo = pytest.mark.skipif(not DEMO_CLIP_PATH.exists(), reason="demo clip not built")


@pytest.fixture(scope="module")
def frames():
    with open_source("demo") as src:
        return list(itertools.islice(src, 4))


def _identity(open_hand) -> PersonalIdentity:
    shape = np.full(open_hand.num_betas, 0.3, dtype=np.float32)
    skel = sample_person_skeleton(model_rest_keypoints(open_hand, shape), np.random.default_rng(7))
    return PersonalIdentity(shape=shape, skeleton=skel)


@needs_demo
def test_refinement_never_moves_the_profile_identity(open_hand, frames):
    identity = _identity(open_hand)
    settings = EngineSettings(max_hands=1, device="cpu", refine_iterations=3, refine=FAST, detector_process=False)
    with Engine(settings, identity) as engine:
        right = engine.model_data["right"]
        # The engine tracks the personal model: its rest skeleton is the profile's.
        np.testing.assert_allclose(model_rest_keypoints(right, identity.shape), identity.skeleton, atol=1e-6)
        assert not engine.refiner.settings.optimize_shape
        results = [engine.process(f) for f in frames]
    layer = HandModel(right, dtype=torch.float64)
    refined = [r.hands[0].refined for r in results if r.hands and r.hands[0].refined is not None]
    assert len(refined) >= 3
    for r in refined:
        np.testing.assert_array_equal(r.betas, identity.shape)
        rest = layer.rest(torch.as_tensor(r.betas, dtype=torch.float64)[None]).keypoints[0].numpy()
        np.testing.assert_allclose(bone_lengths(rest), bone_lengths(identity.skeleton), atol=1e-6)
    # Without a profile the same refinement does move the shape (the test can fail).
    free = EngineSettings(max_hands=1, device="cpu", refine_iterations=3, refine=FAST, detector_process=False)
    with Engine(free) as engine:
        moved = [engine.process(f).hands[0] for f in frames[:2]]
    assert any(np.abs(h.refined.betas - h.fit.betas).max() > 1e-4 for h in moved if h.refined is not None)


@needs_demo
def test_a_shape_only_profile_also_keeps_its_shape_under_refinement(frames):
    shape = np.full(10, -0.4, dtype=np.float32)
    settings = EngineSettings(max_hands=1, device="cpu", refine_iterations=3, refine=FAST, detector_process=False)
    with Engine(settings, shape) as engine:
        for f in frames[:2]:
            hand = engine.process(f).hands[0]
            np.testing.assert_array_equal(hand.refined.betas, shape)
