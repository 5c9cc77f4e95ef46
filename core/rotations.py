"""Rotation conversions in PyTorch (batched, differentiable, float32 or float64).

Axis-angle vectors are radians, ``(..., 3)``; rotation matrices ``(..., 3, 3)`` act on column
vectors. Conversions are smooth at the identity (no division by a zero angle).
"""

from __future__ import annotations

import torch


def skew(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrices, ``skew(a) @ b == a x b``."""
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack(
        [zero, -z, y, z, zero, -x, -y, x, zero], dim=-1
    ).reshape(v.shape[:-1] + (3, 3))


def axis_angle_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula. rotvec: (..., 3) radians -> (..., 3, 3)."""
    theta2 = (rotvec * rotvec).sum(-1, keepdim=True)[..., None]  # (..., 1, 1)
    theta = torch.sqrt(theta2 + 1e-20)
    small = theta2 < 1e-8
    # sin(t)/t and (1-cos(t))/t^2 with their Taylor series near zero.
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / (theta2 + 1e-20))
    k = skew(rotvec)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions (w, x, y, z), w >= 0."""
    m = matrix
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # Four candidate forms; pick the best conditioned per element (as in pytorch3d).
    q_abs = torch.sqrt(
        torch.clamp(
            torch.stack(
                [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22],
                dim=-1,
            ),
            min=1e-12,
        )
    )
    candidates = torch.stack(
        [
            torch.stack([q_abs[..., 0] ** 2, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                         m[..., 1, 0] - m[..., 0, 1]], -1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], q_abs[..., 1] ** 2, m[..., 1, 0] + m[..., 0, 1],
                         m[..., 0, 2] + m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1], q_abs[..., 2] ** 2,
                         m[..., 2, 1] + m[..., 1, 2]], -1),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 2, 0] + m[..., 0, 2], m[..., 2, 1] + m[..., 1, 2],
                         q_abs[..., 3] ** 2], -1),
        ],
        dim=-2,
    ) / (2.0 * q_abs[..., None].clamp(min=0.1))
    best = q_abs.argmax(dim=-1)
    q = torch.gather(candidates, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def quaternion_to_axis_angle(quat: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternions (w, x, y, z) -> (..., 3) axis-angle, angle in [0, pi]."""
    q = torch.where(quat[..., :1] < 0, -quat, quat)
    xyz = q[..., 1:]
    sin_half = xyz.norm(dim=-1, keepdim=True)
    half = torch.atan2(sin_half, q[..., :1])
    small = sin_half < 1e-6
    # 2 * half / sin(half) -> 2 / cos(half) as the angle goes to zero.
    scale = torch.where(small, 2.0 / q[..., :1].clamp(min=1e-6), 2 * half / sin_half.clamp(min=1e-12))
    return xyz * scale


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrices -> (..., 3) axis-angle, radians, angle in [0, pi]."""
    return quaternion_to_axis_angle(matrix_to_quaternion(matrix))


def euler_zyx_to_matrix(angles: torch.Tensor) -> torch.Tensor:
    """Intrinsic rotation ``Rz(c) @ Ry(b) @ Rx(a)`` from angles (..., 3) = (a, b, c), radians."""
    a, b, c = angles.unbind(-1)
    ca, sa, cb, sb, cc, sc = torch.cos(a), torch.sin(a), torch.cos(b), torch.sin(b), torch.cos(c), torch.sin(c)
    return torch.stack(
        [
            cc * cb, cc * sb * sa - sc * ca, cc * sb * ca + sc * sa,
            sc * cb, sc * sb * sa + cc * ca, sc * sb * ca - cc * sa,
            -sb, cb * sa, cb * ca,
        ],
        dim=-1,
    ).reshape(angles.shape[:-1] + (3, 3))


def matrix_to_euler_zyx(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`euler_zyx_to_matrix`: (..., 3, 3) -> (a, b, c) with b in [-pi/2, pi/2]."""
    sb = (-matrix[..., 2, 0]).clamp(-1.0, 1.0)
    b = torch.asin(sb)
    a = torch.atan2(matrix[..., 2, 1], matrix[..., 2, 2])
    c = torch.atan2(matrix[..., 1, 0], matrix[..., 0, 0])
    return torch.stack([a, b, c], dim=-1)
