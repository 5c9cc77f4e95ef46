"""Per-pixel math of the fast soft rasterizer, as two pure functions that may be compiled.

The fast rasterizer (:mod:`core.render.soft`) cuts the pixels near each face into *spans*:
``span_width`` consecutive pixels on one row. These two functions do all the per-pixel work
for all spans at once:

* :func:`span_forward` gives ``q = 1 - D`` for every (span pixel, face) pair;
* :func:`span_backward` gives the gradient of the loss with respect to each span's copy of
  its face's edge table, recomputing the forward quantities instead of storing them.

Both are written as plain element-wise PyTorch, so the same code runs eagerly on CPU or CUDA,
and :func:`get_span_kernels` can hand back versions fused by ``torch.compile`` (one loop, no
intermediate tensors: several times faster on the CPU) when a working compiler is present.

Notation (see ``soft.py``): edge k of a face starts at ``(ax, ay)``, has unit direction
``(ux, uy)`` and length ``length``; ``o = +-1`` orients the face so its inside is where all
``l_k >= 0``. Pixel ``j`` of a span starting at column ``x0`` on row ``y`` is at
``p = (x0 + j, y)``, and

    l_k   = o * (u_k x (p - a_k)) = lam_k * j + mu_k      (signed distance to the edge line)
    tau_k = u_k . (p - a_k)       = ux_k * j + mu2_k      (position along the edge)
    d2_k  = l_k^2 + relu(tau_k - length_k)^2 + relu(-tau_k)^2
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


def _span_terms(
    edges: Tensor, orient: Tensor, span_face: Tensor, span_x: Tensor, span_y: Tensor,
    span_width: int,
) -> tuple[Tensor, ...]:
    """Per-pixel l, E1, E0 of each edge (shapes (Sw, 3, S)) plus the span coefficients."""
    num_spans = span_face.shape[0]
    g = edges.reshape(15, -1).index_select(1, span_face).view(5, 3, num_spans)
    ux, uy, ax, ay, length = g.unbind(0)  # (3, S)
    o = orient.index_select(0, span_face)  # (S,)
    dxs = span_x - ax  # (3, S)
    dys = span_y - ay
    lam = -o * uy
    mu = o * (ux * dys - uy * dxs)
    mu2 = ux * dxs + uy * dys
    j = torch.arange(span_width, dtype=edges.dtype, device=edges.device).view(-1, 1, 1)
    l = mu + lam * j  # (Sw, 3, S)
    tau = mu2 + ux * j
    e1 = (tau - length).clamp_min(0.0)
    e0 = (-tau).clamp_min(0.0)
    return l, e1, e0, ux, uy, o, dxs, dys, j


def span_forward(
    edges: Tensor, orient: Tensor, span_face: Tensor, span_x: Tensor, span_y: Tensor,
    span_width: int, inv_sigma: float,
) -> Tensor:
    """``q = 1 - D`` for every span pixel.

    Args:
        edges: (5, 3, BF) edge table (ux, uy, ax, ay, length), pixels.
        orient: (BF,) +-1 face orientation.
        span_face: (S,) int64 face of each span; span_x, span_y: (S,) float first column, row.
        span_width: Sw, pixels per span.
        inv_sigma: 1 / sigma, 1/px^2.

    Returns:
        (Sw, S) probabilities that the face does not cover the pixel.
    """
    l, e1, e0 = _span_terms(edges, orient, span_face, span_x, span_y, span_width)[:3]
    d2k = l * l + e1 * e1 + e0 * e0
    d2 = torch.minimum(torch.minimum(d2k[:, 0], d2k[:, 1]), d2k[:, 2])  # (Sw, S)
    l_min = torch.minimum(torch.minimum(l[:, 0], l[:, 1]), l[:, 2])  # >= 0: inside
    return torch.sigmoid(torch.copysign(d2, l_min) * (-inv_sigma))


def span_backward(
    edges: Tensor, orient: Tensor, span_face: Tensor, span_x: Tensor, span_y: Tensor,
    span_base: Tensor, weight: Tensor, span_width: int, inv_sigma: float,
) -> Tensor:
    """Gradient of the loss with respect to each span's copy of its face's edge table.

    Args:
        edges, orient, span_face, span_x, span_y, span_width, inv_sigma: as in
            :func:`span_forward`.
        span_base: (S,) int64 index of each span's first pixel in the flat canvas.
        weight: flat canvas of ``dL/dsil * (1 - sil)`` per pixel (zero in the padding).

    Returns:
        (15, S) gradients for (ux, uy, ax, ay, length) x 3 edges, per span.
    """
    l, e1, e0, ux, uy, o, dxs, dys, j = _span_terms(
        edges, orient, span_face, span_x, span_y, span_width
    )
    d2k = l * l + e1 * e1 + e0 * e0
    d2 = torch.minimum(torch.minimum(d2k[:, 0], d2k[:, 1]), d2k[:, 2])
    l_min = torch.minimum(torch.minimum(l[:, 0], l[:, 1]), l[:, 2])
    x_neg = torch.copysign(d2, l_min) * (-inv_sigma)
    index = span_base + torch.arange(span_width, device=span_base.device).view(-1, 1)
    w_pix = weight[index]  # (Sw, S)  dL/dsil * (1 - sil)
    # dL/dx = w_pix * D, D = sigmoid(x); dL/dd2 = dL/dx * s / sigma; times 2 from d(l^2)/dl.
    coef = torch.copysign(w_pix * torch.sigmoid(-x_neg), l_min) * (2.0 * inv_sigma)
    # Only the nearest edge carries the gradient (the first one on exact ties).
    first = d2k[:, 0] == d2
    second = (d2k[:, 1] == d2) & ~first
    third = ~(first | second)
    zero = torch.zeros_like(coef)
    w = torch.stack(
        (torch.where(first, coef, zero), torch.where(second, coef, zero),
         torch.where(third, coef, zero)),
        dim=1,
    )  # (Sw, 3, S)
    wl = w * l
    we = w * (e1 - e0)  # d(E1^2 + E0^2)/dtau / 2 = E1 - E0
    g_lam = (wl * j).sum(0)  # (3, S)
    g_mu = wl.sum(0)
    g_lam2 = (we * j).sum(0)
    g_mu2 = we.sum(0)
    g_len = -(w * e1).sum(0)
    # Chain to the span's edge table: lam = -o uy, mu = o (ux dys - uy dxs),
    # lam2 = ux, mu2 = ux dxs + uy dys, dxs = x0 - ax, dys = y - ay.
    o_mu = o * g_mu
    grad = torch.stack((
        o_mu * dys + g_mu2 * dxs + g_lam2,  # ux
        -o * g_lam - o_mu * dxs + g_mu2 * dys,  # uy
        o_mu * uy - ux * g_mu2,  # ax
        -o_mu * ux - uy * g_mu2,  # ay
        g_len,  # length
    ))  # (5, 3, S)
    return grad.reshape(15, -1)


_lock = threading.Lock()
_compiled: tuple[Callable[..., Tensor], Callable[..., Tensor]] | None = None
_compile_failed = False


def _compiled_kernels() -> tuple[Callable[..., Tensor], Callable[..., Tensor]] | None:
    """The torch.compile'd kernels, or None where compiling is impossible."""
    global _compiled, _compile_failed
    with _lock:
        if _compiled is None and not _compile_failed:
            try:
                fwd = torch.compile(span_forward, dynamic=True)
                bwd = torch.compile(span_backward, dynamic=True)
                _compiled = (fwd, bwd)
            except Exception as exc:  # noqa: BLE001 - any failure means: use eager
                log.warning("torch.compile unavailable (%s); soft rasterizer runs eagerly", exc)
                _compile_failed = True
        return _compiled


def _mark_failed(exc: Exception) -> None:
    global _compile_failed, _compiled
    log.warning("compiled soft-rasterizer kernels failed (%s: %s); falling back to eager",
                type(exc).__name__, exc)
    with _lock:
        _compile_failed = True
        _compiled = None


def run_span_forward(backend: Backend, *args: object) -> Tensor:
    """:func:`span_forward` with the chosen backend (``auto``: compiled, else eager)."""
    if backend != "eager":
        kernels = _compiled_kernels()
        if kernels is not None:
            try:
                return kernels[0](*args)
            except Exception as exc:  # noqa: BLE001
                if backend == "compiled":
                    raise
                _mark_failed(exc)
        elif backend == "compiled":
            raise RuntimeError("backend='compiled' but torch.compile is unavailable")
    return span_forward(*args)  # type: ignore[arg-type]


def run_span_backward(backend: Backend, *args: object) -> Tensor:
    """:func:`span_backward` with the chosen backend (``auto``: compiled, else eager)."""
    if backend != "eager":
        kernels = _compiled_kernels()
        if kernels is not None:
            try:
                return kernels[1](*args)
            except Exception as exc:  # noqa: BLE001
                if backend == "compiled":
                    raise
                _mark_failed(exc)
        elif backend == "compiled":
            raise RuntimeError("backend='compiled' but torch.compile is unavailable")
    return span_backward(*args)  # type: ignore[arg-type]


def compiled_backend_active() -> bool:
    """True once the compiled kernels have been built and have not failed."""
    return _compiled is not None and not _compile_failed
