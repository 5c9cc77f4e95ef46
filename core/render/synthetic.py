"""A synthetic hand-like closed mesh for renderer tests and benchmarks.

A union of ellipsoids (palm + four fingers + thumb), each a closed UV-sphere mesh with
counter-clockwise faces seen from outside, about 3,200 triangles in all: the size of the real
hand model, so benchmark numbers carry over. The real hand model replaces it later.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["uv_ellipsoid", "synthetic_hand_mesh", "synthetic_hand_scene"]


def uv_ellipsoid(
    center: tuple[float, float, float],
    radii: tuple[float, float, float],
    angle_z: float = 0.0,
    n_lon: int = 16,
    n_lat: int = 12,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """A closed ellipsoid mesh (poles along its local y axis).

    Args:
        center: (x, y, z) metres.
        radii: semi-axes along local x, y, z, metres.
        angle_z: rotation about the z axis, radians, applied before translation.
        n_lon: segments around the axis, >= 3.
        n_lat: segments from pole to pole, >= 2.
        dtype: float dtype of the vertices.

    Returns:
        verts (2 + n_lon * (n_lat - 1), 3) and faces (2 * n_lon * (n_lat - 1), 3) int64,
        counter-clockwise seen from outside.
    """
    if n_lon < 3 or n_lat < 2:
        raise ValueError(f"need n_lon >= 3 and n_lat >= 2, got {n_lon}, {n_lat}")
    theta = torch.arange(1, n_lat, dtype=torch.float64) * math.pi / n_lat  # polar angle
    phi = torch.arange(n_lon, dtype=torch.float64) * 2 * math.pi / n_lon
    th, ph = torch.meshgrid(theta, phi, indexing="ij")  # (n_lat - 1, n_lon)
    ring = torch.stack(
        (th.sin() * ph.cos(), th.cos(), th.sin() * ph.sin()), dim=-1
    ).reshape(-1, 3)
    unit = torch.cat((torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64), ring,
                      torch.tensor([[0.0, -1.0, 0.0]], dtype=torch.float64)))
    local = unit * torch.tensor(radii, dtype=torch.float64)
    c, s = math.cos(angle_z), math.sin(angle_z)
    rot = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    verts = local @ rot.T + torch.tensor(center, dtype=torch.float64)

    top, bottom = 0, 1 + n_lon * (n_lat - 1)
    faces = []
    j = torch.arange(n_lon)
    jn = (j + 1) % n_lon
    faces.append(torch.stack((torch.full_like(j, top), 1 + jn, 1 + j), dim=1))
    for i in range(n_lat - 2):
        a, b = 1 + i * n_lon + j, 1 + i * n_lon + jn
        c_, d = a + n_lon, b + n_lon
        faces.append(torch.stack((a, b, d), dim=1))
        faces.append(torch.stack((a, d, c_), dim=1))
    last = 1 + (n_lat - 2) * n_lon
    faces.append(torch.stack((last + j, last + jn, torch.full_like(j, bottom)), dim=1))
    faces_t = torch.cat(faces).long()
    # Make the winding counter-clockwise seen from outside (positive signed volume).
    v0, v1, v2 = (verts[faces_t[:, i]] - verts.mean(0) for i in range(3))
    if torch.linalg.cross(v0, v1).mul(v2).sum() < 0:
        faces_t = faces_t[:, [0, 2, 1]]
    return verts.to(dtype), faces_t


def synthetic_hand_mesh(dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """A right-hand-like union of ellipsoids, palm facing -z, fingers pointing up (-y).

    Returns:
        verts (V, 3) metres, centred near the origin (about 0.19 m tall, 0.13 m wide), and
        faces (3168, 3) int64.
    """
    parts = [uv_ellipsoid((0.0, 0.015, 0.0), (0.045, 0.05, 0.016), 0.0, 32, 18, dtype)]
    # (x of finger base, length, spread angle) for index, middle, ring, pinky.
    for x, length, angle in ((-0.032, 0.072, 0.10), (-0.011, 0.082, 0.02),
                             (0.011, 0.077, -0.06), (0.032, 0.062, -0.14)):
        cy = -0.025 - length / 2
        cx = x - math.sin(angle) * length / 2
        parts.append(uv_ellipsoid((cx, cy, 0.0), (0.0085, length / 2 + 0.008, 0.0085),
                                  angle, 16, 14, dtype))
    # Thumb, from the side of the palm, pointing up and outward.
    parts.append(uv_ellipsoid((0.058, 0.0, -0.004), (0.0105, 0.038, 0.0105), -0.75,
                              16, 14, dtype))
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
    # A slight tilt, so the palm's projection is not perfectly symmetric.
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
