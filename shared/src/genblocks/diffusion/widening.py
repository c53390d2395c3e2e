"""Widening a pretrained model's input convolution with zero-initialised extra channels (portrait-edit's 8-channel
UNet: noisy latents + source latents; humananim's ControlNet hint with 3 more motion-blur channels).

The new input channels start at exactly zero weight, so the widened model computes what the pretrained one did until
training moves them; the pretrained weights and bias are kept bit for bit.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["widen_conv", "widen_conv_in"]

_CONFIG_KEYS = {"conv_in": "in_channels", "controlnet_cond_embedding.conv_in": "conditioning_channels"}


def widen_conv(conv: nn.Conv2d, extra_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` with ``extra_channels`` more input channels, appended after the existing ones.

    Args:
        conv: The pretrained convolution, weight (O, I, k, k).
        extra_channels: Input channels to add (positive); their weights are zero.

    Returns:
        A new ``nn.Conv2d`` with weight (O, I + extra_channels, k, k): ``[:, :I]`` is ``conv``'s weight, ``[:, I:]`` is
        zero; the bias is ``conv``'s. Same device and dtype.

    Raises:
        ValueError: ``extra_channels`` is not positive, or ``conv`` is grouped.
    """
    if extra_channels <= 0:
        raise ValueError(f"extra_channels: expected a positive number of channels to add, got {extra_channels}")
    if conv.groups != 1:
        raise ValueError(f"widen_conv: grouped convolutions (groups={conv.groups}) are not supported")
    wider = nn.Conv2d(
        conv.in_channels + extra_channels,
        conv.out_channels,
        _pair(conv.kernel_size),
        stride=_pair(conv.stride),
        padding=conv.padding if isinstance(conv.padding, str) else _pair(conv.padding),
        dilation=_pair(conv.dilation),
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        wider.weight.zero_()
        wider.weight[:, : conv.in_channels].copy_(conv.weight)
        if conv.bias is not None and wider.bias is not None:
            wider.bias.copy_(conv.bias)
    return wider


def _pair(value: tuple[int, ...]) -> tuple[int, int]:
    """A 2-D convolution's ``kernel_size`` / ``stride`` / ``padding`` / ``dilation`` (typed ``tuple[int, ...]``)."""
    first, second = value
    return first, second


def widen_conv_in(model: nn.Module, extra_channels: int, attribute: str = "conv_in") -> nn.Module:
    """Widen ``model.<attribute>`` (a diffusers UNet's ``conv_in``; a ControlNet hint encoder's first convolution via
    ``attribute="controlnet_cond_embedding.conv_in"``) in place and record the new input width in its config.

    Args:
        model: A diffusers model (``UNet2DConditionModel``, ``ControlNetModel``, ...) or any module.
        extra_channels: Input channels to add, zero-initialised.
        attribute: Dotted path of the convolution inside ``model``.

    Returns:
        ``model``, whose ``config.in_channels`` (``conv_in``) or ``config.conditioning_channels``
        (``controlnet_cond_embedding.conv_in``) now counts the new channels, so ``save_pretrained`` /
        ``from_pretrained`` round-trip the widened model.
    """
    parent_path, _, name = attribute.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    conv = getattr(parent, name)
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"{attribute}: expected an nn.Conv2d, got {type(conv).__name__}")
    wider = widen_conv(conv, extra_channels)
    setattr(parent, name, wider)
    config_key = _CONFIG_KEYS.get(attribute)
    register_to_config = getattr(model, "register_to_config", None)
    if config_key is not None and callable(register_to_config):
        register_to_config(**{config_key: wider.in_channels})
    return model
