"""Hard (z-buffer) rasterizer: the nearest face, barycentrics and depth at every pixel centre.

Vectorized PyTorch, no loop over faces or pixels: faces are paired with the pixel centres in
their screen bounding boxes (:mod:`core.render._pairs`), each pair gets edge-function
barycentrics, and a scatter-min over pixels keeps the nearest covering face. Used for
visibility, texture capture and depth rendering; not differentiable (see
:func:`core.render.render_depth_differentiable` for depth gradients).

Coverage rule: a pixel centre on a face's edge counts as inside (inclusive edges). Ties in
depth go to the lower face index.
"""

from __future__ import annotations

import torch
from torch import Tensor

from core.render._pairs import box_pairs, pixel_boxes
from core.render.fragments import Fragments
from core.render.projection import check_mesh_inputs, project_points
from core.render.settings import RasterSettings

__all__ = ["rasterize", "interpolate_face_attributes", "screen_barycentrics"]


def screen_barycentrics(tri: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """2D barycentric coordinates of points in projected triangles.

    Args:
        tri: (N, 3, 2) triangle corners, pixels.
        x, y: (N,) point coordinates, pixels.

    Returns:
        (N, 3) weights of the three corners (sum to 1; all >= 0 inside the triangle, for
        either winding). Degenerate (zero-area) triangles give non-finite values.
        Differentiable in ``tri``.
    """
    dx = tri[..., 0] - x[:, None]  # (N, 3) corner minus point
    dy = tri[..., 1] - y[:, None]
    # Twice the signed area of (p, corner k+1, corner k+2) is the weight of corner k.
    dx1, dy1 = dx.roll(-1, dims=1), dy.roll(-1, dims=1)
    dx2, dy2 = dx.roll(-2, dims=1), dy.roll(-2, dims=1)
    sub = dx1 * dy2 - dy1 * dx2  # (N, 3)
    return sub / sub.sum(dim=1, keepdim=True)


def rasterize(
    verts: Tensor, faces: Tensor, K: Tensor, settings: RasterSettings = RasterSettings()
) -> Fragments:
    """Rasterize a batch of meshes with a z-buffer.

    Args:
        verts: (B, V, 3) float, metres, camera frame (OpenCV: x right, y down, z forward).
        faces: (F, 3) int64 vertex indices shared by the batch.
        K: (B, 3, 3) intrinsics, pixels.
        settings: image size, near plane, barycentric mode, back-face culling.

    Returns:
        :class:`Fragments` of shape (B, H, W) (see there for padding values). No gradients.
    """
    check_mesh_inputs(verts, faces, K)
    height, width = settings.image_size
    batch, num_faces = verts.shape[0], faces.shape[0]
    num_pixels = batch * height * width
    device, dtype = verts.device, verts.dtype
    with torch.no_grad():
        verts = verts.detach()
        faces = faces.long()
        tri = project_points(verts, K.to(dtype))[:, faces].reshape(-1, 3, 2)  # (BF, 3, 2)
        tri_z = verts[..., 2][:, faces].reshape(-1, 3)  # (BF, 3)
        e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
        area2 = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]  # (BF,) < 0: front (CCW) face
        valid = (tri_z > settings.z_near).all(dim=1) & (area2.abs() > 1e-12)
        if settings.cull_backfaces:
            valid &= area2 < 0
        boxes = pixel_boxes(tri, 0.0, height, width)
        pairs = box_pairs(boxes, height, width, num_faces, dtype, valid.nonzero().squeeze(1))

        bary = screen_barycentrics(tri[pairs.face], pairs.x, pairs.y)  # (N, 3)
        inside = bary.amin(dim=1) >= 0
        bary, face, pix = bary[inside], pairs.face[inside], pairs.pix[inside]
        inv_z = bary / tri_z[face]  # (N, 3) perspective-correct weights, unnormalized
        depth = 1.0 / inv_z.sum(dim=1)  # (N,) metres
        if settings.perspective_correct:
            bary = inv_z * depth[:, None]

        # z-buffer: nearest depth per pixel, then the lowest face index among ties.
        zbuf = torch.full((num_pixels,), torch.inf, device=device, dtype=dtype)
        zbuf.scatter_reduce_(0, pix, depth, reduce="amin")
        nearest = depth <= zbuf[pix]
        face, pix, bary = face[nearest], pix[nearest], bary[nearest]
        best = torch.full((num_pixels,), batch * num_faces, device=device, dtype=torch.long)
        best.scatter_reduce_(0, pix, face, reduce="amin")
        win = face == best[pix]
        face, pix, bary = face[win], pix[win], bary[win]

        pix_to_face = torch.full((num_pixels,), -1, device=device, dtype=torch.long)
        pix_to_face[pix] = torch.remainder(face, num_faces)
        bary_out = torch.zeros((num_pixels, 3), device=device, dtype=dtype)
        bary_out[pix] = bary
    return Fragments(
        pix_to_face=pix_to_face.view(batch, height, width),
        bary_coords=bary_out.view(batch, height, width, 3),
        zbuf=zbuf.view(batch, height, width),
    )


def interpolate_face_attributes(fragments: Fragments, faces: Tensor, attrs: Tensor) -> Tensor:
    """Interpolate per-vertex attributes at every pixel with the fragments' barycentrics.

    Args:
        fragments: from :func:`rasterize`, (B, H, W).
        faces: (F, 3) int64, the faces that were rasterized.
        attrs: (B, V, D) per-vertex values (e.g. camera-frame positions, colours).

    Returns:
        (B, H, W, D) interpolated values, 0 for background. Differentiable in ``attrs`` (the
        barycentrics themselves are constants).
    """
    batch, height, width = fragments.pix_to_face.shape
    if attrs.ndim != 3 or attrs.shape[0] != batch:
        raise ValueError(f"attrs must have shape (B={batch}, V, D), got {tuple(attrs.shape)}")
    mask = fragments.pix_to_face >= 0  # (B, H, W)
    b_idx, i_idx, j_idx = mask.nonzero(as_tuple=True)
    corner = faces.long()[fragments.pix_to_face[b_idx, i_idx, j_idx]]  # (M, 3)
    values = attrs[b_idx[:, None], corner]  # (M, 3, D)
    bary = fragments.bary_coords[b_idx, i_idx, j_idx].to(attrs.dtype)  # (M, 3)
    out = attrs.new_zeros((batch, height, width, attrs.shape[-1]))
    return out.index_put((b_idx, i_idx, j_idx), (bary[..., None] * values).sum(dim=1))
