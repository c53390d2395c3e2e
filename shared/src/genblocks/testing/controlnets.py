"""Make a tiny ControlNet's condition visible in tests.

A freshly built `ControlNetModel` has zero-initialised output convolutions (``controlnet_down_blocks``,
``controlnet_mid_block``; optionally the condition embedding's ``conv_out``), so its residuals are zero and no test can
see the condition image change the output. `randomize_controlnet_outputs` gives them small random weights.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["randomize_controlnet_outputs"]

_OUTPUT_PREFIXES = ("controlnet_down_blocks", "controlnet_mid_block")


@torch.no_grad()
def randomize_controlnet_outputs(
    nets: torch.nn.Module | Iterable[torch.nn.Module],
    seed: int = 2,
    std: float = 0.05,
    condition_embedding: bool = False,
) -> int:
    """Fill the zero-initialised output convolutions of each ControlNet with ``N(0, std²)`` weights, in place.

    Args:
        nets: one ControlNet or several (each drawn in turn from one generator seeded with ``seed``).
        seed: seed of the draws.
        std: standard deviation of the new weights and biases.
        condition_embedding: also randomise ``controlnet_cond_embedding.conv_out`` (zero-initialised too).

    Returns:
        The number of parameters filled; a `ValueError` when a net has none of them (not a diffusers ControlNet).
    """
    modules = [nets] if isinstance(nets, torch.nn.Module) else list(nets)
    prefixes = (*_OUTPUT_PREFIXES, "controlnet_cond_embedding.conv_out") if condition_embedding else _OUTPUT_PREFIXES
    generator = torch.Generator().manual_seed(seed)
    filled = 0
    for net in modules:
        params = [param for name, param in net.named_parameters() if name.startswith(prefixes)]
        if not params:
            raise ValueError(
                f"randomize_controlnet_outputs: {type(net).__name__} has no ControlNet output convolutions"
            )
        for param in params:
            param.copy_(torch.randn(param.shape, generator=generator).to(param) * std)
        filled += len(params)
    return filled
