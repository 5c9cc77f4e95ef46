"""Frame selection by what each view shows of the bones: observability, coverage, completeness."""

from __future__ import annotations

import numpy as np
import pytest

from core.keypoints import BONES
from core.personalize.selection import (
    PER_FRAME_RELATIVE_ERROR,
    bone_coverage,
    bone_observability,
    bone_uncertainty,
    coverage_report,
    select_frames,
)


def _keypoints_with_bone_directions(directions: np.ndarray, depth: float = 10.0) -> np.ndarray:
    """(21, 3) keypoints far along +z whose bone b points along directions[b] (unit, 2 cm)."""
    kp = np.zeros((21, 3))
    kp[0] = (0.0, 0.0, depth)
    for b, (p, c) in enumerate(BONES):
        kp[c] = kp[p] + 0.02 * directions[b]
    return kp


def test_observability_is_the_sine_to_the_viewing_ray() -> None:
    rng = np.random.default_rng(0)
    angles = rng.uniform(0, np.pi, 20)
    dirs = np.stack([np.sin(angles), np.zeros(20), np.cos(angles)], 1)
    kp = _keypoints_with_bone_directions(dirs, depth=1e6)  # rays along +z
    o = bone_observability(kp)
    assert o.shape == (20,)
    np.testing.assert_allclose(o, np.abs(np.sin(angles)), atol=1e-6)
    # A bone pointing along the ray through it shows nothing, whatever its direction in the image.
    near = np.zeros((21, 3))
    near[0] = (0.1, 0.0, 0.5)
    for p, c in BONES:
        near[c] = near[p] + 0.01 * near[p] / np.linalg.norm(near[p])
    np.testing.assert_allclose(bone_observability(near), 0.0, atol=1e-6)
    assert bone_observability(np.stack([kp, near])).shape == (2, 20)


def test_coverage_and_uncertainty() -> None:
    o = np.zeros((3, 20))
    o[:, 0] = 1.0
    o[0, 1] = 0.5
    cov = bone_coverage(o, quality=np.array([1.0, 1.0, 0.5]))
    assert cov[0] == pytest.approx(2.5) and cov[1] == pytest.approx(0.25) and cov[2] == 0.0
    unc = bone_uncertainty(cov)
    assert unc[0] == pytest.approx(PER_FRAME_RELATIVE_ERROR / np.sqrt(2.5))
    assert np.isinf(unc[2])
    rep = coverage_report(np.ones((7, 20)))  # 7 side-on views: 0.1 / sqrt(7) < 0.04
    assert rep.done and rep.covered.all() and rep.fraction == pytest.approx(1.0)
    rep = coverage_report(o)
    assert not rep.done and rep.weakest >= 2 and 0.0 < rep.fraction < 0.2


def test_selection_asks_for_the_bone_nobody_showed() -> None:
    """Nine good frames show every bone but the thumb's side-on; a mediocre tenth shows the
    thumb. Without observability it is passed over, with it it is chosen."""
    rng = np.random.default_rng(3)
    n = 10
    obs = rng.uniform(0.6, 1.0, (n, 20))
    obs[:, :4] = rng.uniform(0.0, 0.1, (n, 4))  # thumb bones point at the camera...
    obs[9, :4] = 0.95  # ...except in frame 9
    conf = np.linspace(1.0, 0.5, n)
    conf[9] = 0.4  # frame 9 is the least confident (rank 0.0 < min_quality: still allowed when it pays)
    desc = rng.normal(size=(n, 8))
    plain = select_frames(conf, desc, 5, min_quality=0.0)
    aware = select_frames(conf, desc, 5, min_quality=0.0, observability=obs, coverage=2.0)
    assert 9 not in plain and 9 in aware
    assert coverage_report(obs[aware]).coverage[:4].min() > coverage_report(obs[plain]).coverage[:4].min() + 0.5
    # Forced, excluded and the quality-only limit behave as before with observability given.
    assert select_frames(conf, desc, 3, forced=[4], excluded=[9], observability=obs).count(4) == 1
    assert 9 not in select_frames(conf, desc, 3, excluded=[9], observability=obs)
    assert select_frames(conf, desc, 20, observability=obs) == list(range(n))
