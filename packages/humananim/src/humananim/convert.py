"""Warm start from MagicAnimate (humananim spec §7): its appearance encoder, DensePose ControlNet and temporal-attention
checkpoint -> humananim's reference UNet, pose ControlNet and motion modules, with a strict key report.

MagicAnimate's release (magic-research/magic-animate, ``configs/prompts/animation.yaml``; weights in the
``zcxu-eric/MagicAnimate`` folder layout) holds:

- ``appearance_encoder/``: a diffusers ``UNet2DConditionModel`` folder (``AppearanceEncoderModel``, the same keys) ->
  ``reference_unet``;
- ``densepose_controlnet/``: a diffusers ``ControlNetModel`` folder with a 3-channel DensePose hint -> ``controlnet``
  when ``model.pose_type == "densepose"``, its hint encoder widened with zero-initialised blur channels
  (:func:`~humananim.modeling.widen_pose_controlnet`); with the default ``"skeleton"`` it is skipped (reported) and the
  skeleton ControlNet keeps its initialisation from the UNet;
- ``temporal_attention/temporal_attention.ckpt``: AnimateDiff motion-module weights of MagicAnimate's UNet3D
  (``down_blocks.{b}.motion_modules.{l}.temporal_transformer...``, possibly under ``module.`` / ``unet.`` and a
  ``state_dict`` container; read with ``weights_only=True``) -> ``motion_modules``.

The SD1.5 UNet, ``sd-vae-ft-mse`` VAE and CLIP text encoder come from the base model folder (``components.base_model``).
:func:`export_magicanimate` writes the same layout back (the ControlNet without its blur channels), so the conversion
round trip is checked bit for bit.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers.models.controlnets.controlnet import ControlNetModel
from safetensors.torch import load_file
from torch import nn

from genblocks.diffusion import ConversionReport, read_ldm_checkpoint
from genblocks.errors import InputError
from humananim.config import POSE_CHANNELS, ModelConfig
from humananim.modeling import HumanAnimComponents, widen_pose_controlnet

__all__ = [
    "APPEARANCE_ENCODER",
    "CONTROLNET",
    "TEMPORAL_CHECKPOINT",
    "MagicAnimateReport",
    "convert_magicanimate",
    "export_magicanimate",
]

logger = logging.getLogger(__name__)

APPEARANCE_ENCODER = "appearance_encoder"
CONTROLNET = "densepose_controlnet"
TEMPORAL_CHECKPOINT = "temporal_attention/temporal_attention.ckpt"
_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


@dataclass
class MagicAnimateReport:
    """What a MagicAnimate conversion loaded.

    Attributes:
        parts (`dict[str, ConversionReport]`): One report per converted part (``appearance_encoder``,
            ``densepose_controlnet``, ``temporal_attention``).
        skipped (`list[str]`): Parts present in the folder and not used (the DensePose ControlNet with
            ``pose_type="skeleton"``).
    """

    parts: dict[str, ConversionReport] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def is_exact(self) -> bool:
        """True when every converted part filled every parameter and used every checkpoint key."""
        return all(report.is_exact for report in self.parts.values())

    def summary(self) -> str:
        """One line per part: loaded keys and what did not match."""
        lines = []
        for name, report in self.parts.items():
            lines.append(
                f"{name}: {report.loaded_keys} loaded, {len(report.missing_keys)} missing, "
                f"{len(report.unexpected_keys)} unexpected, {len(report.mismatched_keys)} mismatched"
            )
        lines += [f"{name}: skipped" for name in self.skipped]
        return "\n".join(lines)


def _read_folder_weights(folder: Path, what: str) -> dict[str, torch.Tensor]:
    """The state dict of a diffusers model folder (safetensors preferred; ``.bin`` read with ``weights_only=True``)."""
    for name in _WEIGHT_FILES:
        path = folder / name
        if path.is_file():
            if name.endswith(".safetensors"):
                return load_file(str(path))
            return dict(torch.load(path, map_location="cpu", weights_only=True))
    raise InputError(f"{what}: no {' or '.join(_WEIGHT_FILES)} in {folder}")


def _load_exact(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> ConversionReport:
    """Load the keys whose names and shapes match; report the rest."""
    own = model.state_dict()
    report = ConversionReport()
    usable = {}
    for key, value in state_dict.items():
        if key not in own:
            report.unexpected_keys.append(key)
        elif own[key].shape != value.shape:
            report.mismatched_keys.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(own[key].shape)}")
        else:
            usable[key] = value
    report.missing_keys = sorted(set(own) - set(usable) - {k.split(":")[0] for k in report.mismatched_keys})
    model.load_state_dict(usable, strict=False)
    report.loaded_keys = len(usable)
    return report


def _motion_prefix(state_dict: dict[str, torch.Tensor]) -> str:
    """``"unet."`` when MagicAnimate's self-trained layout prefixes the motion keys so, else ``""``."""
    motion = [key for key in state_dict if ".motion_modules." in key]
    return "unet." if motion and all(key.startswith("unet.") for key in motion) else ""


def convert_magicanimate(
    source: str | os.PathLike, components: HumanAnimComponents, model_config: ModelConfig, strict: bool = True
) -> MagicAnimateReport:
    """Load a MagicAnimate release folder into ``components`` (in place).

    Args:
        source: The folder holding ``appearance_encoder/``, ``densepose_controlnet/`` and
            ``temporal_attention/temporal_attention.ckpt`` (any may be absent; what is there is converted).
        components (`HumanAnimComponents`): Built for SD1.5 (``build_base_components``) or any layout the checkpoint
            was trained with; ``controlnet`` is replaced by the widened DensePose net when ``pose_type`` is
            ``"densepose"``.
        model_config (`ModelConfig`): ``pose_type`` and ``blur_channels``.
        strict (`bool`, defaults to `True`): Raise :class:`~genblocks.errors.InputError` (with the report) unless every
            converted part matched exactly.

    Returns:
        `MagicAnimateReport`: Per-part key reports and the skipped parts.
    """
    root = Path(source)
    if not root.is_dir():
        raise InputError(f"--from magicanimate: {root} is not a folder (expected MagicAnimate's release folder)")
    report = MagicAnimateReport()
    if (root / APPEARANCE_ENCODER).is_dir():
        weights = _read_folder_weights(root / APPEARANCE_ENCODER, APPEARANCE_ENCODER)
        report.parts[APPEARANCE_ENCODER] = _load_exact(components.reference_unet, weights)
    if (root / CONTROLNET).is_dir():
        if model_config.pose_type != "densepose":
            report.skipped.append(CONTROLNET)
            logger.info("pose_type=%s: MagicAnimate's DensePose ControlNet is not used", model_config.pose_type)
        else:
            config = {**components.controlnet.config, "conditioning_channels": POSE_CHANNELS}
            net = ControlNetModel.from_config(config)
            weights = _read_folder_weights(root / CONTROLNET, CONTROLNET)
            report.parts[CONTROLNET] = _load_exact(net, weights)
            widen_pose_controlnet(net, model_config.blur_channels)
            components.controlnet = net.to(device=components.unet.device, dtype=components.unet.dtype)
    temporal = root / TEMPORAL_CHECKPOINT
    if temporal.is_file():
        if components.motion_modules is None:
            raise InputError(f"{temporal}: the components have no motion modules to load it into")
        state = read_ldm_checkpoint(temporal)
        missing, unmatched = components.motion_modules.load_motion_adapter(
            state, components.unet, _motion_prefix(state)
        )
        motion_keys = [key for key in state if ".motion_modules." in key]
        report.parts["temporal_attention"] = ConversionReport(
            missing_keys=missing, unexpected_keys=unmatched, loaded_keys=len(motion_keys) - len(unmatched)
        )
    if not report.parts and not report.skipped:
        raise InputError(
            f"--from magicanimate: {root} holds none of {APPEARANCE_ENCODER}/, {CONTROLNET}/, {TEMPORAL_CHECKPOINT}"
        )
    logger.info("MagicAnimate conversion:\n%s", report.summary())
    if strict and not report.is_exact:
        first = next(name for name, part in report.parts.items() if not part.is_exact)
        part = report.parts[first]
        example = (part.missing_keys + part.unexpected_keys + part.mismatched_keys)[0]
        raise InputError(f"--from magicanimate: {first} does not match exactly (e.g. {example}); {report.summary()}")
    return report


_OURS_BLOCK = re.compile(r"^transformer_blocks\.(\d+)\.(.+)$")


def _animatediff_subkeys(sub: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    """One of our motion-module parameter names -> AnimateDiff's ``temporal_transformer.*`` name(s)."""
    match = _OURS_BLOCK.match(sub)
    if match is None:  # norm, proj_in, proj_out
        return {f"temporal_transformer.{sub}": value}
    block, rest = f"temporal_transformer.transformer_blocks.{match[1]}", match[2]
    if rest == "pos_embed.pe":  # AnimateDiff keeps one (identical) table per attention
        return {f"{block}.attention_blocks.{i}.pos_encoder.pe": value for i in (0, 1)}
    attention = re.match(r"^attn([12])\.(.+)$", rest)
    if attention:
        return {f"{block}.attention_blocks.{int(attention[1]) - 1}.{attention[2]}": value}
    norm = re.match(r"^norm([123])\.(.+)$", rest)
    if norm:
        name = "ff_norm" if norm[1] == "3" else f"norms.{int(norm[1]) - 1}"
        return {f"{block}.{name}.{norm[2]}": value}
    return {f"{block}.{rest}": value}  # ff.net.0.proj.*, ff.net.2.*


def export_magicanimate(components: HumanAnimComponents, target: str | os.PathLike) -> Path:
    """Write ``components`` in MagicAnimate's release layout (the inverse of :func:`convert_magicanimate`).

    ``appearance_encoder/`` and ``densepose_controlnet/`` are diffusers folders (the ControlNet keeps only its 3 pose
    input channels: the blur channels' weights are dropped, as MagicAnimate's net reads 3), and
    ``temporal_attention/temporal_attention.ckpt`` holds the motion modules in AnimateDiff keys.

    Args:
        components (`HumanAnimComponents`): The components (``motion_modules`` may be `None`).
        target: The folder to write (created).

    Returns:
        `Path`: ``target``.
    """
    root = Path(target)
    root.mkdir(parents=True, exist_ok=True)
    components.reference_unet.save_pretrained(root / APPEARANCE_ENCODER, safe_serialization=True)
    net = components.controlnet
    config = {**net.config, "conditioning_channels": POSE_CHANNELS}
    narrow = ControlNetModel.from_config(config)
    state = net.state_dict()
    conv = "controlnet_cond_embedding.conv_in.weight"
    state[conv] = state[conv][:, :POSE_CHANNELS].contiguous()
    narrow.load_state_dict(state, strict=True)
    narrow.save_pretrained(root / CONTROLNET, safe_serialization=True)
    if components.motion_modules is not None:
        names = components.motion_modules.adapter_key_map(components.unet)
        exported: dict[str, torch.Tensor] = {}
        for key, value in components.motion_modules.module_set.state_dict().items():
            module, _, sub = key.partition(".")
            for name, tensor in _animatediff_subkeys(sub, value.detach().clone()).items():
                exported[f"{names[module]}.{name}"] = tensor
        (root / TEMPORAL_CHECKPOINT).parent.mkdir(parents=True, exist_ok=True)
        torch.save(exported, root / TEMPORAL_CHECKPOINT)
    (root / "humananim_export.json").write_text(json.dumps({"from": "humananim", "layout": "magicanimate"}) + "\n")
    return root
