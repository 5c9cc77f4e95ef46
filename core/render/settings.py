"""Settings of the rasterizers (frozen dataclasses, documented ranges and units).

All distances here are in **pixels of the rendered image**: when the same crop is rendered at
64 x 64 instead of 128 x 128, the same ``sigma`` blurs twice as much of the hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["RasterSettings", "SoftRasterSettings", "cull_radius_px"]


def cull_radius_px(sigma: float, eps: float) -> float:
    """Distance (pixels) beyond which a face's SoftRas probability outside it is below ``eps``.

    SoftRas (Liu et al. 2019) gives a pixel at squared distance ``d2`` (px^2) outside a face the
    probability ``D = sigmoid(-d2 / sigma)``. ``D < eps`` exactly when
    ``d2 > sigma * log(1 / eps - 1)``, so faces and pixels further apart than

        r = sqrt(sigma * log(1 / eps - 1))

    need not be paired. (pytorch3d couples ``blur_radius`` to ``sigma`` the same way.)

    Args:
        sigma: sharpness, px^2, > 0.
        eps: probability treated as zero, in (0, 0.5).

    Returns:
        The cull radius in pixels.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0 (px^2), got {sigma}")
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps}")
    return math.sqrt(sigma * math.log(1.0 / eps - 1.0))


@dataclass(frozen=True)
class RasterSettings:
    """Settings of the hard (z-buffer) rasterizer.

    Attributes:
        image_size: (H, W) of the output in pixels, each >= 1.
        z_near: faces with any vertex at ``z <= z_near`` (metres) are not drawn. There is no
            clipping: such faces are dropped whole.
        perspective_correct: if True, ``Fragments.bary_coords`` are barycentric coordinates of
            the 3D surface point (interpolating camera-frame vertices gives the point seen at
            the pixel); if False, they are the 2D barycentrics of the pixel centre in the
            projected triangle.
        cull_backfaces: if True, faces whose projection is clockwise in the image (the back
            of a mesh whose faces are counter-clockwise seen from outside) are not drawn.
    """

    image_size: tuple[int, int] = (128, 128)
    z_near: float = 1e-3
    perspective_correct: bool = True
    cull_backfaces: bool = False

    def __post_init__(self) -> None:
        _check_image_size(self.image_size)
        if self.z_near <= 0:
            raise ValueError(f"z_near must be > 0 (metres), got {self.z_near}")


@dataclass(frozen=True)
class SoftRasterSettings:
    """Settings of the soft silhouette rasterizer (SoftRas, Liu et al. 2019).

    Attributes:
        image_size: (H, W) of the silhouette in pixels, each >= 1.
        sigma: sharpness of the per-face probability ``D = sigmoid(+-d2 / sigma)``, in px^2
            (d2 = squared distance from the pixel centre to the face's edges). Smaller is
            sharper. 0.5 px^2 blurs the edge over about +-2 px (pytorch3d's default
            ``sigma = 1e-4`` in NDC units is about 0.4 px^2 at 128 x 128).
        gamma: temperature of SoftRas's depth-aware colour aggregation (pytorch3d's
            ``BlendParams.gamma``). Silhouettes do not use it; it is kept so one settings
            object describes a SoftRas renderer completely.
        eps: face-pixel probabilities below ``eps`` are treated as 0; it sets the cull
            radius through :func:`cull_radius_px`. In (0, 0.5).
        saturate_interior: if True, pixels whose whole (2 r + 1)^2 neighbourhood
            (``r = ceil(cull_radius)``) lies inside the hard silhouette are set to exactly 1
            with zero gradient (the native backend's backward pass then skips them). If False
            (default), every face-pixel pair within the cull radius counts, which matches the
            dense reference up to ``eps``. The difference: with triangles of a few pixels
            SoftRas leaves dips (values down to about 0.94) along the mesh's interior edges;
            saturation removes them.
        z_near: faces with any vertex at ``z <= z_near`` (metres) are ignored.
        backend: how the per-pixel math runs. ``"auto"`` (default): ``"native"`` for
            float32/float64 CPU tensors where the C kernels build, else ``"eager"`` (the
            first failed build logs one warning). ``"native"``: fused C kernels
            (:mod:`core.render._native`), compiled on first use with the system C compiler
            (about a second, once per machine: the library is cached) and loaded by later
            processes in milliseconds; CPU only, raises where they cannot be built.
            ``"eager"``: plain PyTorch ops on any device. ``"compiled"``: the eager ops fused
            by ``torch.compile`` (needs a C++ compiler on the CPU, Triton on CUDA; the first
            call in every process compiles for 15-30 s). They agree to float rounding but for
            face-pixel pairs with ``D < eps``: the native kernels skip all of them, the others
            only those outside each face's box grown by the cull radius.
    """

    image_size: tuple[int, int] = (128, 128)
    sigma: float = 0.5
    gamma: float = 1e-4
    eps: float = 1e-4
    saturate_interior: bool = False
    z_near: float = 1e-3
    backend: Literal["auto", "native", "eager", "compiled"] = "auto"

    def __post_init__(self) -> None:
        _check_image_size(self.image_size)
        if self.backend not in ("auto", "native", "eager", "compiled"):
            raise ValueError(
                f"backend must be 'auto', 'native', 'eager' or 'compiled', got {self.backend!r}"
            )
        if self.gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {self.gamma}")
        if self.z_near <= 0:
            raise ValueError(f"z_near must be > 0 (metres), got {self.z_near}")
        cull_radius_px(self.sigma, self.eps)  # validates sigma and eps

    @property
    def cull_radius(self) -> float:
        """Cull radius in pixels, :func:`cull_radius_px` of ``sigma`` and ``eps``."""
        return cull_radius_px(self.sigma, self.eps)


def _check_image_size(image_size: tuple[int, int]) -> None:
    if len(image_size) != 2 or min(int(s) for s in image_size) < 1:
        raise ValueError(f"image_size must be (H, W) with H, W >= 1, got {image_size}")
