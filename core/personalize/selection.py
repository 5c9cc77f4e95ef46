"""Choosing K calibration frames for quality and for diversity of pose and view.

Greedy: start from the most confident frame, then repeatedly add the frame that maximizes
``quality + diversity * (distance to the nearest chosen frame)``, where quality is the
confidence's rank in [0, 1] and the distance is between pose descriptors (palm normal in the
camera frame, per-finger flexion; :func:`core.personalize.features.pose_descriptor`) scaled
by their median spread. Frames the user forced in are chosen first; dropped ones never.
"""

from __future__ import annotations

import numpy as np


def select_frames(
    confidence: np.ndarray,
    descriptors: np.ndarray,
    k: int,
    diversity: float = 0.7,
    forced: tuple[int, ...] | list[int] = (),
    excluded: tuple[int, ...] | list[int] | set[int] = (),
    min_quality: float = 0.15,
) -> list[int]:
    """Indices (sorted) of up to ``k`` frames.

    Args:
        confidence: (N,) c_i. descriptors: (N, D) pose/view descriptors.
        k: frames wanted. diversity: weight of novelty against quality (0: top-k by confidence).
        forced: indices always chosen (counted in k); excluded: never chosen.
        min_quality: frames whose confidence rank is below this fraction are chosen only when
            nothing else is left.
    """
    c = np.asarray(confidence, dtype=np.float64)
    n = len(c)
    if n == 0 or k <= 0:
        return sorted(set(forced))[: max(k, 0)] if n else []
    d = np.asarray(descriptors, dtype=np.float64).reshape(n, -1)
    order = np.argsort(np.argsort(c))
    quality = order / max(n - 1, 1)
    spread = d.std(0)
    d = d / np.where(spread > 1e-9, spread, 1.0)
    excluded = set(int(i) for i in excluded)
    chosen = [int(i) for i in dict.fromkeys(forced) if 0 <= int(i) < n and int(i) not in excluded][:k]
    available = np.array([i not in excluded for i in range(n)])
    available[chosen] = False
    nearest = np.full(n, np.inf)
    for i in chosen:
        nearest = np.minimum(nearest, np.linalg.norm(d - d[i], axis=1))
    scale = None
    while len(chosen) < k and available.any():
        if chosen:
            if scale is None or not np.isfinite(scale):
                finite = nearest[np.isfinite(nearest) & available]
                scale = float(np.median(finite)) if finite.size else 1.0
                scale = max(scale, 1e-6)
            novelty = np.minimum(nearest / scale, 2.0)
        else:
            novelty = np.zeros(n)
        score = quality + diversity * novelty - 10.0 * (quality < min_quality)
        score[~available] = -np.inf
        i = int(np.argmax(score))
        chosen.append(i)
        available[i] = False
        nearest = np.minimum(nearest, np.linalg.norm(d - d[i], axis=1))
    return sorted(chosen)
