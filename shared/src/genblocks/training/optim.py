"""Optimizer factory for the training base: torch AdamW, bitsandbytes 8-bit AdamW, or the COAP optimizers.

The optional back-ends are imported inside :func:`build_optimizer` only, so ``genblocks`` never needs them installed:
``adamw8bit`` needs ``pip install genblocks[bnb]`` and the ``coap_*`` names need ``pip install genblocks[coap]``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from genblocks.training.config import OPTIMIZER_NAMES, OptimizerConfig

__all__ = ["OPTIMIZER_NAMES", "OptimizerConfig", "build_optimizer"]

ParamsLike = nn.Module | Iterable[torch.Tensor] | Iterable[dict[str, Any]]


def _trainable(params: ParamsLike) -> list[Any]:
    if isinstance(params, nn.Module):
        return [p for p in params.parameters() if p.requires_grad]
    items = list(params)
    if items and isinstance(items[0], dict):
        return items
    return [p for p in items if getattr(p, "requires_grad", False)]


def _coap_groups(params: ParamsLike, config: OptimizerConfig) -> list[Any]:
    import coap_optim

    if isinstance(params, nn.Module):
        targets = list(config.target_modules) if config.target_modules is not None else None
        return coap_optim.param_groups(
            params,
            rank=config.rank,
            rank_ratio=config.rank_ratio,
            target_modules=targets,
            weight_decay=config.weight_decay,
        )
    return _trainable(params)


def build_optimizer(params: ParamsLike, config: OptimizerConfig) -> torch.optim.Optimizer:
    """Build the optimizer named by ``config`` over the trainable parameters.

    Args:
        params: A module (its ``requires_grad`` parameters are optimised; for the COAP optimizers it is split with
            ``coap_optim.param_groups`` into a projected and a plain group), an iterable of tensors (frozen ones are
            dropped) or an iterable of parameter-group dicts (passed through).
        config: The optimizer choice and hyper-parameters.

    Returns:
        The optimizer.

    Raises:
        ImportError: When the optional back-end is missing; the message names the extra to install.
        ValueError: When there is nothing to optimise.
    """
    name = config.name
    if name.startswith("coap_"):
        try:
            import coap_optim
        except ImportError as error:
            raise ImportError(f"optimizer {name!r} needs coap-optim: pip install genblocks[coap] ({error})") from error
        groups = _coap_groups(params, config)
    else:
        groups = _trainable(params)
    if not groups:
        raise ValueError("build_optimizer: params has no trainable (requires_grad) parameters")

    if name == "adamw":
        return torch.optim.AdamW(
            groups, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay
        )
    if name == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as error:
            raise ImportError(
                f"optimizer 'adamw8bit' needs bitsandbytes: pip install genblocks[bnb] ({error})"
            ) from error
        return bnb.optim.AdamW8bit(
            groups, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay
        )
    # Settings left as None take coap-optim's own defaults (coap_optim.defaults), never a copy of them.
    coap_common: dict[str, Any] = {
        key: value
        for key, value in {
            "rank": config.rank,
            "rank_ratio": config.rank_ratio,
            "update_interval": config.update_interval,
            "reproject_factor": config.reproject_factor,
            "scale": config.scale,
        }.items()
        if value is not None
    }
    if name == "coap_adafactor":
        return coap_optim.CoapAdafactor(
            groups, lr=config.lr, eps=config.adafactor_eps, weight_decay=config.weight_decay, **coap_common
        )
    optimizer_cls = coap_optim.CoapAdamW if name == "coap_adamw" else coap_optim.CoapAdamW8bit
    return optimizer_cls(
        groups, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay, **coap_common
    )
