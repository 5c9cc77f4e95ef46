"""Differentiable and hard mesh rendering in PyTorch (no pytorch3d), pytorch3d-style.

Conventions (see :mod:`core.render.projection`): OpenCV pinhole camera (x right, y down,
z forward), metres, pixel centres at integer coordinates, float32, batch first. A mesh is
``verts (B, V, 3)`` in the camera frame, ``faces (F, 3)`` int64 shared by the batch, and
``K (B, 3, 3)``.

Stages, as in pytorch3d's renderer:

* rasterizers turn a mesh into per-pixel data:
  :func:`rasterize` (hard z-buffer) -> :class:`Fragments`;
  :func:`rasterize_silhouette` (SoftRas, differentiable) -> (B, H, W) silhouette, with
  :func:`rasterize_silhouette_dense` as its slow reference;
* pure functions shade or blend that data: :func:`render_depth`,
  :func:`render_depth_differentiable`, :func:`interpolate_face_attributes`,
  :func:`softras_blend`;
* pure losses compare images: :func:`silhouette_loss`, :func:`soft_iou`,
  :func:`silhouette_iou`, :func:`smooth_l1_depth_loss`.

Settings are frozen dataclasses (:class:`RasterSettings`, :class:`SoftRasterSettings`);
:func:`cull_radius_px` couples the soft rasterizer's cull radius to its sigma.
"""

from core.render.depth import render_depth, render_depth_differentiable, smooth_l1_depth_loss
from core.render.fragments import Fragments
from core.render.hard import interpolate_face_attributes, rasterize, screen_barycentrics
from core.render.losses import silhouette_iou, silhouette_loss, soft_iou
from core.render.projection import project_points, resize_intrinsics
from core.render.settings import RasterSettings, SoftRasterSettings, cull_radius_px
from core.render.soft import (
    rasterize_silhouette,
    rasterize_silhouette_dense,
    signed_dist_sq,
    softras_blend,
    softras_log_background,
)
from core.render.synthetic import synthetic_hand_mesh, synthetic_hand_scene

__all__ = [
    "Fragments",
    "RasterSettings",
    "SoftRasterSettings",
    "cull_radius_px",
    "interpolate_face_attributes",
    "project_points",
    "rasterize",
    "rasterize_silhouette",
    "rasterize_silhouette_dense",
    "render_depth",
    "render_depth_differentiable",
    "resize_intrinsics",
    "screen_barycentrics",
    "signed_dist_sq",
    "silhouette_iou",
    "silhouette_loss",
    "smooth_l1_depth_loss",
    "soft_iou",
    "softras_blend",
    "softras_log_background",
    "synthetic_hand_mesh",
    "synthetic_hand_scene",
]
