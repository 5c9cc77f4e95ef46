"""The refinement's optimizer: Adam on one flat parameter tensor with a step size per entry
(the refiner's loop, :mod:`core.refine.path_torch`, and the surface fit,
:mod:`core.personalize.surface`, both step with it)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["Adam"]


class Adam:
    """Adam (Kingma & Ba; ``torch.optim.Adam``'s update, betas (0.9, 0.99)) on one flat tensor
    with a step size per entry (0 freezes an entry)."""

    def __init__(self, theta: Tensor, lr: Tensor, betas: tuple[float, float] = (0.9, 0.99),
                 eps: float = 1e-8) -> None:
        self.theta, self.lr, self.betas, self.eps = theta, lr, betas, eps
        self.m = torch.zeros_like(lr)
        self.v = torch.zeros_like(lr)
        self.t = 0

    @torch.no_grad()
    def step(self, grad: Tensor) -> None:
        b1, b2 = self.betas
        self.t += 1
        self.m.mul_(b1).add_(grad, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (self.v / (1 - b2 ** self.t)).sqrt_().add_(self.eps)
        self.theta.addcdiv_(self.m * self.lr, denom, value=-1 / (1 - b1 ** self.t))
