"""Left/right mirroring: the one module that turns a right hand into a left one.

HandTwin's canonical hand is the right hand. A left hand is the right hand reflected across
the model frame's ``x = 0`` plane (MANO's convention), so one shape vector ``beta`` describes
the same person's two hands. Under that reflection ``M = diag(-1, 1, 1)``:

* points and directions map as ``p -> M p`` (negate x);
* rotation matrices map as ``R -> M R M``; an axis-angle vector (a pseudo-vector) maps as
  ``(rx, ry, rz) -> (rx, -ry, -rz)``;
* triangle winding flips, so faces map as ``(a, b, c) -> (a, c, b)`` to keep normals outward;
* an image is mirrored horizontally with ``u -> (W - 1) - u`` (pixel centres at integers).
"""

from __future__ import annotations

import numpy as np
import torch

#: The reflection that maps the right hand to the left one (model frame).
MIRROR = np.diag([-1.0, 1.0, 1.0])

_AXIS_ANGLE_SIGNS = (1.0, -1.0, -1.0)


def mirror_points(points: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Reflect points or directions across the model's x = 0 plane.

    Args:
        points: (..., 3) points or directions, any unit.

    Returns:
        (..., 3) the reflected points, same type as the input.
    """
    signs = (-1.0, 1.0, 1.0)
    if isinstance(points, torch.Tensor):
        return points * points.new_tensor(signs)
    return np.asarray(points) * np.array(signs, dtype=np.asarray(points).dtype)


def mirror_axis_angle(rotvec: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Mirror axis-angle rotations: ``R -> M R M`` is ``(rx, ry, rz) -> (rx, -ry, -rz)``.

    Args:
        rotvec: (..., 3*k) axis-angle vectors, radians, e.g. a (B, 48) pose of 16 joints.

    Returns:
        the mirrored rotations, same shape and type.
    """
    n = rotvec.shape[-1]
    if n % 3:
        raise ValueError(f"axis-angle size must be a multiple of 3, got {tuple(rotvec.shape)}")
    signs = _AXIS_ANGLE_SIGNS * (n // 3)
    if isinstance(rotvec, torch.Tensor):
        return rotvec * rotvec.new_tensor(signs)
    arr = np.asarray(rotvec)
    return arr * np.array(signs, dtype=arr.dtype)


def mirror_rotation_matrices(rotmats: np.ndarray) -> np.ndarray:
    """Mirror rotation matrices: ``R -> M R M``. rotmats: (..., 3, 3)."""
    return MIRROR @ np.asarray(rotmats) @ MIRROR


def mirror_faces(faces: np.ndarray) -> np.ndarray:
    """Flip triangle winding so that a reflected mesh keeps outward normals. faces: (F, 3)."""
    return np.ascontiguousarray(np.asarray(faces)[:, [0, 2, 1]])


def mirror_image_points(uv: np.ndarray, width: int) -> np.ndarray:
    """Mirror pixel coordinates of an image flipped left-right.

    Args:
        uv: (..., 2) pixel coordinates (x right, y down, pixel centres at integers).
        width: image width in pixels.
    """
    out = np.array(uv, dtype=np.float64 if np.asarray(uv).dtype == np.float64 else np.float32)
    out[..., 0] = (width - 1) - out[..., 0]
    return out


def mirror_posedirs(posedirs: np.ndarray) -> np.ndarray:
    """Mirror MANO pose blend shapes.

    The pose feature of joint k is ``vec(R_k - I)`` (9 entries, row-major). Under the mirror,
    ``R - I -> M (R - I) M``, so entry (i, j) changes sign by ``m_i m_j``; the offset of
    coordinate c changes sign by ``m_c``.

    Args:
        posedirs: (V, 3, 9*K) pose blend shapes in MANO's layout.
    """
    m = np.diag(MIRROR)
    feature_sign = np.outer(m, m).reshape(9)
    k = posedirs.shape[-1] // 9
    sign = m[None, :, None] * np.tile(feature_sign, k)[None, None, :]
    return posedirs * sign
