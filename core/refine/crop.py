"""The hand's crop: where the refinement renders, and how images and intrinsics map into it.

The silhouette is rendered at ``size x size`` pixels (128 by default) over a square box of the
image around the hand. The box is an integer pixel box ``[x0, x0 + side) x [y0, y0 + side)``
(it may reach past the image border; pixels there count as background), so cropping is exact
and only the resampling by ``scale = size / side`` remains. With pixel centres at integer
coordinates (:mod:`core.render.projection`) an image point ``u`` maps to the crop point
``(u - x0 + 0.5) * scale - 0.5``; the crop's intrinsics are the image's with the principal
point shifted by ``(-x0, -y0)``, then :func:`core.render.resize_intrinsics` by ``scale``.
Masks are resampled by pixel area (``cv2.INTER_AREA``, a soft target in [0, 1]); depth maps by
the exact nearest pixel (no averaging across depth edges).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from core.render import resize_intrinsics

__all__ = ["CropBox", "crop_box"]


@dataclass(frozen=True)
class CropBox:
    """A square integer box of the image, rendered at ``size x size``.

    Attributes:
        x0, y0: top-left pixel of the box (may be negative or past the image).
        side: box side in image pixels (>= 1).
        size: rendered side in pixels.
    """

    x0: int
    y0: int
    side: int
    size: int

    @property
    def scale(self) -> float:
        """Crop pixels per image pixel."""
        return self.size / self.side

    def affine(self) -> np.ndarray:
        """(3, 3) float64 map of homogeneous image pixels to crop pixels (``K_crop = A @ K``)."""
        s = self.scale
        return np.array([[s, 0.0, (0.5 - self.x0) * s - 0.5],
                         [0.0, s, (0.5 - self.y0) * s - 0.5],
                         [0.0, 0.0, 1.0]])

    def intrinsics(self, K: Tensor) -> Tensor:
        """(..., 3, 3) intrinsics of the crop from the image's ``K`` (..., 3, 3)."""
        shifted = K.clone()
        shifted[..., 0, 2] = K[..., 0, 2] - self.x0
        shifted[..., 1, 2] = K[..., 1, 2] - self.y0
        return resize_intrinsics(shifted, self.scale)

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Image pixels (..., 2) -> crop pixels (..., 2)."""
        p = np.asarray(points, dtype=np.float64)
        return (p - np.array([self.x0, self.y0]) + 0.5) * self.scale - 0.5

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Crop pixels (..., 2) -> image pixels (..., 2)."""
        p = np.asarray(points, dtype=np.float64)
        return (p + 0.5) / self.scale - 0.5 + np.array([self.x0, self.y0])

    def _window(self, image: np.ndarray, fill: float) -> np.ndarray:
        """The box's pixels of a (H, W) image, padded with ``fill`` outside it. (side, side)."""
        h, w = image.shape[:2]
        out = np.full((self.side, self.side), fill, dtype=np.float32)
        ya, yb = max(self.y0, 0), min(self.y0 + self.side, h)
        xa, xb = max(self.x0, 0), min(self.x0 + self.side, w)
        if ya < yb and xa < xb:
            out[ya - self.y0:yb - self.y0, xa - self.x0:xb - self.x0] = image[ya:yb, xa:xb]
        return out

    def resample_mask(self, mask: np.ndarray) -> np.ndarray:
        """A (H, W) mask (bool or [0, 1]) as the crop's (size, size) float32 area coverage."""
        import cv2

        win = self._window(np.asarray(mask), 0.0)  # (float32: the window's values only)
        if self.side == self.size:
            return win
        return cv2.resize(win, (self.size, self.size), interpolation=cv2.INTER_AREA)

    def resample_depth(self, depth: np.ndarray) -> np.ndarray:
        """A (H, W) depth map (metres, 0 = unknown) as the crop's (size, size), nearest pixel."""
        win = self._window(np.nan_to_num(np.asarray(depth, dtype=np.float32)), 0.0)
        centres = (np.arange(self.size) + 0.5) / self.scale - 0.5  # crop -> window pixels
        idx = np.clip(np.floor(centres + 0.5).astype(np.int64), 0, self.side - 1)  # ties go up
        return win[idx[:, None], idx[None, :]]

    def image_axes(self) -> tuple[np.ndarray, np.ndarray]:
        """(size,) image x of the crop's pixel columns and (size,) image y of its rows."""
        t = (np.arange(self.size) + 0.5) / self.scale - 0.5
        return t + self.x0, t + self.y0


def crop_box(points_2d: np.ndarray, size: int = 128, margin: float = 0.15,
             max_side: int | None = None) -> CropBox:
    """The square box around image points (the hand's projected mesh and keypoints).

    Args:
        points_2d: (N, 2) image pixels, finite.
        size: rendered side, pixels.
        margin: added on every side, as a fraction of the points' larger extent.
        max_side: largest box side, pixels (a broken fit far outside the image must not ask
            for a huge crop); None for no limit.

    Returns:
        A :class:`CropBox` centred on the points' box, side = extent * (1 + 2 margin).
    """
    p = np.asarray(points_2d, dtype=np.float64).reshape(-1, 2)
    p = p[np.isfinite(p).all(axis=1)]
    if not len(p):
        raise ValueError("crop_box needs at least one finite point")
    lo, hi = p.min(0), p.max(0)
    extent = float((hi - lo).max())
    side = max(8, int(math.ceil(extent * (1.0 + 2.0 * margin))))
    if max_side is not None:
        side = min(side, max(8, int(max_side)))
    centre = (lo + hi) / 2.0
    x0 = int(math.floor(centre[0] + 0.5 - side / 2.0))
    y0 = int(math.floor(centre[1] + 0.5 - side / 2.0))
    return CropBox(x0, y0, side, int(size))


def as_tensor(x: np.ndarray, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    """numpy -> tensor on ``device`` (small helper used by the refiner)."""
    return torch.as_tensor(np.ascontiguousarray(x), dtype=dtype, device=device)
