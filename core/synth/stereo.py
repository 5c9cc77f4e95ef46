"""Synthetic calibrated stereo pairs: one hand rendered by two cameras with exact ground truth.

The reference view is :func:`core.synth.render.render_hand_sample`; the second camera sits
``baseline_m`` to the reference camera's right (and a little above), turned toward a point
``verge_m`` in front of the reference camera (a verged rig, as head-mounted stereo cameras
see a hand in front of them: the same calibration for every sample), and renders the same
mesh with the same skin and light over its own background.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from core.capture.stereo import StereoCalibration
from core.synth.render import (
    SynthSample,
    SynthSettings,
    procedural_background,
    procedural_skin_texture,
    render_hand_sample,
    render_scene,
)

__all__ = ["StereoSample", "look_at", "render_stereo_sample"]


@dataclass(frozen=True)
class StereoSample:
    """A rendered stereo pair.

    Attributes:
        reference: the reference camera's sample (its ground truth is in that camera's frame).
        image2: (H, W, 3) uint8 the second camera's image. mask2: (H, W) bool its hand pixels.
        keypoints_2d_2: (21, 2) float32 the true keypoints in the second image, pixels.
        calibration: K1, K2 and ``x2 = R x1 + T`` (metres).
    """

    reference: SynthSample
    image2: np.ndarray
    mask2: np.ndarray
    keypoints_2d_2: np.ndarray
    calibration: StereoCalibration


def look_at(centre: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R, T) of a camera at ``centre`` looking at ``target`` (both in the reference frame,
    OpenCV axes, y down), so that ``x_cam = R x_ref + T``."""
    z = np.asarray(target, np.float64) - np.asarray(centre, np.float64)
    z /= np.linalg.norm(z)
    x = np.cross(np.array([0.0, 1.0, 0.0]), z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return R, -R @ np.asarray(centre, np.float64)


def render_stereo_sample(rng: np.random.Generator, layers: dict, settings: SynthSettings = SynthSettings(),
                         baseline_m: float = 0.12, verge_m: float = 0.3, K: np.ndarray | None = None,
                         **kwargs) -> StereoSample:
    """Render one hand seen by a calibrated pair (both cameras with intrinsics ``K``; drawn
    from ``settings`` when None). ``kwargs`` go to :func:`render_hand_sample`."""
    import cv2

    from core.camera import intrinsics_from_fov

    w, h = settings.image_size
    if K is None:
        K = intrinsics_from_fov(rng.uniform(*settings.fov_deg), w, h).K
    light = rng.normal(size=3)
    light[2] = abs(light[2]) + 1.0
    light /= np.linalg.norm(light)
    lighting = (light, float(rng.uniform(0.35, 0.6)), np.clip(rng.normal(1.0, 0.06, 3), 0.85, 1.15))
    texture = procedural_skin_texture(rng)
    ref = render_hand_sample(rng, layers, settings, K=K, texture=texture, lighting=lighting, **kwargs)
    centre = np.array([baseline_m, -0.2 * baseline_m, 0.0])
    R, T = look_at(centre, np.array([0.0, 0.0, verge_m]))
    verts2 = ref.vertices.astype(np.float64) @ R.T + T
    ss = max(1, int(settings.supersample))
    K_ss = np.asarray(K, np.float64).copy()
    K_ss[:2] *= ss
    K_ss[0, 2] += (ss - 1) / 2.0
    K_ss[1, 2] += (ss - 1) / 2.0
    layer = layers[ref.side]
    arm = None if ref.forearm is None else dataclasses.replace(ref.forearm, vertices=ref.forearm.vertices @ R.T + T)
    img_ss, mask_ss, drawn_ss = render_scene(layer, verts2, texture, K_ss, (w * ss, h * ss),
                                             (R @ lighting[0], lighting[1], lighting[2]), arm, ref.skin_detail)
    img = cv2.resize(img_ss, (w, h), interpolation=cv2.INTER_AREA)
    cover = cv2.resize(mask_ss.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    drawn = cv2.resize(drawn_ss.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    comp = img + procedural_background(rng, w, h).astype(np.float32) * (1.0 - drawn[..., None])
    comp += rng.normal(0, 2.0, comp.shape)
    kp2 = ref.joints_3d.astype(np.float64) @ R.T + T
    uv = kp2 @ np.asarray(K, np.float64).T
    return StereoSample(ref, np.clip(comp, 0, 255).astype(np.uint8), cover > 0.5,
                        (uv[:, :2] / uv[:, 2:]).astype(np.float32),
                        StereoCalibration(np.asarray(K, np.float64), np.asarray(K, np.float64), R, T))
