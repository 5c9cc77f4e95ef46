"""Attention calibration of one personal shape from K frames (identity-aware paper, Eq. 6-7).

Each calibration frame i has a free-shape fit (beta_i, theta_i) and a confidence c_i. The
attention weights are ``w = softmax(c / T)`` (Eq. 6, T = 0.33), and the personal shape solves
(Eq. 7)::

    min_b  sum_i  w_i * || M(b, theta_i) - M(beta_i, theta_i) ||_F

For a fixed pose, linear blend skinning is affine in the shape, ``M(b, theta) = A(theta) b + c``,
so each term is ``|| A_i (b - beta_i) ||``. We solve the squared problem in closed form and then
take a few iteratively reweighted least-squares steps (weights ``w_i / ||residual_i||``) to reach
the unsquared Frobenius objective of Eq. 7. Everything is batched over frames: one forward
pass gives every A_i (by linearity), then a 10 x 10 solve per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.model import HandModel

DEFAULT_TEMPERATURE = 0.33


def attention_weights(confidence: np.ndarray, temperature: float = DEFAULT_TEMPERATURE) -> np.ndarray:
    """Eq. 6: softmax of confidences (K,) over temperature T -> weights (K,) summing to 1."""
    c = np.asarray(confidence, dtype=np.float64) / float(temperature)
    e = np.exp(c - c.max())
    return e / e.sum()


@dataclass(frozen=True)
class Calibration:
    """Result of :func:`calibrate_shape`.

    Attributes:
        betas: (S,) float32 the personal shape.
        weights: (K,) float64 the attention weights used.
        residual_mm: (K,) per-frame mean vertex distance between the personal and the frame's
            own mesh at that frame's pose, millimetres.
        iterations: IRLS iterations run.
    """

    betas: np.ndarray
    weights: np.ndarray
    residual_mm: np.ndarray
    iterations: int


def shape_jacobians(layer: HandModel, poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A_i (K, V*3, S) and c_i (K, V*3) with M(b, theta_i) = A_i b + c_i (vertices, metres).

    Uses the affinity in the shape: one batched forward pass at b = 0 and at each unit b.
    """
    k = poses.shape[0]
    s = layer.num_betas
    basis = torch.cat([torch.zeros(1, s), torch.eye(s)]).to(poses)  # (S+1, S)
    pose_rep = poses.repeat_interleave(s + 1, dim=0)
    betas_rep = basis.repeat(k, 1)
    with torch.no_grad():
        verts = layer(pose_rep, betas_rep).vertices.reshape(k, s + 1, -1)
    c = verts[:, 0]
    a = (verts[:, 1:] - c[:, None]).transpose(1, 2)
    return a, c


def calibrate_shape(
    layer: HandModel,
    betas: np.ndarray,
    poses: np.ndarray,
    weights: np.ndarray,
    irls_iterations: int = 5,
) -> Calibration:
    """Solve Eq. 7 for one personal shape.

    Args:
        layer: the hand model (the side of the frames).
        betas: (K, S) per-frame free shapes.
        poses: (K, 48) per-frame poses (axis-angle, radians).
        weights: (K,) attention weights (Eq. 6), or uniform 1/K.
        irls_iterations: reweighting steps toward the unsquared norm of Eq. 7 (0: squared).
    """
    dtype = torch.float64
    b_i = torch.as_tensor(np.asarray(betas), dtype=dtype)
    th = torch.as_tensor(np.asarray(poses), dtype=torch.float32)
    w = torch.as_tensor(np.asarray(weights), dtype=dtype)
    if b_i.ndim != 2 or th.shape != (b_i.shape[0], 48) or w.shape != (b_i.shape[0],):
        raise ValueError(f"expected betas (K,S), poses (K,48), weights (K,); got {tuple(b_i.shape)}, {tuple(th.shape)}, {tuple(w.shape)}")
    a, _ = shape_jacobians(layer, th)
    a = a.to(dtype)
    ata = a.transpose(1, 2) @ a  # (K, S, S)
    rhs_i = (ata @ b_i[..., None])[..., 0]  # (K, S)
    eff = w.clone()
    beta = None
    it = 0
    for it in range(irls_iterations + 1):
        lhs = (eff[:, None, None] * ata).sum(0)
        rhs = (eff[:, None] * rhs_i).sum(0)
        beta = torch.linalg.solve(lhs, rhs)
        res = (a @ (beta - b_i)[..., None])[..., 0].reshape(len(w), -1, 3)
        norm = res.reshape(len(w), -1).norm(dim=1)
        if it < irls_iterations:
            eff = w / norm.clamp(min=1e-6)
    per_vertex = res.norm(dim=-1).mean(-1) * 1000.0
    return Calibration(
        betas=beta.to(torch.float32).numpy(),
        weights=w.numpy(),
        residual_mm=per_vertex.numpy(),
        iterations=it,
    )
