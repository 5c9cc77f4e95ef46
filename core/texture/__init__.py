"""Skin texture capture from video (RealisticHands, paper 001, Sec. 3.2)."""

from core.texture.capture import (
    LIVE_CAPTURE,
    CaptureSettings,
    FrameSamples,
    TextureCapture,
    TextureUpdate,
    sample_frame,
)
from core.texture.fill import fill_texture, vertex_colours
from core.texture.texels import TexelMap, build_texel_map, texel_map, texel_uv

__all__ = [
    "CaptureSettings",
    "FrameSamples",
    "LIVE_CAPTURE",
    "TexelMap",
    "TextureCapture",
    "TextureUpdate",
    "build_texel_map",
    "fill_texture",
    "sample_frame",
    "texel_map",
    "texel_uv",
    "vertex_colours",
]
