"""Inverse key maps (diffusers / ours -> LDM) that write a checkpoint in the official X-Portrait layout from our own
models, for the converter round trip. Written from CompVis ``openaimodel.py`` / ControlNet ``cldm.py`` / AnimateDiff
``motion_module.py`` naming (UNet and ControlNet maps from :mod:`genblocks.testing.ldm_layout`; the motion-module map is X-Portrait's)."""

from __future__ import annotations

import re

import torch

from genblocks.diffusion.temporal import ldm_motion_module_names
from x_portrait.modeling_x_portrait import XPortraitMotionModules


def _motion_subkey_to_ldm(sub: str) -> list[str]:
    if re.fullmatch(r"(norm|proj_in|proj_out)\.(weight|bias)", sub):
        return [f"temporal_transformer.{sub}"]
    m = re.fullmatch(r"transformer_blocks\.(\d+)\.(.+)", sub)
    assert m is not None, sub
    block, rest = f"temporal_transformer.transformer_blocks.{m[1]}", m[2]
    if rest == "pos_embed.pe":  # AnimateDiff keeps one (identical) table per attention
        return [f"{block}.attention_blocks.{a}.pos_encoder.pe" for a in (0, 1)]
    if a := re.fullmatch(r"attn([12])\.(.+)", rest):
        return [f"{block}.attention_blocks.{int(a[1]) - 1}.{a[2]}"]
    if n := re.fullmatch(r"norm([12])\.(.+)", rest):
        return [f"{block}.norms.{int(n[1]) - 1}.{n[2]}"]
    if n := re.fullmatch(r"norm3\.(.+)", rest):
        return [f"{block}.ff_norm.{n[1]}"]
    assert rest.startswith("ff.net."), rest
    return [f"{block}.{rest}"]


def motion_modules_to_ldm(modules: XPortraitMotionModules) -> dict[str, torch.Tensor]:
    """Our motion modules in LDM names: ``input_blocks_motion_module.{k}.0.temporal_transformer.*``, ..."""
    ldm_names = {ours: ldm for ldm, ours in ldm_motion_module_names(modules.placement).items()}
    out = {}
    for key, value in modules.motion_modules.state_dict().items():
        name, _, sub = key.partition(".")
        for ldm_sub in _motion_subkey_to_ldm(sub):
            out[f"{ldm_names[name]}.{ldm_sub}"] = value.clone()
    return out
