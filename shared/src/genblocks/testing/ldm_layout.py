"""Inverse key maps, diffusers -> CompVis/LDM names, to write checkpoints in the official single-file layouts from our own
tiny models (converter round-trip tests of every package that reads LDM checkpoints: X-Portrait, DiffPortrait3D, ...).

Written from the naming of CompVis ``ldm/modules/diffusionmodules/openaimodel.py``, ControlNet ``cldm/cldm.py`` and the
LDM autoencoder; the forward direction is diffusers' own single-file converters (:mod:`genblocks.diffusion.checkpoints`).
"""

from __future__ import annotations

import re

import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.controlnets.controlnet import ControlNetModel
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from transformers import CLIPTextModel

from genblocks.diffusion.temporal import TemporalModuleSet, ldm_motion_module_names

__all__ = [
    "clip_to_ldm",
    "controlnet_to_ldm",
    "motion_modules_to_ldm",
    "unet_encoder_to_ldm",
    "unet_to_ldm",
    "vae_to_ldm",
]

RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
          ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]  # fmt: skip
VAE_ATTENTION = [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]


def _rename(rest: str, pairs: list[tuple[str, str]]) -> str:
    head, _, leaf = rest.rpartition(".")
    for new, old in pairs:
        if head == new:
            return f"{old}.{leaf}"
    return rest


def unet_encoder_to_ldm(key: str, layers_per_block: int) -> str | None:
    """The LDM name of a diffusers UNet / ControlNet encoder key (time embedding, conv_in, down and mid blocks), else `None`."""
    """Shared by UNet and ControlNet: time embedding, conv_in, down blocks and mid block."""
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0"}  # fmt: skip
    head, _, leaf = key.rpartition(".")
    if head in fixed:
        return f"{fixed[head]}.{leaf}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = 1 + block * (layers_per_block + 1) + layer
        return (
            f"input_blocks.{index}.0.{_rename(rest, RESNET)}"
            if kind == "resnets"
            else f"input_blocks.{index}.1.{rest}"
        )
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{(int(m[1]) + 1) * (layers_per_block + 1)}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_rename(m[2], RESNET)}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    return None


def unet_to_ldm(unet: UNet2DConditionModel, with_out: bool = True) -> dict[str, torch.Tensor]:
    """A diffusers UNet in LDM ``openaimodel.UNetModel`` names (``with_out=False`` drops the ``out`` layers, as in a
    reference UNet checkpoint)."""
    lpb = unet.config["layers_per_block"]
    out = {}
    for key, value in unet.state_dict().items():
        ldm = unet_encoder_to_ldm(key, lpb)
        head, _, leaf = key.rpartition(".")
        if ldm is None and head in ("conv_norm_out", "conv_out"):
            if not with_out:
                continue
            ldm = f"out.{0 if head == 'conv_norm_out' else 2}.{leaf}"
        if ldm is None and (m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key)):
            index = int(m[1]) * (lpb + 1) + int(m[3])
            ldm = (
                f"output_blocks.{index}.0.{_rename(m[4], RESNET)}"
                if m[2] == "resnets"
                else f"output_blocks.{index}.1.{m[4]}"
            )
        if ldm is None and (m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key)):
            block = int(m[1])
            slot = 2 if hasattr(unet.up_blocks[block], "attentions") else 1
            ldm = f"output_blocks.{block * (lpb + 1) + lpb}.{slot}.conv.{m[2]}"
        if ldm is None:
            raise ValueError(f"no LDM name for the diffusers key {key!r}")
        out[ldm] = value.clone()
    return out


def controlnet_to_ldm(net: ControlNetModel) -> dict[str, torch.Tensor]:
    """A diffusers ControlNet in LDM ``cldm.ControlNet`` names (``zero_convs``, ``middle_block_out``, ``input_hint_block``)."""
    lpb = net.config["layers_per_block"]
    num_blocks = len(net.controlnet_cond_embedding.blocks)
    out = {}
    for key, value in net.state_dict().items():
        ldm = unet_encoder_to_ldm(key, lpb)
        head, _, leaf = key.rpartition(".")
        if m := re.fullmatch(r"controlnet_down_blocks\.(\d+)", head):
            ldm = f"zero_convs.{m[1]}.0.{leaf}"
        elif head == "controlnet_mid_block":
            ldm = f"middle_block_out.0.{leaf}"
        elif head == "controlnet_cond_embedding.conv_in":
            ldm = f"input_hint_block.0.{leaf}"
        elif m := re.fullmatch(r"controlnet_cond_embedding\.blocks\.(\d+)", head):
            ldm = f"input_hint_block.{2 * (int(m[1]) + 1)}.{leaf}"
        elif head == "controlnet_cond_embedding.conv_out":
            ldm = f"input_hint_block.{2 * (num_blocks + 1)}.{leaf}"
        if ldm is None:
            raise ValueError(f"no LDM name for the diffusers key {key!r}")
        out[ldm] = value.clone()
    return out


def vae_to_ldm(vae: AutoencoderKL) -> dict[str, torch.Tensor]:
    """A diffusers VAE in LDM ``first_stage_model`` names (attention projections as 1x1 convolutions)."""
    num_up = len(vae.decoder.up_blocks)
    out = {}
    for key, value in vae.state_dict().items():
        ldm, value = key, value.clone()
        ldm = ldm.replace("conv_norm_out", "norm_out")
        if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            ldm = f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            ldm = f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            ldm = f"decoder.up.{num_up - 1 - int(m[1])}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            ldm = f"decoder.up.{num_up - 1 - int(m[1])}.upsample.conv.{m[2]}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            ldm = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
            ldm = f"{m[1]}.mid.attn_1.{_rename(m[2], VAE_ATTENTION)}"
            if value.ndim == 2:  # LDM attention projections are 1x1 convolutions
                value = value[:, :, None, None]
        out[ldm] = value
    return out


def clip_to_ldm(text_encoder: CLIPTextModel) -> dict[str, torch.Tensor]:
    """A transformers CLIP text encoder in LDM ``cond_stage_model`` names."""
    return {f"transformer.text_model.{k}": v.clone() for k, v in text_encoder.state_dict().items()}


def _motion_subkey_to_ldm(sub: str) -> list[str]:
    """One of our temporal-module parameter names in AnimateDiff's ``temporal_transformer.*`` naming (a list: the
    position table is stored once per attention upstream)."""
    if re.fullmatch(r"(norm|proj_in|proj_out)\.(weight|bias)", sub):
        return [f"temporal_transformer.{sub}"]
    m = re.fullmatch(r"transformer_blocks\.(\d+)\.(.+)", sub)
    if m is None:
        raise ValueError(f"not a temporal-module parameter: {sub!r}")
    block, rest = f"temporal_transformer.transformer_blocks.{m[1]}", m[2]
    if rest == "pos_embed.pe":  # AnimateDiff keeps one (identical) table per attention
        return [f"{block}.attention_blocks.{a}.pos_encoder.pe" for a in (0, 1)]
    if a := re.fullmatch(r"attn([12])\.(.+)", rest):
        return [f"{block}.attention_blocks.{int(a[1]) - 1}.{a[2]}"]
    if n := re.fullmatch(r"norm([12])\.(.+)", rest):
        return [f"{block}.norms.{int(n[1]) - 1}.{n[2]}"]
    if n := re.fullmatch(r"norm3\.(.+)", rest):
        return [f"{block}.ff_norm.{n[1]}"]
    return [f"{block}.{rest}"]


def motion_modules_to_ldm(modules: TemporalModuleSet) -> dict[str, torch.Tensor]:
    """Temporal modules in the LDM ``UNetModel_Temporal`` layout (X-Portrait, DiffPortrait3D): keys
    ``input_blocks_motion_module.{k}.0.temporal_transformer.*``, ``middle_block_motion_module.*``, ...

    Args:
        modules (`TemporalModuleSet`): The set (e.g. a ``TemporalModules`` model's ``module_set``).

    Returns:
        `dict[str, torch.Tensor]`: cloned tensors, keys without the ``model.diffusion_model.`` prefix.
    """
    ldm_names = {ours: ldm for ldm, ours in ldm_motion_module_names(modules.placement).items()}
    out = {}
    for key, value in modules.state_dict().items():
        name, _, sub = key.partition(".")
        for ldm_sub in _motion_subkey_to_ldm(sub):
            out[f"{ldm_names[name]}.{ldm_sub}"] = value.clone()
    return out
