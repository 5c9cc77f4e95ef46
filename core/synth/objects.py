"""A strongly coloured object held in front of a synthetic hand (a can, a plate's rim).

:func:`hold_object` renders a shaded cylinder lying across the palm, between the hand and the
camera, into a :class:`~core.synth.render.SynthSample` and returns the occluded sample: the
image with the object drawn over the hand, the hand's mask reduced to the pixels still visible,
and the object's own mask. The texture tests ask that none of the object's colour reaches the
captured skin texture.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from core.synth.render import SynthSample, shade


@dataclass(frozen=True)
class HeldObject:
    """A synthetic hand holding an object.

    Attributes:
        sample: the occluded sample (``image`` with the object, ``mask`` the hand's visible
            pixels; every other field as rendered).
        object_mask: (H, W) bool the object's pixels.
        colour: (3,) float the object's albedo, RGB in [0, 255].
    """

    sample: SynthSample
    object_mask: np.ndarray
    colour: np.ndarray


def cylinder_mesh(radius: float, length: float, segments: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """A closed cylinder along x, centred at the origin: (V, 3) float64 vertices, (F, 3) faces
    wound outward (counter-clockwise seen from outside)."""
    a = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    ring = np.stack([np.zeros_like(a), radius * np.cos(a), radius * np.sin(a)], -1)
    left, right = ring + [-length / 2, 0, 0], ring + [length / 2, 0, 0]
    verts = np.concatenate([left, right, [[-length / 2, 0, 0], [length / 2, 0, 0]]])
    faces = []
    n = segments
    for i in range(n):
        j = (i + 1) % n
        faces += [[i, j, n + j], [i, n + j, n + i]]  # side
        faces += [[2 * n, j, i], [2 * n + 1, n + i, n + j]]  # caps
    return verts, np.asarray(faces, dtype=np.int64)


def hold_object(sample: SynthSample, colour: tuple[float, float, float] = (205.0, 25.0, 30.0),
                radius: float = 0.012, length: float = 0.10, gap: float = 0.01, at: float = 0.35,
                light: tuple[float, float, float] = (0.3, -0.4, 0.87), ambient: float = 0.45) -> HeldObject:
    """The sample with a cylinder held across its palm, in front of the hand.

    The cylinder lies across the hand (perpendicular to the wrist -> middle-finger direction,
    parallel to the image), centred ``at`` of the way from the wrist to the middle finger's base,
    its nearest side ``gap`` metres in front of the nearest palm keypoint.

    Args:
        colour: the object's albedo, RGB. radius, length: metres.
        light, ambient: its Lambert shading (direction toward the camera side, ambient share).
    """
    kp = np.asarray(sample.joints_3d, dtype=np.float64)
    palm = kp[[0, 5, 9, 13, 17]]
    centre = kp[0] + at * (kp[9] - kp[0])
    along = kp[9] - kp[0]
    along[2] = 0.0
    across = np.cross(along, [0.0, 0.0, 1.0])
    across /= max(np.linalg.norm(across), 1e-9)
    centre[2] = palm[:, 2].min() - gap - radius
    verts, faces = cylinder_mesh(radius, length)
    # The cylinder's x axis onto `across`, its other axes completing a right-handed frame.
    y = np.cross([0.0, 0.0, 1.0], across)
    R = np.stack([across, y, np.cross(across, y)], 1)
    verts = verts @ R.T + centre
    h, w = sample.image.shape[:2]
    texture = np.broadcast_to(np.asarray(colour, np.uint8), (4, 4, 3)).copy()
    uv = np.zeros((len(verts), 2))
    lit = np.asarray(light, dtype=np.float64)
    img, mask = shade(verts, faces, uv, faces, texture, sample.K, (w, h), lit / np.linalg.norm(lit), ambient,
                      np.ones(3))
    out = sample.image.astype(np.float32)
    out[mask] = img[mask]
    occluded = dataclasses.replace(sample, image=np.clip(out, 0, 255).astype(np.uint8), mask=sample.mask & ~mask)
    return HeldObject(occluded, mask, np.asarray(colour, dtype=np.float64))
