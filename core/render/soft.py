"""Soft silhouette rasterizer (SoftRas, Liu et al. 2019), fast and dense reference versions.

The model, per pixel p and face f (all distances in pixels of the rendered image):

* ``d2(p, f)``: squared distance from the pixel centre to the face's edges (projected face),
* ``D(p, f) = sigmoid(s * d2 / sigma)`` with ``s = +1`` inside the face, ``-1`` outside,
* ``silhouette(p) = 1 - prod_f (1 - D(p, f))``, computed as ``1 - exp(sum_f log(1 - D))``.

Two implementations share this model:

* :func:`rasterize_silhouette_dense` pairs every face with every pixel using plain autograd.
  It is the slow oracle for tests (and the baseline of the benchmark).
* :func:`rasterize_silhouette` pairs each face only with the pixels within the cull radius
  (:func:`core.render.cull_radius_px`) and evaluates them in a custom autograd Function whose
  backward is written by hand. ``SoftRasterSettings.backend`` picks its per-pixel math:
  C kernels that visit each face's pixels once, 8 at a time in registers, on the CPU
  (:class:`_NativeSilhouetteFunction`, :mod:`core.render._native`; the default where a C
  compiler works), or PyTorch ops on row *spans* of each face's grown bounding box on any
  device (:class:`_SoftSilhouetteFunction`, :mod:`core.render._span_kernels`, optionally
  fused by torch.compile). With ``SoftRasterSettings.saturate_interior`` it also sets the
  silhouette's interior to exactly 1.

Note on the interior: with triangles of a few pixels (a 3,200-face hand in a 128 x 128 crop)
and sigma ~ 0.5 px^2, pure SoftRas is *not* 1 inside the silhouette: pixels near the internal
edges of the mesh are within sigma of several faces without being deep inside any, which
leaves dips (measured on the synthetic hand: interior mean 0.983, minimum 0.94). The dense
reference and the default fast path both keep them; ``saturate_interior`` removes them.

Gradients flow to the vertices (and to K) through the projection; the inside/outside sign is
piecewise constant and the squared distance is continuous with zero gradient across the edge,
so the result is differentiable almost everywhere (not across the medial axis of a face, where
the nearest edge switches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from core.render import _native
from core.render._pairs import box_pairs, pixel_boxes
from core.render._span_kernels import (
    Backend,
    edge_table,
    edge_table_backward,
    run_kernel,
)
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
# broadcast along the outer dimension of (span_width, S) tensors, so there is no gather per
# pixel, and the per-pixel computation is three element-wise kernels (forward, backward
# weights, backward sums in :mod:`core.render._span_kernels`), fused by torch.compile where
# the ``compiled`` backend is chosen.


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

    The cost model counts every computed pixel plus an overhead of 3 pixels per span (the
    per-span gathers and scatters).

    Args:
        box_width, box_height: (M,) integer box sizes in pixels of the faces to render (> 0).
        max_width: the image width (an upper bound).
    """
    # Work per box width: sum of the heights of the faces with that width.
    rows_by_width = torch.bincount(box_width, weights=box_height.to(torch.float32))
    widths = torch.arange(rows_by_width.shape[0], device=box_width.device, dtype=torch.float32)
    candidates = torch.arange(2, min(16, max(max_width, 2)) + 1, device=box_width.device,
                              dtype=torch.float32)
    spans = torch.ceil(widths[:, None] / candidates)  # (widths, candidates)
    cost = (rows_by_width[:, None] * spans).sum(0) * (candidates + 3)
    return int(candidates[int(torch.argmin(cost))])


def make_spans(
    tri: Tensor, valid: Tensor, radius: float, batch: int, faces_per_batch: int,
    height: int, width: int,
) -> Spans:
    """Cut every valid face's box, grown by ``radius`` and clipped to the image, into spans.

    Spans come grouped by face, in face order.

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
    per_row = torch.div(box_w + (span_width - 1), span_width, rounding_mode="floor")
    counts = box_h * per_row  # spans per face
    total = int(counts.sum())
    image = torch.div(faces, faces_per_batch, rounding_mode="floor")
    first = torch.cumsum(counts, 0) - counts  # index of each face's first span
    # Everything per face at once, then repeated to each of its spans.
    per_face = torch.stack((faces, boxes.x0[faces], boxes.y0[faces], image * height, first), 1)
    face, x0, y0, row0, first = torch.repeat_interleave(
        per_face, counts, dim=0, output_size=total
    ).unbind(1)
    local = torch.arange(total, device=tri.device) - first  # span number within its face
    if faces.numel() and int(per_row.max()) > 1:  # some faces need several spans per row
        spans_per_row = torch.repeat_interleave(per_row, counts, output_size=total)
        row_in_box = torch.div(local, spans_per_row, rounding_mode="floor")
        x0 = x0 + (local - row_in_box * spans_per_row) * span_width
        local = row_in_box
    y = y0 + local
    base = (row0 + y) * (width + span_width - 1) + x0
    return Spans(face=face, x=x0.to(tri.dtype), y=y.to(tri.dtype), base=base, width=span_width)


class _SoftSilhouetteFunction(torch.autograd.Function):
    """SoftRas silhouette of projected meshes, with a hand-written backward.

    Forward: per face the edge table (:func:`~core.render._span_kernels.edge_table`); per
    face-pixel pair ``q = 1 - D`` (:func:`~core.render._span_kernels.span_forward`); per pixel
    ``sil = 1 - prod q``, a scatter product (a product that underflows to 0 gives 1).

    Backward, with ``G = dL/dsil``: ``dL/dx = G (1 - sil) D`` for each pair (exact: the
    derivative of ``1 - prod q`` in ``q_f`` is the product of the other factors, and
    ``dq/dx = -q D``); through the nearest edge's squared distance to the span's copy of the
    edge table (:func:`~core.render._span_kernels.span_backward`); summed per face; then to
    the corners (:func:`~core.render._span_kernels.edge_table_backward`) and the vertices.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        uv: Tensor,
        faces: Tensor,
        spans: Spans,
        sigma: float,
        out_shape: tuple[int, int, int],
        backend: Backend,
    ) -> Tensor:
        batch, height, width = out_shape
        tri = uv.index_select(1, faces.view(-1)).view(-1, 3, 2)  # (BF, 3, 2)
        edges, orient, ok = edge_table(tri)  # (15, BF), (BF,), (3, BF)
        g = edges.index_select(1, spans.face).view(5, 3, -1)  # (5, 3, S) per span
        o = orient.index_select(0, spans.face)  # (S,)
        q = run_kernel("forward", backend, g, o, spans.x, spans.y, spans.width, 1.0 / sigma)
        canvas_width = width + spans.width - 1
        index = spans.base + torch.arange(spans.width, device=q.device).view(-1, 1)
        prod = torch.ones(batch * height * canvas_width, dtype=q.dtype, device=q.device)
        prod.scatter_reduce_(0, index.view(-1), q.view(-1), reduce="prod")
        prod = prod.view(batch, height, canvas_width)[..., :width]
        ctx.save_for_backward(faces, edges, ok, g, o, index, prod)
        ctx.spans, ctx.sigma, ctx.backend, ctx.num_verts = spans, sigma, backend, uv.shape[1]
        return 1.0 - prod

    @staticmethod
    def backward(ctx: Any, grad_sil: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        nones = (None,) * 5
        if not ctx.needs_input_grad[0]:
            return (None, *nones)
        faces, edges, ok, g, o, index, prod = ctx.saved_tensors
        spans: Spans = ctx.spans
        weight = nnf.pad(grad_sil * prod, (0, spans.width - 1)).reshape(-1)
        w_pix = weight.index_select(0, index.view(-1)).view(index.shape)  # (Sw, S)
        weights = run_kernel("backward_weights", ctx.backend, g, o, spans.x, spans.y, w_pix,
                             spans.width, 1.0 / ctx.sigma)  # (3, Sw, S)
        grad_span = run_kernel("backward_sums", ctx.backend, g, o, spans.x, spans.y, weights,
                               spans.width)  # (15, S)
        grad_edges = torch.zeros_like(edges).index_add_(1, spans.face, grad_span)
        grad_tri = edge_table_backward(grad_edges, edges, ok)  # (BF, 3, 2)
        batch = prod.shape[0]
        num_verts = ctx.num_verts
        vertex = (faces[None] + num_verts * torch.arange(batch, device=faces.device)[:, None, None])
        grad_uv = torch.zeros(batch * num_verts, 2, dtype=grad_tri.dtype, device=grad_tri.device)
        grad_uv.index_add_(0, vertex.reshape(-1), grad_tri.reshape(-1, 2))
        return (grad_uv.view(batch, num_verts, 2), *nones)


class _NativeSilhouetteFunction(torch.autograd.Function):
    """The same silhouette as :class:`_SoftSilhouetteFunction`, by the C kernels of
    :mod:`core.render._native` (float32/float64 CPU tensors).

    Forward: one pass over each face's pixels (its box grown by the cull radius, narrowed per
    row) forming ``prod`` and the hard coverage; with ``saturate_interior`` the interior is
    then set to 1. Backward: a second pass recomputing each pair, summing ``dL/d(corners)``
    per face and adding them to the face's vertices. Both share the work among
    ``torch.get_num_threads()`` threads; results do not depend on the number of threads.
    Faces behind the near plane or with non-finite corners are dropped inside the kernels.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        uv: Tensor,
        verts: Tensor,
        faces: Tensor,
        settings: SoftRasterSettings,
    ) -> Tensor:
        height, width = settings.image_size
        uv_c, verts_c = uv.detach().contiguous(), verts.detach().contiguous()
        r2 = settings.cull_radius ** 2
        prod, cover, workspace = _native.forward(
            uv_c, verts_c, faces, height, width, settings.z_near, settings.sigma, r2,
            torch.get_num_threads())
        if settings.saturate_interior:
            interior = _native.interior(cover, math.ceil(settings.cull_radius))
            prod.masked_fill_(interior.view(torch.bool), 0.0)  # silhouette 1, no gradient
        ctx.save_for_backward(uv_c, verts_c, faces, prod, workspace)
        ctx.settings, ctx.r2 = settings, r2
        return 1.0 - prod[..., :width]

    @staticmethod
    def backward(ctx: Any, grad_sil: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        nones = (None,) * 3
        if not ctx.needs_input_grad[0]:
            return (None, *nones)
        uv, verts, faces, prod, workspace = ctx.saved_tensors
        settings: SoftRasterSettings = ctx.settings
        height, width = settings.image_size
        weight = torch.zeros_like(prod)  # zero in the padding columns and the interior
        torch.mul(grad_sil, prod[..., :width], out=weight[..., :width])
        grad_uv = _native.backward(uv, verts, faces, height, width, settings.z_near,
                                   settings.sigma, ctx.r2, weight, torch.get_num_threads(),
                                   workspace)
        return (grad_uv, *nones)


def _use_native(backend: str, uv: Tensor) -> bool:
    """Whether this call runs the C kernels (see ``SoftRasterSettings.backend``)."""
    if backend in ("eager", "compiled"):
        return False
    supported = _native.native_supported(uv)
    if backend == "native":
        if not supported:
            raise ValueError("backend='native' needs float32 or float64 CPU tensors, got "
                             f"{uv.dtype} on {uv.device}")
        if _native.library() is None:
            raise _native.NativeUnavailableError(_native.build_error() or "not built")
        return True
    return supported and _native.library() is not None


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
    """Soft silhouette of a batch of meshes (fast: culled pairs + hand-written backward).

    Args:
        verts: (B, V, 3) float, metres, camera frame (OpenCV: x right, y down, z forward).
        faces: (F, 3) int64 vertex indices shared by the batch.
        K: (B, 3, 3) intrinsics, pixels.
        settings: image size, sigma (px^2), eps (cull), interior saturation, near plane,
            backend (``"auto"``: the C kernels for float32/float64 CPU tensors where they
            build, else PyTorch ops).

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
    K = K.to(verts.dtype)
    uv = project_points(verts, K)  # (B, V, 2) pixels, autograd
    if _use_native(settings.backend, uv):
        return _NativeSilhouetteFunction.apply(uv, verts, faces.contiguous(), settings)
    with torch.no_grad():
        # index_select, not uv[:, faces]: advanced indexing is ~3x slower on the CPU
        flat = faces.reshape(-1)
        tri_px = uv.detach().index_select(1, flat).view(-1, 3, 2)  # (BF, 3, 2)
        z = verts.detach()[..., 2].index_select(1, flat).view(batch, num_faces, 3)
        valid = (z > settings.z_near).all(dim=-1).view(-1)
        spans = make_spans(tri_px, valid, settings.cull_radius, batch, num_faces, height, width)
    sil = _SoftSilhouetteFunction.apply(
        uv, faces, spans, settings.sigma, (batch, height, width),
        "compiled" if settings.backend == "compiled" else "eager",  # "auto" falls back to eager
    )
    if settings.saturate_interior:
        with torch.no_grad():
            interior = _interior_mask(tri_px, valid, math.ceil(settings.cull_radius), batch,
                                      height, width, num_faces)
        sil = sil.masked_fill(interior, 1.0)
    return sil
