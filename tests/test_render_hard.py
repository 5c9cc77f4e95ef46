"""Tests of the hard rasterizer, depth rendering and projection helpers."""

from __future__ import annotations

import math

import pytest
import torch

from core.render import (
    RasterSettings,
    interpolate_face_attributes,
    project_points,
    rasterize,
    render_depth,
    render_depth_differentiable,
    resize_intrinsics,
    smooth_l1_depth_loss,
)
from core.render.synthetic import geodesic_ellipsoid

K_UNIT = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])


def lift(uv: list[tuple[float, float]], z: list[float]) -> torch.Tensor:
    """Camera-frame points that project to pixel ``uv`` with K = identity, at depths ``z``."""
    return torch.tensor([[[u * d, v * d, d] for (u, v), d in zip(uv, z)]])


def test_single_triangle_exact_coverage() -> None:
    # Legs on x = 0.5 and y = 0.5, hypotenuse x + y = 9.7: covers the 36 pixel centres with
    # x >= 1, y >= 1, x + y <= 9 (no centre lies on an edge).
    verts = lift([(0.5, 0.5), (9.2, 0.5), (0.5, 9.2)], [2.0, 2.0, 2.0])
    faces = torch.tensor([[0, 1, 2]])
    frags = rasterize(verts, faces, K_UNIT, RasterSettings(image_size=(12, 14)))
    rows, cols = torch.meshgrid(torch.arange(12), torch.arange(14), indexing="ij")
    expected = (cols >= 1) & (rows >= 1) & (cols + rows <= 9)
    assert int(expected.sum()) == 36
    assert torch.equal(frags.pix_to_face[0] == 0, expected)
    assert torch.equal(frags.pix_to_face[0][~expected], torch.full((12 * 14 - 36,), -1))
    assert torch.isinf(frags.zbuf[0][~expected]).all()
    torch.testing.assert_close(frags.zbuf[0][expected], torch.full((36,), 2.0))


def test_barycentrics_sum_to_one_and_reproduce_pixels() -> None:
    verts = lift([(1.3, 0.7), (14.6, 3.1), (4.2, 11.8)], [0.4, 0.9, 0.6])
    faces = torch.tensor([[0, 1, 2]])
    for perspective in (True, False):
        settings = RasterSettings(image_size=(13, 16), perspective_correct=perspective)
        frags = rasterize(verts, faces, K_UNIT, settings)
        mask = frags.mask[0]
        assert mask.sum() > 40
        bary = frags.bary_coords[0][mask]  # (M, 3)
        torch.testing.assert_close(bary.sum(-1), torch.ones(bary.shape[0]))
        assert (bary >= -1e-6).all()
        rows, cols = mask.nonzero(as_tuple=True)
        pixels = torch.stack((cols, rows), -1).float()
        if perspective:  # the 3D point seen at the pixel projects onto the pixel centre
            point = bary @ verts[0]
            uv = project_points(point[None], K_UNIT)[0]
        else:  # 2D barycentrics of the pixel centre in the projected triangle
            uv = bary @ project_points(verts, K_UNIT)[0]
        torch.testing.assert_close(uv, pixels, atol=1e-4, rtol=0)
        if perspective:
            torch.testing.assert_close(frags.zbuf[0][mask], point[:, 2])


def test_zbuffer_keeps_nearer_triangle() -> None:
    near = lift([(0.2, 0.3), (9.6, 0.4), (0.3, 9.5)], [1.0, 1.0, 1.0])
    far = lift([(0.4, 0.2), (9.5, 9.7), (0.2, 9.4)], [3.0, 3.0, 3.0])
    for order in ((near, far), (far, near)):
        verts = torch.cat(order, dim=1)
        faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
        frags = rasterize(verts, faces, K_UNIT, RasterSettings(image_size=(10, 10)))
        near_index = 0 if order[0] is near else 1
        both = torch.tensor([[2, 2], [1, 5], [4, 3]])  # pixels (row, col) inside both
        for r, c in both.tolist():
            assert frags.pix_to_face[0, r, c] == near_index
            assert frags.zbuf[0, r, c] == pytest.approx(1.0)
        assert frags.pix_to_face[0, 8, 6] == 1 - near_index  # only the far one
        assert frags.zbuf[0, 8, 6] == pytest.approx(3.0)


def test_depth_of_fronto_parallel_quad() -> None:
    z = 0.7
    K = torch.tensor([[[100.0, 0.0, 15.5], [0.0, 100.0, 11.5], [0.0, 0.0, 1.0]]])
    half = 0.05
    verts = torch.tensor([[[-half, -half, z], [half, -half, z], [half, half, z],
                           [-half, half, z]]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    frags = rasterize(verts, faces, K, RasterSettings(image_size=(24, 32)))
    depth = render_depth(frags)
    inside = frags.mask[0]
    # The quad spans u in 15.5 +- 7.14 px and v in 11.5 +- 7.14 px.
    assert int(inside.sum()) == 14 * 14
    torch.testing.assert_close(depth[0][inside], torch.full((196,), z))
    assert (depth[0][~inside] == 0).all()
    assert torch.isinf(render_depth(frags, background=math.inf)[0][~inside]).all()
    soft = render_depth_differentiable(verts, faces, K, frags)
    torch.testing.assert_close(soft, depth)


def test_differentiable_depth_gradcheck_on_tilted_plane() -> None:
    verts = torch.tensor([[[-0.05, -0.04, 0.6], [0.06, -0.05, 0.7], [0.0, 0.06, 0.5]]],
                         dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2]])
    K = torch.tensor([[[80.0, 0.0, 9.5], [0.0, 80.0, 9.5], [0.0, 0.0, 1.0]]],
                     dtype=torch.float64)
    frags = rasterize(verts, faces, K, RasterSettings(image_size=(20, 20)))
    torch.testing.assert_close(render_depth_differentiable(verts, faces, K, frags),
                               render_depth(frags))

    def fn(v: torch.Tensor) -> torch.Tensor:
        return render_depth_differentiable(v, faces, K, frags)

    assert torch.autograd.gradcheck(fn, (verts.clone().requires_grad_(True),), eps=1e-7,
                                    atol=1e-6)


def test_interpolated_positions_match_zbuffer() -> None:
    verts, faces = geodesic_ellipsoid((0.0, 0.0, 0.5), (0.05, 0.04, 0.03), 0.2, 3)
    verts = verts[None]
    K = torch.tensor([[[200.0, 0.0, 19.5], [0.0, 200.0, 19.5], [0.0, 0.0, 1.0]]])
    frags = rasterize(verts, faces, K, RasterSettings(image_size=(40, 40)))
    points = interpolate_face_attributes(frags, faces, verts)  # (1, H, W, 3)
    mask = frags.mask[0]
    torch.testing.assert_close(points[0][..., 2][mask], frags.zbuf[0][mask])
    # Visible points are on the near half of the ellipsoid.
    assert (points[0][..., 2][mask] <= 0.5 + 1e-6).all()
    culled = rasterize(verts, faces, K, RasterSettings(image_size=(40, 40), cull_backfaces=True))
    assert torch.equal(culled.mask, frags.mask)
    assert torch.equal(culled.pix_to_face, frags.pix_to_face)


def test_batch_and_background_shapes() -> None:
    verts, faces = geodesic_ellipsoid((0.0, 0.0, 0.5), (0.05, 0.04, 0.03), 0.0, 2)
    verts = torch.stack((verts, verts + torch.tensor([0.02, 0.0, 0.1])))
    K = torch.tensor([[200.0, 0.0, 15.5], [0.0, 200.0, 15.5], [0.0, 0.0, 1.0]]).expand(2, 3, 3)
    frags = rasterize(verts, faces, K, RasterSettings(image_size=(32, 32)))
    assert frags.pix_to_face.shape == (2, 32, 32)
    assert frags.bary_coords.shape == (2, 32, 32, 3)
    assert frags.pix_to_face.max() < faces.shape[0]  # indices are per mesh, not packed
    single = rasterize(verts[1:], faces, K[1:], RasterSettings(image_size=(32, 32)))
    assert torch.equal(single.pix_to_face[0], frags.pix_to_face[1])
    assert (frags.bary_coords[~frags.mask] == 0).all()


def test_smooth_l1_depth_loss_masks_invalid_pixels() -> None:
    depth = torch.tensor([[[0.5, 0.6], [0.7, 0.8]]], requires_grad=True)
    target = torch.tensor([[[0.5, 0.0], [float("nan"), 0.9]]])
    loss = smooth_l1_depth_loss(depth, target, beta=0.01)
    # Valid pixels: (0, 0) with 0 error and (1, 1) with 0.1 error (linear part: 0.1 - 0.005).
    assert loss.item() == pytest.approx((0.0 + 0.095) / 2, rel=1e-5)
    loss.backward()
    assert depth.grad[0, 0, 1] == 0 and depth.grad[0, 1, 0] == 0


def test_projection_helpers() -> None:
    K = torch.tensor([[[100.0, 0.0, 63.5], [0.0, 120.0, 63.5], [0.0, 0.0, 1.0]]])
    points = torch.tensor([[[0.1, -0.2, 2.0], [0.0, 0.0, 1.0]]])
    uv = project_points(points, K)
    torch.testing.assert_close(uv, torch.tensor([[[68.5, 51.5], [63.5, 63.5]]]))
    half = resize_intrinsics(K, 0.5)
    torch.testing.assert_close(project_points(points, half), (uv + 0.5) * 0.5 - 0.5)
    with pytest.raises(ValueError, match="points"):
        project_points(points[0], K)
    with pytest.raises(ValueError, match="scale"):
        resize_intrinsics(K, 0.0)


def test_raster_settings_validation() -> None:
    with pytest.raises(ValueError, match="z_near"):
        RasterSettings(z_near=0.0)
    with pytest.raises(ValueError, match="image_size"):
        RasterSettings(image_size=(4, 0))
