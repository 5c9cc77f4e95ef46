"""Attention calibration of one personal shape from K frames (identity-aware paper, Eq. 6-7).

Each calibration frame i has a free-shape fit (beta_i, theta_i) and a confidence c_i. The
attention weights are ``w = softmax(c / T)`` (Eq. 6, T = 0.33), and the personal shape solves
(Eq. 7)::

    min_b  sum_i  w_i * || M(b, theta_i) - M(beta_i, theta_i) ||_F

For a fixed pose, linear blend skinning is affine in the shape, ``M(b, theta) = A(theta) b + c``,
so each term is ``|| A_i (b - beta_i) ||``. We solve the squared problem in closed form and then
take a few iteratively reweighted least-squares steps (weights ``w_i / ||residual_i||``) to reach
the unsquared Frobenius objective of Eq. 7. Everything is batched over frames: one forward
pass gives every A_i (by linearity); only ``A_i^T A_i`` (S x S) is kept, since both the
normal equations and the residual norms are quadratic forms in it, so a calibration from
cached per-frame matrices is a handful of 10 x 10 solves (well under a millisecond).
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
        residual_mm: (K,) per-frame root-mean-square vertex distance between the personal and
            the frame's own mesh at that frame's pose, millimetres.
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


def shape_normal_matrices(layer: HandModel, poses: np.ndarray | torch.Tensor) -> np.ndarray:
    """(K, S, S) float64 ``A_i^T A_i`` per pose (m^2 per unit shape): all Eq. 7 needs of a frame.

    ``||M(b, theta_i) - M(beta_i, theta_i)||^2 = (b - beta_i)^T A_i^T A_i (b - beta_i)``, so a
    session computes these once per candidate and calibrates any subset without the model.
    """
    th = torch.as_tensor(np.asarray(poses), dtype=torch.float32).reshape(-1, 48)
    a, _ = shape_jacobians(layer, th)
    a = a.to(torch.float64)
    return (a.transpose(1, 2) @ a).numpy()


def solve_eq7(ata: np.ndarray, betas: np.ndarray, weights: np.ndarray,
              irls_iterations: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 7 from per-frame normal matrices.

    Args:
        ata: (K, S, S) ``A_i^T A_i``. betas: (K, S) per-frame shapes. weights: (K,).
        irls_iterations: reweighting steps toward the unsquared norm (0: squared problem).

    Returns:
        beta (S,) float64 and the per-frame Frobenius residuals ``||A_i (beta - beta_i)||`` (K,) m.
    """
    ata = np.asarray(ata, dtype=np.float64)
    b_i = np.asarray(betas, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if b_i.ndim != 2 or ata.shape != (b_i.shape[0], b_i.shape[1], b_i.shape[1]) or w.shape != (b_i.shape[0],):
        raise ValueError(f"expected ata (K,S,S), betas (K,S), weights (K,); got {ata.shape}, {b_i.shape}, {w.shape}")
    rhs_i = np.einsum("kij,kj->ki", ata, b_i)
    eff = w.copy()
    for it in range(irls_iterations + 1):
        beta = np.linalg.solve(np.einsum("k,kij->ij", eff, ata), eff @ rhs_i)
        d = beta[None] - b_i
        norm = np.sqrt(np.maximum(np.einsum("ki,kij,kj->k", d, ata, d), 0.0))
        if it < irls_iterations:
            eff = w / np.maximum(norm, 1e-6)
    return beta, norm


def calibrate_shape(
    layer: HandModel,
    betas: np.ndarray,
    poses: np.ndarray,
    weights: np.ndarray,
    irls_iterations: int = 5,
    normal_matrices: np.ndarray | None = None,
) -> Calibration:
    """Solve Eq. 7 for one personal shape.

    Args:
        layer: the hand model (the side of the frames).
        betas: (K, S) per-frame free shapes.
        poses: (K, 48) per-frame poses (axis-angle, radians).
        weights: (K,) attention weights (Eq. 6), or uniform 1/K.
        irls_iterations: reweighting steps toward the unsquared norm of Eq. 7 (0: squared).
        normal_matrices: (K, S, S) precomputed :func:`shape_normal_matrices` of ``poses``.

    ``residual_mm`` is then the root-mean-square vertex distance per frame (the mean distance
    needs the full meshes).
    """
    b_i = np.asarray(betas, dtype=np.float64)
    th = np.asarray(poses, dtype=np.float32)
    w = np.asarray(weights, dtype=np.float64)
    if b_i.ndim != 2 or th.shape != (b_i.shape[0], 48) or w.shape != (b_i.shape[0],):
        raise ValueError(f"expected betas (K,S), poses (K,48), weights (K,); got {b_i.shape}, {th.shape}, {w.shape}")
    ata = shape_normal_matrices(layer, th) if normal_matrices is None else np.asarray(normal_matrices, dtype=np.float64)
    beta, norm = solve_eq7(ata, b_i, w, irls_iterations)
    n_vertices = layer.data.num_vertices
    return Calibration(
        betas=beta.astype(np.float32),
        weights=w,
        residual_mm=norm / np.sqrt(n_vertices) * 1000.0,
        iterations=irls_iterations,
    )
