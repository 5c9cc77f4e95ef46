"""Depth rendering on top of the hard rasterizer.

Two flavours:

* :func:`render_depth`: the z-buffer itself (no gradients), background filled with a chosen
  value (default 0.0, "no depth", what depth sensors report for missing pixels; pass
  ``float("inf")`` to keep the z-buffer convention).
* :func:`render_depth_differentiable`: the same depth recomputed with autograd for a *fixed*
  face assignment (the fragments' ``pix_to_face``): at each covered pixel the depth of the
  plane of its face, ``z = 1 / sum_i(l_i / z_i)`` with ``l_i`` the 2D barycentrics of the
  pixel centre in the projected face. Gradients flow to the vertices (x, y and z) and K; the
  visibility itself (which face a pixel sees, which pixels are covered) is held fixed, which is
  what a smooth-L1 depth term on the overlap of two masks needs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from core.render.fragments import Fragments
from core.render.hard import screen_barycentrics
from core.render.projection import check_mesh_inputs, project_points

__all__ = ["render_depth", "render_depth_differentiable", "smooth_l1_depth_loss"]


def render_depth(fragments: Fragments, background: float = 0.0) -> Tensor:
    """Per-pixel camera-frame depth z (metres) from the z-buffer.

    Args:
        fragments: from :func:`core.render.rasterize`, (B, H, W).
        background: value of pixels no face covers (default 0.0; ``float("inf")`` allowed).

    Returns:
        (B, H, W) depth, metres; ``background`` where ``pix_to_face == -1``. No gradients.
    """
    return torch.where(fragments.pix_to_face >= 0, fragments.zbuf,
                       torch.full_like(fragments.zbuf, background))


def render_depth_differentiable(
    verts: Tensor, faces: Tensor, K: Tensor, fragments: Fragments, background: float = 0.0
) -> Tensor:
    """Depth with gradients w.r.t. the vertices, for the face assignment of ``fragments``.

    Args:
        verts: (B, V, 3) float, metres, camera frame (the same mesh the fragments came from,
            or a slightly moved copy of it).
        faces: (F, 3) int64.
        K: (B, 3, 3) intrinsics, pixels.
        fragments: from :func:`core.render.rasterize` of this mesh (held fixed).
        background: value of uncovered pixels (constant, no gradient).

    Returns:
        (B, H, W) depth in metres, differentiable in ``verts`` and ``K`` at covered pixels.
    """
    check_mesh_inputs(verts, faces, K)
    batch, height, width = fragments.pix_to_face.shape
    if batch != verts.shape[0]:
        raise ValueError(
            f"fragments have batch {batch} but verts has shape {tuple(verts.shape)}"
        )
    b_idx, i_idx, j_idx = (fragments.pix_to_face >= 0).nonzero(as_tuple=True)  # (M,) each
    corner = faces.long()[fragments.pix_to_face[b_idx, i_idx, j_idx]]  # (M, 3)
    uv = project_points(verts, K.to(verts.dtype))  # (B, V, 2)
    tri = uv[b_idx[:, None], corner]  # (M, 3, 2)
    z = verts[..., 2][b_idx[:, None], corner]  # (M, 3)
    bary = screen_barycentrics(tri, j_idx.to(verts.dtype), i_idx.to(verts.dtype))  # (M, 3)
    depth = 1.0 / (bary / z).sum(dim=1)  # (M,) plane depth, perspective-correct
    out = torch.full((batch, height, width), background, dtype=verts.dtype, device=verts.device)
    return out.index_put((b_idx, i_idx, j_idx), depth)


def smooth_l1_depth_loss(
    depth: Tensor, target: Tensor, mask: Tensor | None = None, beta: float = 0.01
) -> Tensor:
    """Mean smooth-L1 (Huber) difference of two depth maps over the valid pixels.

    Args:
        depth: (B, H, W) rendered depth, metres.
        target: (B, H, W) measured depth, metres (0 or non-finite where unknown).
        mask: optional (B, H, W) bool of pixels to compare; always intersected with
            ``target > 0`` and finite values of both maps.
        beta: metres where the loss turns from quadratic to linear.

    Returns:
        Scalar loss in metres (0 when no pixel is valid).
    """
    if depth.shape != target.shape:
        raise ValueError(f"depth {tuple(depth.shape)} and target {tuple(target.shape)} differ")
    valid = torch.isfinite(target) & (target > 0) & torch.isfinite(depth)
    if mask is not None:
        if mask.shape != depth.shape:
            raise ValueError(f"mask {tuple(mask.shape)} must match depth {tuple(depth.shape)}")
        valid &= mask
    if not bool(valid.any()):
        return depth.new_zeros(())
    return torch.nn.functional.smooth_l1_loss(depth[valid], target[valid], beta=beta)
