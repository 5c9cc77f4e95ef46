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


def best_rotation(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(3, 3) the rotation ``R`` that best maps ``pred`` (J, 3) onto ``gt`` (J, 3), both about
    their centroids: it minimizes ``sum |R (p - mean p) - (g - mean g)|^2`` (Kabsch)."""
    p0 = np.asarray(pred, np.float64) - np.mean(pred, axis=0)
    g0 = np.asarray(gt, np.float64) - np.mean(gt, axis=0)
    u, _, vt = np.linalg.svd(p0.T @ g0)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(vt.T @ u.T))])
    return vt.T @ D @ u.T


def procrustes_align(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``pred`` (J, 3) mapped onto ``gt`` (J, 3) by the best similarity transform."""
    p = np.asarray(pred, np.float64)
    g = np.asarray(gt, np.float64)
    p0, g0 = p - p.mean(0), g - g.mean(0)
    rotated = p0 @ best_rotation(p, g).T
    scale = float((rotated * g0).sum() / max((p0**2).sum(), 1e-18))
    return scale * rotated + g.mean(0)


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


# --------------------------------------------------------------------------- mesh plausibility
# Paper 004 (Sec. 4.3) reports, beside joint and vertex errors, two plausibility metrics of a
# mesh against a reference with the same topology (usually the ground truth; for a refined
# mesh, also the parametric mesh its free offsets deform): the edge-length error and the
# normal error of paper 003 (Eq. 3-4), in the form common hand-mesh code evaluates them.


def _face_edges(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F, 3, 3) edge vectors of each face, corner k to corner k + 1."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    return v[np.roll(f, -1, axis=1)] - v[f]


def edge_length_error(pred: np.ndarray, ref: np.ndarray, faces: np.ndarray) -> float:
    """Mean absolute difference of edge lengths, same unit as the vertices (paper 004 "Edge").

    Every face edge counts once per face it belongs to. pred, ref: (V, 3); faces: (F, 3).
    """
    lp = np.linalg.norm(_face_edges(pred, faces), axis=-1)
    lr = np.linalg.norm(_face_edges(ref, faces), axis=-1)
    return float(np.abs(lp - lr).mean())


def normal_error(pred: np.ndarray, ref: np.ndarray, faces: np.ndarray) -> float:
    """Mean |cos| between the predicted face edges and the reference face normals (paper 004 "Norm").

    Paper 003 Eq. 3 with unit edges: 0 when every predicted face lies in the plane of its
    reference face, up to 1. No unit. pred, ref: (V, 3); faces: (F, 3).
    """
    e = _face_edges(pred, faces)
    e = e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-12)
    r = _face_edges(ref, faces)
    n = np.cross(r[:, 0], -r[:, 2])  # (corner1 - corner0) x (corner2 - corner0)
    n = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    return float(np.abs((e * n[:, None, :]).sum(-1)).mean())


def mask_iou(pred: np.ndarray, target: np.ndarray, region: np.ndarray | None = None) -> float:
    """Intersection over union of two (H, W) masks (bool, or values > 0.5 inside).

    Args:
        region: optional (H, W) bool; only pixels inside it count.

    Returns:
        IoU in [0, 1]; 1.0 when both masks are empty.
    """
    a = np.asarray(pred)
    b = np.asarray(target)
    a = a if a.dtype == bool else a > 0.5
    b = b if b.dtype == bool else b > 0.5
    if region is not None:
        r = np.asarray(region, bool)
        a, b = a & r, b & r
    union = int((a | b).sum())
    return float((a & b).sum() / union) if union else 1.0


def closest_points_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(N, 3) the closest point to each ``p`` on the triangle ``(a, b, c)`` of the same row
    (all (N, 3)); Ericson, *Real-Time Collision Detection*, 5.1.5, vectorized."""
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = (ab * ap).sum(1), (ac * ap).sum(1)
    bp = p - b
    d3, d4 = (ab * bp).sum(1), (ac * bp).sum(1)
    cp = p - c
    d5, d6 = (ab * cp).sum(1), (ac * cp).sum(1)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    denom = va + vb + vc
    denom = np.where(np.abs(denom) < 1e-300, 1e-300, denom)
    v, w = vb / denom, vc / denom
    out = a + ab * v[:, None] + ac * w[:, None]  # inside the face
    with np.errstate(divide="ignore", invalid="ignore"):
        # edges (the later assignments take the earlier regions' precedence into account below)
        t_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        on_bc = (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0)
        out = np.where(on_bc[:, None], b + (c - b) * t_bc[:, None], out)
        t_ac = d2 / (d2 - d6)
        on_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
        out = np.where(on_ac[:, None], a + ac * t_ac[:, None], out)
        t_ab = d1 / (d1 - d3)
        on_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
        out = np.where(on_ab[:, None], a + ab * t_ab[:, None], out)
    # vertices last: they take precedence over everything
    out = np.where(((d6 >= 0) & (d5 <= d6))[:, None], c, out)
    out = np.where(((d3 >= 0) & (d4 <= d3))[:, None], b, out)
    out = np.where(((d1 <= 0) & (d2 <= 0))[:, None], a, out)
    return out


def surface_distance(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, candidates: int = 16) -> np.ndarray:
    """(N,) distance of each point to a triangle mesh (the nearest point on its surface).

    Each point is tested against the faces around its ``candidates`` nearest vertices (exact
    for points near a mesh of reasonably even triangles, which is what it is for: comparing
    two versions of one surface).

    Args:
        points: (N, 3). vertices: (V, 3) and faces: (F, 3) int, the mesh; any one unit.
    """
    from scipy.spatial import cKDTree

    p = np.asarray(points, dtype=np.float64)
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    k = min(int(candidates), len(v))
    _, near = cKDTree(v).query(p, k=k)
    near = near.reshape(len(p), k)
    # faces of each vertex, padded: (V, m)
    order = np.argsort(f.reshape(-1), kind="stable")
    owners = (order // 3)
    counts = np.bincount(f.reshape(-1), minlength=len(v))
    m = int(counts.max())
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    table = np.full((len(v), m), -1, dtype=np.int64)
    col = np.arange(len(order)) - np.repeat(starts, counts)
    table[np.repeat(np.arange(len(v)), counts), col] = owners
    cand = table[near].reshape(len(p), -1)  # (N, k * m)
    rows = np.repeat(np.arange(len(p)), cand.shape[1])
    faces_c = cand.reshape(-1)
    ok = faces_c >= 0
    rows, faces_c = rows[ok], faces_c[ok]
    tri = v[f[faces_c]]
    q = closest_points_on_triangles(p[rows], tri[:, 0], tri[:, 1], tri[:, 2])
    d = np.linalg.norm(q - p[rows], axis=1)
    best = np.full(len(p), np.inf)
    np.minimum.at(best, rows, d)
    return best


# --------------------------------------------------------------------------- temporal quality


def jitter_px(track: np.ndarray) -> float:
    """Median second difference of a keypoint track, pixels: median over frames t and keypoints
    of ``|x[t+1] - 2 x[t] + x[t-1]|``. track: (T, J, 2), NaN where a frame has no hand
    (differences that touch such a frame are left out). NaN when no difference is left."""
    x = np.asarray(track, np.float64)
    d2 = np.linalg.norm(x[2:] - 2.0 * x[1:-1] + x[:-2], axis=-1)
    d2 = d2[np.isfinite(d2)]
    return float(np.median(d2)) if d2.size else float("nan")


def lag_frames(track: np.ndarray, reference: np.ndarray, max_lag: int = 5) -> float:
    """How many frames ``track`` trails ``reference`` (negative: leads), to a fraction of a frame.

    The lag is the shift s minimizing the mean squared distance between ``track[t]`` and
    ``reference[t - s]`` over the frames both have (a cross-correlation of the two signals,
    insensitive to a constant offset's sign); the integer minimum is refined by the parabola
    through it and its neighbours. track, reference: (T, J, D), NaN where missing.
    """
    x = np.asarray(track, np.float64)
    r = np.asarray(reference, np.float64)
    lags = np.arange(-max_lag, max_lag + 1)
    cost = np.full(len(lags), np.inf)
    for i, s in enumerate(lags):
        a, b = (x[s:], r[: len(r) - s]) if s >= 0 else (x[:s], r[-s:])
        d = ((a - b) ** 2).sum(-1).mean(-1)
        d = d[np.isfinite(d)]
        if d.size >= 3:
            cost[i] = d.mean()
    k = int(np.argmin(cost))
    if not np.isfinite(cost[k]):
        return float("nan")
    if 0 < k < len(lags) - 1 and np.isfinite(cost[k - 1]) and np.isfinite(cost[k + 1]):
        den = cost[k - 1] - 2.0 * cost[k] + cost[k + 1]
        if den > 0:
            return float(lags[k] + 0.5 * (cost[k - 1] - cost[k + 1]) / den)
    return float(lags[k])


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two axis-aligned boxes ``(x0, y0, x1, y1)`` (any unit);
    0.0 when their union has no area."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0
