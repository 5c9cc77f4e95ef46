"""Synthetic hands with exact ground truth (pose, shape, camera), rendered by core.render."""

from core.synth.render import (
    PALM_TO_CAMERA,
    SynthSample,
    SynthSettings,
    default_layers,
    natural_pose,
    procedural_background,
    procedural_skin_texture,
    render_hand_sample,
)

__all__ = [
    "PALM_TO_CAMERA",
    "SynthSample",
    "SynthSettings",
    "default_layers",
    "natural_pose",
    "procedural_background",
    "procedural_skin_texture",
    "render_hand_sample",
]
