"""randomize_controlnet_outputs: a tiny ControlNet's residuals go from zero to condition-dependent."""

from __future__ import annotations

import pytest
import torch

from genblocks.testing.controlnets import randomize_controlnet_outputs
from genblocks.tiny import tiny_controlnet, tiny_unet


def _residuals(net: torch.nn.Module, cond: torch.Tensor) -> torch.Tensor:
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    text = torch.randn(1, 4, 32, generator=torch.Generator().manual_seed(1))
    down, mid = net(sample, 10, encoder_hidden_states=text, controlnet_cond=cond, return_dict=False)
    return torch.cat([r.flatten() for r in (*down, mid)])


def test_condition_reaches_the_residuals_only_after_randomising() -> None:
    net = tiny_controlnet(tiny_unet(seed=0), seed=0)
    first, second = torch.rand(2, 1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert _residuals(net, first).abs().max() == 0  # zero convolutions: nothing to see
        filled = randomize_controlnet_outputs(net, condition_embedding=True)
        assert filled > 2
        assert (
            _residuals(net, first) - _residuals(net, second)
        ).abs().max() > 1e-5  # zero before: the condition now reaches them


def test_same_seed_same_weights_and_a_non_controlnet_is_refused() -> None:
    a, b = (tiny_controlnet(tiny_unet(seed=0), seed=0) for _ in range(2))
    randomize_controlnet_outputs(a, seed=5)
    randomize_controlnet_outputs([b], seed=5)
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(pa, pb), name
    with pytest.raises(ValueError, match="no ControlNet output convolutions"):
        randomize_controlnet_outputs(torch.nn.Linear(2, 2))
