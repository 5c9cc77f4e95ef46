"""The personal skeleton's parametrization and anatomical priors (torch, differentiable).

A personal skeleton (21 rest keypoints, :mod:`core.model.personal`) is written as offsets from
a base rest skeleton, in a form that cannot describe a grotesque hand:

* ``log_scale`` (scalar): overall size, ``exp(log_scale)`` times the base;
* ``bone_log`` (15,): each finger/thumb bone's log length factor relative to that size, soft-
  clamped to +-:data:`MAX_BONE_LOG` (about +-30 %); bone *directions* stay the base's, so the
  rest pose keeps its joint axes (twist and flexion axes stay consistent along a finger; rest
  directions are the pose's business, not the identity's);
* ``palm`` (5, 3): displacement of the thumb CMC and the four MCPs relative to the wrist, in
  units of the base palm length (wrist to middle MCP), soft-clamped to +-:data:`MAX_PALM`.

:func:`skeleton_prior` is the anatomical energy: bone factors near 1 (sigma
:data:`SIGMA_BONE`, the spread of segment lengths at a given hand size in anthropometric
studies, roughly 4-6 %), neighbouring phalanges of a finger in their usual ratio (sigma
:data:`SIGMA_RATIO`), palm points near the base layout, less so within the palm plane than out
of it, and the MCPs kept in order across the palm (a hinge on their spacing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.keypoints import BONES, Keypoint

#: Indices into :data:`core.keypoints.BONES` of the 15 finger/thumb bones (parent is not the wrist).
FINGER_BONES: tuple[int, ...] = tuple(i for i, (p, _) in enumerate(BONES) if p != Keypoint.WRIST)
#: The 5 palm points the wrist carries: thumb CMC and the index, middle, ring, pinky MCPs.
PALM_POINTS: tuple[int, ...] = tuple(c for p, c in BONES if p == Keypoint.WRIST)
#: The 4 finger MCPs across the palm, index to pinky (their spacing is kept positive).
_MCPS = (Keypoint.INDEX_MCP, Keypoint.MIDDLE_MCP, Keypoint.RING_MCP, Keypoint.PINKY_MCP)

MAX_BONE_LOG = 0.3
MAX_PALM = 0.15
SIGMA_BONE = 0.06
SIGMA_RATIO = 0.06
SIGMA_PALM_IN_PLANE = 0.04
SIGMA_PALM_NORMAL = 0.02


@dataclass(frozen=True)
class SkeletonParams:
    """Unconstrained skeleton parameters (float tensors, any batch shape ``...`` in front).

    Attributes:
        log_scale: (...,) overall log size factor.
        bone_log: (..., 15) raw finger bone log factors (soft-clamped in :func:`skeleton_from_params`).
        palm: (..., 5, 3) raw palm point offsets, base palm lengths (soft-clamped likewise).
    """

    log_scale: torch.Tensor
    bone_log: torch.Tensor
    palm: torch.Tensor

    @staticmethod
    def zeros(dtype: torch.dtype = torch.float64, requires_grad: bool = False) -> "SkeletonParams":
        return SkeletonParams(
            torch.zeros((), dtype=dtype, requires_grad=requires_grad),
            torch.zeros(len(FINGER_BONES), dtype=dtype, requires_grad=requires_grad),
            torch.zeros(len(PALM_POINTS), 3, dtype=dtype, requires_grad=requires_grad),
        )

    def tensors(self) -> list[torch.Tensor]:
        return [self.log_scale, self.bone_log, self.palm]


def _soft_clamp(x: torch.Tensor, limit: float) -> torch.Tensor:
    return limit * torch.tanh(x / limit)


def _palm_length(base: torch.Tensor) -> torch.Tensor:
    return (base[..., Keypoint.MIDDLE_MCP, :] - base[..., Keypoint.WRIST, :]).norm(dim=-1)


def skeleton_from_params(base: torch.Tensor, params: SkeletonParams) -> torch.Tensor:
    """The personal skeleton (..., 21, 3) from the base rest skeleton (21, 3) and parameters.

    The wrist stays at the base wrist; everything else is scaled about it.
    """
    base = base.to(params.bone_log.dtype)
    wrist = base[Keypoint.WRIST]
    scale = torch.exp(params.log_scale)[..., None, None]
    rel = base - wrist
    palm = _soft_clamp(params.palm, MAX_PALM) * _palm_length(base)
    bone = torch.exp(_soft_clamp(params.bone_log, MAX_BONE_LOG))
    batch = params.bone_log.shape[:-1]
    pts: list[torch.Tensor | None] = [None] * 21
    pts[Keypoint.WRIST] = torch.zeros(*batch, 3, dtype=base.dtype)
    for i, k in enumerate(PALM_POINTS):
        pts[k] = rel[k] + palm[..., i, :]
    for i, b in enumerate(FINGER_BONES):
        p, c = BONES[b]
        pts[c] = pts[p] + bone[..., i, None] * (rel[c] - rel[p])
    return wrist + scale * torch.stack(pts, dim=-2)  # type: ignore[arg-type]


def params_from_skeleton(base: np.ndarray, skeleton: np.ndarray) -> SkeletonParams:
    """Parameters whose skeleton is closest to ``skeleton`` (exact in lengths and palm points;
    finger bone directions are the base's). base, skeleton: (21, 3) metres, same frame."""
    b = np.asarray(base, dtype=np.float64)
    s = np.asarray(skeleton, dtype=np.float64)
    from core.keypoints import bone_lengths

    rb, rs = b - b[Keypoint.WRIST], s - s[Keypoint.WRIST]
    scale = float(np.linalg.norm(rs[Keypoint.MIDDLE_MCP]) / np.linalg.norm(rb[Keypoint.MIDDLE_MCP]))
    ratio = bone_lengths(s) / bone_lengths(b) / scale
    bone_log = np.log(ratio[list(FINGER_BONES)])
    palm = (rs[list(PALM_POINTS)] / scale - rb[list(PALM_POINTS)]) / np.linalg.norm(rb[Keypoint.MIDDLE_MCP])
    inv = lambda v, lim: np.arctanh(np.clip(v / lim, -0.999, 0.999)) * lim  # noqa: E731
    return SkeletonParams(
        torch.tensor(np.log(scale)),
        torch.as_tensor(inv(bone_log, MAX_BONE_LOG)),
        torch.as_tensor(inv(palm, MAX_PALM)),
    )


def _palm_frame(base: torch.Tensor) -> torch.Tensor:
    """(3,) unit normal of the base palm (index MCP x pinky MCP about the wrist)."""
    w = base[Keypoint.WRIST]
    n = torch.linalg.cross(base[Keypoint.INDEX_MCP] - w, base[Keypoint.PINKY_MCP] - w, dim=-1)
    return n / n.norm()


def skeleton_prior_residuals(base: torch.Tensor, params: SkeletonParams) -> torch.Tensor:
    """(..., R) anatomical residuals of skeleton parameters; their squared sum is
    :func:`skeleton_prior` (dimensionless, 0 at the base skeleton)."""
    base = base.to(params.bone_log.dtype)
    bone = _soft_clamp(params.bone_log, MAX_BONE_LOG)
    # Neighbouring phalanges of one finger keep their ratio (child bone follows its parent bone).
    idx = {b: i for i, b in enumerate(FINGER_BONES)}
    pairs = [(idx[i], idx[j]) for i in FINGER_BONES for j in FINGER_BONES if BONES[j][0] == BONES[i][1]]
    a, c = (list(t) for t in zip(*pairs))
    palm = _soft_clamp(params.palm, MAX_PALM)
    n = _palm_frame(base)
    normal = palm @ n
    in_plane = palm - normal[..., None] * n
    # MCPs stay in order across the palm: each spacing at least half the base's.
    skel = skeleton_from_params(base, params)
    rel_scale = torch.exp(params.log_scale)[..., None]
    gaps = torch.stack([(skel[..., _MCPS[i + 1], :] - skel[..., _MCPS[i], :]) for i in range(3)], -2)
    base_gaps = torch.stack([(base[_MCPS[i + 1]] - base[_MCPS[i]]) for i in range(3)], -2)
    along = (gaps * base_gaps).sum(-1) / base_gaps.pow(2).sum(-1) / rel_scale
    return torch.cat([
        bone / SIGMA_BONE,
        (bone[..., c] - bone[..., a]) / SIGMA_RATIO,
        (in_plane / SIGMA_PALM_IN_PLANE).flatten(-2),
        normal / SIGMA_PALM_NORMAL,
        10.0 * torch.relu(0.5 - along),
    ], -1)


def skeleton_prior(base: torch.Tensor, params: SkeletonParams) -> torch.Tensor:
    """Anatomical energy (...,) of skeleton parameters (dimensionless, 0 at the base skeleton)."""
    return skeleton_prior_residuals(base, params).pow(2).sum(-1)
