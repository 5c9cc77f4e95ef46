"""Anatomical joint frames and rotation limits of the hand model.

Every joint j has a rest frame ``F_j`` (3x3, columns are unit axes in the model frame):

* ``x``: along the bone, from the joint toward its child (twist axis);
* ``y``: toward the palm side, orthogonal to ``x`` (a positive rotation about ``z`` moves the
  bone toward ``y``, so **positive bend is flexion**);
* ``z = x cross y``: the flexion axis; ``y`` is also the spread (abduction) axis.

A joint's anatomical angles ``(twist, spread, bend)`` in radians give its local rotation
(relative to the flat rest pose, expressed in the rest model frame, as smplx expects)::

    R_j = F_j @ Rz(bend) @ Ry(spread) @ Rx(twist) @ F_j.T

The limits below are anatomical ranges of motion, used by the pose prior and by synthetic
pose sampling; they are approximate (thumb frames especially) and documented as such.
"""

from __future__ import annotations

import numpy as np
import torch

from core.keypoints import MANO_JOINT_TO_KEYPOINT, NUM_JOINTS, Keypoint
from core.rotations import (
    axis_angle_to_matrix,
    euler_zyx_to_matrix,
    matrix_to_axis_angle,
    matrix_to_euler_zyx,
)

_PI = float(np.pi)

# (twist, spread, bend) ranges in radians, per joint kind.
_MCP = ((-0.2, 0.2), (-0.45, 0.45), (-0.5, 1.6))
_PIP = ((-0.1, 0.1), (-0.1, 0.1), (-0.1, 1.9))
_DIP = ((-0.1, 0.1), (-0.1, 0.1), (-0.2, 1.5))
_THUMB_CMC = ((-0.6, 0.6), (-0.6, 0.8), (-0.6, 0.9))
_THUMB_MCP = ((-0.3, 0.3), (-0.2, 0.2), (-0.2, 1.0))
_THUMB_IP = ((-0.1, 0.1), (-0.1, 0.1), (-0.3, 1.4))
_FREE = ((-_PI, _PI),) * 3

#: (16, 3, 2) lower/upper limits of (twist, spread, bend) per joint, MANO joint order.
JOINT_LIMITS: np.ndarray = np.array(
    [_FREE]
    + [_MCP, _PIP, _DIP] * 4  # index, middle, pinky, ring
    + [_THUMB_CMC, _THUMB_MCP, _THUMB_IP],
    dtype=np.float32,
)

#: Child keypoint of each MANO joint along its bone (MediaPipe order); the wrist uses the
#: middle finger MCP.
CHILD_KEYPOINT: tuple[int, ...] = tuple(
    Keypoint.MIDDLE_MCP if j == 0 else MANO_JOINT_TO_KEYPOINT[j] + 1 for j in range(NUM_JOINTS)
)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def palm_normal(keypoints: np.ndarray, is_left: bool = False) -> np.ndarray:
    """Unit normal of the palm, pointing out of the palm side.

    Args:
        keypoints: (21, 3) rest keypoints, MediaPipe order, model frame.
        is_left: the hand is a left hand (the cross product flips).
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    wrist = kp[Keypoint.WRIST]
    n = np.cross(kp[Keypoint.INDEX_MCP] - wrist, kp[Keypoint.PINKY_MCP] - wrist)
    return _unit(-n if is_left else n)


def rest_frames(keypoints: np.ndarray, is_left: bool = False) -> np.ndarray:
    """Anatomical rest frames of the 16 joints from the rest keypoints.

    Args:
        keypoints: (21, 3) keypoints of the flat rest pose, MediaPipe order, model frame.
        is_left: the keypoints are of a left hand.

    Returns:
        (16, 3, 3) float32 rotation matrices, MANO joint order, columns (x, y, z) as in the
        module docstring.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    n = palm_normal(kp, is_left)
    frames = np.zeros((NUM_JOINTS, 3, 3))
    thumb_joints = {13, 14, 15}
    for j in range(NUM_JOINTS):
        k = Keypoint.WRIST if j == 0 else MANO_JOINT_TO_KEYPOINT[j]
        x = _unit(kp[CHILD_KEYPOINT[j]] - kp[k])
        toward = n
        if j in thumb_joints:
            # The thumb flexes across the palm, toward the little finger's base.
            toward = 0.5 * n + 0.5 * _unit(kp[Keypoint.PINKY_MCP] - kp[k])
        y = _unit(toward - np.dot(toward, x) * x)
        z = np.cross(x, y)
        frames[j] = np.stack([x, y, z], axis=1)
    return frames.astype(np.float32)


def anatomical_to_axis_angle(angles: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Local joint rotations from anatomical angles.

    Args:
        angles: (..., J, 3) (twist, spread, bend) in radians.
        frames: (J, 3, 3) rest frames of the same joints.

    Returns:
        (..., J, 3) axis-angle rotations in the rest model frame (smplx's pose layout).
    """
    local = euler_zyx_to_matrix(angles)
    world = frames @ local @ frames.transpose(-1, -2)
    return matrix_to_axis_angle(world)


def axis_angle_to_anatomical(rotvec: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`anatomical_to_axis_angle` (unique for |spread| < pi/2).

    Args:
        rotvec: (..., J, 3) axis-angle rotations, radians.
        frames: (J, 3, 3) rest frames.

    Returns:
        (..., J, 3) (twist, spread, bend) in radians.
    """
    world = axis_angle_to_matrix(rotvec)
    local = frames.transpose(-1, -2) @ world @ frames
    return matrix_to_euler_zyx(local)
