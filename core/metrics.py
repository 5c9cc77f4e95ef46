"""Accuracy and plausibility metrics (pure functions, numpy).

Joint errors follow the usual definitions: MPJPE is the mean Euclidean distance over joints;
PA-MPJPE first aligns the prediction to the ground truth with the similarity transform
(rotation, translation and scale) that minimizes the squared error (Procrustes analysis).
"""

from __future__ import annotations

import numpy as np


def mpjpe(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean per-joint position error, same unit as the inputs. pred, gt: (J, D)."""
    return float(np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(gt, np.float64), axis=-1).mean())


def procrustes_align(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``pred`` (J, 3) mapped onto ``gt`` (J, 3) by the best similarity transform."""
    p = np.asarray(pred, np.float64)
    g = np.asarray(gt, np.float64)
    mp, mg = p.mean(0), g.mean(0)
    p0, g0 = p - mp, g - mg
    u, s, vt = np.linalg.svd(p0.T @ g0)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    D = np.diag([1.0, 1.0, d])
    R = vt.T @ D @ u.T
    scale = float((s * np.diag(D)).sum() / max((p0**2).sum(), 1e-18))
    return scale * p0 @ R.T + mg


def pa_mpjpe(pred: np.ndarray, gt: np.ndarray) -> float:
    """Procrustes-aligned MPJPE (rotation, translation and scale removed). pred, gt: (J, 3)."""
    return mpjpe(procrustes_align(pred, gt), gt)


def centred_mpjpe(pred: np.ndarray, gt: np.ndarray) -> float:
    """MPJPE after removing the mean offset only (metric scale and rotation kept)."""
    p = np.asarray(pred, np.float64)
    g = np.asarray(gt, np.float64)
    return mpjpe(p - p.mean(0), g - g.mean(0))


def keypoint_error_px(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray | None = None) -> float:
    """Mean 2D distance in pixels over visible keypoints. pred, gt: (21, 2)."""
    d = np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(gt, np.float64), axis=-1)
    if visible is not None:
        d = d[np.asarray(visible, bool)]
    return float(d.mean()) if d.size else float("nan")
