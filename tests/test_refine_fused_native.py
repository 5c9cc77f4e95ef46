"""The live refinement in one C call (core.refine._fused_native) against the NumPy-glued
reference (core.refine.fused.loss_and_grad) and the refiner's Python loop."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from core.refine import Refiner, RefineSettings, _fused_native
from core.refine.fused import FusedView, loss_and_grad, numpy_view
from core.refine.lbs import LeanHand


def needs_library() -> None:
    if not _fused_native.available(np.float32):
        pytest.skip(f"C kernels unavailable: {_fused_native.LIBRARY.error}")


@pytest.fixture(scope="module")
def case():
    """A synthetic right hand, its fit and its target (exact mask)."""
    from core.tools.bench_refine import synthetic_refine_cases

    for seed in range(10):
        cases, layers = synthetic_refine_cases(1, seed=seed)
        if cases[0][0].side == "right":
            return cases[0][0], cases[0][1], layers
    raise AssertionError("no right hand in ten seeds")


def group_at_random_offsets(case, weak: bool, seed: int = 3):
    """The refiner's group for the case, set up, and random offsets (every term active)."""
    fit, target, layers = case
    if weak:
        target = dataclasses.replace(target, K=None)
    refiner = Refiner(layers["right"].data, layers["left"].data, RefineSettings())
    st = refiner.settings
    g = refiner._groups([fit], [target], st)[0]
    parts = refiner._layout(g, st)
    theta = torch.cat([z for z, _, _ in parts])
    theta += 0.01 * torch.randn(theta.shape, generator=torch.Generator().manual_seed(seed))
    refiner._bind([g], theta)
    refiner._fused_setup(g, st)
    params = {name: p.numpy() for name, p in g.params.items()}
    return refiner, st, g, params


def assert_outputs_close(a, b, rtol: float, atol: float) -> None:
    for name in ("loss", "iou", "verts", "base", "keypoints", "K", "slack"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=rtol, atol=atol, err_msg=name)
    for name, ga in a.grads.items():
        gb = b.grads[name]
        np.testing.assert_allclose(ga, gb, rtol=rtol, atol=atol * max(1.0, float(np.abs(gb).max())),
                                   err_msg=f"gradient of {name}")


@pytest.mark.parametrize("weak", [False, True])
def test_one_c_call_matches_the_numpy_glued_kernels(case, weak: bool) -> None:
    """float32, the live model: loss, IoU, meshes, slack and every gradient, with the slack
    taken at this evaluation and then given."""
    needs_library()
    refiner, st, g, params = group_at_random_offsets(case, weak)
    weights = refiner._fused_weights(st)
    lean = refiner._lean["right"]
    slack = None
    for _ in range(2):
        ref = loss_and_grad(lean, g.fused, params, weights, st.soft, st.keypoint_scale_px, slack,
                            True, st.keypoint_tolerance_px, True)
        got = g.fused_native(params, weights, slack, True, st.keypoint_tolerance_px, True)
        assert float(ref.loss[0]) > 0.05 and float(np.abs(ref.grads["pose"]).max()) > 0.01
        assert_outputs_close(got, ref, rtol=2e-5, atol=2e-6)
        slack = ref.slack + 0.5  # given: some keypoints within their slack, some beyond
    no_grad = g.fused_native(params, weights, slack, True, None, False)
    assert no_grad.grads is None
    np.testing.assert_allclose(no_grad.loss, got.loss, rtol=1e-6)


def test_float64_with_pose_correctives_and_pose_mean(case, layer64) -> None:
    """float64 and a MANO-like model (pose-corrective blend shapes, a pose mean): the C
    evaluation equals the NumPy-glued kernels to rounding."""
    needs_library()
    refiner, st, g, params = group_at_random_offsets(case, weak=False, seed=5)
    v = g.views[0]
    as64 = [t.double() for t in (g.pose0, g.betas0, g.transl0, g.t_scale, g.edge0, v.K, v.affine, v.target,
                                 v.weight, v.area, v.keypoints)]
    view = numpy_view(FusedView(*as64, v.faces, g.topo, g.free_focal))
    params = {k: p.astype(np.float64) for k, p in params.items()}
    lean = LeanHand(layer64)
    assert lean.arrays().posedirs is not None and lean.arrays().pose_mean is not None
    weights = refiner._fused_weights(st)
    ref = loss_and_grad(lean, view, params, weights, st.soft, st.keypoint_scale_px, None, True, 6.0, True)
    got = _fused_native.NativeEvaluation(lean, view, st.soft, st.keypoint_scale_px)(
        params, weights, None, True, 6.0, True)
    assert_outputs_close(got, ref, rtol=1e-9, atol=1e-11)


def test_terms_switched_off_stay_off(case) -> None:
    """Zero weights (frozen vertices, no keypoints) remove their terms, as in the reference."""
    needs_library()
    refiner, st, g, params = group_at_random_offsets(case, weak=False)
    weights = dict(refiner._fused_weights(st), keypoints=0.0, vertex=0.0, laplacian=0.0, edge=0.0, normal=0.0)
    lean = refiner._lean["right"]
    ref = loss_and_grad(lean, g.fused, params, weights, st.soft, st.keypoint_scale_px, None, True, None, True)
    got = g.fused_native(params, weights, None, True, None, True)
    assert got.slack is None and ref.slack is None
    assert_outputs_close(dataclasses.replace(got, slack=0), dataclasses.replace(ref, slack=0), 2e-5, 2e-6)


@pytest.mark.parametrize("weak", [False, True])
def test_the_c_loop_matches_the_python_loop(case, weak: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Refiner.refine with the whole loop in C = the Python loop over the NumPy-glued kernels.

    Adam's first steps are about ``lr * sign(gradient)``, so rounding in gradients near zero
    moves a few vertices by up to a step either way: meshes agree to a fraction of a
    millimetre, the IoU to a fraction of a percent."""
    needs_library()
    fit, target, layers = case
    if weak:
        target = dataclasses.replace(target, K=None)
    refiner = Refiner(layers["right"].data, layers["left"].data, RefineSettings())
    calls = []
    run = _fused_native.NativeEvaluation.run
    monkeypatch.setattr(_fused_native.NativeEvaluation, "run", lambda *a, **k: calls.append(1) or run(*a, **k))
    in_c = [refiner.refine([fit], [target], iterations=n)[0] for n in (0, 3, 8)]
    assert len(calls) == 3
    monkeypatch.setattr(_fused_native, "available", lambda dtype: False)
    in_python = [refiner.refine([fit], [target], iterations=n)[0] for n in (0, 3, 8)]
    assert len(calls) == 3
    for c, p in zip(in_c, in_python):
        assert c.iterations == p.iterations
        assert c.iou_before == pytest.approx(p.iou_before, abs=1e-6)
        assert c.iou_after == pytest.approx(p.iou_after, abs=5e-3)
        assert np.linalg.norm(c.vertices - p.vertices, axis=1).mean() < 2e-4  # metres
        np.testing.assert_allclose(c.keypoints_3d, p.keypoints_3d, atol=5e-4)
        np.testing.assert_allclose(c.K, p.K, rtol=1e-3)
    assert in_c[0].best_iteration == in_python[0].best_iteration == 0
    assert in_c[2].iou_after > in_c[0].iou_after  # the refinement did something


def test_front_faces_in_c_match_those_of_tensors(case) -> None:
    """The start's front faces, found by the C kernel (the fused path) or by tensor ops."""
    from core.refine._native import front_faces as front_faces_c
    from core.refine.mesh import front_faces

    refiner, st, g, _ = group_at_random_offsets(case, weak=False)
    with torch.no_grad():
        verts = refiner._lean["right"](g.pose0, g.betas0, g.transl0).vertices
    two = torch.cat([verts, verts + torch.tensor([0.05, 0.0, 0.0])])  # a second mesh, seen from aside
    for v in (verts, two):
        faces = front_faces(v, g.topo.faces)
        assert 0.3 < len(faces) / len(g.topo.faces) < 0.8
        np.testing.assert_array_equal(front_faces_c(v.numpy(), g.topo.faces.numpy()), faces.numpy())
        np.testing.assert_array_equal(front_faces_c(v, g.topo.faces).numpy(), faces.numpy())
    np.testing.assert_array_equal(g.views[0].faces.numpy(), front_faces(verts, g.topo.faces).numpy())


@pytest.mark.parametrize("weak", [False, True])
def test_the_live_path_matches_the_general_path_over_the_same_evaluation(case, weak: bool,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Refiner._refine_native (NumPy setup, the loop in C) gives what the general path gives
    (tensor setup, the Python loop and torch's Adam around the same one-call C evaluation)."""
    needs_library()
    fit, target, layers = case
    if weak:
        target = dataclasses.replace(target, K=None)
    refiner = Refiner(layers["right"].data, layers["left"].data, RefineSettings())
    fast = refiner.refine([fit], [target], iterations=4)[0]
    calls = []
    evaluate = _fused_native.NativeEvaluation.__call__
    monkeypatch.setattr(_fused_native.NativeEvaluation, "__call__",
                        lambda *a, **k: calls.append(1) or evaluate(*a, **k))
    monkeypatch.setattr(Refiner, "_refine_native", lambda *args, **kwargs: None)
    general = refiner.refine([fit], [target], iterations=4)[0]
    assert len(calls) == 5  # the general path ran the C evaluation
    for name in ("vertices", "keypoints_3d", "transl"):
        np.testing.assert_allclose(getattr(fast, name), getattr(general, name), atol=2e-4, err_msg=name)
    np.testing.assert_allclose(fast.pose, general.pose, atol=2e-3)
    np.testing.assert_allclose(fast.keypoints_2d, general.keypoints_2d, atol=0.05)
    assert fast.iou_before == pytest.approx(general.iou_before, abs=1e-6)
    assert fast.iou_after == pytest.approx(general.iou_after, abs=5e-3)
    assert (fast.iterations, fast.best_iteration) == (general.iterations, general.best_iteration)
