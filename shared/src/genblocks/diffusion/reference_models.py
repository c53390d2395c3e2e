"""The model around a reference-attention UNet that X-Portrait, DiffPortrait3D and humananim share: a denoising UNet
reading the bank a reference UNet writes, temporal (motion or cross-view) modules hooked in, and the builders of its
trainable parts from a base UNet or a diffusers SD1.5 folder.

What stays in a paper package: its ControlNets and how their residuals enter (:meth:`ReferenceDenoiser.denoise` takes
them as UNet keyword arguments), its temporal placement and its component dataclass.

Typical subclass::

    class PaperModel(ReferenceDenoiser):
        temporal_attribute = "motion_modules"

        def __init__(self, unet, reference_unet, controlnet, motion_modules=None, fusion_blocks="full"):
            super().__init__(unet, reference_unet, fusion_blocks)
            self.controlnet = controlnet
            self.set_temporal_modules(motion_modules)

        def forward(self, sample, timestep, text, num_frames=1, hint=None, use_reference=True):
            self.check_sample(sample, num_frames, use_reference)
            residuals = ...  # ControlNet residuals as UNet keyword arguments
            return self.denoise(sample, timestep, text, num_frames, use_reference, residuals)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.controlnets.controlnet import ControlNetModel
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from torch import nn
from transformers import CLIPTextModel, CLIPTokenizer

from genblocks.diffusion.reference_attention import (
    FusionBlocks,
    ReferenceBank,
    attach_reference_pair,
    reference_mode,
    write_reference_bank,
)
from genblocks.diffusion.temporal import TemporalModules
from genblocks.errors import InputError

__all__ = [
    "SD15_FOLDERS",
    "ReferenceComponents",
    "ReferenceDenoiser",
    "controlnet_from_unet",
    "copy_unet",
    "load_sd15_folder",
    "sd15_folder",
]

SD15_FOLDERS: tuple[str, ...] = ("unet", "vae", "text_encoder", "tokenizer")
"""Sub-folders of a diffusers SD1.5 folder that the reference-UNet papers read."""


@dataclasses.dataclass
class ReferenceComponents:
    """The parts every reference-UNet paper's pipeline holds, as built or loaded (no wiring yet); a paper's dataclass
    adds its ControlNets and temporal modules as further fields.

    Attributes:
        unet: The SD1.5 denoising UNet.
        reference_unet: The appearance reference UNet (a trainable copy of ``unet``).
        vae: SD KL autoencoder.
        text_encoder: CLIP text encoder (the papers' prompt is always empty).
        tokenizer: CLIP tokenizer.
        scheduler: DDIM scheduler (the LDM preset, or the paper's beta schedule).
    """

    unet: UNet2DConditionModel
    reference_unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: DDIMScheduler

    def as_dict(self) -> dict[str, Any]:
        """``{name: component}`` for every field: the keyword arguments of the paper's pipeline (no copies)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


class ReferenceDenoiser(nn.Module):
    """A denoising UNet that reads the reference bank (``attn1``) and runs temporal modules over its ``(b f)`` batch.

    Building it attaches bank processors to ``reference_unet`` (write) and ``unet`` (read) in ``fusion_blocks``; the
    UNets are shared, not copied. Submodules register in the order ``unet``, ``reference_unet``, then whatever the
    subclass sets (its ControlNets, then its temporal modules with :meth:`set_temporal_modules`), so the state-dict
    keys read as the subclass names them.

    Args:
        unet (`UNet2DConditionModel`): The denoising UNet.
        reference_unet (`UNet2DConditionModel`): The appearance UNet; same architecture as ``unet``.
        fusion_blocks (`str`, defaults to `"full"`): Blocks whose ``attn1`` reads the bank (``"full"`` or
            ``"midup"``).
    """

    temporal_attribute: ClassVar[str] = "motion_modules"
    """The attribute holding the temporal modules (``motion_modules``, ``view_modules``)."""
    frames_name: ClassVar[str] = "num_frames"
    """How error messages name the frames per sample (``num_frames``, ``num_views``)."""

    def __init__(
        self, unet: UNet2DConditionModel, reference_unet: UNet2DConditionModel, fusion_blocks: FusionBlocks = "full"
    ) -> None:
        super().__init__()
        self.unet = unet
        self.reference_unet = reference_unet
        self.bank = ReferenceBank()
        self.fusion_blocks = fusion_blocks
        attach_reference_pair(reference_unet, unet, self.bank, fusion_blocks)

    def set_temporal_modules(self, modules: TemporalModules | None) -> None:
        """Hold ``modules`` under :attr:`temporal_attribute` and hook them into ``unet`` (unless already attached)."""
        setattr(self, self.temporal_attribute, modules)
        if modules is not None and not modules.attached:
            modules.attach(self.unet)

    @property
    def temporal_modules(self) -> TemporalModules | None:
        """The temporal modules (``None`` for an image model)."""
        modules: TemporalModules | None = getattr(self, self.temporal_attribute, None)
        return modules

    def write_reference(
        self,
        reference_latents: torch.Tensor,
        timestep: torch.Tensor | int,
        encoder_hidden_states: torch.Tensor,
    ) -> None:
        """Clear the bank and fill it from the reference UNet run on the clean reference latent at ``timestep``.

        Args:
            reference_latents (`torch.Tensor` of shape `(B, 4, h, w)`): Scaled VAE latents of the references (not
                noised).
            timestep (`torch.Tensor` or `int`): The current timestep (scalar or (B,)).
            encoder_hidden_states (`torch.Tensor` of shape `(B, T, D)`): Text context of the references.
        """
        write_reference_bank(self.reference_unet, self.bank, reference_latents, timestep, encoder_hidden_states)

    def clear_reference(self) -> None:
        """Empty the bank."""
        self.bank.clear()

    def temporal_frames(self, num_frames: int) -> contextlib.AbstractContextManager[object]:
        """Inside the ``with`` block the temporal modules see ``num_frames`` frames per sample (none: a no-op)."""
        modules = self.temporal_modules
        return contextlib.nullcontext() if modules is None else modules.frames(num_frames)

    def check_sample(self, sample: torch.Tensor, num_frames: int, use_reference: bool) -> None:
        """Refuse a batch that is not ``(B * num_frames, C, h, w)``, or a bank read before any write.

        Raises:
            InputError: naming ``sample`` and the expected layout, or the empty bank.
        """
        if sample.ndim != 4 or sample.shape[0] % num_frames:
            raise InputError(
                f"sample: expected (B * {self.frames_name}, C, h, w) with {self.frames_name}={num_frames}, "
                f"got {tuple(sample.shape)}"
            )
        if use_reference and self.bank.is_empty():
            raise InputError("use_reference=True but the reference bank is empty: call write_reference first")

    def denoise(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        encoder_hidden_states: torch.Tensor,
        num_frames: int = 1,
        use_reference: bool = True,
        residuals: Mapping[str, Any] | None = None,
        unconditional: bool = False,
    ) -> torch.Tensor:
        """One UNet call: bank read (or off), temporal modules over ``num_frames``, ControlNet ``residuals``.

        Args:
            sample (`torch.Tensor` of shape `(B * F, 4, h, w)`): Noisy latents laid out ``(b f)``.
            timestep (`torch.Tensor` or `int`): Timestep (scalar or (B * F,)).
            encoder_hidden_states (`torch.Tensor` of shape `(B * F, T, D)`): Text context per frame.
            num_frames (`int`, defaults to 1): F, frames (views) per sample.
            use_reference (`bool`, defaults to `True`): Read the bank.
            residuals (`Mapping[str, Any]`, *optional*): ``down_block_additional_residuals`` /
                ``mid_block_additional_residual`` for the UNet.
            unconditional (`bool`, defaults to `False`): Mark the call as the unconditional pass (runs a
                ``middle_uncond_only`` middle module).

        Returns:
            `torch.Tensor` of shape `(B * F, 4, h, w)`: the UNet's prediction.
        """
        modules = self.temporal_modules
        uncond = modules.unconditional_pass() if unconditional and modules is not None else contextlib.nullcontext()
        with reference_mode(self.unet, "read" if use_reference else "off"), self.temporal_frames(num_frames), uncond:
            kwargs = dict(residuals or {})
            return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, **kwargs).sample


def copy_unet(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """A separate UNet with ``unet``'s config and weights, on its device (and dtype when that is not fp32): the
    reference UNet every reference-attention paper initialises from the base UNet."""
    copy = UNet2DConditionModel.from_config(unet.config)
    copy.load_state_dict(unet.state_dict())
    copy.to(unet.device)
    if unet.dtype != torch.float32:
        copy.to(unet.dtype)
    return copy


def controlnet_from_unet(
    unet: UNet2DConditionModel,
    seed: int,
    embedding_channels: Sequence[int],
    conditioning_channels: int = 3,
    match_dtype: bool = False,
) -> ControlNetModel:
    """``ControlNetModel.from_unet`` after ``torch.manual_seed(seed)`` (its hint encoder is the only fresh layer), on
    ``unet``'s device.

    Args:
        unet (`UNet2DConditionModel`): The base UNet whose encoder the ControlNet copies.
        seed (`int`): Seed of the hint encoder's initialisation.
        embedding_channels (`Sequence[int]`): ``conditioning_embedding_out_channels`` of the hint encoder.
        conditioning_channels (`int`, defaults to 3): Channels of the hint image.
        match_dtype (`bool`, defaults to `False`): Also take ``unet``'s dtype when that is not fp32 (else fp32).
    """
    torch.manual_seed(seed)
    controlnet = ControlNetModel.from_unet(
        unet,
        conditioning_embedding_out_channels=tuple(embedding_channels),
        conditioning_channels=conditioning_channels,
    )
    controlnet.to(unet.device)
    if match_dtype and unet.dtype != torch.float32:
        controlnet.to(unet.dtype)
    return controlnet


def sd15_folder(base_model: str | os.PathLike) -> Path:
    """``base_model`` as a path, checked to be a diffusers SD1.5 folder (:data:`SD15_FOLDERS` sub-folders).

    Raises:
        InputError: sub-folders are missing (the message names them).
    """
    root = Path(base_model)
    missing = [name for name in SD15_FOLDERS if not (root / name).is_dir()]
    if missing:
        raise InputError(f"base_model {root}: expected a diffusers SD1.5 folder; missing sub-folders {missing}")
    return root


def load_sd15_folder(
    base_model: str | os.PathLike, load_unet_weights: bool = True
) -> tuple[UNet2DConditionModel, AutoencoderKL, CLIPTextModel, CLIPTokenizer]:
    """The frozen UNet, the VAE, the text encoder and the tokenizer of a diffusers SD1.5 folder.

    Args:
        base_model (`str` or `os.PathLike`): The folder (:func:`sd15_folder` checks it).
        load_unet_weights (`bool`, defaults to `True`): Load the UNet's weights (`False` builds it from its config
            only, e.g. when a converted checkpoint will overwrite it).

    Returns:
        `tuple`: ``(unet, vae, text_encoder, tokenizer)``; ``unet`` has ``requires_grad`` off.
    """
    root = sd15_folder(base_model)
    if load_unet_weights:
        unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet")
    else:
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(root, subfolder="unet"))
    unet.requires_grad_(False)
    vae = AutoencoderKL.from_pretrained(root, subfolder="vae")
    text_encoder = CLIPTextModel.from_pretrained(root, subfolder="text_encoder")
    tokenizer = CLIPTokenizer.from_pretrained(root, subfolder="tokenizer")
    return unet, vae, text_encoder, tokenizer
