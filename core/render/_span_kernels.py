"""Per-pixel math of the fast soft rasterizer, as pure functions that may be compiled.

The fast rasterizer (:mod:`core.render.soft`) cuts the pixels near each face into *spans*:
``span_width`` consecutive pixels on one row. The functions here do the per-face and per-pixel
work for all spans at once:

* :func:`edge_table` / :func:`edge_table_backward`: per-face edge data and its chain rule;
* :func:`span_forward`: ``q = 1 - D`` for every (span pixel, face) pair;
* :func:`span_backward_weights` and :func:`span_backward_sums`: the gradient with respect to
  each span's copy of its face's edge table, recomputing the forward quantities instead of
  storing them.

They are plain element-wise PyTorch on (Sw, S) tensors, one triangle edge at a time, so the
same code runs eagerly on CPU or CUDA, and :func:`run_kernel` can run versions fused by
``torch.compile`` (one loop per kernel, no intermediate tensors) where a compiler works.

Notation: edge k of a face starts at ``(ax, ay)``, has unit direction ``(ux, uy)`` and length
``length`` (pixels); ``o = +-1`` orients the face so its inside is where all ``l_k >= 0``.
Pixel ``j`` of a span starting at column ``x0`` on row ``y`` is at ``p = (x0 + j, y)``, and

    l_k   = o * (u_k x (p - a_k)) = lam_k * j + mu_k      (signed distance to the edge line)
    tau_k = u_k . (p - a_k)       = ux_k * j + mu2_k      (position along the edge)
    d2_k  = l_k^2 + relu(tau_k - length_k)^2 + relu(-tau_k)^2   (squared distance to the edge)
    d2 = min_k d2_k,  x = +d2 / sigma inside (min_k l_k >= 0), -d2 / sigma outside
    q = 1 - D = sigmoid(-x)
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Literal

import torch
from torch import Tensor

log = logging.getLogger(__name__)

Backend = Literal["auto", "eager", "compiled"]


def edge_table(tri: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-edge data of each face (no autograd; see :func:`edge_table_backward`).

    Args:
        tri: (BF, 3, 2) projected corners, pixels.

    Returns:
        edges (15, BF): rows (ux, uy, ax, ay, length) x 3 edges: unit direction, start corner
        and length (px) of edge k (corner k to k + 1). A zero-length edge gets direction
        (1, 0), which makes its distance the distance to its corner.
        orient (BF,) +1 or -1 such that the face's inside is where every oriented edge
        function is >= 0.
        ok (3, BF) bool, edges of non-zero length.
    """
    corner = tri.permute(1, 2, 0)  # (3 corners, 2, BF)
    edge = corner.roll(-1, dims=0) - corner  # (3 edges, 2, BF)
    len2 = edge[:, 0] * edge[:, 0] + edge[:, 1] * edge[:, 1]  # (3, BF)
    ok = len2 > 1e-20
    length = torch.sqrt(torch.where(ok, len2, 1.0))
    ux = torch.where(ok, edge[:, 0] / length, 1.0)
    uy = torch.where(ok, edge[:, 1] / length, 0.0)
    length = torch.where(ok, length, 0.0)
    edges = torch.stack((ux, uy, corner[:, 0], corner[:, 1], length))  # (5, 3, BF)
    # Twice the signed area: edge 0 cross (corner 2 - corner 0) = e0 x (-e2).
    area2 = edge[2, 0] * edge[0, 1] - edge[2, 1] * edge[0, 0]
    orient = torch.where(area2 >= 0, 1.0, -1.0).to(tri.dtype)
    return edges.reshape(15, -1), orient, ok


def edge_table_backward(grad_edges: Tensor, edges: Tensor, ok: Tensor) -> Tensor:
    """Gradient w.r.t. the projected corners from the gradient w.r.t. :func:`edge_table`.

    With ``e = b - a`` (corner k to k + 1), ``length = |e|`` and ``u = e / length``:
    ``dL/de = (g_u - u (u . g_u)) / length + g_length u``; then ``a`` gets ``g_start - dL/de``
    and ``b`` gets ``dL/de``. Zero-length edges pass only ``g_start``.

    Args:
        grad_edges: (15, BF), rows as in :func:`edge_table`.
        edges: (15, BF) from :func:`edge_table`; ok: (3, BF) from it.

    Returns:
        (BF, 3, 2) gradient w.r.t. the corners.
    """
    g = grad_edges.view(5, 3, -1)
    e = edges.view(5, 3, -1)
    ux, uy, length = e[0], e[1], e[4]
    along = ux * g[0] + uy * g[1]
    inv = torch.where(ok, 1.0 / torch.where(ok, length, 1.0), 0.0)
    gex = ((g[0] - ux * along) * inv + g[4] * ux) * ok
    gey = ((g[1] - uy * along) * inv + g[4] * uy) * ok
    grad_edge = torch.stack((gex, gey), dim=1)  # (3, 2, BF)
    grad_corner = g[2:4].transpose(0, 1) - grad_edge + grad_edge.roll(1, dims=0)
    return grad_corner.permute(2, 0, 1)  # (BF, 3, 2)


def span_coefficients(g: Tensor, o: Tensor, span_x: Tensor, span_y: Tensor) -> Tensor:
    """Coefficients of the edge functions along each span.

    Args:
        g: (5, 3, S) each span's copy of its face's edge table (ux, uy, ax, ay, length).
        o: (S,) +-1 orientation of each span's face.
        span_x, span_y: (S,) float first column and row of each span.

    Returns:
        (5, 3, S) rows lam, mu, ux, mu2, length: ``l = lam j + mu`` and ``tau = ux j + mu2``
        at pixel j of the span (see the module docstring).
    """
    ux, uy, ax, ay, length = g.unbind(0)  # (3, S)
    dxs = span_x - ax  # span start minus edge start
    dys = span_y - ay
    lam = -o * uy
    mu = o * (ux * dys - uy * dxs)
    mu2 = ux * dxs + uy * dys
    return torch.stack((lam, mu, ux, mu2, length))


def span_coefficients_backward(
    grad_coef: Tensor, g: Tensor, o: Tensor, span_x: Tensor, span_y: Tensor
) -> Tensor:
    """Chain rule of :func:`span_coefficients`: (5, 3, S) gradient -> (15, S) for ``g``."""
    g_lam, g_mu, g_ux, g_mu2, g_len = grad_coef.unbind(0)
    ux, uy, ax, ay, _ = g.unbind(0)
    dxs = span_x - ax
    dys = span_y - ay
    o_mu = o * g_mu
    return torch.stack((
        o_mu * dys + g_mu2 * dxs + g_ux,  # ux (it is also the slope of tau)
        -o * g_lam - o_mu * dxs + g_mu2 * dys,  # uy
        o_mu * uy - ux * g_mu2,  # ax (dxs = x0 - ax)
        -o_mu * ux - uy * g_mu2,  # ay (dys = y - ay)
        g_len,  # length
    )).reshape(15, -1)


def _edge_terms(
    g: Tensor, o: Tensor, span_x: Tensor, span_y: Tensor, k: int, j: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For edge k of every span: l, E1 = relu(tau - length), E0 = relu(-tau), d2_k (Sw, S).

    Works one edge at a time on (Sw, S) tensors: a compiler fuses each into one loop.
    """
    lam, mu, ux, mu2, length = span_coefficients(g[:, k:k + 1], o, span_x, span_y)[:, 0]
    l = mu + lam * j  # (Sw, S)
    tau = mu2 + ux * j
    e1 = (tau - length).clamp_min(0.0)
    e0 = (-tau).clamp_min(0.0)
    return l, e1, e0, l * l + e1 * e1 + e0 * e0


def span_forward(
    g: Tensor, o: Tensor, span_x: Tensor, span_y: Tensor, span_width: int, inv_sigma: float
) -> Tensor:
    """``q = 1 - D`` for every span pixel.

    Args:
        g: (5, 3, S) each span's copy of its face's edge table (ux, uy, ax, ay, length).
        o: (S,) +-1 orientation of each span's face.
        span_x, span_y: (S,) float first column and row of each span.
        span_width: Sw, pixels per span.
        inv_sigma: 1 / sigma, 1/px^2.

    Returns:
        (Sw, S) probabilities that the span's face does not cover the pixel.
    """
    j = torch.arange(span_width, dtype=g.dtype, device=g.device)[:, None]  # (Sw, 1)
    l0, _, _, d0 = _edge_terms(g, o, span_x, span_y, 0, j)
    l1, _, _, d1 = _edge_terms(g, o, span_x, span_y, 1, j)
    l2, _, _, d2_ = _edge_terms(g, o, span_x, span_y, 2, j)
    d2 = torch.minimum(torch.minimum(d0, d1), d2_)  # (Sw, S)
    l_min = torch.minimum(torch.minimum(l0, l1), l2)  # >= 0: inside
    return torch.sigmoid(torch.copysign(d2, l_min) * (-inv_sigma))


def span_backward_weights(
    g: Tensor, o: Tensor, span_x: Tensor, span_y: Tensor, w_pix: Tensor, span_width: int,
    inv_sigma: float,
) -> Tensor:
    """dL/d(d2_k) at every span pixel for each edge k (non-zero for the nearest edge only).

    Args:
        g, o, span_x, span_y, span_width, inv_sigma: as in :func:`span_forward`.
        w_pix: (Sw, S) ``dL/dsil * (1 - sil)`` at each span pixel.

    Returns:
        (3, Sw, S) ``dL/dd2`` times 2 (the factor of ``d(l^2)/dl = 2 l``), on the nearest
        edge (the first one on exact ties), 0 on the others.
    """
    j = torch.arange(span_width, dtype=g.dtype, device=g.device)[:, None]  # (Sw, 1)
    l0, _, _, d0 = _edge_terms(g, o, span_x, span_y, 0, j)
    l1, _, _, d1 = _edge_terms(g, o, span_x, span_y, 1, j)
    l2, _, _, d2_ = _edge_terms(g, o, span_x, span_y, 2, j)
    d2 = torch.minimum(torch.minimum(d0, d1), d2_)
    l_min = torch.minimum(torch.minimum(l0, l1), l2)
    d_prob = torch.sigmoid(torch.copysign(d2, l_min) * inv_sigma)  # D = sigmoid(x)
    # dL/dx = w_pix * D; dL/dd2 = dL/dx * s / sigma (s, the sign of l_min, must not replace
    # the sign of w_pix, which is negative wherever the loss wants more silhouette).
    grad_d2 = w_pix * torch.copysign(d_prob, l_min) * (2.0 * inv_sigma)  # (Sw, S)
    first = d0 == d2
    second = (d1 == d2) & ~first
    third = ~(first | second)
    zero = torch.zeros_like(grad_d2)
    return torch.stack((torch.where(first, grad_d2, zero), torch.where(second, grad_d2, zero),
                        torch.where(third, grad_d2, zero)))


def span_backward_sums(
    g: Tensor, o: Tensor, span_x: Tensor, span_y: Tensor, weights: Tensor, span_width: int
) -> Tensor:
    """Gradient w.r.t. each span's copy of the edge table, from the per-edge weights.

    Args:
        g, o, span_x, span_y, span_width: as in :func:`span_forward`.
        weights: (3, Sw, S) from :func:`span_backward_weights`.

    Returns:
        (15, S) gradient for (ux, uy, ax, ay, length) x 3 edges, per span; summed over the
        spans of each face it is the gradient of the edge table.
    """
    j = torch.arange(span_width, dtype=g.dtype, device=g.device)[:, None]  # (Sw, 1)
    grads = []
    for k in range(3):
        l, e1, e0, _ = _edge_terms(g, o, span_x, span_y, k, j)
        w = weights[k]
        wl = w * l  # d(l^2)/dl / 2
        we = w * (e1 - e0)  # d(E1^2 + E0^2)/dtau / 2
        grads.append(torch.stack((
            (wl * j).sum(0), wl.sum(0), (we * j).sum(0), we.sum(0), -(w * e1).sum(0)
        )))  # (5, S): lam, mu, ux, mu2, length
    grad_coef = torch.stack(grads, dim=1)  # (5, 3, S)
    return span_coefficients_backward(grad_coef, g, o, span_x, span_y)


def span_backward(
    g: Tensor, o: Tensor, span_x: Tensor, span_y: Tensor, w_pix: Tensor, span_width: int,
    inv_sigma: float,
) -> Tensor:
    """(15, S) gradient w.r.t. each span's copy of the edge table (both steps in one call)."""
    weights = span_backward_weights(g, o, span_x, span_y, w_pix, span_width, inv_sigma)
    return span_backward_sums(g, o, span_x, span_y, weights, span_width)


_EAGER: dict[str, Callable[..., Tensor]] = {
    "forward": span_forward,
    "backward_weights": span_backward_weights,
    "backward_sums": span_backward_sums,
}
_lock = threading.Lock()
_compiled: dict[str, Callable[..., Tensor]] = {}
_compile_failed = False


def _compiled_kernel(name: str) -> Callable[..., Tensor] | None:
    """The torch.compile'd version of kernel ``name``, or None where compiling failed."""
    with _lock:
        if _compile_failed:
            return None
        if name not in _compiled:
            _compiled[name] = torch.compile(_EAGER[name], dynamic=True)
        return _compiled[name]


def _mark_failed(exc: Exception) -> None:
    global _compile_failed
    log.warning("compiled soft-rasterizer kernels failed (%s: %s); running them eagerly",
                type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
    with _lock:
        _compile_failed = True
        _compiled.clear()


def run_kernel(name: str, backend: Backend, *args: object) -> Tensor:
    """Run kernel ``name`` (a key of ``_EAGER``) with the chosen backend.

    ``eager`` runs the plain function; ``compiled`` its torch.compile'd version (errors
    propagate); ``auto`` the compiled version, falling back to eager for the rest of the
    process (one warning) the first time compiling or running it fails.
    """
    if backend != "eager":
        kernel = _compiled_kernel(name)
        if kernel is not None:
            try:
                return kernel(*args)
            except Exception as exc:  # noqa: BLE001 - any compiler failure means: use eager
                if backend == "compiled":
                    raise
                _mark_failed(exc)
        elif backend == "compiled":
            raise RuntimeError("backend='compiled' but compiling the kernels failed earlier")
    return _EAGER[name](*args)


def compiled_backend_failed() -> bool:
    """True once compiling (or running) the kernels failed in this process."""
    return _compile_failed
