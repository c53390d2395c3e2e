"""The tiny model and data of spec §12, shared by the optimizer tests.

``Linear(64, 32)`` (weight (32, 64): LEFT), ``Linear(32, 64)`` (weight (64, 32): RIGHT), ``Conv2d(32, 64, 3)``
(weight numel 18432 > 9216: Tucker), ``Conv2d(8, 8, 1)`` (plain), ``LayerNorm(64)`` (plain). With ratios 2,
``update_interval=2`` and ``reproject_factor=2``, six steps hit the initial projection (t=0), a refresh (t=2) and a
re-projection (t=4). Batches hold 32 samples so that the gradients have a higher rank than the projections (the
range finder's subspace is not unique for a rank-deficient gradient).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

TINY_PROJECTION = {"rank_ratio": 2, "rank_ratio_conv": 2, "update_interval": 2, "reproject_factor": 2}


class TinyModel(nn.Module):
    """Every routing case of the optimizers in ~23k parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.lin1 = nn.Linear(64, 32)
        self.lin2 = nn.Linear(32, 64)
        self.conv = nn.Conv2d(32, 64, 3)
        self.conv1 = nn.Conv2d(8, 8, 1)
        self.norm = nn.LayerNorm(64)

    def forward(self, x: torch.Tensor, img: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.lin2(torch.tanh(self.lin1(x))))
        c = self.conv(img)
        c = self.conv1(c.reshape(c.shape[0], 8, 8, -1))
        return (h - target).square().mean() + c.square().mean()


def tiny_model(seed: int = 0, dtype: torch.dtype = torch.float32) -> TinyModel:
    torch.manual_seed(seed)
    return TinyModel().to(dtype)


def tiny_batches(n: int, seed: int = 1, batch: int = 32) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(batch, 64, generator=generator),
            torch.randn(batch, 32, 5, 5, generator=generator),
            torch.randn(batch, 64, generator=generator),
        )
        for _ in range(n)
    ]


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: list,
    *,
    before_step: Callable[[int], None] | None = None,
    loss_scale: float = 1.0,
) -> list[float]:
    """One optimizer step per batch (loss multiplied by ``loss_scale`` before backward); returns the losses."""
    losses = []
    for i, (x, img, target) in enumerate(batches):
        optimizer.zero_grad(set_to_none=True)
        loss = model(x.to(next(model.parameters()).dtype), img.to(next(model.parameters()).dtype), target)
        (loss * loss_scale).backward()
        if before_step is not None:
            before_step(i)
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def max_param_diff(a: nn.Module, b: nn.Module) -> float:
    return max(float((p.detach() - q.detach()).abs().max()) for p, q in zip(a.parameters(), b.parameters()))
