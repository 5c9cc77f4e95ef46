"""The soft silhouette the refinement renders, with a guard for a renderer bug.

:func:`core.render.rasterize_silhouette` (fast path) as committed up to b786996 returns wrong
gradients wherever ``dL/dsil < 0`` (a pixel the loss wants *more* covered):
``core/render/_span_kernels.py::span_backward_weights`` computed
``torch.copysign(w_pix * D, l_min)``, which drops the sign of ``w_pix = dL/dsil * (1 - sil)``;
``w_pix * torch.copysign(D, l_min)`` is what the chain rule asks for (the render rework in
progress makes exactly that change). The renderer's tests only used positive pixel weights. A
silhouette loss like ``(sil - target)^2`` has both signs, and with the bug the refinement walks
*away* from the target.

:func:`soft_silhouette` checks once per process (on one triangle, a few milliseconds) whether
the renderer's backward is linear in ``dL/dsil``. If it is, it calls the renderer directly. If
not, it splits the incoming gradient into its positive and negative parts and runs the
renderer's backward once for each (both are correct for a one-signed gradient), which costs a
second backward pass but no second forward. With a fixed renderer the check passes and the
workaround is never used.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import torch
from torch import Tensor

from core.render import SoftRasterSettings, rasterize_silhouette

log = logging.getLogger(__name__)

__all__ = ["renderer_backward_is_linear", "soft_silhouette"]

_lock = threading.Lock()
_linear: bool | None = None


def renderer_backward_is_linear() -> bool:
    """Whether ``rasterize_silhouette``'s backward gives ``-g`` for ``-dL/dsil`` (cached)."""
    global _linear
    with _lock:
        if _linear is None:
            verts = torch.tensor([[[-0.01, -0.01, 0.5], [0.012, -0.008, 0.5], [0.0, 0.011, 0.52]]],
                                 dtype=torch.float64)
            faces = torch.tensor([[0, 1, 2]])
            K = torch.tensor([[[300.0, 0.0, 7.5], [0.0, 300.0, 7.5], [0.0, 0.0, 1.0]]],
                             dtype=torch.float64)
            settings = SoftRasterSettings(image_size=(16, 16), sigma=0.5, backend="eager")
            grads = []
            for sign in (1.0, -1.0):
                v = verts.clone().requires_grad_(True)
                (sign * rasterize_silhouette(v, faces, K, settings).sum()).backward()
                grads.append(v.grad)
            _linear = bool(torch.allclose(grads[0], -grads[1], rtol=1e-6, atol=1e-12))
            if not _linear:
                log.warning("core.render.rasterize_silhouette's backward drops the sign of "
                            "negative dL/dsil; the refinement splits the gradient by sign "
                            "(a second backward pass) until it is fixed")
        return _linear


class _SignSplitSilhouette(torch.autograd.Function):
    """Forward: the renderer. Backward: the renderer's backward for dL/dsil >= 0 and < 0 apart."""

    @staticmethod
    def forward(ctx: Any, verts: Tensor, K: Tensor, faces: Tensor,  # type: ignore[override]
                settings: SoftRasterSettings) -> Tensor:
        with torch.enable_grad():
            v = verts.detach().requires_grad_(verts.requires_grad)
            k = K.detach().requires_grad_(K.requires_grad)
            sil = rasterize_silhouette(v, faces, k, settings)
        ctx.inner = (v, k, sil)
        return sil.detach()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        v, k, sil = ctx.inner
        ctx.inner = None
        inputs = [t for t in (v, k) if t.requires_grad]
        if not inputs or not sil.requires_grad:
            return None, None, None, None
        pos, neg = grad.clamp_min(0.0), (-grad).clamp_min(0.0)
        g_pos = torch.autograd.grad(sil, inputs, pos, retain_graph=True, allow_unused=True)
        g_neg = torch.autograd.grad(sil, inputs, neg, allow_unused=True)
        out = iter(None if a is None else a - (0.0 if b is None else b) for a, b in zip(g_pos, g_neg))
        grad_v = next(out) if v.requires_grad else None
        grad_k = next(out) if k.requires_grad else None
        return grad_v, grad_k, None, None


def soft_silhouette(verts: Tensor, faces: Tensor, K: Tensor, settings: SoftRasterSettings) -> Tensor:
    """:func:`core.render.rasterize_silhouette` with correct gradients of either sign.

    Args:
        verts: (B, V, 3) float, metres, camera frame. faces: (F, 3) int64. K: (B, 3, 3) pixels.
        settings: the soft rasterizer's settings.

    Returns:
        (B, H, W) silhouette in [0, 1], differentiable in ``verts`` and ``K``.
    """
    needs_grad = torch.is_grad_enabled() and (verts.requires_grad or K.requires_grad)
    if not needs_grad or renderer_backward_is_linear():
        return rasterize_silhouette(verts, faces, K, settings)
    return _SignSplitSilhouette.apply(verts, K, faces, settings)
