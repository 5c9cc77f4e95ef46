"""Silhouette losses: pure functions of (B, H, W) masks.

``pred`` is a soft silhouette in [0, 1] (from :func:`core.render.rasterize_silhouette`) or a
hard mask; ``target`` a hand mask in [0, 1] (bool, uint8 0/1 or float).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["silhouette_iou", "soft_iou", "silhouette_loss"]


def _check_pair(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(
            f"pred and target must both be (B, H, W), got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )


def silhouette_iou(pred: Tensor, target: Tensor, threshold: float = 0.5) -> Tensor:
    """Hard intersection over union of two masks, per image.

    Args:
        pred, target: (B, H, W); values above ``threshold`` count as inside (bool as is).
        threshold: in [0, 1).

    Returns:
        (B,) float IoU in [0, 1]; 1.0 where both masks are empty. No gradients.
    """
    _check_pair(pred, target)
    a = pred if pred.dtype == torch.bool else pred > threshold
    b = target if target.dtype == torch.bool else target > threshold
    inter = (a & b).flatten(1).sum(1).to(torch.float32)
    union = (a | b).flatten(1).sum(1).to(torch.float32)
    return torch.where(union > 0, inter / union.clamp_min(1.0), torch.ones_like(union))


def soft_iou(pred: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """Soft IoU ``sum(p t) / sum(p + t - p t)`` per image, differentiable in both.

    Args:
        pred, target: (B, H, W) values in [0, 1].
        eps: added to the denominator (two empty masks give about 0, not NaN).

    Returns:
        (B,) soft IoU in [0, 1].
    """
    _check_pair(pred, target)
    p = pred.flatten(1).to(torch.result_type(pred, 1.0))
    t = target.flatten(1).to(p.dtype)
    inter = (p * t).sum(1)
    union = (p + t - p * t).sum(1)
    return inter / (union + eps)


def silhouette_loss(
    pred: Tensor, target: Tensor, kind: Literal["iou", "l2"] = "iou",
    weight: Tensor | None = None,
) -> Tensor:
    """Scalar silhouette loss, mean over the batch.

    Args:
        pred: (B, H, W) soft silhouette in [0, 1].
        target: (B, H, W) target mask in [0, 1].
        kind: ``"iou"``: 1 - soft IoU (scale-free, suits a hand of any size in the crop);
            ``"l2"``: mean squared difference per pixel.
        weight: optional (B, H, W) per-pixel weights for ``"l2"`` (e.g. 0 where the target is
            unknown, such as beyond the wrist cut).

    Returns:
        Scalar loss (0 for a perfect match).
    """
    _check_pair(pred, target)
    if kind == "iou":
        if weight is not None:
            raise ValueError("weight is only supported for kind='l2'")
        return (1.0 - soft_iou(pred, target)).mean()
    if kind == "l2":
        diff = (pred - target.to(pred.dtype)) ** 2
        if weight is None:
            return diff.mean()
        if weight.shape != pred.shape:
            raise ValueError(f"weight {tuple(weight.shape)} must match pred {tuple(pred.shape)}")
        return (diff * weight).sum() / weight.sum().clamp_min(1e-12)
    raise ValueError(f"kind must be 'iou' or 'l2', got {kind!r}")
