"""The tailor's C kernels (core.fit._native) against the NumPy code they replace: the system of one
iteration, the whole Levenberg-Marquardt loop, and the fallback where nothing compiles."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest
import torch

import core.native
from core.fit import TailorFitter, _native, solver
from core.fit.tailor import _weights
from core.model import HandModel, load_open_hand
from tests.test_fit import K, make_hands, observation


def needs_native() -> None:
    if _native.LIBRARY.get() is None:
        pytest.skip(f"C kernels unavailable: {_native.LIBRARY.error}")


@pytest.fixture(scope="module")
def right():
    return load_open_hand("right")


@pytest.fixture(scope="module")
def fitter(right):
    return TailorFitter(right, load_open_hand("left"), backend="numpy")


@pytest.fixture(scope="module")
def hands(right):
    return make_hands(right, HandModel(right, dtype=torch.float64), 6, seed=11)


def _problems(sv, w, hands, persp, fit_shape, has_world, temporal, rng):
    """The NumPy and the C system of one batch of 3 hands (same inputs)."""
    uv = np.stack([h["uv_obs"] for h in hands[:3]])
    world = np.stack([h["world"] for h in hands[:3]]) if has_world else None
    beta = 0.3 * rng.normal(size=(3, sv.num_betas))
    prev = (None, None, None)
    if temporal:  # the middle hand has no previous frame
        prev_t = (np.array([[0.01, 0.02, 0.5], [0.0, 0.0, 0.45], [0.03, -0.02, 0.55]]) if persp
                  else rng.normal(size=(3, 3)))
        prev = (rng.normal(0, 0.3, (3, 48)), prev_t, np.array([True, False, True]))
    Kb = np.stack([K] * 3) if persp else None
    return [sv.problem(w, uv, world, Kb, beta, fit_shape, *prev, native=native) for native in (False, True)]


@pytest.mark.parametrize("persp,fit_shape,has_world,temporal", list(itertools.product((True, False), repeat=4)))
def test_kernel_matches_the_numpy_system(fitter, hands, persp, fit_shape, has_world, temporal):
    needs_native()
    sv = fitter._solver("right", "numpy")
    w = _weights(fitter.settings)
    rng = np.random.default_rng(int(persp) + 2 * fit_shape + 4 * has_world + 8 * temporal)
    ref, nat = _problems(sv, w, hands, persp, fit_shape, has_world, temporal, rng)
    assert all(np.array_equal(a, b) for a, b in zip(ref[2:], nat[2:]))  # the same start
    R, G, cam, beta = ref[2:]
    states = [(R, G, cam, beta)]  # the start: clamped, angles on the limits
    for scale in (0.05, 0.5):  # small turns keep the limits, large ones violate them
        Rn = R @ sv.rodrigues(rng.normal(0, scale, R.shape[:2] + (3,)))
        states.append((Rn, sv.global_from_local(Rn), cam + rng.normal(0, 0.01, cam.shape),
                       beta + rng.normal(0, 0.3, beta.shape)))
    violated = []
    for R_, G_, cam_, beta_ in states:
        ang = sv.anatomical_angles(R_)
        violated.append(int(((ang < sv.lo_p) | (ang > sv.hi_p)).sum()))
        ref[1](G_, beta_)
        nat[1](G_, beta_)
        for a, b in zip(ref[0](R_, G_, cam_, beta_), nat[0](R_, G_, cam_, beta_)):
            assert a.shape == b.shape
            np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12 * np.abs(a).max())
    assert violated[-1] > 0  # the hinge ran


#: The three NumPy-backend paths: (native, native_loop).
_PATHS = {"numpy": (False, True), "c_system": (True, False), "c_loop": (True, True)}


def _fits(fitter, sv, calls):
    """{path: [fitter.fit(...)[0] for each call]} with each path switched on in turn."""
    out = {}
    try:
        for name, (native, loop) in _PATHS.items():
            sv.native, sv.native_loop = native, loop
            out[name] = [call() for call in calls]
    finally:
        sv.native, sv.native_loop = None, True
    return out


@pytest.fixture
def margin(monkeypatch):
    """The hinge's switch with a margin (here solver._LIMIT_EPS < 0, off within it; the default
    margin is positive, on within it): a joint just projected onto its limit no longer counts as
    violated or not by the last bit of atan2 / asin, where the NumPy and the C angles differ; with
    it the three paths give the same fits to float rounding. (Without it, margin 0, a C-loop fit can part from the NumPy
    one from the first iteration on: over these 12 fits, 6 differ by 2-7 mm, 2 of them by 0.4 px;
    over sets the accuracy is the same, see the module's report.)"""
    monkeypatch.setattr(solver, "_LIMIT_EPS", -1e-9)


def test_fit_through_the_kernel_equals_the_numpy_fit(fitter, hands, margin):
    """The NumPy loop, the NumPy loop around the C system and the C loop give the same fits to
    float rounding, through the projections onto the limits, the refreshes and the tolerance
    freeze. Measured over these 12 fits: all equal to the float32 outputs' last bit."""
    needs_native()
    sv = fitter._solver("right", "numpy")
    errors, same = [], 0
    for h, camera, fixed in itertools.product(hands[:3], (True, False), (False, True)):
        obs = observation(h, camera)
        betas = h["betas"] if fixed else None
        fits = _fits(fitter, sv, [
            lambda n=n, obs=obs, betas=betas: fitter.fit([obs], betas=betas, iterations=n, tolerance=0.0)[0]
            for n in (1, 4, 20)
        ] + [lambda obs=obs, betas=betas: fitter.fit([obs], betas=betas)[0]])
        ref = fits["numpy"]
        for name in ("c_system", "c_loop"):
            for a, b in zip(ref, fits[name]):
                assert np.abs(a.keypoints_3d - b.keypoints_3d).max() < 3e-3
            assert np.abs(ref[1].pose - fits[name][1].pose).max() < 1e-5  # 4 iterations
            errors.append((ref[2].reprojection_error_px, fits[name][2].reprojection_error_px))
            same += all(np.abs(a.keypoints_3d - b.keypoints_3d).max() < 1e-5 and a.iterations == b.iterations
                        for a, b in zip(ref, fits[name]))
    ref_e, nat_e = np.array(errors).T
    assert np.abs(ref_e - nat_e).max() < 0.3 and abs(ref_e.mean() - nat_e.mean()) < 0.05
    assert same >= 20  # of 24


def test_warm_started_fit_with_the_kernel(fitter, hands, margin):
    needs_native()
    sv = fitter._solver("right", "numpy")
    for h in hands[3:]:
        obs = observation(h)
        first = fitter.fit([obs])[0]
        out = _fits(fitter, sv, [
            lambda obs=obs, first=first: fitter.fit([obs], previous=[first], iterations=4, tolerance=0.0)[0],
            lambda obs=obs, first=first: fitter.fit([obs], previous=[first])[0]])
        for name in ("c_system", "c_loop"):
            assert np.abs(out["numpy"][0].pose - out[name][0].pose).max() < 1e-5
            assert np.abs(out["numpy"][1].keypoints_3d - out[name][1].keypoints_3d).max() < 3e-3


def test_c_loop_fits_a_batch_as_each_hand_alone(fitter, hands):
    """Each hand runs its own loop (its damping, acceptance and freeze), as in the NumPy loop."""
    needs_native()
    sv = fitter._solver("right", "numpy")
    assert sv.native_loop and sv._use_kernel(None)
    obs = [observation(h, camera) for h, camera in zip(hands[:4], (True, True, True, True))]
    together = fitter.fit(obs)
    for o, t in zip(obs, together):
        a = fitter.fit([o])[0]
        assert a.iterations == t.iterations
        np.testing.assert_allclose(t.keypoints_3d, a.keypoints_3d, atol=1e-6)
        np.testing.assert_allclose(t.pose, a.pose, atol=1e-5)


def test_c_loop_projection_and_zero_iterations(fitter, hands):
    """With no iteration the C loop returns the start projected onto the limits: its anatomical
    angles, clamp and rebuild F Rz Ry Rx F^T against clamp_local's."""
    needs_native()
    sv = fitter._solver("right", "numpy")
    w = _weights(fitter.settings)
    rng = np.random.default_rng(3)
    uv = np.stack([h["uv_obs"] for h in hands[:3]])
    beta = np.zeros((3, sv.num_betas))
    system, _, R, G, cam, beta = sv.problem(w, uv, None, np.stack([K] * 3), beta, True, native=True)
    R = R @ sv.rodrigues(rng.normal(0, 0.8, (3, 16, 3)))  # far outside the limits
    G = sv.global_from_local(R)
    R2, G2, cam2, beta2, ran = system.kernel.run(R, G, cam, beta, n_iter=0, project_every=5, refresh_every=4,
                                                 lm_lambda=0.3, tolerance=0.0, max_beta=3.0)
    ref = sv.clamp_local(R)
    assert not np.allclose(ref, R)
    np.testing.assert_allclose(R2, ref, atol=1e-12)
    np.testing.assert_allclose(G2, sv.global_from_local(ref), atol=1e-12)
    assert np.array_equal(cam2, cam) and np.array_equal(beta2, beta) and np.array_equal(ran, [0, 0, 0])


def test_without_a_compiler_the_fit_uses_numpy(monkeypatch, caplog, right, hands):
    monkeypatch.setattr(_native.LIBRARY, "_lib", None)  # restored after the test
    monkeypatch.setattr(_native.LIBRARY, "_error", None)
    monkeypatch.setattr(core.native, "compiler", lambda: None)
    fitter = TailorFitter(right, load_open_hand("left"), backend="numpy")
    sv = fitter._solver("right", "numpy")
    obs = observation(hands[0])
    with caplog.at_level(logging.WARNING, logger="core.native"):
        fit = fitter.fit([obs])[0]
    assert not sv._use_kernel(None) and _native.LIBRARY.error is not None
    assert "no C compiler" in caplog.text
    sv.native = False
    ref = fitter.fit([obs])[0]
    assert np.array_equal(fit.pose, ref.pose) and fit.reprojection_error_px < 3.0
    sv.native_loop = False  # no kernel, no C loop: the switch changes nothing
    assert np.array_equal(fitter.fit([obs])[0].pose, ref.pose)
    sv.native = True
    with pytest.raises(core.native.NativeUnavailableError, match="no C compiler"):
        fitter.fit([obs])


def test_torch_backend_never_uses_the_kernel(right):
    fitter = TailorFitter(right, load_open_hand("left"), backend="torch")
    sv = fitter._solver("right", "torch")
    assert not sv._use_kernel(None) and not sv._use_kernel(True)
