"""Every YAML in configs/ builds a working optimizer: keys are real arguments of param_groups and the optimizer class."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import coap_optim

yaml = pytest.importorskip("yaml")

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "src" / "coap_optim" / "configs").glob("*.yaml"))


class Block(nn.Module):
    """Names like a LLaMA layer (attn / mlp Linears) plus a convolution large enough for Tucker."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.Linear(48, 48)
        self.mlp = nn.Linear(48, 96)
        self.head = nn.Linear(96, 8)
        self.conv = nn.Conv2d(32, 64, 3, padding=1)

    def forward(self, x: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.mlp(self.attn(x)))).square().mean() + self.conv(img).square().mean()


def test_configs_exist() -> None:
    assert {p.name for p in CONFIGS} >= {"tiny.yaml", "paper.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_builds_optimizer_that_steps(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    assert set(config) <= {"optimizer", "param_groups", "options", "training"}, f"{path.name}: unknown sections"
    optimizer_class = getattr(coap_optim, config["optimizer"])
    torch.manual_seed(0)
    model = Block()
    groups = coap_optim.param_groups(model, **config["param_groups"])
    optimizer = optimizer_class(groups, **config["options"])
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(4, 48), torch.randn(2, 32, 6, 6)).backward()
        optimizer.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert coap_optim.state_nbytes(optimizer) > 0
