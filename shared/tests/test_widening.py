"""Widening conv_in with zero-initialised channels keeps the pretrained model's outputs exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import ControlNetModel, UNet2DConditionModel

from genblocks.diffusion import widen_conv, widen_conv_in
from genblocks.tiny import tiny_controlnet, tiny_unet


def test_widened_unet_matches_the_original_on_zero_extra_input_and_round_trips(tmp_path: Path) -> None:
    unet = tiny_unet().eval()
    latents, context = torch.randn(2, 4, 8, 8), torch.randn(2, 3, 32)
    with torch.no_grad():
        before = unet(latents, 10, encoder_hidden_states=context).sample
    original = unet.conv_in.weight.detach().clone(), unet.conv_in.bias.detach().clone()
    widen_conv_in(unet, 4)
    assert unet.config.in_channels == 8 and unet.conv_in.weight.shape == (32, 8, 3, 3)
    assert torch.equal(unet.conv_in.weight[:, :4], original[0]) and torch.equal(unet.conv_in.bias, original[1])
    assert torch.count_nonzero(unet.conv_in.weight[:, 4:]) == 0
    with torch.no_grad():
        extra = torch.randn(2, 4, 8, 8)  # any content: zero weights ignore it
        after = unet(torch.cat([latents, extra], 1), 10, encoder_hidden_states=context).sample
    assert torch.equal(before, after)
    unet.save_pretrained(tmp_path / "unet")
    loaded = UNet2DConditionModel.from_pretrained(tmp_path / "unet")
    assert loaded.config.in_channels == 8 and torch.equal(loaded.conv_in.weight, unet.conv_in.weight)


def test_widened_controlnet_hint_and_gradients_reach_new_channels(tmp_path: Path) -> None:
    controlnet = tiny_controlnet(tiny_unet())
    widen_conv_in(controlnet, 3, attribute="controlnet_cond_embedding.conv_in")
    assert controlnet.config.conditioning_channels == 6
    conv = controlnet.controlnet_cond_embedding.conv_in
    out = conv(torch.randn(1, 6, 16, 16)).sum()
    out.backward()
    assert conv.weight.grad[:, 3:].abs().sum() > 0  # the new channels learn
    controlnet.save_pretrained(tmp_path / "cn")
    assert ControlNetModel.from_pretrained(tmp_path / "cn").config.conditioning_channels == 6


def test_bad_widening() -> None:
    with pytest.raises(ValueError, match="positive number"):
        widen_conv(torch.nn.Conv2d(3, 4, 3), 0)
    with pytest.raises(ValueError, match="grouped"):
        widen_conv(torch.nn.Conv2d(4, 4, 3, groups=2), 2)
