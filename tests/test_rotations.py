"""Rotation conversions and anatomical joint angles: round trips, oracles, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from core.mirror import MIRROR, mirror_axis_angle
from core.model.anatomy import anatomical_to_axis_angle, axis_angle_to_anatomical
from core.rotations import (
    axis_angle_to_matrix,
    euler_zyx_to_matrix,
    matrix_to_axis_angle,
    matrix_to_euler_zyx,
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_axis_angle_matches_scipy_and_round_trips(dtype) -> None:
    rv = torch.randn(200, 3, dtype=dtype) * 1.2
    rv[:3] = torch.tensor([[0.0, 0, 0], [1e-9, 0, 0], [0, 0, 3.1]], dtype=dtype)
    m = axis_angle_to_matrix(rv)
    ref = Rotation.from_rotvec(rv.double().numpy()).as_matrix()
    np.testing.assert_allclose(m.double().numpy(), ref, atol=1e-5 if dtype == torch.float32 else 1e-10)
    back = matrix_to_axis_angle(m)
    np.testing.assert_allclose(
        axis_angle_to_matrix(back).double().numpy(), ref, atol=1e-4 if dtype == torch.float32 else 1e-9
    )
    det = torch.linalg.det(m.double())
    torch.testing.assert_close(det, torch.ones_like(det), atol=1e-6, rtol=0)


def test_rodrigues_gradient_is_finite_at_zero() -> None:
    rv = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (rv,))
    rv2 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (rv2,))
    assert torch.autograd.gradcheck(matrix_to_axis_angle, (axis_angle_to_matrix(rv2.detach()).requires_grad_(True),))


def test_euler_zyx_round_trip() -> None:
    ang = (torch.rand(100, 3, dtype=torch.float64) - 0.5) * torch.tensor([2.0, 2.5, 2.0], dtype=torch.float64)
    m = euler_zyx_to_matrix(ang)
    ref = Rotation.from_euler("ZYX", ang.numpy()[:, ::-1]).as_matrix()
    np.testing.assert_allclose(m.numpy(), ref, atol=1e-12)
    torch.testing.assert_close(matrix_to_euler_zyx(m), ang)


def test_anatomical_angles_round_trip(open_hand) -> None:
    frames = torch.as_tensor(open_hand.rest_frames, dtype=torch.float64)
    lim = torch.as_tensor(open_hand.joint_limits[1:], dtype=torch.float64)
    ang = lim[..., 0] + torch.rand(50, 15, 3, dtype=torch.float64) * (lim[..., 1] - lim[..., 0])
    rv = anatomical_to_axis_angle(ang, frames[1:])
    torch.testing.assert_close(axis_angle_to_anatomical(rv, frames[1:]), ang)


def test_mirrored_axis_angle_is_the_mirrored_rotation() -> None:
    rv = torch.randn(30, 3, dtype=torch.float64)
    m = torch.as_tensor(MIRROR)
    torch.testing.assert_close(axis_angle_to_matrix(mirror_axis_angle(rv)), m @ axis_angle_to_matrix(rv) @ m)


def test_rest_frames_are_rotations(open_hand) -> None:
    f = open_hand.rest_frames.astype(np.float64)
    np.testing.assert_allclose(f @ f.transpose(0, 2, 1), np.broadcast_to(np.eye(3), f.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(f), 1.0, atol=1e-5)
