"""Soft silhouette rasterizer (SoftRas, Liu et al. 2019), fast and dense reference versions.

The model, per pixel p and face f (all distances in pixels of the rendered image):

* ``d2(p, f)``: squared distance from the pixel centre to the face's edges (projected face),
* ``D(p, f) = sigmoid(s * d2 / sigma)`` with ``s = +1`` inside the face, ``-1`` outside,
* ``silhouette(p) = 1 - prod_f (1 - D(p, f))``, computed as ``1 - exp(sum_f log(1 - D))``.

Two implementations share this model:

* :func:`rasterize_silhouette_dense` pairs every face with every pixel using plain autograd.
  It is the slow oracle for tests (and the baseline of the benchmark).
* :func:`rasterize_silhouette` pairs each face only with the pixels within the cull radius of
  its bounding box (:func:`core.render.cull_radius_px`), optionally skips the saturated
  interior of the silhouette (``SoftRasterSettings.saturate_interior``), and evaluates the
  pairs in one custom autograd Function whose backward is written by hand, see
  :class:`_SoftSilhouetteFunction`. Same code on CPU and CUDA.

Gradients flow to the vertices (and to K) through the projection; the inside/outside sign is
piecewise constant and the distance is continuous across the edge, so the result is
differentiable almost everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from core.render._pairs import box_pairs, pixel_boxes
from core.render._span_kernels import Backend, run_span_backward, run_span_forward
from core.render.projection import check_mesh_inputs, project_points
from core.render.settings import SoftRasterSettings

__all__ = [
    "rasterize_silhouette",
    "rasterize_silhouette_dense",
    "signed_dist_sq",
    "softras_log_background",
    "softras_blend",
]


# --------------------------------------------------------------------------------------------
# Pure functions: the SoftRas model (used as written by the dense reference)
# --------------------------------------------------------------------------------------------


def signed_dist_sq(points: Tensor, tri: Tensor) -> Tensor:
    """Signed squared distance from points to triangles: ``+d2`` inside, ``-d2`` outside.

    Args:
        points: (P, 2) pixel coordinates.
        tri: (..., 3, 2) triangle corners, pixels (either winding).

    Returns:
        (..., P) signed squared distances, px^2, to the nearest point on the triangle's
        boundary. Differentiable in ``points`` and ``tri`` (plain autograd).
    """
    p = points  # (P, 2)
    a = tri[..., :, None, :]  # (..., 3, 1, 2) edge k starts at corner k
    b = tri.roll(-1, dims=-2)[..., :, None, :]  # ... and ends at corner k + 1
    ab = b - a
    ap = p - a  # (..., 3, P, 2)
    t = ((ap * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0.0, 1.0)
    d2 = ((ap - t[..., None] * ab) ** 2).sum(-1).amin(dim=-2)  # (..., P)
    cross = ab[..., 0] * ap[..., 1] - ab[..., 1] * ap[..., 0]  # (..., 3, P)
    inside = (cross >= 0).all(dim=-2) | (cross <= 0).all(dim=-2)
    return torch.where(inside, d2, -d2)


def softras_log_background(signed_d2: Tensor, sigma: float) -> Tensor:
    """``log(1 - D)`` for SoftRas probabilities ``D = sigmoid(signed_d2 / sigma)``, stably.

    Args:
        signed_d2: signed squared distances, px^2 (any shape).
        sigma: sharpness, px^2.
    """
    return nnf.logsigmoid(-signed_d2 / sigma)


def softras_blend(log_background_sum: Tensor) -> Tensor:
    """Silhouette ``1 - prod_f (1 - D_f)`` from ``sum_f log(1 - D_f)`` (the SoftRas blend)."""
    return -torch.expm1(log_background_sum)


# --------------------------------------------------------------------------------------------
# Dense reference
# --------------------------------------------------------------------------------------------


def rasterize_silhouette_dense(
    verts: Tensor,
    faces: Tensor,
    K: Tensor,
    settings: SoftRasterSettings = SoftRasterSettings(),
    faces_per_chunk: int = 64,
) -> Tensor:
    """Reference soft silhouette: every face against every pixel, plain autograd.

    Slow (F x H x W pairs) but obviously correct; ``settings.eps`` and
    ``settings.saturate_interior`` are ignored (nothing is culled). Faces are processed in
    chunks under activation checkpointing so memory stays at one chunk.

    Args:
        verts: (B, V, 3) float, metres, camera frame.
        faces: (F, 3) int64.
        K: (B, 3, 3) intrinsics, pixels.
        settings: image size, sigma, z_near.
        faces_per_chunk: faces per chunk (memory ~ faces_per_chunk x H x W x 100 bytes).

    Returns:
        (B, H, W) silhouette in [0, 1], dtype of ``verts``.
    """
    check_mesh_inputs(verts, faces, K)
    height, width = settings.image_size
    faces = faces.long()
    tri = project_points(verts, K.to(verts.dtype))[:, faces]  # (B, F, 3, 2)
    valid = (verts.detach()[..., 2][:, faces] > settings.z_near).all(dim=-1)  # (B, F)
    ys, xs = torch.meshgrid(
        torch.arange(height, device=verts.device, dtype=verts.dtype),
        torch.arange(width, device=verts.device, dtype=verts.dtype),
        indexing="ij",
    )
    points = torch.stack((xs.reshape(-1), ys.reshape(-1)), dim=-1)  # (HW, 2)

    def chunk_log_background(tri_chunk: Tensor, valid_chunk: Tensor) -> Tensor:
        log_bg = softras_log_background(signed_dist_sq(points, tri_chunk), settings.sigma)
        return torch.where(valid_chunk[..., None], log_bg, 0.0).sum(dim=1)  # (B, HW)

    total = verts.new_zeros((verts.shape[0], height * width))
    for start in range(0, faces.shape[0], faces_per_chunk):
        stop = start + faces_per_chunk
        if torch.is_grad_enabled() and tri.requires_grad:
            part = checkpoint(
                chunk_log_background, tri[:, start:stop], valid[:, start:stop],
                use_reentrant=False,
            )
        else:
            part = chunk_log_background(tri[:, start:stop], valid[:, start:stop])
        total = total + part
    return softras_blend(total).view(-1, height, width)


# --------------------------------------------------------------------------------------------
# Fast version: spans + a hand-written backward
# --------------------------------------------------------------------------------------------
#
# Every face is paired with the pixel centres of its bounding box grown by the cull radius.
# Those pixels are cut into *spans*, runs of ``span_width`` consecutive pixels on one row: a
# face of box width w and height h gets h * ceil(w / span_width) spans. Per-span values then
# broadcast along the outermost dimension of (span_width, [3 edges,] S) tensors, so there is no
# gather per pixel, and the whole per-pixel computation is two element-wise kernels
# (:mod:`core.render._span_kernels`), fused by torch.compile where a compiler exists.


@dataclass(frozen=True)
class Spans:
    """The face-pixel pairs of the fast rasterizer, as spans of ``width`` pixels on a row.

    Attributes:
        face: (S,) int64 flattened face index ``b * F + f``.
        x, y: (S,) float column of the span's first pixel, and its row.
        base: (S,) int64 index of the span's first pixel in the flat canvas: rows ``b * H + y``
            of ``W + width - 1`` columns (the padding catches spans running past the right
            edge).
        width: pixels per span.
    """

    face: Tensor
    x: Tensor
    y: Tensor
    base: Tensor
    width: int

    @property
    def num_pairs(self) -> int:
        """Number of face-pixel pairs evaluated (including the padding of the last span)."""
        return self.face.numel() * self.width


def choose_span_width(box_width: Tensor, box_height: Tensor, max_width: int) -> int:
    """Span width (pixels) that minimizes the work for the given face boxes.

    The cost model counts every computed pixel plus an overhead of 3 pixels per span.

    Args:
        box_width, box_height: (M,) int64 box sizes in pixels of the faces to render (> 0).
        max_width: the image width (an upper bound).
    """
    candidates = torch.arange(2, min(16, max(max_width, 2)) + 1, device=box_width.device)
    w = box_width.to(torch.float32)[:, None]
    per_row = torch.ceil(w / candidates.to(torch.float32))
    cost = (box_height.to(torch.float32)[:, None] * per_row).sum(0) * (candidates + 3)
    return int(candidates[int(torch.argmin(cost))])


def make_spans(
    tri: Tensor, valid: Tensor, radius: float, batch: int, faces_per_batch: int,
    height: int, width: int,
) -> Spans:
    """Cut every valid face's box, grown by ``radius`` and clipped to the image, into spans.

    Args:
        tri: (BF, 3, 2) projected corners, pixels (detached).
        valid: (BF,) bool, faces to render.
        radius: growth of the boxes, pixels (the cull radius).
        batch, faces_per_batch: B and F.
        height, width: image size.
    """
    boxes = pixel_boxes(tri, radius, height, width)
    box_w = boxes.x1 - boxes.x0 + 1
    box_h = boxes.y1 - boxes.y0 + 1
    faces = (valid & (box_w > 0) & (box_h > 0)).nonzero().squeeze(1)  # (M,)
    box_w, box_h = box_w[faces], box_h[faces]
    span_width = choose_span_width(box_w, box_h, width) if faces.numel() else 1
    per_row = torch.div(box_w + span_width - 1, span_width, rounding_mode="floor")
    counts = box_h * per_row
    total = int(counts.sum())
    device = tri.device
    canvas_width = width + span_width - 1
    image = torch.div(faces, faces_per_batch, rounding_mode="floor")
    first = torch.cumsum(counts, 0) - counts  # (M,) first span of each face
    # Per face: face, x0, row base (b * H + y0), first span; repeated to its spans at once.
    per_face = torch.stack((faces, boxes.x0[faces], image * height + boxes.y0[faces], first), 1)
    face, x0, row0, first = torch.repeat_interleave(
        per_face, counts, dim=0, output_size=total
    ).unbind(1)
    local = torch.arange(total, device=device) - first  # span number within its face
    if faces.numel() == 0 or int(per_row.max()) <= 1:
        row, col = row0 + local, x0
    else:
        row_per = torch.repeat_interleave(per_row, counts, output_size=total)
        row_in_box = torch.div(local, row_per, rounding_mode="floor")
        row, col = row0 + row_in_box, x0 + (local - row_in_box * row_per) * span_width
    y = torch.remainder(row, height)
    return Spans(
        face=face, x=col.to(tri.dtype), y=y.to(tri.dtype), base=row * canvas_width + col,
        width=span_width,
    )


def _edge_table(tri: Tensor) -> tuple[Tensor, Tensor]:
    """Per-edge data of each face, differentiable in ``tri``.

    Args:
        tri: (BF, 3, 2) projected corners, pixels.

    Returns:
        edges (5, 3, BF): unit direction x, unit direction y, start x, start y, length (px) of
        edge k (corner k to k + 1); a zero-length edge gets direction (1, 0), which makes its
        distance the distance to its corner. orient (BF,) float +1 or -1 such that the face's
        inside is where every oriented edge function is >= 0.
    """
    edge = tri.roll(-1, dims=1) - tri  # (BF, 3, 2)
    len2 = (edge * edge).sum(-1)  # (BF, 3)
    ok = len2 > 1e-20
    length = torch.sqrt(torch.where(ok, len2, 1.0))
    ux = torch.where(ok, edge[..., 0] / length, 1.0)
    uy = torch.where(ok, edge[..., 1] / length, 0.0)
    length = torch.where(ok, length, 0.0)
    edges = torch.stack((ux, uy, tri[..., 0], tri[..., 1], length)).transpose(1, 2)
    with torch.no_grad():
        # Twice the signed area: edge 0 cross (corner 2 - corner 0) = e0 x (-e2).
        area2 = edge[:, 2, 0] * edge[:, 0, 1] - edge[:, 2, 1] * edge[:, 0, 0]
        orient = torch.where(area2 >= 0, 1.0, -1.0).to(tri.dtype)
    return edges.contiguous(), orient


class _SoftSilhouetteFunction(torch.autograd.Function):
    """SoftRas silhouette over spans of face-pixel pairs, with a hand-written backward.

    Forward: per pair ``q = 1 - D`` (:func:`span_forward`); per pixel ``sil = 1 - prod q``, a
    scatter product (a product that underflows to 0 simply gives 1).

    Backward, with ``G = dL/dsil``: ``dL/dx = G (1 - sil) D`` for each pair (exact: the
    derivative of ``1 - prod q`` in ``q_f`` is the product of the other factors, and
    ``dq/dx = -q D``), then through the nearest edge's squared distance to the face's edge
    table (:func:`span_backward`), summed over the spans of each face.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        edges: Tensor,
        orient: Tensor,
        spans: Spans,
        sigma: float,
        out_shape: tuple[int, int, int],
        backend: Backend,
    ) -> Tensor:
        batch, height, width = out_shape
        q = run_span_forward(backend, edges, orient, spans.face, spans.x, spans.y,
                             spans.width, 1.0 / sigma)  # (Sw, S)
        canvas_width = width + spans.width - 1
        index = spans.base + torch.arange(spans.width, device=q.device).view(-1, 1)
        prod = torch.ones(batch * height * canvas_width, dtype=q.dtype, device=q.device)
        prod.scatter_reduce_(0, index.view(-1), q.view(-1), reduce="prod")
        prod = prod.view(batch, height, canvas_width)[..., :width]
        ctx.save_for_backward(edges, orient, prod)
        ctx.spans, ctx.sigma, ctx.backend = spans, sigma, backend
        return 1.0 - prod

    @staticmethod
    def backward(ctx: Any, grad_sil: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        nones = (None,) * 5
        if not ctx.needs_input_grad[0]:
            return (None, *nones)
        edges, orient, prod = ctx.saved_tensors
        spans: Spans = ctx.spans
        weight = nnf.pad(grad_sil * prod, (0, spans.width - 1)).reshape(-1)
        grad_span = run_span_backward(
            ctx.backend, edges, orient, spans.face, spans.x, spans.y, spans.base, weight,
            spans.width, 1.0 / ctx.sigma,
        )  # (15, S)
        grad_edges = torch.zeros(15, edges.shape[-1], dtype=edges.dtype, device=edges.device)
        grad_edges.index_add_(1, spans.face, grad_span)
        return (grad_edges.view_as(edges), *nones)


def _interior_mask(
    tri: Tensor, valid: Tensor, radius: int, batch: int, height: int, width: int,
    faces_per_batch: int,
) -> Tensor:
    """Pixels whose (2r+1)^2 neighbourhood lies inside the hard silhouette.

    Args:
        tri: (BF, 3, 2) projected faces, pixels (detached).
        valid: (BF,) bool, faces in front of the near plane.
        radius: r, pixels; pixels outside the image count as uncovered.

    Returns:
        (B, H, W) bool.
    """
    boxes = pixel_boxes(tri, 0.0, height, width)
    pairs = box_pairs(boxes, height, width, faces_per_batch, tri.dtype,
                      valid.nonzero().squeeze(1))
    dx = tri[pairs.face, :, 0] - pairs.x[:, None]  # (N, 3) corners minus pixel
    dy = tri[pairs.face, :, 1] - pairs.y[:, None]
    cross = dx * dy.roll(-1, dims=1) - dy * dx.roll(-1, dims=1)  # (N, 3)
    inside = (cross.amin(dim=1) >= 0) | (cross.amax(dim=1) <= 0)
    uncovered = torch.ones(batch * height * width, dtype=tri.dtype, device=tri.device)
    uncovered[pairs.pix[inside]] = 0.0
    uncovered = nnf.pad(uncovered.view(batch, 1, height, width), (radius,) * 4, value=1.0)
    near_uncovered = nnf.max_pool2d(uncovered, 2 * radius + 1, stride=1)
    return (near_uncovered == 0).view(batch, height, width)


def rasterize_silhouette(
    verts: Tensor, faces: Tensor, K: Tensor, settings: SoftRasterSettings = SoftRasterSettings()
) -> Tensor:
    """Soft silhouette of a batch of meshes (fast: culled spans + hand-written backward).

    Args:
        verts: (B, V, 3) float, metres, camera frame (OpenCV: x right, y down, z forward).
        faces: (F, 3) int64 vertex indices shared by the batch.
        K: (B, 3, 3) intrinsics, pixels.
        settings: image size, sigma (px^2), eps (cull), interior saturation, near plane.

    Returns:
        (B, H, W) silhouette in [0, 1], dtype of ``verts``, differentiable in ``verts`` and
        ``K``. Agrees with :func:`rasterize_silhouette_dense` up to about ``eps`` per nearby
        face (and, with ``saturate_interior``, except deep inside the silhouette where it is
        exactly 1).
    """
    check_mesh_inputs(verts, faces, K)
    height, width = settings.image_size
    batch, num_faces = verts.shape[0], faces.shape[0]
    faces = faces.long()
    tri = project_points(verts, K.to(verts.dtype))[:, faces].reshape(-1, 3, 2)  # (BF, 3, 2)
    with torch.no_grad():
        tri_d = tri.detach()
        valid = (verts.detach()[..., 2][:, faces] > settings.z_near).all(dim=-1).reshape(-1)
        spans = make_spans(tri_d, valid, settings.cull_radius, batch, num_faces, height, width)
    edges, orient = _edge_table(tri)
    sil = _SoftSilhouetteFunction.apply(
        edges, orient, spans, settings.sigma, (batch, height, width), settings.backend
    )
    if settings.saturate_interior:
        with torch.no_grad():
            interior = _interior_mask(tri_d, valid, math.ceil(settings.cull_radius), batch,
                                      height, width, num_faces)
        sil = sil.masked_fill(interior, 1.0)
    return sil
