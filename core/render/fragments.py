"""The output of the hard rasterizer: which face each pixel sees, where on it, how far."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Fragments"]


@dataclass(frozen=True)
class Fragments:
    """Per-pixel result of :func:`core.render.rasterize`, one (nearest) face per pixel.

    B images of H x W pixels; pixel ``[b, i, j]`` has its centre at ``(u, v) = (j, i)``.

    Attributes:
        pix_to_face: (B, H, W) int64 index into the mesh's ``faces`` (0..F-1, not offset by
            the batch) of the nearest face covering the pixel centre, -1 for background.
        bary_coords: (B, H, W, 3) float barycentric coordinates of the pixel in that face
            (weights of its corners ``faces[f, 0..2]``), summing to 1; perspective-correct
            (3D) or screen-space (2D) per ``RasterSettings.perspective_correct``.
            0 for background.
        zbuf: (B, H, W) float camera-frame depth z of the surface at the pixel centre, metres;
            ``+inf`` for background.
    """

    pix_to_face: Tensor
    bary_coords: Tensor
    zbuf: Tensor

    @property
    def mask(self) -> Tensor:
        """(B, H, W) bool, True where a face covers the pixel centre."""
        return self.pix_to_face >= 0

    def detach(self) -> "Fragments":
        """A copy whose tensors are detached from the autograd graph."""
        return Fragments(
            pix_to_face=self.pix_to_face.detach(),
            bary_coords=self.bary_coords.detach(),
            zbuf=self.zbuf.detach(),
        )

    def to(self, device: torch.device | str) -> "Fragments":
        """A copy on ``device``."""
        return Fragments(
            pix_to_face=self.pix_to_face.to(device),
            bary_coords=self.bary_coords.to(device),
            zbuf=self.zbuf.to(device),
        )
