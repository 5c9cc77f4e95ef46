"""The texture of a hand holding a strongly coloured object (issue 15: "skin that is skin").

A right hand turns a little in front of the camera while holding a red bar across its palm
(:func:`core.synth.objects.hold_object`); each frame goes through MediaPipe and the fit, the
texture's segmentation and :class:`~core.texture.capture.TextureCapture`, exactly as a live
session does. The captured texture must carry none of the object: :func:`object_texels`
counts the texels closer in colour to the object than to the skin (both as the camera saw
them: the mean image colour of the object's pixels and of the hand's visible pixels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class HeldClip:
    """Frames of a hand holding an object and what is known about them.

    Attributes:
        images: (H, W, 3) uint8 RGB frames. K: (3, 3) float64 intrinsics.
        skin_rgb, object_rgb: (3,) mean image colour of the hand's visible pixels and of the
            object's pixels over the clip.
    """

    images: tuple[np.ndarray, ...]
    K: np.ndarray
    skin_rgb: np.ndarray
    object_rgb: np.ndarray


def held_object_clip(frames: int = 6, seed: int = 0, size: tuple[int, int] = (320, 240),
                     colour: tuple[float, float, float] = (205.0, 25.0, 30.0)) -> HeldClip:
    """A right hand, open, palm to the camera, turning slightly while holding a red bar."""
    import torch

    from core.rotations import axis_angle_to_matrix
    from core.synth.objects import hold_object
    from core.synth.render import (
        PALM_TO_CAMERA,
        SynthSettings,
        default_layers,
        procedural_background,
        procedural_skin_texture,
        render_hand_sample,
    )

    rng = np.random.default_rng(seed)
    layers = default_layers()
    # No skin detail: the texture is then the rendered albedo exactly, the truth captures are measured on.
    settings = SynthSettings(image_size=size, supersample=1, fill=(0.6, 0.6), back_facing=0.0, skin_detail=False)
    texture = procedural_skin_texture(rng)
    background = procedural_background(rng, *size)
    betas = np.clip(rng.normal(0, 0.8, layers["right"].num_betas), -2, 2).astype(np.float32)
    light = np.array([0.3, -0.4, 0.87])
    lighting = (light / np.linalg.norm(light), 0.5, np.ones(3))
    images, skin, obj = [], [], []
    K = None
    for i in range(frames):
        t = i / max(frames - 1, 1)
        turn = axis_angle_to_matrix(torch.tensor([0.25 * np.sin(2 * np.pi * t), 0.3 * np.sin(2 * np.pi * t + 1.0),
                                                  0.2 * t], dtype=torch.float64)).numpy()
        s = render_hand_sample(np.random.default_rng(seed * 100 + i), layers, settings, betas=betas,
                               pose=np.full(45, 0.0, np.float32), texture=texture, background=background,
                               global_rotation=turn @ PALM_TO_CAMERA, transl_jitter=0.0, lighting=lighting)
        held = hold_object(s, colour)
        images.append(held.sample.image)
        skin.append(held.sample.image[held.sample.mask])
        obj.append(held.sample.image[held.object_mask])
        K = s.K
    return HeldClip(tuple(images), np.asarray(K), np.concatenate(skin).mean(0), np.concatenate(obj).mean(0))


def object_texels(texture: np.ndarray, covered: np.ndarray, skin_rgb: np.ndarray, object_rgb: np.ndarray) -> int:
    """How many covered texels of ``texture`` (S, S, 3) are closer in RGB to ``object_rgb`` than
    to ``skin_rgb``; ``covered``: (S, S) bool, the texels inside the UV islands."""
    t = texture[covered].astype(np.float64)
    return int((np.linalg.norm(t - object_rgb, axis=1) < np.linalg.norm(t - skin_rgb, axis=1)).sum())


def capture_held_clip(clip: HeldClip, size: int = 512) -> dict[str, Any]:
    """Track the clip and capture its texture as a session does; the texture and its counts."""
    from core.camera import intrinsics_from_matrix
    from core.capture.frame import Frame
    from core.engine import Engine, EngineSettings
    from core.model import load_model_data
    from core.texture.session import SessionCapture

    models = {side: load_model_data(None, side) for side in ("right", "left")}
    session = SessionCapture(models, size=size)
    tracked = 0
    with Engine(EngineSettings(max_hands=1, device="cpu", detector_process=False, segment=True)) as engine:
        for i, image in enumerate(clip.images):
            h, w = image.shape[:2]
            frame = Frame(i, i / 15.0, image, intrinsics_from_matrix(clip.K, w, h), "synthetic:held")
            result = engine.process(frame)
            if not result.hands:
                continue
            tracked += 1
            session.add_hands(image, i, frame.timestamp_s, result.hands)
    out: dict[str, Any] = {"frames": len(clip.images), "tracked": tracked, "texture": None}
    for side, capture in session.captures.items():
        tex = capture.texture()
        seen = capture.texture(filled=False)
        covered = capture.texel_map.covered_mask() if capture.size == capture.capture_size else \
            _covered(capture)
        out.update(side=side, texture=tex, coverage=round(capture.coverage, 3),
                   object_texels=object_texels(tex, covered, clip.skin_rgb, clip.object_rgb),
                   object_texels_seen=object_texels(seen, capture.seen_mask(), clip.skin_rgb, clip.object_rgb),
                   covered_texels=int(covered.sum()))
    return out


def _covered(capture: Any) -> np.ndarray:
    import cv2

    grid = capture.texel_map.covered_mask().astype(np.uint8)
    return cv2.resize(grid, (capture.size, capture.size), interpolation=cv2.INTER_NEAREST) > 0
