"""Keypoint geometry shared by every segmenter: hand scale, hand box, capsule prior, wrist cut.

Conventions: pixels, pixel centres at integer coordinates (pixel ``(row i, column j)`` covers
``[j - 0.5, j + 0.5] x [i - 0.5, i + 0.5]``), keypoints (21, 2) ``(x, y)`` in MediaPipe order.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from core.errors import InputError
from core.keypoints import BONES, NUM_KEYPOINTS, Keypoint

__all__ = [
    "CropFrame",
    "capsule_prior",
    "halfplane_box",
    "halfplane_grid",
    "hand_box",
    "hand_scale",
    "validate_inputs",
    "wrist_cut",
    "wrist_halfplane",
]

#: Typical 2D distances between palm keypoints divided by the palm length (wrist -> middle
#: MCP) of an adult hand seen face-on; foreshortening only shortens them, so the largest ratio
#: is a robust estimate of the palm length.
_PALM_RATIOS: tuple[tuple[int, int, float], ...] = (
    (Keypoint.WRIST, Keypoint.MIDDLE_MCP, 1.0),
    (Keypoint.WRIST, Keypoint.INDEX_MCP, 0.97),
    (Keypoint.WRIST, Keypoint.PINKY_MCP, 0.85),
    (Keypoint.INDEX_MCP, Keypoint.PINKY_MCP, 0.72),
    (Keypoint.MIDDLE_MCP, Keypoint.MIDDLE_PIP, 0.45),
)

_PALM_A = np.array([a for a, _, _ in _PALM_RATIOS])
_PALM_B = np.array([b for _, b, _ in _PALM_RATIOS])
_PALM_R = np.array([r for _, _, r in _PALM_RATIOS])

#: Capsule radius of each bone (child keypoint index 1..20) as a fraction of the palm length.
FINGER_RADIUS = 0.10
THUMB_RADIUS = 0.12
#: Half-width of the wrist, as a fraction of the palm length.
WRIST_HALF_WIDTH = 0.30
#: How far beyond the wrist keypoint (toward the forearm) the wrist line sits, palm lengths.
#: The hand model's mesh ends there: on rendered hands with exact keypoints a line 0.1 palm
#: lengths out cuts 0.7 % of the mesh's silhouette, 0.2 cuts 0.01 % (it is the refinement's
#: target, so it should hold what the mesh can cover and no forearm).
WRIST_OFFSET = 0.20
#: The hand's own wrist line, palm lengths past the wrist keypoint: where the surface fit stops
#: counting pixels (:func:`core.personalize.surface.wrist_weight`) and where the GUI's overlay
#: stops showing the mask (between it and :data:`WRIST_OFFSET` the forearm would read as palm).
WRIST_LINE = 0.0
#: Margin of the hand box around the keypoints, palm lengths.
BOX_MARGIN = 0.35


def validate_inputs(image: np.ndarray, keypoints_2d: np.ndarray) -> np.ndarray:
    """Check an RGB image and its keypoints; returns the keypoints as (21, 2) float64.

    Raises:
        InputError: the image is not (H, W, 3) uint8, or the keypoints are not (21, 2) finite.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise InputError(f"image must be an (H, W, 3) array, got shape {shape}")
    if image.dtype != np.uint8:
        raise InputError(f"image must be uint8 RGB, got dtype {image.dtype}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise InputError(f"image too small: {image.shape}")
    kp = np.asarray(keypoints_2d, dtype=np.float64)
    if kp.shape != (NUM_KEYPOINTS, 2):
        raise InputError(f"keypoints_2d must have shape (21, 2), got {kp.shape}")
    if not np.all(np.isfinite(kp)):
        raise InputError("keypoints_2d contains NaN or infinite values")
    return kp


def hand_scale(keypoints_2d: np.ndarray) -> float:
    """Palm length in pixels (wrist -> middle MCP as seen face-on), robust to foreshortening.

    Args:
        keypoints_2d: (21, 2) pixels.

    Returns:
        The largest of several palm distances divided by their typical ratio, at least 1 px.
    """
    kp = np.asarray(keypoints_2d, dtype=np.float64)
    d = np.sqrt(((kp[_PALM_A] - kp[_PALM_B]) ** 2).sum(axis=1)) / _PALM_R
    return max(float(d.max()), 1.0)


def hand_box(keypoints_2d: np.ndarray, image_size: tuple[int, int],
             margin: float = BOX_MARGIN, scale: float | None = None) -> tuple[int, int, int, int]:
    """Pixel box ``(x0, y0, x1, y1)`` (x1, y1 exclusive) of the keypoints plus a margin.

    Args:
        keypoints_2d: (21, 2) pixels.
        image_size: (width, height) of the image; the box is clipped to it.
        margin: margin in palm lengths (see :func:`hand_scale`).
        scale: the palm length if already known (None = computed).

    Returns:
        Integer box, clipped, at least 1 px wide and tall.
    """
    kp = np.asarray(keypoints_2d, dtype=np.float64)
    w, h = image_size
    pad = margin * (hand_scale(kp) if scale is None else scale)
    lo = np.floor(kp.min(axis=0) - pad).astype(int)
    hi = np.ceil(kp.max(axis=0) + pad).astype(int) + 1
    x0, y0 = int(np.clip(lo[0], 0, w - 1)), int(np.clip(lo[1], 0, h - 1))
    x1, y1 = int(np.clip(hi[0], x0 + 1, w)), int(np.clip(hi[1], y0 + 1, h))
    return x0, y0, x1, y1


@dataclass(frozen=True)
class CropFrame:
    """A hand box resampled to a small working grid.

    Attributes:
        box: (x0, y0, x1, y1) int pixel box in the full image (x1, y1 exclusive).
        size: (width, height) of the working grid in cells.
        scale: working cells per image pixel (same on both axes).
    """

    box: tuple[int, int, int, int]
    size: tuple[int, int]
    scale: float

    @staticmethod
    def make(box: tuple[int, int, int, int], max_side: int) -> "CropFrame":
        """The working grid of ``box`` whose longest side is at most ``max_side`` cells."""
        x0, y0, x1, y1 = box
        bw, bh = x1 - x0, y1 - y0
        scale = min(1.0, max_side / max(bw, bh))
        size = (max(1, int(round(bw * scale))), max(1, int(round(bh * scale))))
        return CropFrame(box, size, scale)

    def to_grid(self, points: np.ndarray) -> np.ndarray:
        """Image pixel coordinates (..., 2) -> working-grid coordinates (centres at integers)."""
        x0, y0 = self.box[0], self.box[1]
        origin = np.array([x0, y0], dtype=np.float64)
        return (np.asarray(points, dtype=np.float64) - origin + 0.5) * self.scale - 0.5

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The box of ``image`` resampled to the working grid.

        Bilinear; below half size, bilinear to twice the grid and then 2 x 2 averages
        (anti-aliased, ~0.15 ms, where OpenCV's area resampling at a non-integer ratio costs
        0.3-1.6 ms).
        """
        x0, y0, x1, y1 = self.box
        patch = image[y0:y1, x0:x1]
        if self.scale >= 1.0:
            return np.ascontiguousarray(patch)
        if self.scale >= 0.5:
            return cv2.resize(patch, self.size, interpolation=cv2.INTER_LINEAR)
        w, h = self.size
        double = cv2.resize(patch, (2 * w, 2 * h), interpolation=cv2.INTER_LINEAR)
        return cv2.resize(double, self.size, interpolation=cv2.INTER_AREA)

    def paste(self, grid_prob: np.ndarray, image_shape: tuple[int, int],
              threshold: float = 0.5) -> np.ndarray:
        """Upsample a working-grid mask or probability to the box, threshold, paste into a full mask.

        Args:
            grid_prob: (h, w) bool or float in [0, 1] on the working grid.
            image_shape: (H, W) of the full image.
            threshold: probability above which a pixel is hand.

        Returns:
            (H, W) bool.
        """
        x0, y0, x1, y1 = self.box
        out = np.zeros(image_shape, dtype=bool)
        prob = grid_prob.astype(np.float32)
        if self.scale < 1.0:
            prob = cv2.resize(prob, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        out[y0:y1, x0:x1] = prob > threshold
        return out


_SHIFT = 4  # cv2 drawing: sub-pixel bits
_ONE = 1 << _SHIFT


#: Bones drawn as capsules: all but the wrist -> finger MCP ones, which lie in the palm polygon.
_DRAWN_BONES = tuple((p, c) for p, c in BONES if p != Keypoint.WRIST or c == Keypoint.THUMB_CMC)


def _fixed(p: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(p, dtype=np.float64) * _ONE).astype(np.int32)


def _palm_polygon(kp: np.ndarray, scale: float) -> np.ndarray:
    """(N, 2) convex polygon of the palm: wrist corners, thumb base and the four MCPs."""
    axis = kp[[5, 9, 13, 17]].mean(axis=0) - kp[0]
    norm = np.linalg.norm(axis)
    axis = axis / norm if norm > 1e-9 else np.array([0.0, -1.0])
    perp = np.array([-axis[1], axis[0]])
    half = WRIST_HALF_WIDTH * scale
    # the model reaches a little past the wrist line, so that the cut, not the polygon, ends it
    stub = kp[0] - axis * (WRIST_OFFSET + 0.05) * scale
    corners = [kp[0] + perp * half, kp[0] - perp * half, stub + perp * half, stub - perp * half]
    pts = np.concatenate([np.stack(corners), kp[[1, 2, 5, 9, 13, 17]]], axis=0)
    hull = cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2)
    return hull.astype(np.float64)


def capsule_prior(keypoints_grid: np.ndarray, size: tuple[int, int], scale_grid: float,
                  radius_factor: float = 1.0, palm_shrink: float = 1.0) -> np.ndarray:
    """Binary hand model drawn from keypoints: finger bones as capsules, the palm as a polygon.

    Args:
        keypoints_grid: (21, 2) keypoints in the drawing grid's coordinates.
        size: (width, height) of the grid.
        scale_grid: palm length in grid cells (see :func:`hand_scale`).
        radius_factor: multiplies every capsule radius and the palm's outline (1 = a typical hand).
        palm_shrink: scales the palm polygon about its centre (< 1 gives a core of sure palm).

    Returns:
        (height, width) uint8, 1 inside the model, 0 outside.
    """
    w, h = size
    out = np.zeros((h, w), dtype=np.uint8)
    kp = np.asarray(keypoints_grid, dtype=np.float64)
    palm = _palm_polygon(kp, scale_grid)
    if palm_shrink != 1.0:
        centre = palm.mean(axis=0)
        palm = centre + (palm - centre) * palm_shrink
    cv2.fillPoly(out, [_fixed(palm)], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    r_f = FINGER_RADIUS * scale_grid * radius_factor
    cv2.polylines(out, [_fixed(palm)], True, 1, thickness=max(1, int(round(2 * r_f))),
                  lineType=cv2.LINE_8, shift=_SHIFT)
    pts = _fixed(kp).tolist()
    t_thumb = max(1, int(round(2 * THUMB_RADIUS * scale_grid * radius_factor)))
    t_finger = max(1, int(round(2 * FINGER_RADIUS * scale_grid * radius_factor)))
    for parent, child in _DRAWN_BONES:
        thickness = t_thumb if child <= Keypoint.THUMB_TIP else t_finger
        cv2.line(out, pts[parent], pts[child], 1, thickness=thickness, lineType=cv2.LINE_8,
                 shift=_SHIFT)
    return out


def wrist_halfplane(keypoints: np.ndarray, scale: float,
                    offset: float | None = None) -> tuple[np.ndarray, float]:
    """The hand side of the wrist line as ``{p : n . p >= c}``.

    The line passes ``offset`` palm lengths beyond the wrist keypoint, toward the forearm,
    perpendicular to the palm's axis (wrist -> mean of the four finger MCPs).

    Args:
        keypoints: (21, 2) in any pixel frame. scale: palm length in that frame.
        offset: shift of the line toward the forearm, in palm lengths; None = WRIST_OFFSET.

    Returns:
        (unit normal n (2,), threshold c).
    """
    offset = WRIST_OFFSET if offset is None else offset
    kp = np.asarray(keypoints, dtype=np.float64)
    axis = kp[[5, 9, 13, 17]].mean(axis=0) - kp[0]
    norm = np.linalg.norm(axis)
    n = axis / norm if norm > 1e-9 else np.array([0.0, -1.0])
    return n, float(n @ kp[0] - offset * scale)


def wrist_cut(mask: np.ndarray, keypoints_2d: np.ndarray,
              offset: float | None = None) -> np.ndarray:
    """Remove the forearm: clear every pixel beyond the wrist line (see :func:`wrist_halfplane`).

    Args:
        mask: (H, W) bool (or 0/1) mask in the keypoints' pixel frame.
        keypoints_2d: (21, 2) pixels.
        offset: shift of the line toward the forearm, in palm lengths (0 = through the wrist);
            None = WRIST_OFFSET.

    Returns:
        (H, W) bool, a copy of ``mask`` with the forearm side cleared.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise InputError(f"mask must be (H, W), got shape {m.shape}")
    kp = np.asarray(keypoints_2d, dtype=np.float64)
    if kp.shape != (NUM_KEYPOINTS, 2) or not np.all(np.isfinite(kp)):
        raise InputError(f"keypoints_2d must be finite (21, 2), got shape {kp.shape}")
    n, c = wrist_halfplane(kp, hand_scale(kp), offset)
    return m.astype(bool) & halfplane_box(n, c, (0, 0, m.shape[1], m.shape[0]))


def halfplane_box(n: np.ndarray, c: float, box: tuple[int, int, int, int]) -> np.ndarray:
    """(y1 - y0, x1 - x0) bool: which pixel centres of ``box`` satisfy ``n . p >= c``."""
    x0, y0, x1, y1 = box
    ys = np.arange(y0, y1, dtype=np.float64)[:, None]
    xs = np.arange(x0, x1, dtype=np.float64)[None, :]
    return n[0] * xs + n[1] * ys >= c


def halfplane_grid(keypoints_grid: np.ndarray, size: tuple[int, int], scale_grid: float,
                   offset: float | None = None) -> np.ndarray:
    """(height, width) bool: the hand side of the wrist line on a working grid."""
    n, c = wrist_halfplane(keypoints_grid, scale_grid, offset)
    return halfplane_box(n, c, (0, 0, size[0], size[1]))
