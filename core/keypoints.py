"""Keypoint and joint orders: the one module that owns them.

Two orders exist in HandTwin:

* **MediaPipe order** (21 keypoints), used everywhere outside the hand model::

      0 wrist
      1 thumb CMC   2 thumb MCP   3 thumb IP    4 thumb tip
      5 index MCP   6 index PIP   7 index DIP   8 index tip
      9 middle MCP 10 middle PIP 11 middle DIP 12 middle tip
     13 ring MCP   14 ring PIP   15 ring DIP   16 ring tip
     17 pinky MCP  18 pinky PIP  19 pinky DIP  20 pinky tip

* **MANO joint order** (16 joints), the order of the model's kinematic tree and pose vector::

      0 wrist, 1-3 index, 4-6 middle, 7-9 pinky, 10-12 ring, 13-15 thumb

  Fingertips are not joints in MANO; the model layer appends five fingertip vertices in the
  order thumb, index, middle, ring, pinky (indices 16-20 of the "MANO 21" order).
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Keypoint(IntEnum):
    """The 21 hand keypoints in MediaPipe order."""

    WRIST = 0
    THUMB_CMC = 1
    THUMB_MCP = 2
    THUMB_IP = 3
    THUMB_TIP = 4
    INDEX_MCP = 5
    INDEX_PIP = 6
    INDEX_DIP = 7
    INDEX_TIP = 8
    MIDDLE_MCP = 9
    MIDDLE_PIP = 10
    MIDDLE_DIP = 11
    MIDDLE_TIP = 12
    RING_MCP = 13
    RING_PIP = 14
    RING_DIP = 15
    RING_TIP = 16
    PINKY_MCP = 17
    PINKY_PIP = 18
    PINKY_DIP = 19
    PINKY_TIP = 20


NUM_KEYPOINTS = 21
NUM_JOINTS = 16

#: Parent of each keypoint in the MediaPipe tree (-1 for the wrist).
KEYPOINT_PARENTS: tuple[int, ...] = (
    -1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19,
)

#: The 20 bones of the keypoint tree as (parent, child), in child order 1..20.
BONES: tuple[tuple[int, int], ...] = tuple((KEYPOINT_PARENTS[c], c) for c in range(1, 21))

#: Parent of each joint in MANO's kinematic tree (MANO's ``kintree_table[0]``).
MANO_PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)

#: Joint names in MANO order.
MANO_JOINT_NAMES: tuple[str, ...] = (
    "wrist",
    "index1", "index2", "index3",
    "middle1", "middle2", "middle3",
    "pinky1", "pinky2", "pinky3",
    "ring1", "ring2", "ring3",
    "thumb1", "thumb2", "thumb3",
)

#: Fingertip order of the five appended tip vertices (indices 16..20 of "MANO 21").
TIP_ORDER: tuple[str, ...] = ("thumb", "index", "middle", "ring", "pinky")

#: For each MediaPipe keypoint, its index in "MANO 21" (16 joints followed by 5 tips).
MANO21_TO_MEDIAPIPE: tuple[int, ...] = (
    0,
    13, 14, 15, 16,
    1, 2, 3, 17,
    4, 5, 6, 18,
    10, 11, 12, 19,
    7, 8, 9, 20,
)

#: For each MANO joint, its MediaPipe keypoint.
MANO_JOINT_TO_KEYPOINT: tuple[int, ...] = tuple(
    MANO21_TO_MEDIAPIPE.index(j) for j in range(NUM_JOINTS)
)


def bone_lengths(keypoints: np.ndarray) -> np.ndarray:
    """Lengths of the 20 bones of the keypoint tree.

    Args:
        keypoints: (..., 21, 3) keypoints in MediaPipe order, any unit.

    Returns:
        (..., 20) bone lengths in the same unit, in child order 1..20.
    """
    kp = np.asarray(keypoints)
    if kp.shape[-2:] != (NUM_KEYPOINTS, 3):
        raise ValueError(f"expected (..., 21, 3) keypoints, got shape {kp.shape}")
    parents = np.array([p for p, _ in BONES])
    children = np.array([c for _, c in BONES])
    return np.linalg.norm(kp[..., children, :] - kp[..., parents, :], axis=-1)
