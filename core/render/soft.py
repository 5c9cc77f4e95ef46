"""Soft silhouette rasterizer (SoftRas, Liu et al. 2019), fast and dense reference versions.

The model, per pixel p and face f (all distances in pixels of the rendered image):

* ``d2(p, f)``: squared distance from the pixel centre to the face's edges (projected face),
* ``D(p, f) = sigmoid(s * d2 / sigma)`` with ``s = +1`` inside the face, ``-1`` outside,
* ``silhouette(p) = 1 - prod_f (1 - D(p, f))``, computed as ``1 - exp(sum_f log(1 - D))``.

Two implementations share this model:

* :func:`rasterize_silhouette_dense` pairs every face with every pixel using plain autograd.
  It is the slow oracle for tests (and the baseline of the benchmark).
* :func:`rasterize_silhouette` pairs each face only with the pixels within the cull radius of
  its bounding box (:func:`core.render.cull_radius_px`), optionally skips the saturated
  interior of the silhouette (``SoftRasterSettings.saturate_interior``), and evaluates the
  pairs in one custom autograd Function whose backward is written by hand, see
  :class:`_SoftSilhouetteFunction`. Same code on CPU and CUDA.

Gradients flow to the vertices (and to K) through the projection; the inside/outside sign is
piecewise constant and the distance is continuous across the edge, so the result is
differentiable almost everywhere.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from core.render._pairs import box_pairs, pixel_boxes
from core.render.projection import check_mesh_inputs, project_points
from core.render.settings import SoftRasterSettings

__all__ = [
    "rasterize_silhouette",
    "rasterize_silhouette_dense",
    "signed_dist_sq",
    "softras_log_background",
    "softras_blend",
]


# --------------------------------------------------------------------------------------------
# Pure functions: the SoftRas model (used as written by the dense reference)
# --------------------------------------------------------------------------------------------


def signed_dist_sq(points: Tensor, tri: Tensor) -> Tensor:
    """Signed squared distance from points to triangles: ``+d2`` inside, ``-d2`` outside.

    Args:
        points: (P, 2) pixel coordinates.
        tri: (..., 3, 2) triangle corners, pixels (either winding).

    Returns:
        (..., P) signed squared distances, px^2, to the nearest point on the triangle's
        boundary. Differentiable in ``points`` and ``tri`` (plain autograd).
    """
    p = points  # (P, 2)
    a = tri[..., :, None, :]  # (..., 3, 1, 2) edge k starts at corner k
    b = tri.roll(-1, dims=-2)[..., :, None, :]  # ... and ends at corner k + 1
    ab = b - a
    ap = p - a  # (..., 3, P, 2)
    t = ((ap * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0.0, 1.0)
    d2 = ((ap - t[..., None] * ab) ** 2).sum(-1).amin(dim=-2)  # (..., P)
    cross = ab[..., 0] * ap[..., 1] - ab[..., 1] * ap[..., 0]  # (..., 3, P)
    inside = (cross >= 0).all(dim=-2) | (cross <= 0).all(dim=-2)
    return torch.where(inside, d2, -d2)


def softras_log_background(signed_d2: Tensor, sigma: float) -> Tensor:
    """``log(1 - D)`` for SoftRas probabilities ``D = sigmoid(signed_d2 / sigma)``, stably.

    Args:
        signed_d2: signed squared distances, px^2 (any shape).
        sigma: sharpness, px^2.
    """
    return nnf.logsigmoid(-signed_d2 / sigma)


def softras_blend(log_background_sum: Tensor) -> Tensor:
    """Silhouette ``1 - prod_f (1 - D_f)`` from ``sum_f log(1 - D_f)`` (the SoftRas blend)."""
    return -torch.expm1(log_background_sum)


# --------------------------------------------------------------------------------------------
# Dense reference
# --------------------------------------------------------------------------------------------


def rasterize_silhouette_dense(
    verts: Tensor,
    faces: Tensor,
    K: Tensor,
    settings: SoftRasterSettings = SoftRasterSettings(),
    faces_per_chunk: int = 64,
) -> Tensor:
    """Reference soft silhouette: every face against every pixel, plain autograd.

    Slow (F x H x W pairs) but obviously correct; ``settings.eps`` and
    ``settings.saturate_interior`` are ignored (nothing is culled). Faces are processed in
    chunks under activation checkpointing so memory stays at one chunk.

    Args:
        verts: (B, V, 3) float, metres, camera frame.
        faces: (F, 3) int64.
        K: (B, 3, 3) intrinsics, pixels.
        settings: image size, sigma, z_near.
        faces_per_chunk: faces per chunk (memory ~ faces_per_chunk x H x W x 100 bytes).

    Returns:
        (B, H, W) silhouette in [0, 1], dtype of ``verts``.
    """
    check_mesh_inputs(verts, faces, K)
    height, width = settings.image_size
    faces = faces.long()
    tri = project_points(verts, K.to(verts.dtype))[:, faces]  # (B, F, 3, 2)
    valid = (verts.detach()[..., 2][:, faces] > settings.z_near).all(dim=-1)  # (B, F)
    ys, xs = torch.meshgrid(
        torch.arange(height, device=verts.device, dtype=verts.dtype),
        torch.arange(width, device=verts.device, dtype=verts.dtype),
        indexing="ij",
    )
    points = torch.stack((xs.reshape(-1), ys.reshape(-1)), dim=-1)  # (HW, 2)

    def chunk_log_background(tri_chunk: Tensor, valid_chunk: Tensor) -> Tensor:
        log_bg = softras_log_background(signed_dist_sq(points, tri_chunk), settings.sigma)
        return torch.where(valid_chunk[..., None], log_bg, 0.0).sum(dim=1)  # (B, HW)

    total = verts.new_zeros((verts.shape[0], height * width))
    for start in range(0, faces.shape[0], faces_per_chunk):
        stop = start + faces_per_chunk
        if torch.is_grad_enabled() and tri.requires_grad:
            part = checkpoint(
                chunk_log_background, tri[:, start:stop], valid[:, start:stop],
                use_reentrant=False,
            )
        else:
            part = chunk_log_background(tri[:, start:stop], valid[:, start:stop])
        total = total + part
    return softras_blend(total).view(-1, height, width)


#FASTCODE#

def _interior_mask(
    tri: Tensor, valid: Tensor, radius: int, batch: int, height: int, width: int,
    faces_per_batch: int,
) -> Tensor:
    """Pixels whose (2r+1)^2 neighbourhood lies inside the hard silhouette.

    Args:
        tri: (BF, 3, 2) projected faces, pixels (detached).
        valid: (BF,) bool, faces in front of the near plane.
        radius: r, pixels; pixels outside the image count as uncovered.

    Returns:
        (B, H, W) bool.
    """
    boxes = pixel_boxes(tri, 0.0, height, width)
    pairs = box_pairs(boxes, height, width, faces_per_batch, tri.dtype,
                      valid.nonzero().squeeze(1))
    dx = tri[pairs.face, :, 0] - pairs.x[:, None]  # (N, 3) corners minus pixel
    dy = tri[pairs.face, :, 1] - pairs.y[:, None]
    cross = dx * dy.roll(-1, dims=1) - dy * dx.roll(-1, dims=1)  # (N, 3)
    inside = (cross.amin(dim=1) >= 0) | (cross.amax(dim=1) <= 0)
    uncovered = torch.ones(batch * height * width, dtype=tri.dtype, device=tri.device)
    uncovered[pairs.pix[inside]] = 0.0
    uncovered = nnf.pad(uncovered.view(batch, 1, height, width), (radius,) * 4, value=1.0)
    near_uncovered = nnf.max_pool2d(uncovered, 2 * radius + 1, stride=1)
    return (near_uncovered == 0).view(batch, height, width)


def rasterize_silhouette(
    verts: Tensor, faces: Tensor, K: Tensor, settings: SoftRasterSettings = SoftRasterSettings()
) -> Tensor:
    """Soft silhouette of a batch of meshes (fast: culled spans + hand-written backward).

    Args:
        verts: (B, V, 3) float, metres, camera frame (OpenCV: x right, y down, z forward).
        faces: (F, 3) int64 vertex indices shared by the batch.
        K: (B, 3, 3) intrinsics, pixels.
        settings: image size, sigma (px^2), eps (cull), interior saturation, near plane.

    Returns:
        (B, H, W) silhouette in [0, 1], dtype of ``verts``, differentiable in ``verts`` and
        ``K``. Agrees with :func:`rasterize_silhouette_dense` up to about ``eps`` per nearby
        face (and, with ``saturate_interior``, except deep inside the silhouette where it is
        exactly 1).
    """
    check_mesh_inputs(verts, faces, K)
    height, width = settings.image_size
    batch, num_faces = verts.shape[0], faces.shape[0]
    faces = faces.long()
    tri = project_points(verts, K.to(verts.dtype))[:, faces].reshape(-1, 3, 2)  # (BF, 3, 2)
    with torch.no_grad():
        tri_d = tri.detach()
        valid = (verts.detach()[..., 2][:, faces] > settings.z_near).all(dim=-1).reshape(-1)
        span_face, span_y, span_x, span_base, span_width = _make_spans(
            tri_d, valid, settings.cull_radius, batch, num_faces, height, width
        )
    edges, orient = _edge_table(tri)
    sil = _SoftSilhouetteFunction.apply(
        edges, orient, span_face, span_y, span_x, span_base, span_width, settings.sigma,
        (batch, height, width),
    )
    if settings.saturate_interior:
        with torch.no_grad():
            interior = _interior_mask(tri_d, valid, math.ceil(settings.cull_radius), batch,
                                      height, width, num_faces)
        sil = sil.masked_fill(interior, 1.0)
    return sil
