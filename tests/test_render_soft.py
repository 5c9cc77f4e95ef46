"""Tests of the soft (SoftRas) silhouette rasterizer: fast vs dense, gradients, validation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from core.render import (
    SoftRasterSettings,
    cull_radius_px,
    rasterize_silhouette,
    rasterize_silhouette_dense,
    resize_intrinsics,
    signed_dist_sq,
)
from core.render.soft import make_spans
from core.render.synthetic import geodesic_ellipsoid

EAGER = SoftRasterSettings(image_size=(24, 28), sigma=0.6, eps=1e-12, backend="eager")


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


def test_fast_matches_dense_float64() -> None:
    torch.manual_seed(0)
    verts, faces, K = two_blobs()
    weight = torch.rand(1, *EAGER.image_size, dtype=torch.float64)
    sil_f, grad_f = loss_and_grad(rasterize_silhouette, verts, faces, K, EAGER, weight)
    sil_d, grad_d = loss_and_grad(rasterize_silhouette_dense, verts, faces, K, EAGER, weight)
    assert sil_d.max() > 0.99 and sil_d.min() < 1e-6  # the blobs are inside the image
    torch.testing.assert_close(sil_f, sil_d, atol=1e-9, rtol=0)
    torch.testing.assert_close(grad_f, grad_d, atol=1e-7 * grad_d.abs().max().item(), rtol=0)


def test_fast_matches_dense_float32_default_eps() -> None:
    torch.manual_seed(1)
    verts, faces, K = two_blobs(torch.float32)
    settings = dataclasses.replace(EAGER, eps=1e-4)
    weight = torch.rand(1, *settings.image_size)
    sil_f, grad_f = loss_and_grad(rasterize_silhouette, verts, faces, K, settings, weight)
    sil_d, grad_d = loss_and_grad(rasterize_silhouette_dense, verts, faces, K, settings, weight)
    # Culled pairs each had D < eps; a pixel sees a handful of them.
    torch.testing.assert_close(sil_f, sil_d, atol=2e-3, rtol=0)
    scale = grad_d.abs().max().item()
    torch.testing.assert_close(grad_f, grad_d, atol=2e-3 * scale, rtol=0)
    assert torch.nn.functional.cosine_similarity(grad_f.flatten(), grad_d.flatten(), 0) > 0.9999


def test_gradcheck_tiny() -> None:
    torch.manual_seed(2)
    verts = torch.tensor([[[-0.02, -0.015, 0.5], [0.025, -0.01, 0.55], [0.0, 0.02, 0.45],
                           [0.03, 0.025, 0.5]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    K = torch.tensor([[[150.0, 0.0, 5.3], [0.0, 140.0, 4.6], [0.0, 0.0, 1.0]]],
                     dtype=torch.float64)
    settings = SoftRasterSettings(image_size=(10, 11), sigma=0.8, eps=1e-12, backend="eager")
    weight = torch.rand(1, 10, 11, dtype=torch.float64)

    def fn(v: torch.Tensor) -> torch.Tensor:
        return (rasterize_silhouette(v, faces, K, settings) * weight).sum()

    assert torch.autograd.gradcheck(fn, (verts.clone().requires_grad_(True),), eps=1e-6,
                                    atol=1e-6, rtol=1e-4)


def test_finite_differences_on_two_blobs() -> None:
    torch.manual_seed(3)
    verts, faces, K = two_blobs()
    weight = torch.rand(1, *EAGER.image_size, dtype=torch.float64)
    _, grad = loss_and_grad(rasterize_silhouette, verts, faces, K, EAGER, weight)
    direction = torch.randn_like(verts)
    h = 1e-7
    with torch.no_grad():
        up = (rasterize_silhouette(verts + h * direction, faces, K, EAGER) * weight).sum()
        down = (rasterize_silhouette(verts - h * direction, faces, K, EAGER) * weight).sum()
    numeric = (up - down) / (2 * h)
    analytic = (grad * direction).sum()
    assert numeric.item() == pytest.approx(analytic.item(), rel=1e-4)


def test_gradient_wrt_intrinsics() -> None:
    verts, faces, K = two_blobs()
    K = K.clone().requires_grad_(True)
    sil = rasterize_silhouette(verts, faces, K, EAGER)
    sil.sum().backward()
    # A larger focal length makes the silhouette larger.
    assert K.grad[0, 0, 0] > 0 and K.grad[0, 1, 1] > 0


def test_batch_matches_single_images() -> None:
    verts, faces, K = two_blobs()
    moved = verts + torch.tensor([0.004, -0.003, 0.02], dtype=torch.float64)
    batch_v = torch.cat((verts, moved))
    batch_k = torch.cat((K, K * torch.tensor([[1.1], [1.0], [1.0]], dtype=torch.float64)))
    both = rasterize_silhouette(batch_v, faces, batch_k, EAGER)
    for b in range(2):
        single = rasterize_silhouette(batch_v[b:b + 1], faces, batch_k[b:b + 1], EAGER)
        torch.testing.assert_close(both[b:b + 1], single, atol=1e-12, rtol=0)


def test_faces_behind_near_plane_are_ignored() -> None:
    verts, faces, K = two_blobs()
    behind = verts.clone()
    behind[0, :42, 2] = -0.5  # the first blob (42 vertices) behind the camera
    fast = rasterize_silhouette(behind, faces, K, EAGER)
    dense = rasterize_silhouette_dense(behind, faces, K, EAGER)
    only_second = rasterize_silhouette(verts[:, 42:], faces[80:] - 42, K, EAGER)
    torch.testing.assert_close(fast, dense, atol=1e-9, rtol=0)
    torch.testing.assert_close(fast, only_second, atol=1e-12, rtol=0)


def test_mesh_outside_image_gives_empty_silhouette() -> None:
    verts, faces, K = two_blobs()
    far_left = verts + torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64)
    sil = rasterize_silhouette(far_left.requires_grad_(True), faces, K, EAGER)
    assert sil.abs().max() == 0
    sil.sum().backward()  # no pairs: still a valid (zero) gradient


def test_saturated_interior_is_one_and_band_is_exact() -> None:
    verts, faces, K = two_blobs()
    size = (48, 56)
    K2 = resize_intrinsics(K, 2.0)
    exact = rasterize_silhouette(verts, faces, K2, dataclasses.replace(EAGER, image_size=size))
    sat = rasterize_silhouette(verts, faces, K2, dataclasses.replace(
        EAGER, image_size=size, saturate_interior=True))
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
