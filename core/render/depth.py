"""Depth rendering on top of the hard rasterizer.

Two flavours:

* :func:`render_depth`: the z-buffer itself (no gradients), background filled with a chosen
  value (default 0.0, "no depth", what depth sensors report for missing pixels; pass
  ``float("inf")`` to keep the z-buffer convention).
* :func:`render_depth_differentiable`: the same depth recomputed with autograd for a *fixed*
  face assignment (the fragments' ``pix_to_face``): at each covered pixel the depth of the
  plane of its face, ``z = 1 / sum_i(l_i / z_i)`` with ``l_i`` the 2D barycentrics of the
  pixel centre in the projected face. Gradients flow to the vertices (x, y and z) and K; the
  visibility itself (which face a pixel sees, which pixels are covered) is held fixed, which is
  what a smooth-L1 depth term on the overlap of two masks needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from core.render.fragments import Fragments
from core.render.hard import rasterize, screen_barycentrics
from core.render.projection import check_mesh_inputs, project_points
from core.render.settings import RasterSettings

__all__ = ["render_depth", "render_depth_differentiable", "DepthComparison", "compare_mesh_depth", "sample_mesh_depth",
           "smooth_l1_depth_loss"]


def render_depth(fragments: Fragments, background: float = 0.0) -> Tensor:
    """Per-pixel camera-frame depth z (metres) from the z-buffer.

    Args:
        fragments: from :func:`core.render.rasterize`, (B, H, W).
        background: value of pixels no face covers (default 0.0; ``float("inf")`` allowed).

    Returns:
        (B, H, W) depth, metres; ``background`` where ``pix_to_face == -1``. No gradients.
    """
    return torch.where(fragments.pix_to_face >= 0, fragments.zbuf,
                       torch.full_like(fragments.zbuf, background))


def render_depth_differentiable(
    verts: Tensor, faces: Tensor, K: Tensor, fragments: Fragments, background: float = 0.0
) -> Tensor:
    """Depth with gradients w.r.t. the vertices, for the face assignment of ``fragments``.

    Args:
        verts: (B, V, 3) float, metres, camera frame (the same mesh the fragments came from,
            or a slightly moved copy of it).
        faces: (F, 3) int64.
        K: (B, 3, 3) intrinsics, pixels.
        fragments: from :func:`core.render.rasterize` of this mesh (held fixed).
        background: value of uncovered pixels (constant, no gradient).

    Returns:
        (B, H, W) depth in metres, differentiable in ``verts`` and ``K`` at covered pixels.
    """
    check_mesh_inputs(verts, faces, K)
    batch, height, width = fragments.pix_to_face.shape
    if batch != verts.shape[0]:
        raise ValueError(
            f"fragments have batch {batch} but verts has shape {tuple(verts.shape)}"
        )
    b_idx, i_idx, j_idx = (fragments.pix_to_face >= 0).nonzero(as_tuple=True)  # (M,) each
    corner = faces.long()[fragments.pix_to_face[b_idx, i_idx, j_idx]]  # (M, 3)
    uv = project_points(verts, K.to(verts.dtype))  # (B, V, 2)
    tri = uv[b_idx[:, None], corner]  # (M, 3, 2)
    z = verts[..., 2][b_idx[:, None], corner]  # (M, 3)
    bary = screen_barycentrics(tri, j_idx.to(verts.dtype), i_idx.to(verts.dtype))  # (M, 3)
    depth = 1.0 / (bary / z).sum(dim=1)  # (M,) plane depth, perspective-correct
    out = torch.full((batch, height, width), background, dtype=verts.dtype, device=verts.device)
    return out.index_put((b_idx, i_idx, j_idx), depth)


def smooth_l1_depth_loss(
    depth: Tensor, target: Tensor, mask: Tensor | None = None, beta: float = 0.01
) -> Tensor:
    """Mean smooth-L1 (Huber) difference of two depth maps over the valid pixels.

    Args:
        depth: (B, H, W) rendered depth, metres.
        target: (B, H, W) measured depth, metres (0 or non-finite where unknown).
        mask: optional (B, H, W) bool of pixels to compare; always intersected with
            ``target > 0`` and finite values of both maps.
        beta: metres where the loss turns from quadratic to linear.

    Returns:
        Scalar loss in metres (0 when no pixel is valid).
    """
    if depth.shape != target.shape:
        raise ValueError(f"depth {tuple(depth.shape)} and target {tuple(target.shape)} differ")
    valid = torch.isfinite(target) & (target > 0) & torch.isfinite(depth)
    if mask is not None:
        if mask.shape != depth.shape:
            raise ValueError(f"mask {tuple(mask.shape)} must match depth {tuple(depth.shape)}")
        valid &= mask
    if not bool(valid.any()):
        return depth.new_zeros(())
    return torch.nn.functional.smooth_l1_loss(depth[valid], target[valid], beta=beta)


def sample_mesh_depth(
    verts: np.ndarray, faces: np.ndarray, K: np.ndarray, image_size: tuple[int, int], max_side: int = 96
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The z-buffer depth of one mesh at a grid of image pixels around its projection.

    The grid covers the mesh's projected bounding box (clipped to the image) with every
    ``step``-th pixel, ``step`` chosen so that neither side exceeds ``max_side`` samples:
    sample ``(i, j)`` is image pixel ``(ys[i], xs[j])`` exactly (pixel centres at integers).

    Args:
        verts: (V, 3) camera frame, metres. faces: (F, 3) int. K: (3, 3) pixels.
        image_size: (width, height) of the image. max_side: most samples per side.

    Returns:
        ``(depth (h, w) float32 metres, 0 where the mesh does not cover; ys (h,), xs (w,) int)``;
        empty arrays when the mesh projects outside the image or lies behind the camera.
    """
    v = np.asarray(verts, dtype=np.float64)
    Kd = np.asarray(K, dtype=np.float64)
    width, height = image_size
    empty = (np.zeros((0, 0), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64))
    if (v[:, 2] <= 1e-6).any():
        return empty
    uv = v[:, :2] / v[:, 2:] * Kd[[0, 1], [0, 1]] + Kd[[0, 1], [2, 2]]
    x0, y0 = max(int(np.floor(uv[:, 0].min())), 0), max(int(np.floor(uv[:, 1].min())), 0)
    x1, y1 = min(int(np.ceil(uv[:, 0].max())), width - 1), min(int(np.ceil(uv[:, 1].max())), height - 1)
    if x1 < x0 or y1 < y0:
        return empty
    step = max(1, -(-max(x1 - x0 + 1, y1 - y0 + 1) // max_side))
    xs, ys = np.arange(x0, x1 + 1, step), np.arange(y0, y1 + 1, step)
    A = np.array([[1.0 / step, 0.0, -x0 / step], [0.0, 1.0 / step, -y0 / step], [0.0, 0.0, 1.0]])
    Kc = torch.as_tensor((A @ Kd)[None], dtype=torch.float32)
    frags = rasterize(torch.as_tensor(v[None], dtype=torch.float32), torch.as_tensor(np.asarray(faces)).long(), Kc,
                      RasterSettings(image_size=(len(ys), len(xs))))
    return render_depth(frags)[0].numpy().astype(np.float32), ys, xs


@dataclass(frozen=True)
class DepthComparison:
    """A mesh's rendered depth against a measured depth map, over the pixels both cover.

    Attributes:
        pixels: pixels compared (rendered, measured and, when given, in the mask).
        offset_m: median of ``measured - rendered``, metres (> 0: the mesh is too near).
        abs_error_m: median of ``|measured - rendered|``, metres.
        rendered_m: median rendered depth over those pixels, metres.
    """

    pixels: int
    offset_m: float
    abs_error_m: float
    rendered_m: float


def compare_mesh_depth(
    verts: np.ndarray, faces: np.ndarray, K: np.ndarray, depth: np.ndarray,
    mask: np.ndarray | None = None, max_side: int = 96,
) -> DepthComparison | None:
    """How far a mesh's visible surface lies from a depth map (e.g. a sensor's, registered to
    the image): rendered with :func:`sample_mesh_depth`, compared at the sampled pixels where
    the mesh covers, the map has depth (> 0) and ``mask`` (the hand's segmentation) is set.

    Args:
        verts: (V, 3) camera frame, metres. faces: (F, 3). K: (3, 3) pixels.
        depth: (H, W) metres, 0 unknown. mask: (H, W) bool or [0, 1] float, or None.

    Returns:
        The medians, or None when no pixel can be compared.
    """
    d = np.asarray(depth, dtype=np.float32)
    h, w = d.shape
    rendered, ys, xs = sample_mesh_depth(verts, faces, K, (w, h), max_side)
    if rendered.size == 0:
        return None
    measured = d[ys[:, None], xs[None, :]]
    ok = (rendered > 0) & (measured > 0) & np.isfinite(measured)
    if mask is not None:
        ok &= np.asarray(mask)[ys[:, None], xs[None, :]] > 0.5
    if not ok.any():
        return None
    diff = (measured - rendered)[ok].astype(np.float64)
    return DepthComparison(int(ok.sum()), float(np.median(diff)), float(np.median(np.abs(diff))),
                           float(np.median(rendered[ok])))
