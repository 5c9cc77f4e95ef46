"""Pinhole projection in HandTwin's camera convention (the one place the renderer owns it).

Convention (``core.camera``; docs/ARCHITECTURE.md): OpenCV pinhole camera, +x right, +y down, +z forward
(into the scene), metres in 3D, pixels in 2D. The intrinsics are
``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` and **pixel centres sit at integer
coordinates**: pixel ``(row i, column j)`` covers ``[j - 0.5, j + 0.5] x [i - 0.5, i + 0.5]``
and its centre is ``(u, v) = (j, i)``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["project_points", "resize_intrinsics", "check_mesh_inputs"]


def project_points(points: Tensor | np.ndarray, K: Tensor | np.ndarray, eps: float = 1e-9) -> Tensor | np.ndarray:
    """Project camera-frame points to pixel coordinates.

    Args:
        points: (B, N, 3) float, metres, camera frame (z > 0 in front of the camera). A
            tensor, or a NumPy array (then ``K`` is one too, and so is the answer: no
            PyTorch ops, for callers outside a graph).
        K: (B, 3, 3) float intrinsics (pixels).
        eps: smallest |z| used in the division, so points on the camera plane give large
            but finite pixels instead of inf/nan.

    Returns:
        (B, N, 2) float pixel coordinates ``(u, v)``: ``u = fx x / z + cx`` (column),
        ``v = fy y / z + cy`` (row). Differentiable in ``points`` and ``K``.
    """
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must have shape (B, N, 3), got {tuple(points.shape)}")
    if K.ndim != 3 or K.shape[1:] != (3, 3) or K.shape[0] != points.shape[0]:
        raise ValueError(
            f"K must have shape (B, 3, 3) with B={points.shape[0]}, got {tuple(K.shape)}"
        )
    z = points[..., 2:]
    if isinstance(points, np.ndarray):
        z = np.where(np.abs(z) < eps, eps, z)
        f = np.stack([K[:, 0, 0], K[:, 1, 1]], -1)[:, None]
        return f * points[..., :2] / z + K[:, None, :2, 2]
    z = torch.where(z.abs() < eps, eps, z)
    f = torch.diagonal(K[:, :2, :2], dim1=1, dim2=2)[:, None]  # (B, 1, 2): fx, fy
    c = K[:, None, :2, 2]  # (B, 1, 2): cx, cy
    return f * points[..., :2] / z + c


def resize_intrinsics(K: Tensor, scale: float) -> Tensor:
    """Intrinsics of the same camera after resampling the image by ``scale``.

    With pixel centres at integer coordinates, a point at pixel ``u`` maps to
    ``(u + 0.5) * scale - 0.5`` in the resampled image (e.g. ``scale = 0.5`` turns a
    128 x 128 crop into 64 x 64).

    Args:
        K: (..., 3, 3) float intrinsics.
        scale: new size over old size, > 0.

    Returns:
        (..., 3, 3) new intrinsics (a new tensor; ``K`` is not modified).
    """
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if K.shape[-2:] != (3, 3):
        raise ValueError(f"K must have shape (..., 3, 3), got {tuple(K.shape)}")
    out = K.clone()
    out[..., 0, 0] = K[..., 0, 0] * scale
    out[..., 1, 1] = K[..., 1, 1] * scale
    out[..., 0, 2] = (K[..., 0, 2] + 0.5) * scale - 0.5
    out[..., 1, 2] = (K[..., 1, 2] + 0.5) * scale - 0.5
    return out


def check_mesh_inputs(verts: Tensor, faces: Tensor, K: Tensor) -> None:
    """Raise ``ValueError`` (with the shapes) unless the renderer inputs are consistent.

    Args:
        verts: (B, V, 3) float, metres, camera frame.
        faces: (F, 3) int64 vertex indices, shared by the batch.
        K: (B, 3, 3) float intrinsics.
    """
    if verts.ndim != 3 or verts.shape[-1] != 3:
        raise ValueError(f"verts must have shape (B, V, 3), got {tuple(verts.shape)}")
    if not verts.is_floating_point():
        raise ValueError(f"verts must be floating point, got {verts.dtype}")
    if faces.ndim != 2 or faces.shape[-1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {tuple(faces.shape)}")
    if faces.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"faces must be int64 (or int32), got {faces.dtype}")
    if K.ndim != 3 or K.shape[1:] != (3, 3) or K.shape[0] != verts.shape[0]:
        raise ValueError(
            f"K must have shape (B, 3, 3) with B={verts.shape[0]} (from verts "
            f"{tuple(verts.shape)}), got {tuple(K.shape)}"
        )
    if faces.numel() > 0:
        lo, hi = int(faces.min()), int(faces.max())
        if lo < 0 or hi >= verts.shape[1]:
            raise ValueError(
                f"faces index vertices in [{lo}, {hi}] but verts has {verts.shape[1]} vertices"
            )
