"""Per-frame quality features of a calibration candidate (what a confidence judgement needs).

A candidate is one detected hand with its free-shape fit (shape and pose fitted together).
:func:`frame_features` turns it into a fixed-length float32 vector; the names are in
:data:`FEATURE_NAMES`. Everything is computed from the image, the detection and the fit, so a
live session (the GUI) and the synthetic training set (:mod:`core.personalize.synthdata`)
compute exactly the same numbers.

The segmentation stage does not exist yet, so the silhouette IoU is not a feature; when it
lands it can be appended (the predictor's metadata records the feature names it was trained
on, and a mismatch falls back to the heuristic confidence).
"""

from __future__ import annotations

import numpy as np

from core.keypoints import KEYPOINT_PARENTS, Keypoint
from core.metrics import pa_mpjpe

#: Feature order of :func:`frame_features`.
FEATURE_NAMES: tuple[str, ...] = (
    "detector_score",          # MediaPipe handedness confidence, [0, 1]
    "reprojection_rel",        # fit reprojection error over the hand's box diagonal
    "log_reprojection_px",     # log(1 + reprojection error px)
    "log_hand_size_px",        # log of the keypoint box diagonal, px
    "palm_facing",             # |cos| between the palm normal and the viewing ray
    "palm_toward_camera",      # signed: +1 palm toward the camera, -1 back toward it
    "inside_fraction",         # keypoints inside the image (4 px margin)
    "border_margin_rel",       # smallest keypoint distance to the border over hand size
    "log_sharpness",           # log variance of the Laplacian in a 96 px hand crop
    "contrast",                # intensity std in the crop / 255
    "finger_flexion",          # mean |rotation| of the 15 finger joints, radians
    "shape_norm",              # ||beta|| of the free-shape fit
    "direction_residual",      # mean angle (rad) between fit bones and MediaPipe world bones
    "bone_ratio_spread",       # std of log(|world bone| / |fit bone|)
    "log_world_scale",         # log(MediaPipe world hand size / fit hand size)
    "depth_spread",            # MediaPipe relative depth range of the keypoints
    "reprojection_max_rel",    # the worst keypoint's reprojection error over the hand's box diagonal
    "world_shape_residual",    # PA-MPJPE of MediaPipe's world landmarks against the fit's 3D
                               # keypoints, over the fit's summed bone length
    "log_noise",               # log of the crop's sensor-noise sigma (Immerkaer's estimator), grey levels
    "brightness",              # mean intensity of the crop / 255 (exposure)
    "clipped_fraction",        # crop pixels at black (<= 4) or white (>= 251): clipped exposure
)
NUM_FEATURES = len(FEATURE_NAMES)

_PARENTS = np.array(KEYPOINT_PARENTS[1:])
_CHILDREN = np.arange(1, 21)


def hand_box(keypoints_2d: np.ndarray, margin: float = 0.25) -> tuple[float, float, float]:
    """Square box around keypoints: (centre x, centre y, side) in pixels."""
    kp = np.asarray(keypoints_2d, dtype=np.float64)
    lo, hi = kp.min(0), kp.max(0)
    side = float((hi - lo).max()) * (1.0 + 2.0 * margin)
    c = (lo + hi) / 2.0
    return float(c[0]), float(c[1]), max(side, 8.0)


def hand_crop(image: np.ndarray, keypoints_2d: np.ndarray, size: int = 96, margin: float = 0.25) -> np.ndarray:
    """(size, size, 3) uint8 RGB square crop of the hand (zero padding outside the image)."""
    import cv2

    cx, cy, side = hand_box(keypoints_2d, margin)
    s = size / side
    m = np.array([[s, 0.0, size / 2.0 - s * cx], [0.0, s, size / 2.0 - s * cy]])
    return cv2.warpAffine(np.ascontiguousarray(image), m, (size, size),
                          flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def palm_normal(keypoints_3d: np.ndarray, side: str) -> np.ndarray:
    """(3,) unit normal out of the palm (camera frame) from wrist, index MCP and pinky MCP."""
    kp = np.asarray(keypoints_3d, dtype=np.float64)
    a = kp[Keypoint.INDEX_MCP] - kp[Keypoint.WRIST]
    b = kp[Keypoint.PINKY_MCP] - kp[Keypoint.WRIST]
    n = np.cross(a, b) if side == "right" else np.cross(b, a)
    return n / max(np.linalg.norm(n), 1e-12)


def frame_features(
    image: np.ndarray,
    keypoints_2d: np.ndarray,
    keypoints_z: np.ndarray | None,
    world_landmarks: np.ndarray | None,
    score: float,
    side: str,
    fit_pose: np.ndarray,
    fit_betas: np.ndarray,
    fit_keypoints_3d: np.ndarray,
    reprojection_error_px: float,
    crop: np.ndarray | None = None,
    fit_keypoints_2d: np.ndarray | None = None,
) -> np.ndarray:
    """(F,) float32 features of one candidate, in :data:`FEATURE_NAMES` order.

    Args:
        image: (H, W, 3) uint8 RGB frame. keypoints_2d: (21, 2) detected keypoints, px.
        keypoints_z: (21,) MediaPipe relative depths or None. world_landmarks: (21, 3) m or None.
        score: detector confidence. side: "right" or "left".
        fit_pose: (48,) fitted pose. fit_betas: (S,) fitted free shape.
        fit_keypoints_3d: (21, 3) fitted keypoints, camera frame, metres.
        reprojection_error_px: the fit's mean reprojection error, px.
        crop: the 96 px hand crop if already made (:func:`hand_crop`).
        fit_keypoints_2d: (21, 2) the fit's reprojected keypoints, px (None: the worst
            keypoint's error is taken to be the mean's).
    """
    import cv2

    kp = np.asarray(keypoints_2d, dtype=np.float64)
    h, w = image.shape[:2]
    size = float(np.linalg.norm(kp.max(0) - kp.min(0)))
    size = max(size, 1.0)
    f3 = np.asarray(fit_keypoints_3d, dtype=np.float64)
    n = palm_normal(f3, side)
    ray = f3.mean(0)
    ray = ray / max(np.linalg.norm(ray), 1e-12)
    cos = float(n @ ray)  # palm normal along the ray: the palm faces away
    inside = ((kp[:, 0] >= 4) & (kp[:, 0] <= w - 5) & (kp[:, 1] >= 4) & (kp[:, 1] <= h - 5)).mean()
    border = min(kp[:, 0].min(), kp[:, 1].min(), w - 1 - kp[:, 0].max(), h - 1 - kp[:, 1].max()) / size
    if crop is None:
        crop = hand_crop(image, kp)
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32)
    sharp = float(np.log(cv2.Laplacian(grey, cv2.CV_32F).var() + 1e-3))
    contrast = float(grey.std() / 255.0)
    noise = noise_sigma(grey)
    brightness = float(grey.mean() / 255.0)
    clipped = float(((grey <= 4) | (grey >= 251)).mean())
    if fit_keypoints_2d is not None:
        worst = float(np.linalg.norm(np.asarray(fit_keypoints_2d, dtype=np.float64) - kp, axis=1).max()) / size
    else:
        worst = float(reprojection_error_px) / size
    pose = np.asarray(fit_pose, dtype=np.float64).reshape(16, 3)
    flexion = float(np.linalg.norm(pose[1:], axis=1).mean())
    fit_bones = f3[_CHILDREN] - f3[_PARENTS]
    fit_len = np.linalg.norm(fit_bones, axis=1).clip(1e-6)
    if world_landmarks is not None:
        wl = np.asarray(world_landmarks, dtype=np.float64)
        wb = wl[_CHILDREN] - wl[_PARENTS]
        w_len = np.linalg.norm(wb, axis=1).clip(1e-6)
        cosang = ((wb / w_len[:, None]) * (fit_bones / fit_len[:, None])).sum(1).clip(-1, 1)
        direction = float(np.arccos(cosang).mean())
        log_ratio = np.log(w_len / fit_len)
        spread = float(log_ratio.std())
        world_scale = float(np.log(w_len.sum() / fit_len.sum()))
        shape_residual = pa_mpjpe(wl, f3) / max(float(fit_len.sum()), 1e-6)
    else:
        direction, spread, world_scale, shape_residual = 0.5, 0.5, 0.0, 0.1
    depth = 0.0 if keypoints_z is None else float(np.ptp(np.asarray(keypoints_z, dtype=np.float64)) * w / size)
    feats = [
        float(score),
        float(reprojection_error_px) / size,
        float(np.log1p(reprojection_error_px)),
        float(np.log(size)),
        abs(cos),
        -cos,
        float(inside),
        float(border),
        sharp,
        contrast,
        flexion,
        float(np.linalg.norm(fit_betas)),
        direction,
        spread,
        world_scale,
        depth,
        worst,
        shape_residual,
        float(np.log(noise + 1e-2)),
        brightness,
        clipped,
    ]
    return np.nan_to_num(np.asarray(feats, dtype=np.float32), nan=0.0, posinf=10.0, neginf=-10.0)


def noise_sigma(grey: np.ndarray) -> float:
    """Sensor-noise sigma (grey levels) of a (H, W) float image: Immerkaer's estimator (1996,
    "Fast noise variance estimation", CVIU 64(2):300-302), the mean absolute response to the
    difference of two Laplacians, which cancels smooth image structure."""
    import cv2

    g = np.asarray(grey, dtype=np.float32)
    h, w = g.shape
    if h < 3 or w < 3:
        return 0.0
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    r = cv2.filter2D(g, -1, kernel)[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2.0) * np.abs(r).sum() / (6.0 * (w - 2) * (h - 2)))


def heuristic_confidence(features: np.ndarray) -> np.ndarray:
    """A transparent confidence (N,) from features (N, F), used when no trained predictor loads.

    Higher is better: a confident detection, a small relative reprojection error, a palm (or
    back) facing the camera, the whole hand inside the image, a sharp crop, fingers that are
    not curled (curled fingers hide their lengths), consistent bone directions.
    """
    f = np.atleast_2d(np.asarray(features, dtype=np.float64))
    col = {n: f[:, i] for i, n in enumerate(FEATURE_NAMES)}
    c = (
        1.0 * col["detector_score"]
        - 20.0 * col["reprojection_rel"]
        + 1.0 * col["palm_facing"]
        + 1.0 * (col["inside_fraction"] - 1.0) * 5.0
        + 0.15 * np.clip(col["log_sharpness"], 0.0, 6.0)
        - 0.5 * col["finger_flexion"]
        - 1.0 * col["direction_residual"]
        - 1.0 * col["bone_ratio_spread"]
    )
    return c.astype(np.float32)


def pose_descriptor(pose: np.ndarray, keypoints_3d: np.ndarray, side: str) -> np.ndarray:
    """(8,) what makes two calibration frames different views: the palm normal in the camera
    frame (3) and the mean flexion of each finger (5, radians), for diversity selection."""
    n = palm_normal(keypoints_3d, side)
    p = np.asarray(pose, dtype=np.float64).reshape(16, 3)
    # MANO joint order: 1-3 index, 4-6 middle, 7-9 pinky, 10-12 ring, 13-15 thumb.
    flex = [np.linalg.norm(p[1 + 3 * k: 4 + 3 * k], axis=1).mean() for k in range(5)]
    return np.concatenate([n, flex]).astype(np.float32)
