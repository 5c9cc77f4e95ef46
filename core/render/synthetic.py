"""A synthetic hand-like closed mesh for renderer tests and benchmarks.

A union of ellipsoids (palm + four fingers + thumb), each a closed geodesic-sphere mesh with
counter-clockwise faces seen from outside, 3,220 triangles in all: the size of the real
hand model, so benchmark numbers carry over. The real hand model replaces it later.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["geodesic_ellipsoid", "synthetic_hand_mesh", "synthetic_hand_scene"]


def geodesic_ellipsoid(
    center: tuple[float, float, float],
    radii: tuple[float, float, float],
    angle_z: float = 0.0,
    frequency: int = 4,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """A closed ellipsoid mesh from a geodesic sphere (icosahedron, each face cut n x n).

    Vertices have valence 5 or 6 and triangles are nearly uniform, like a scanned hand mesh
    (UV spheres have long thin triangles and high-valence poles that SoftRas renders as blobs).

    Args:
        center: (x, y, z) metres.
        radii: semi-axes along local x, y, z, metres.
        angle_z: rotation about the z axis, radians, applied before translation.
        frequency: n >= 1; the mesh has 20 n^2 faces and 10 n^2 + 2 vertices.
        dtype: float dtype of the vertices.

    Returns:
        verts (V, 3) and faces (F, 3) int64, counter-clockwise seen from outside.
    """
    if frequency < 1:
        raise ValueError(f"frequency must be >= 1, got {frequency}")
    t = (1.0 + math.sqrt(5.0)) / 2.0
    ico_v = torch.tensor([
        [-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
        [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1],
    ], dtype=torch.float64)
    ico_f = torch.tensor([
        [0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
        [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
        [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1],
    ])
    n = frequency
    ij = [(i, j) for i in range(n + 1) for j in range(n + 1 - i)]
    local = {p: k for k, p in enumerate(ij)}
    tris = []
    for i, j in ij:
        if i + j < n:
            tris.append((local[(i, j)], local[(i + 1, j)], local[(i, j + 1)]))
        if i + j < n - 1:
            tris.append((local[(i + 1, j)], local[(i + 1, j + 1)], local[(i, j + 1)]))
    w = torch.tensor(ij, dtype=torch.float64) / n  # (P, 2) weights of corners B and C
    a, b, c = (ico_v[ico_f[:, k]] for k in range(3))  # (20, 3) each
    points = a[:, None] + w[None, :, :1] * (b - a)[:, None] + w[None, :, 1:] * (c - a)[:, None]
    points = points / points.norm(dim=-1, keepdim=True)  # (20, P, 3) on the unit sphere
    sub = torch.tensor(tris)  # (n^2, 3)
    faces = (sub[None] + torch.arange(20)[:, None, None] * len(ij)).reshape(-1, 3)
    flat = points.reshape(-1, 3)
    _, inverse = torch.unique(torch.round(flat * 1e6), dim=0, return_inverse=True)
    unit = torch.zeros(int(inverse.max()) + 1, 3, dtype=torch.float64).index_copy_(
        0, inverse, flat)
    faces = inverse[faces]
    # Orient every face outward (normal along its centroid on the unit sphere).
    v0, v1, v2 = (unit[faces[:, k]] for k in range(3))
    inward = (torch.linalg.cross(v1 - v0, v2 - v0) * (v0 + v1 + v2)).sum(-1) < 0
    faces[inward] = faces[inward][:, [0, 2, 1]]
    local_v = unit * torch.tensor(radii, dtype=torch.float64)
    cz, sz = math.cos(angle_z), math.sin(angle_z)
    rot = torch.tensor([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    verts = local_v @ rot.T + torch.tensor(center, dtype=torch.float64)
    return verts.to(dtype), faces.long()


def synthetic_hand_mesh(dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """A right-hand-like union of ellipsoids, palm facing -z, fingers pointing up (-y).

    Returns:
        verts (V, 3) metres, centred near the origin (about 0.19 m tall, 0.14 m wide), and
        faces (3220, 3) int64: palm 1620 faces, four fingers and a thumb 320 each.
    """
    parts = [geodesic_ellipsoid((0.0, 0.015, 0.0), (0.045, 0.05, 0.016), 0.0, 9, dtype)]
    # (x of finger base, length, spread angle) for index, middle, ring, pinky.
    for x, length, angle in ((-0.032, 0.072, 0.10), (-0.011, 0.082, 0.02),
                             (0.011, 0.077, -0.06), (0.032, 0.062, -0.14)):
        cy = -0.025 - length / 2
        cx = x - math.sin(angle) * length / 2
        parts.append(geodesic_ellipsoid((cx, cy, 0.0), (0.0085, length / 2 + 0.008, 0.0085),
                                        angle, 4, dtype))
    # Thumb, from the side of the palm, pointing up and outward.
    parts.append(geodesic_ellipsoid((0.058, 0.0, -0.004), (0.0105, 0.038, 0.0105), -0.75,
                                    4, dtype))
    verts, faces, offset = [], [], 0
    for v, f in parts:
        verts.append(v)
        faces.append(f + offset)
        offset += v.shape[0]
    return torch.cat(verts), torch.cat(faces)


def synthetic_hand_scene(
    image_size: tuple[int, int] = (128, 128),
    fill: float = 0.9,
    depth: float = 0.5,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor, Tensor]:
    """The synthetic hand in front of a camera whose image it fills.

    Args:
        image_size: (H, W) pixels.
        fill: fraction of the larger image side covered by the hand's larger extent.
        depth: distance of the hand from the camera, metres.
        dtype: float dtype.

    Returns:
        verts (1, V, 3) metres, camera frame; faces (F, 3) int64; K (1, 3, 3) pixels.
    """
    verts, faces = synthetic_hand_mesh(torch.float64)
    return frame_in_camera(verts, faces, image_size, fill, depth, dtype)


def frame_in_camera(
    verts: Tensor,
    faces: Tensor,
    image_size: tuple[int, int],
    fill: float,
    depth: float,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor]:
    """Tilt a mesh slightly (0.35 rad about the vertical, so its projection is not perfectly
    symmetric), put it ``depth`` metres in front of a camera and choose K so that it covers
    ``fill`` of the larger image side, centred.

    Args:
        verts: (V, 3) float64 metres, centred near the origin. faces: (F, 3) int64.

    Returns:
        verts (1, V, 3) metres, camera frame; faces; K (1, 3, 3) pixels.
    """
    a = 0.35
    rot = torch.tensor([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0],
                        [-math.sin(a), 0.0, math.cos(a)]], dtype=torch.float64)
    verts = verts @ rot.T + torch.tensor([0.0, 0.0, depth], dtype=torch.float64)
    uv = verts[:, :2] / verts[:, 2:]  # normalized image coordinates
    lo, hi = uv.amin(0), uv.amax(0)
    height, width = image_size
    focal = fill * max(height, width) / float((hi - lo).max())
    centre = (lo + hi) / 2 * focal
    K = torch.tensor([[focal, 0.0, (width - 1) / 2 - float(centre[0])],
                      [0.0, focal, (height - 1) / 2 - float(centre[1])],
                      [0.0, 0.0, 1.0]], dtype=torch.float64)
    return verts[None].to(dtype), faces, K[None].to(dtype)
