"""Penetration between two hand meshes (paper 004, Sec. 3.4, Eq. 6), differentiable.

Paper 004 voxelizes each hand into a 32^3 signed distance field and penalizes, for every vertex
of one hand inside the other, its distance to that hand's surface:

    L_pene = mean_{x in V_in^r} dist(x, V_r) + mean_{x in V_in^l} dist(x, V_l)    (Eq. 6)

Here the inside test and the distance come from the other hand's **nearest vertex** instead of a
voxel grid: a point ``x`` is inside when it lies behind the tangent plane of its nearest vertex
``q`` (``(x - q) . n_q < 0``, ``n_q`` the outward area-weighted vertex normal), and its depth is
the distance to that plane, ``-(x - q) . n_q``. That is exact for points near a smooth surface,
needs no grid resolution, and costs one (V x V) distance matrix per pair of hands, computed only
when the two hands' boxes overlap. Limits: the hand mesh is open at the wrist, so points just
beyond the wrist opening can read as slightly inside; points deeper than half a finger's
thickness inside a finger still read as inside (the nearest vertex is on the near side).

Units: metres in, metres out; camera frame (any common frame).
"""

from __future__ import annotations

import torch
from torch import Tensor

from core.refine.mesh import vertex_normals

__all__ = ["boxes_overlap", "penetration_depths", "penetration_loss", "penetration_stats"]


def boxes_overlap(a: Tensor, b: Tensor, margin: float = 0.0) -> bool:
    """Whether the axis-aligned boxes of two point sets (N, 3), (M, 3) overlap (grown by margin)."""
    lo_a, hi_a = a.detach().amin(0), a.detach().amax(0)
    lo_b, hi_b = b.detach().amin(0), b.detach().amax(0)
    return bool(((lo_a <= hi_b + margin) & (lo_b <= hi_a + margin)).all())


def penetration_depths(points: Tensor, surface: Tensor, faces: Tensor) -> Tensor:
    """How deep each point lies inside a closed-ish surface mesh (0 outside).

    Args:
        points: (N, 3) metres (e.g. the vertices of one hand).
        surface: (M, 3) metres, the other hand's vertices. faces: (F, 3) its faces,
            counter-clockwise seen from outside.

    Returns:
        (N,) depth in metres, >= 0; differentiable in ``points`` and ``surface`` (the normals
        are held fixed).
    """
    with torch.no_grad():
        normals = vertex_normals(surface.detach()[None], faces)[0]  # (M, 3)
        nearest = torch.cdist(points.detach(), surface.detach()).argmin(dim=1)  # (N,)
    q = surface[nearest]
    signed = ((points - q) * normals[nearest]).sum(-1)
    return torch.relu(-signed)


def penetration_loss(verts_a: Tensor, faces_a: Tensor, verts_b: Tensor, faces_b: Tensor,
                     margin: float = 0.0) -> Tensor:
    """Paper 004 Eq. 6 for one pair of hands: mean depth of the inside vertices, both ways.

    Args:
        verts_a, verts_b: (V, 3) metres, the two hands in one frame. faces_a, faces_b: (F, 3).
        margin: metres; the test is skipped (loss 0) when the boxes, grown by this, do not
            overlap.

    Returns:
        Scalar, metres: 0 when no vertex of either hand is inside the other.
    """
    zero = verts_a.sum() * 0.0 + verts_b.sum() * 0.0  # keeps the graph (and device, dtype)
    if not boxes_overlap(verts_a, verts_b, margin):
        return zero
    total = zero
    for pts, surf, f in ((verts_a, verts_b, faces_b), (verts_b, verts_a, faces_a)):
        depth = penetration_depths(pts, surf, f)
        inside = depth > 0
        if bool(inside.any()):
            total = total + depth[inside].mean()
    return total


@torch.no_grad()
def penetration_stats(verts_a: Tensor, faces_a: Tensor, verts_b: Tensor,
                      faces_b: Tensor) -> tuple[float, float]:
    """Average and maximum penetration depth (A-PD, M-PD of paper 004), metres.

    Over the vertices of either hand that lie inside the other (0, 0 when none do).
    """
    if not boxes_overlap(verts_a, verts_b):
        return 0.0, 0.0
    depths = torch.cat([penetration_depths(verts_a, verts_b, faces_b),
                        penetration_depths(verts_b, verts_a, faces_a)])
    inside = depths[depths > 0]
    if inside.numel() == 0:
        return 0.0, 0.0
    return float(inside.mean()), float(inside.max())
