"""Texture capture over a tracked stream: the glue between the engine's results and
:class:`~core.texture.capture.TextureCapture`.

The engine reports each hand with what the texture needs, as it is
(:class:`core.engine.HandResult`): its posed mesh in the camera frame, the camera that mesh
lines up with the image in (a weak-perspective fit's own weak camera, sampled through its
pinhole form, :meth:`core.camera.HandCamera.pinhole`) and its segmentation mask, which keeps
the background out of the texture.

:class:`SessionCapture` keeps one texture per side and a light record of every tracked hand
(its parameters per frame), which is what an export needs: the shape (median over frames),
any frame's pose, and the recorded motion. A refined hand is recorded as refined
(``HandResult.refined``: its pose, shape, translation and free vertex offsets, which the
depth term of an RGB-D source and a stereo pair's second silhouette shaped), else as fitted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from core.camera import HandCamera
from core.fit import FitSettings, HandFit
from core.model import HandModel, HandModelData
from core.refine.contracts import RefineResult
from core.texture.capture import DEFAULT_TEXTURE_SIZE, CaptureSettings, TextureCapture, TextureUpdate

__all__ = ["EngineHand", "SessionCapture", "TrackedHand", "fit_vertices"]

log = logging.getLogger(__name__)


class EngineHand(Protocol):
    """What :meth:`SessionCapture.add_hands` reads of a :class:`core.engine.HandResult`."""

    fit: HandFit
    refined: RefineResult | None
    track_id: int
    vertices: np.ndarray
    camera: HandCamera
    mask: np.ndarray | None


@dataclass(frozen=True)
class TrackedHand:
    """One hand in one frame, as tracked (camera frame, OpenCV axes, metres).

    Attributes:
        frame: index of the frame in its source. timestamp_s: seconds.
        side: "right" or "left".
        pose: (48,) float32 axis-angle (global rotation first). betas: (S,) float32 shape.
        transl: (3,) float32 translation, metres.
        track_id: the hand's identity across frames (:mod:`core.tracking`), or -1 if unknown.
        vertex_offsets: (V, 3) float32 the refinement's free offsets ``dv``, camera frame,
            metres (added to the model posed by ``pose``, ``betas``, ``transl``), or None
            for a hand that was not refined.
    """

    frame: int
    timestamp_s: float
    side: str
    pose: np.ndarray
    betas: np.ndarray
    transl: np.ndarray
    track_id: int = -1
    vertex_offsets: np.ndarray | None = None


def fit_vertices(layer: HandModel, pose: np.ndarray, betas: np.ndarray, transl: np.ndarray) -> np.ndarray:
    """(V, 3) float32 vertices of the hand model posed in the camera frame, metres."""
    with torch.no_grad():
        out = layer(
            torch.as_tensor(np.asarray(pose, dtype=np.float32))[None],
            torch.as_tensor(np.asarray(betas, dtype=np.float32))[None],
            torch.as_tensor(np.asarray(transl, dtype=np.float32))[None],
        )
    return out.vertices[0].numpy().astype(np.float32)


class SessionCapture:
    """Captures textures and records tracked hands over a stream of engine results.

    Args:
        models: {"right": HandModelData, "left": HandModelData} of the model in use.
        size: texture size. base: a starting texture for both sides (a profile's), or None.
        smoothing, settings, capture_size: see :class:`TextureCapture`.
        nominal_fov_deg: the fitter's nominal field of view (weak perspective; kept for
            callers, the hands' cameras come with them).
    """

    def __init__(
        self,
        models: dict[str, HandModelData],
        size: int = DEFAULT_TEXTURE_SIZE,
        base: np.ndarray | None = None,
        smoothing: float = 0.9,
        settings: CaptureSettings = CaptureSettings(),
        capture_size: int | None = None,
        nominal_fov_deg: float = FitSettings().nominal_fov_deg,
    ) -> None:
        self.models = dict(models)
        self.size = int(size)
        self.base = base
        self.smoothing = smoothing
        self.settings = settings
        self.capture_size = capture_size
        self.nominal_fov_deg = nominal_fov_deg
        self.captures: dict[str, TextureCapture] = {}
        self.tracked: list[TrackedHand] = []
        self.texture_ms: list[float] = []

    def capture(self, side: str) -> TextureCapture | None:
        """The side's texture capture (created on first use); None when the model has no UVs
        (a user's MANO files): the hand is still tracked and recorded, without texture."""
        if self.models[side].uv is None:
            return None
        if side not in self.captures:
            self.captures[side] = TextureCapture(
                self.models[side], self.size, self.base, self.smoothing, self.settings, self.capture_size
            )
        return self.captures[side]

    def add_hands(self, image: np.ndarray, frame: int, timestamp_s: float,
                  hands: Sequence[EngineHand]) -> list[TextureUpdate]:
        """Record the engine's hands of one frame (:class:`core.engine.HandResult`) and blend
        the frame into their textures with each hand's own mesh, camera and mask, as they are:
        nothing is posed, segmented or placed in a camera again (a weak-perspective fit is
        sampled through its weak camera, :meth:`core.camera.HandCamera.pinhole`).

        Args:
            image: (H, W, 3) uint8 RGB. frame, timestamp_s: where the frame is in its source.
            hands: the frame's hands (``FrameResult.hands``).
        """
        updates = []
        for hand in hands:
            fit = hand.fit
            if fit.side not in self.models:
                continue
            refined = getattr(hand, "refined", None)  # the mesh the hand result carries: the refined one
            p = fit if refined is None else refined
            offsets = None if refined is None else np.asarray(refined.vertex_offsets, np.float32).copy()
            self.tracked.append(TrackedHand(frame, timestamp_s, fit.side, np.asarray(p.pose, np.float32).copy(),
                                            np.asarray(p.betas, np.float32).copy(),
                                            np.asarray(p.transl, np.float32).copy(), int(hand.track_id), offsets))
            capture = self.capture(fit.side)
            if capture is None:
                continue
            vertices, K = hand.camera.pinhole(hand.vertices)
            update = capture.update(image, vertices, K, hand.mask)
            self.texture_ms.append(update.time_ms)
            updates.append(update)
        return updates

    # ----------------------------------------------------------------- summaries

    def frames_of(self, side: str) -> list[TrackedHand]:
        """The tracked hands of one side, in frame order."""
        return [t for t in self.tracked if t.side == side]

    def main_track(self, side: str) -> list[TrackedHand]:
        """The frames of the side's most tracked hand (one identity, in frame order): an
        animation follows it rather than jumping between hands that share a side."""
        hands = self.frames_of(side)
        counts: dict[int, int] = {}
        for t in hands:
            counts[t.track_id] = counts.get(t.track_id, 0) + 1
        if not counts:
            return []
        best = max(counts, key=lambda k: (counts[k], -k))
        return [t for t in hands if t.track_id == best]

    def main_side(self) -> str | None:
        """The side tracked in the most frames (None when nothing was tracked)."""
        counts = {side: len(self.frames_of(side)) for side in self.models}
        best = max(counts, key=lambda s: counts[s])
        return best if counts[best] > 0 else None

    def median_shape(self, side: str) -> np.ndarray | None:
        """(S,) the per-coefficient median of the side's fitted shapes, or None."""
        hands = self.frames_of(side)
        if not hands:
            return None
        return np.median(np.stack([t.betas for t in hands]), axis=0).astype(np.float32)

    def at_frame(self, side: str, frame: int) -> TrackedHand | None:
        """The side's tracked hand in source frame ``frame``, or None."""
        for t in self.frames_of(side):
            if t.frame == frame:
                return t
        return None
