"""Tests of the silhouette losses."""

from __future__ import annotations

import pytest
import torch

from core.render import silhouette_iou, silhouette_loss, soft_iou


def masks() -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.zeros(2, 4, 4)
    b = torch.zeros(2, 4, 4)
    a[0, :2] = 1  # 8 pixels
    b[0, 1:3] = 1  # 8 pixels, 4 shared -> IoU 4 / 12
    a[1, 0, 0] = 1
    b[1, 0, 0] = 1  # identical -> IoU 1
    return a, b


def test_hard_iou_known_values() -> None:
    a, b = masks()
    torch.testing.assert_close(silhouette_iou(a, b), torch.tensor([1 / 3, 1.0]))
    torch.testing.assert_close(silhouette_iou(a > 0.5, b > 0.5), torch.tensor([1 / 3, 1.0]))
    empty = torch.zeros(1, 3, 3)
    assert silhouette_iou(empty, empty).item() == 1.0


def test_soft_iou_equals_hard_on_binary_masks_and_has_gradients() -> None:
    a, b = masks()
    torch.testing.assert_close(soft_iou(a, b), silhouette_iou(a, b), atol=1e-5, rtol=0)
    pred = torch.full((1, 4, 4), 0.5, requires_grad=True)
    loss = silhouette_loss(pred, b[:1])
    loss.backward()
    # Raising the prediction inside the target lowers the loss; outside it raises it.
    assert pred.grad[0, 1, 0] < 0 and pred.grad[0, 0, 0] > 0


def test_silhouette_loss_kinds() -> None:
    a, b = masks()
    assert silhouette_loss(b, b).item() == pytest.approx(0.0, abs=1e-6)
    assert silhouette_loss(a, b, kind="l2").item() == pytest.approx(8 / 32)
    weight = torch.zeros(2, 4, 4)
    weight[0, 0] = 1.0  # only row 0 of image 0: pred 1, target 0 -> error 1
    assert silhouette_loss(a, b, kind="l2", weight=weight).item() == pytest.approx(1.0)


def test_loss_validation() -> None:
    a, b = masks()
    with pytest.raises(ValueError, match="pred and target"):
        silhouette_loss(a, b[:1])
    with pytest.raises(ValueError, match="kind"):
        silhouette_loss(a, b, kind="l1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weight"):
        silhouette_loss(a, b, kind="iou", weight=torch.ones_like(a))
