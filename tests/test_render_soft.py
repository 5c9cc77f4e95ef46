"""Tests of the soft (SoftRas) silhouette rasterizer: fast vs dense, gradients, validation.

The fast rasterizer has two implementations of its per-pixel math, plain PyTorch ops
(``backend="eager"``) and C kernels (``backend="native"``, :mod:`core.render._native`); the
tests taking the ``backend`` fixture run against both (native ones skip where no C compiler
works).
"""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from core.render import (
    SoftRasterSettings,
    _native,
    cull_radius_px,
    rasterize_silhouette,
    rasterize_silhouette_dense,
    resize_intrinsics,
    signed_dist_sq,
)
from core.render.soft import make_spans
from core.render.synthetic import geodesic_ellipsoid

EAGER = SoftRasterSettings(image_size=(24, 28), sigma=0.6, eps=1e-12, backend="eager")


@pytest.fixture(params=["eager", "native"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "native" and _native.library() is None:
        pytest.skip(f"C kernels unavailable: {_native.build_error()}")
    return request.param


def needs_native() -> None:
    if _native.library() is None:
        pytest.skip(f"C kernels unavailable: {_native.build_error()}")


def two_blobs(
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two overlapping closed ellipsoids (2 x 80 faces) framed in a 24 x 28 image."""
    v1, f1 = geodesic_ellipsoid((-0.01, 0.0, 0.5), (0.02, 0.03, 0.015), 0.3, 2, dtype)
    v2, f2 = geodesic_ellipsoid((0.015, 0.01, 0.47), (0.012, 0.02, 0.012), -0.5, 2, dtype)
    verts = torch.cat((v1, v2))[None]
    faces = torch.cat((f1, f2 + v1.shape[0]))
    K = torch.tensor([[[250.0, 0.0, 13.3], [0.0, 260.0, 11.6], [0.0, 0.0, 1.0]]], dtype=dtype)
    return verts, faces, K


def loss_and_grad(render, verts, faces, K, settings, weight):
    v = verts.detach().clone().requires_grad_(True)
    sil = render(v, faces, K, settings)
    (sil * weight).sum().backward()
    return sil.detach(), v.grad


def test_cull_radius_matches_probability() -> None:
    sigma, eps = 0.7, 1e-4
    r = cull_radius_px(sigma, eps)
    assert torch.sigmoid(torch.tensor(-r * r / sigma)).item() == pytest.approx(eps, rel=1e-6)
    assert SoftRasterSettings(sigma=sigma, eps=eps).cull_radius == pytest.approx(r)


def test_signed_dist_sq_known_values() -> None:
    tri = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    points = torch.tensor([[1.0, 1.0], [2.0, -3.0], [-1.0, -1.0], [3.0, 3.0]],
                          dtype=torch.float64)
    # inside (1 px from two edges), below the edge, beyond a corner, beyond the hypotenuse.
    expected = torch.tensor([1.0, -9.0, -2.0, -2.0], dtype=torch.float64)
    torch.testing.assert_close(signed_dist_sq(points, tri), expected)
    # Winding does not matter.
    torch.testing.assert_close(signed_dist_sq(points, tri[[0, 2, 1]]), expected)


def test_fast_matches_dense_float64(backend: str) -> None:
    torch.manual_seed(0)
    verts, faces, K = two_blobs()
    weight = torch.rand(1, *EAGER.image_size, dtype=torch.float64)
    settings = dataclasses.replace(EAGER, backend=backend)
    sil_f, grad_f = loss_and_grad(rasterize_silhouette, verts, faces, K, settings, weight)
    sil_d, grad_d = loss_and_grad(rasterize_silhouette_dense, verts, faces, K, EAGER, weight)
    assert sil_d.max() > 0.99 and sil_d.min() < 1e-6  # the blobs are inside the image
    torch.testing.assert_close(sil_f, sil_d, atol=1e-9, rtol=0)
    torch.testing.assert_close(grad_f, grad_d, atol=1e-7 * grad_d.abs().max().item(), rtol=0)


def test_fast_matches_dense_float32_default_eps(backend: str) -> None:
    torch.manual_seed(1)
    verts, faces, K = two_blobs(torch.float32)
    settings = dataclasses.replace(EAGER, eps=1e-4, backend=backend)
    weight = torch.rand(1, *settings.image_size)
    sil_f, grad_f = loss_and_grad(rasterize_silhouette, verts, faces, K, settings, weight)
    sil_d, grad_d = loss_and_grad(rasterize_silhouette_dense, verts, faces, K, settings, weight)
    # Culled pairs each had D < eps; a pixel sees a handful of them.
    torch.testing.assert_close(sil_f, sil_d, atol=2e-3, rtol=0)
    scale = grad_d.abs().max().item()
    torch.testing.assert_close(grad_f, grad_d, atol=2e-3 * scale, rtol=0)
    assert torch.nn.functional.cosine_similarity(grad_f.flatten(), grad_d.flatten(), 0) > 0.9999


def test_gradcheck_tiny(backend: str) -> None:
    torch.manual_seed(2)
    verts = torch.tensor([[[-0.02, -0.015, 0.5], [0.025, -0.01, 0.55], [0.0, 0.02, 0.45],
                           [0.03, 0.025, 0.5]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    K = torch.tensor([[[150.0, 0.0, 5.3], [0.0, 140.0, 4.6], [0.0, 0.0, 1.0]]],
                     dtype=torch.float64)
    settings = SoftRasterSettings(image_size=(10, 11), sigma=0.8, eps=1e-12, backend=backend)
    weight = torch.rand(1, 10, 11, dtype=torch.float64)

    def fn(v: torch.Tensor) -> torch.Tensor:
        return (rasterize_silhouette(v, faces, K, settings) * weight).sum()

    assert torch.autograd.gradcheck(fn, (verts.clone().requires_grad_(True),), eps=1e-6,
                                    atol=1e-6, rtol=1e-4)


def test_finite_differences_on_two_blobs(backend: str) -> None:
    torch.manual_seed(3)
    verts, faces, K = two_blobs()
    settings = dataclasses.replace(EAGER, backend=backend)
    weight = torch.rand(1, *EAGER.image_size, dtype=torch.float64) - 0.5  # signed, like IoU
    _, grad = loss_and_grad(rasterize_silhouette, verts, faces, K, settings, weight)
    direction = torch.randn_like(verts)
    h = 1e-7
    with torch.no_grad():
        up = (rasterize_silhouette(verts + h * direction, faces, K, settings) * weight).sum()
        down = (rasterize_silhouette(verts - h * direction, faces, K, settings) * weight).sum()
    numeric = (up - down) / (2 * h)
    analytic = (grad * direction).sum()
    assert numeric.item() == pytest.approx(analytic.item(), rel=1e-4)


def test_gradient_wrt_intrinsics(backend: str) -> None:
    verts, faces, K = two_blobs()
    K = K.clone().requires_grad_(True)
    sil = rasterize_silhouette(verts, faces, K, dataclasses.replace(EAGER, backend=backend))
    sil.sum().backward()
    # A larger focal length makes the silhouette larger.
    assert K.grad[0, 0, 0] > 0 and K.grad[0, 1, 1] > 0


def test_batch_matches_single_images(backend: str) -> None:
    settings = dataclasses.replace(EAGER, backend=backend)
    verts, faces, K = two_blobs()
    moved = verts + torch.tensor([0.004, -0.003, 0.02], dtype=torch.float64)
    batch_v = torch.cat((verts, moved))
    batch_k = torch.cat((K, K * torch.tensor([[1.1], [1.0], [1.0]], dtype=torch.float64)))
    both = rasterize_silhouette(batch_v, faces, batch_k, settings)
    for b in range(2):
        single = rasterize_silhouette(batch_v[b:b + 1], faces, batch_k[b:b + 1], settings)
        torch.testing.assert_close(both[b:b + 1], single, atol=1e-12, rtol=0)


def test_faces_behind_near_plane_are_ignored(backend: str) -> None:
    settings = dataclasses.replace(EAGER, backend=backend)
    verts, faces, K = two_blobs()
    behind = verts.clone()
    behind[0, :42, 2] = -0.5  # the first blob (42 vertices) behind the camera
    fast = rasterize_silhouette(behind, faces, K, settings)
    dense = rasterize_silhouette_dense(behind, faces, K, settings)
    only_second = rasterize_silhouette(verts[:, 42:], faces[80:] - 42, K, settings)
    torch.testing.assert_close(fast, dense, atol=1e-9, rtol=0)
    torch.testing.assert_close(fast, only_second, atol=1e-12, rtol=0)


def test_mesh_outside_image_gives_empty_silhouette(backend: str) -> None:
    verts, faces, K = two_blobs()
    far_left = verts + torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64)
    settings = dataclasses.replace(EAGER, backend=backend)
    sil = rasterize_silhouette(far_left.requires_grad_(True), faces, K, settings)
    assert sil.abs().max() == 0
    sil.sum().backward()  # no pairs: still a valid (zero) gradient


def test_saturated_interior_is_one_and_band_is_exact(backend: str) -> None:
    verts, faces, K = two_blobs()
    size = (48, 56)
    K2 = resize_intrinsics(K, 2.0)
    settings = dataclasses.replace(EAGER, image_size=size, backend=backend)
    exact = rasterize_silhouette(verts, faces, K2, settings)
    sat = rasterize_silhouette(verts, faces, K2,
                               dataclasses.replace(settings, saturate_interior=True))
    interior = sat == 1.0
    assert interior.sum() > 20
    changed = (sat != exact)
    assert bool((changed <= interior).all())  # only interior pixels differ
    assert exact[interior].min() > 0.9  # SoftRas interior dips are small


def test_span_width_and_pairs_cover_boxes() -> None:
    verts, faces, K = two_blobs()
    from core.render.projection import project_points
    tri = project_points(verts, K)[:, faces].reshape(-1, 3, 2)
    valid = torch.ones(tri.shape[0], dtype=torch.bool)
    spans = make_spans(tri, valid, 2.0, 1, faces.shape[0], *EAGER.image_size)
    assert spans.num_pairs >= spans.face.numel()
    assert int(spans.y.min()) >= 0 and int(spans.y.max()) < EAGER.image_size[0]
    assert int(spans.x.min()) >= 0 and int(spans.x.max()) < EAGER.image_size[1]


def test_signed_loss_gradient_matches_dense(backend: str) -> None:
    """1 - soft IoU: dL/dsil is negative inside the target, positive outside."""
    verts, faces, K = two_blobs()
    settings = dataclasses.replace(EAGER, backend=backend)
    with torch.no_grad():
        target = torch.roll(rasterize_silhouette_dense(verts, faces, K, settings) > 0.5,
                            shifts=(1, 2), dims=(1, 2)).to(verts.dtype)
    grads = []
    for render in (rasterize_silhouette, rasterize_silhouette_dense):
        v = verts.clone().requires_grad_(True)
        sil = render(v, faces, K, settings)
        inter = (sil * target).sum()
        (1.0 - inter / (sil.sum() + target.sum() - inter)).backward()
        grads.append(v.grad)
    fast, dense = grads
    torch.testing.assert_close(fast, dense, atol=1e-7 * dense.abs().max().item(), rtol=0)


def test_native_matches_eager_float64() -> None:
    needs_native()
    verts, faces, K = two_blobs()
    K2 = resize_intrinsics(K, 2.0)
    weight = torch.rand(1, 48, 56, dtype=torch.float64) - 0.5
    for saturate in (False, True):
        eager = dataclasses.replace(EAGER, image_size=(48, 56), saturate_interior=saturate)
        native = dataclasses.replace(eager, backend="native")
        sil_e, grad_e = loss_and_grad(rasterize_silhouette, verts, faces, K2, eager, weight)
        sil_n, grad_n = loss_and_grad(rasterize_silhouette, verts, faces, K2, native, weight)
        torch.testing.assert_close(sil_n, sil_e, atol=1e-10, rtol=0)
        torch.testing.assert_close(grad_n, grad_e, atol=1e-9 * grad_e.abs().max().item(),
                                   rtol=0)


def test_native_results_do_not_depend_on_threads() -> None:
    needs_native()
    from core.render.synthetic import synthetic_hand_scene

    verts, faces, K = synthetic_hand_scene((64, 64))
    settings = SoftRasterSettings(image_size=(64, 64), backend="native", sigma=0.25)
    weight = torch.rand(1, 64, 64) - 0.5
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            results.append(loss_and_grad(rasterize_silhouette, verts, faces, K, settings,
                                         weight))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


def test_native_on_the_open_hand_within_bounds_of_dense() -> None:
    """Default settings (eps culling) on the real mesh at 128 x 128: a 40 x 40 window across
    the silhouette's edge, against the dense reference rendered on that window alone."""
    needs_native()
    from core.render.projection import project_points
    from core.tools.bench_render import open_hand_scene

    verts, faces, K = open_hand_scene((128, 128))
    settings = SoftRasterSettings(backend="native")
    y0, x0, side = 60, 10, 40
    weight = torch.zeros(1, 128, 128)
    weight[:, y0:y0 + side, x0:x0 + side] = torch.rand(1, side, side) - 0.5
    sil_n, grad_n = loss_and_grad(rasterize_silhouette, verts, faces, K, settings, weight)

    # Dense: the window as an image of its own, with the faces that come within 6 px of it
    # (D < 1e-31 from the others).
    K_win = K.clone()
    K_win[:, 0, 2] -= x0
    K_win[:, 1, 2] -= y0
    tri = project_points(verts, K_win)[0, faces]  # (F, 3, 2)
    near = ((tri.amax(1) > -6) & (tri.amin(1) < side + 6)).all(1)
    window = dataclasses.replace(settings, image_size=(side, side))
    sil_d, grad_d = loss_and_grad(rasterize_silhouette_dense, verts, faces[near], K_win, window,
                                  weight[:, y0:y0 + side, x0:x0 + side])
    part = sil_n[:, y0:y0 + side, x0:x0 + side]
    assert part.min() < 1e-3 and part.max() > 0.9  # the window holds the edge
    assert (part - sil_d).abs().max() <= 1e-3
    cosine = torch.nn.functional.cosine_similarity(grad_n.flatten(), grad_d.flatten(), 0)
    assert cosine >= 0.99


def test_auto_falls_back_to_eager_without_a_compiler(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import core.native

    monkeypatch.setattr(_native.LIBRARY, "_lib", None)  # restored after the test
    monkeypatch.setattr(_native.LIBRARY, "_error", None)
    monkeypatch.setattr(core.native, "compiler", lambda: None)
    verts, faces, K = two_blobs()
    auto = dataclasses.replace(EAGER, backend="auto")
    with caplog.at_level(logging.WARNING):
        sil = rasterize_silhouette(verts, faces, K, auto)
    assert "C kernels unavailable" in caplog.text
    torch.testing.assert_close(sil, rasterize_silhouette(verts, faces, K, EAGER))
    with pytest.raises(_native.NativeUnavailableError, match="no C compiler"):
        rasterize_silhouette(verts, faces, K, dataclasses.replace(EAGER, backend="native"))


def test_native_rejects_unsupported_tensors() -> None:
    verts, faces, K = two_blobs()
    with pytest.raises(ValueError, match="native"):
        rasterize_silhouette(verts.half(), faces, K.half(),
                             dataclasses.replace(EAGER, backend="native"))


@pytest.mark.slow
def test_native_build_is_cached(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    needs_native()
    monkeypatch.setenv(_native.CACHE_ENV_VAR, str(tmp_path))
    monkeypatch.setattr(_native.LIBRARY, "_lib", None)  # restored after the test
    monkeypatch.setattr(_native.LIBRARY, "_error", None)
    assert _native.library() is not None
    built = list((tmp_path / "kernels").glob("softras-*"))
    assert len(built) == 1 and not list((tmp_path / "kernels").glob(".build-*"))
    stamp = built[0].stat().st_mtime_ns
    monkeypatch.setattr(_native.LIBRARY, "_lib", None)  # restored after the test
    monkeypatch.setattr(_native.LIBRARY, "_error", None)
    assert _native.library() is not None
    assert built[0].stat().st_mtime_ns == stamp  # loaded, not rebuilt


def test_benchmark_reports_its_figures() -> None:
    from core.tools.bench_render import benchmark_softras

    res = benchmark_softras(repeats=1, image_size=32, mesh="synthetic", dense_face_subset=20)
    for key in ("softras_ms", "softras_saturated_ms", "softras_eager_ms", "softras_64_ms",
                "softras_dense_ms", "softras_dense_speedup"):
        assert res[key] > 0, key
    assert res["softras_mesh"] == "synthetic" and res["softras_faces"] == 3220
    assert res["softras_backend"] == ("native" if _native.library() else "eager")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"sigma": 0.0}, "sigma"), ({"eps": 0.7}, "eps"), ({"image_size": (0, 4)}, "image_size"),
     ({"backend": "fast"}, "backend"), ({"z_near": -1.0}, "z_near")],
)
def test_settings_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SoftRasterSettings(**kwargs)


def test_bad_shapes_raise_value_error() -> None:
    verts, faces, K = two_blobs()
    with pytest.raises(ValueError, match="verts"):
        rasterize_silhouette(verts[0], faces, K, EAGER)
    with pytest.raises(ValueError, match="faces"):
        rasterize_silhouette(verts, faces[:, :2], K, EAGER)
    with pytest.raises(ValueError, match="K"):
        rasterize_silhouette(verts, faces, K[0], EAGER)
    with pytest.raises(ValueError, match="vertices"):
        rasterize_silhouette(verts, faces + 1000, K, EAGER)


@pytest.mark.slow
def test_compiled_backend_matches_eager() -> None:
    verts, faces, K = two_blobs(torch.float32)
    weight = torch.rand(1, *EAGER.image_size)
    compiled = dataclasses.replace(EAGER, eps=1e-4, backend="compiled")
    try:
        sil_c, grad_c = loss_and_grad(rasterize_silhouette, verts, faces, K, compiled, weight)
    except Exception as exc:  # noqa: BLE001 - no compiler on this machine
        pytest.skip(f"torch.compile unavailable: {exc}")
    eager = dataclasses.replace(compiled, backend="eager")
    sil_e, grad_e = loss_and_grad(rasterize_silhouette, verts, faces, K, eager, weight)
    torch.testing.assert_close(sil_c, sil_e, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad_c, grad_e, atol=1e-4 * grad_e.abs().max().item(), rtol=0)
