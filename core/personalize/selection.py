"""Choosing K calibration frames for quality, for diversity and for what the identity needs.

A personal skeleton is 20 bone lengths (and the palm's layout, whose wrist-to-knuckle bones are
among them). One frame constrains a bone's length only as far as the bone is seen side-on: its
image length is ``|bone| * sin(angle to the viewing ray)``, so a bone pointing at the camera
says nothing about its length and a bone across the view says everything. The *observability*
of bone b in frame i is that sine (:func:`bone_observability`, from the frame's fitted 3D
keypoints in the camera frame); the *coverage* of a set of frames is, per bone, the sum of the
squared observabilities weighted by each frame's quality (the Fisher information of a length
measured through a foreshortened projection grows with the squared sine). From the coverage a
per-bone length uncertainty follows (:func:`bone_uncertainty`: a relative per-frame error over
the square root of the coverage), and a session is complete when every bone's uncertainty is
under a target (:func:`coverage_report`).

Selection is greedy (:func:`select_frames`): start from the most confident frame, then add the
frame that maximizes ``quality + diversity * novelty + coverage * gain``, where quality is the
confidence's rank in [0, 1], novelty the distance to the nearest chosen frame's pose/view
descriptor (palm normal, per-finger flexion; :func:`core.personalize.features.pose_descriptor`)
scaled by its median spread, and gain the rise of the *weakest* bones' coverage: the sum over
bones of ``log(eps + cov_b + q o_b^2) - log(eps + cov_b)``, a concave reward, so a frame that
shows a so-far unseen bone side-on beats another view of bones already well covered. Frames the
user forced in are chosen first; dropped ones never.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.keypoints import BONES

_PARENTS = np.array([p for p, _ in BONES])
_CHILDREN = np.array([c for _, c in BONES])

#: Relative error of one bone length read from one frame seen fully side-on (about MediaPipe's
#: 2D keypoint noise over a finger segment's image length: ~3 px over ~30 px).
PER_FRAME_RELATIVE_ERROR = 0.1

#: A bone is covered when its length uncertainty is below this fraction of its length
#: (PER_FRAME_RELATIVE_ERROR / sqrt(coverage): a coverage of 6.25 side-on views).
TARGET_RELATIVE_UNCERTAINTY = 0.04

_EPS = 0.05


def bone_observability(keypoints_3d: np.ndarray) -> np.ndarray:
    """(..., 20) how much of each bone's length one view shows: sin of the angle between the
    bone and the viewing ray through its middle (0: pointing at the camera, 1: side-on).

    Args:
        keypoints_3d: (..., 21, 3) keypoints in the camera frame (OpenCV axes, z forward),
            MediaPipe order, any unit; for a weak-perspective view pass keypoints whose mean
            depth is large against their extent, or use rays along +z.
    """
    kp = np.asarray(keypoints_3d, dtype=np.float64)
    if kp.shape[-2:] != (21, 3):
        raise ValueError(f"expected (..., 21, 3) keypoints, got shape {kp.shape}")
    bone = kp[..., _CHILDREN, :] - kp[..., _PARENTS, :]
    mid = 0.5 * (kp[..., _CHILDREN, :] + kp[..., _PARENTS, :])
    ray = mid / np.maximum(np.linalg.norm(mid, axis=-1, keepdims=True), 1e-12)
    ray = np.where(mid[..., 2:3] > 0, ray, np.array([0.0, 0.0, 1.0]))  # behind the camera: the optical axis
    length = np.maximum(np.linalg.norm(bone, axis=-1), 1e-12)
    along = (bone * ray).sum(-1) / length
    return np.sqrt(np.clip(1.0 - along**2, 0.0, 1.0))


def bone_coverage(observability: np.ndarray, quality: np.ndarray | None = None) -> np.ndarray:
    """(20,) per-bone coverage of frames with observabilities (K, 20): sum of q_i o_bi^2,
    q_i in [0, 1] (default 1). One side-on view of good quality adds 1."""
    o = np.asarray(observability, dtype=np.float64).reshape(-1, len(BONES))
    q = np.ones(len(o)) if quality is None else np.clip(np.asarray(quality, dtype=np.float64), 0.0, 1.0)
    return (q[:, None] * o**2).sum(0)


def bone_uncertainty(coverage: np.ndarray, per_frame: float = PER_FRAME_RELATIVE_ERROR) -> np.ndarray:
    """(20,) relative length uncertainty of each bone (a fraction of its length) from its
    coverage: ``per_frame / sqrt(coverage)`` (infinite for an unseen bone)."""
    c = np.asarray(coverage, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(c > 0, per_frame / np.sqrt(np.maximum(c, 1e-300)), np.inf)


@dataclass(frozen=True)
class CoverageReport:
    """What the chosen frames tell about each bone.

    Attributes:
        coverage: (20,) float64 quality-weighted sum of squared observabilities per bone
            (child order 1..20 of the keypoint tree, :data:`core.keypoints.BONES`).
        uncertainty: (20,) float64 relative bone-length uncertainty (fraction of the length).
        covered: (20,) bool ``uncertainty <= target``.
        target: the relative uncertainty a bone must reach.
        done: every bone is covered.
        weakest: index (0..19) of the least covered bone.
    """

    coverage: np.ndarray
    uncertainty: np.ndarray
    covered: np.ndarray
    target: float
    done: bool
    weakest: int

    @property
    def fraction(self) -> float:
        """Progress in [0, 1]: the mean over bones of min(1, coverage / needed coverage)."""
        need = (PER_FRAME_RELATIVE_ERROR / self.target) ** 2
        return float(np.minimum(self.coverage / need, 1.0).mean())


def coverage_report(observability: np.ndarray, quality: np.ndarray | None = None,
                    target: float = TARGET_RELATIVE_UNCERTAINTY) -> CoverageReport:
    """Per-bone coverage, uncertainty and completeness of frames (K, 20) (see the module doc)."""
    cov = bone_coverage(observability, quality)
    unc = bone_uncertainty(cov)
    covered = unc <= target
    return CoverageReport(cov, unc, covered, float(target), bool(covered.all()), int(np.argmin(cov)))


#: Human names of the 20 bones (child order), for the guided session's hints.
BONE_NAMES: tuple[str, ...] = (
    "thumb base", "thumb metacarpal", "thumb proximal", "thumb distal",
    "index metacarpal", "index proximal", "index middle", "index distal",
    "middle metacarpal", "middle proximal", "middle middle", "middle distal",
    "ring metacarpal", "ring proximal", "ring middle", "ring distal",
    "little metacarpal", "little proximal", "little middle", "little distal",
)


def select_frames(
    confidence: np.ndarray,
    descriptors: np.ndarray,
    k: int,
    diversity: float = 0.7,
    forced: tuple[int, ...] | list[int] = (),
    excluded: tuple[int, ...] | list[int] | set[int] = (),
    min_quality: float = 0.15,
    observability: np.ndarray | None = None,
    coverage: float = 1.0,
) -> list[int]:
    """Indices (sorted) of up to ``k`` frames.

    Args:
        confidence: (N,) c_i. descriptors: (N, D) pose/view descriptors.
        k: frames wanted. diversity: weight of novelty against quality (0: top-k by confidence).
        forced: indices always chosen (counted in k); excluded: never chosen.
        min_quality: frames whose confidence rank is below this fraction are chosen only when
            nothing else is left.
        observability: (N, 20) per-bone observability (:func:`bone_observability`), or None
            to ignore what each frame shows of the bones.
        coverage: weight of the weakest bones' coverage gain (see the module docstring).
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
    info = None
    if observability is not None and coverage > 0:
        o = np.asarray(observability, dtype=np.float64).reshape(n, len(BONES))
        info = (0.5 + 0.5 * quality)[:, None] * o**2  # (N, 20) what each frame adds per bone
        cov = np.zeros(len(BONES))
    excluded = set(int(i) for i in excluded)
    chosen = [int(i) for i in dict.fromkeys(forced) if 0 <= int(i) < n and int(i) not in excluded][:k]
    available = np.array([i not in excluded for i in range(n)])
    available[chosen] = False
    nearest = np.full(n, np.inf)
    for i in chosen:
        nearest = np.minimum(nearest, np.linalg.norm(d - d[i], axis=1))
        if info is not None:
            cov += info[i]
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
        if info is not None and chosen:
            gain = (np.log(_EPS + cov + info) - np.log(_EPS + cov)).sum(1)
            score = score + coverage * gain / max(float(gain[available].max()), 1e-9)
        score[~available] = -np.inf
        i = int(np.argmax(score))
        chosen.append(i)
        available[i] = False
        nearest = np.minimum(nearest, np.linalg.norm(d - d[i], axis=1))
        if info is not None:
            cov += info[i]
    return sorted(chosen)
