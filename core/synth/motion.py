"""Rendered synthetic clips with known motion: a hand moving across the image while it turns
and changes pose, for measuring temporal quality (jitter and lag against exact ground truth).

The finger poses blend through the demo clip's key poses (:func:`core.synth.make_demo.keyframes`);
the wrist sways and turns; the hand's centre follows a Lissajous path whose speed ``speed``
scales (1: about 7 pixels per frame at 320 x 240 and 30 fps, 0.7 key poses a second; 2: fast
motion).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.camera import intrinsics_from_fov, intrinsics_from_matrix
from core.capture.frame import Frame
from core.model import HandModel
from core.model.anatomy import anatomical_to_axis_angle
from core.rotations import axis_angle_to_matrix
from core.synth.make_demo import keyframes, smoothstep
from core.synth.render import (
    PALM_TO_CAMERA,
    SynthSample,
    SynthSettings,
    default_layers,
    procedural_background,
    procedural_skin_texture,
    render_hand_sample,
)


@dataclass(frozen=True)
class MotionClip:
    """A rendered clip and its ground truth.

    Attributes:
        samples: one :class:`SynthSample` per frame (image, keypoints_2d, joints_3d, ...).
        fps: frames per second. name: what it shows (e.g. "moving", "fast").
    """

    samples: tuple[SynthSample, ...]
    fps: float
    name: str

    def frames(self) -> list[Frame]:
        """The clip as a stream of :class:`Frame` with its exact intrinsics."""
        out = []
        for i, s in enumerate(self.samples):
            h, w = s.image.shape[:2]
            out.append(Frame(i, i / self.fps, s.image, intrinsics_from_matrix(s.K, w, h), f"synthetic:{self.name}"))
        return out

    @property
    def keypoints_2d(self) -> np.ndarray:
        """(T, 21, 2) float32 the true keypoints, pixels."""
        return np.stack([s.keypoints_2d for s in self.samples])


def moving_hand_clip(frames: int = 45, fps: float = 30.0, size: tuple[int, int] = (320, 240), speed: float = 1.0,
                     seed: int = 0, fov_deg: float = 60.0, layers: dict[str, HandModel] | None = None,
                     name: str | None = None, supersample: int = 2) -> MotionClip:
    """A right hand, palm to the camera, moving across the image (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    layers = layers or default_layers()
    d = layers["right"].data
    keys = keyframes(d.rest_frames, d.j_regressor.astype(np.float64) @ d.v_template)
    w, h = size
    K = intrinsics_from_fov(fov_deg, w, h).K
    settings = SynthSettings(image_size=size, supersample=supersample, fill=(0.5, 0.5), back_facing=0.0)
    betas = np.clip(rng.normal(0, 0.8, layers["right"].num_betas), -2, 2).astype(np.float32)
    texture = procedural_skin_texture(rng)
    background = procedural_background(rng, w, h)
    rest = torch.as_tensor(d.rest_frames[1:])
    light = np.array([0.3, -0.4, 0.87])
    lighting = (light / np.linalg.norm(light), 0.45, np.array([1.0, 0.98, 0.95]))
    f = 0.5 * speed  # Hz of the sway
    samples = []
    for i in range(frames):
        t = i / fps
        k = min(0.7 * speed * t, len(keys) - 1.0)  # 0.7 key poses per second at speed 1
        j = min(int(k), len(keys) - 2)
        a = smoothstep(np.array(k - j))
        ang = (1 - a) * keys[j] + a * keys[j + 1]
        finger = anatomical_to_axis_angle(torch.as_tensor(ang, dtype=torch.float32), rest).reshape(45).numpy()
        ph = 2 * np.pi * f * t
        turn = axis_angle_to_matrix(torch.tensor([0.3 * np.sin(ph), 0.4 * np.sin(ph + 0.7), 0.25 * np.sin(2 * ph)],
                                                 dtype=torch.float64)).numpy()
        centre = ((w - 1) / 2 + 0.25 * w * np.sin(ph), (h - 1) / 2 + 0.12 * h * np.sin(2 * ph + 0.3))
        samples.append(render_hand_sample(np.random.default_rng(seed * 1000 + i), layers, settings, betas=betas,
                                          pose=finger, texture=texture, background=background,
                                          global_rotation=turn @ PALM_TO_CAMERA, K=K, lighting=lighting,
                                          centre_px=centre))
    return MotionClip(tuple(samples), fps, name or f"speed{speed:g}")
