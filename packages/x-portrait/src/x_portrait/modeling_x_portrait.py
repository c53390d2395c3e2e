"""X-Portrait's model on diffusers: a frozen SD1.5 UNet, an appearance reference UNet, a motion and a local ControlNet
whose residuals add up, and AnimateDiff temporal modules (X-Portrait spec §3).

Paper: X-Portrait: Expressive Portrait Animation with Hierarchical Motion Attention, Xie et al., SIGGRAPH 2024
(arXiv 2403.15931). Upstream: bytedance/X-Portrait@e63e565f9f5ddbc5a23f662215d29e6227fb24a0
``model_lib/ControlNet/cldm/cldm.py``:

- ``ControlLDMReferenceOnly_Temporal_Pose_Local.apply_model``: the appearance model (a UNet without ``out``) runs on the
  clean source latent at the same timestep with the text context and writes the bank; in the conditional pass the
  pose and local-pose ControlNets read ``x_noisy`` and their hints; with ``uc=True`` neither ControlNet runs and the
  bank is not read.
- ``ControlledUnetModelAttn_Temporal_Pose_Local.forward``: both ControlNets' residuals are added to the skip
  connections and the mid block (scale 1); motion modules follow input blocks 1, 2, 4, 5, 7, 8, 10, 11 and every
  output block, in both passes.

What is reused: the bank processors (``genblocks.diffusion.reference_attention``), the ControlNet sum
(``ControlNetStack``) and the temporal modules with their placement (``TemporalModuleSet``, preset
``MotionPlacement.animatediff``, modules after the upsampler as in the LDM code). What lives here: the wiring of one
X-Portrait step, the motion modules as a saveable diffusers model, and builders for the components.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import ClassVar

import torch
from diffusers.models.controlnets.controlnet import ControlNetModel
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  (diffusers' pipeline loader looks it up here)
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

from genblocks.diffusion import (
    ControlNetStack,
    MotionPlacement,
    PlacedTemporalModules,
    ReferenceComponents,
    ReferenceDenoiser,
    controlnet_from_unet,
    copy_unet,
    ldm_ddim_scheduler,
    load_sd15_folder,
)
from genblocks.diffusion.reference_attention import FusionBlocks
from genblocks.tiny import random_sd15_base
from x_portrait.config import ModelConfig, RandomComponentsConfig

__all__ = [
    "CONTROLNET_NAMES",
    "SD15_MOTION_CHANNELS",
    "XPortraitComponents",
    "XPortraitModel",
    "XPortraitMotionModules",
    "build_base_components",
    "build_random_components",
    "build_x_portrait_modules",
]

logger = logging.getLogger(__name__)

CONTROLNET_NAMES: tuple[str, str] = ("motion", "local")
"""Names of the two ControlNets in the summed stack: raw driving frame, eye/eye/mouth patches."""

SD15_INPUT_MOTION_BLOCKS: tuple[int, ...] = (1, 2, 4, 5, 7, 8, 10, 11)
SD15_OUTPUT_MOTION_BLOCKS: tuple[int, ...] = tuple(range(12))
SD15_MOTION_CHANNELS: tuple[int, ...] = (
    (320, 320, 640, 640, 1280, 1280, 1280, 1280) + (1280,) * 6 + (640,) * 3 + (320,) * 3
)
"""Channels of X-Portrait's 20 motion modules on SD1.5: 8 after input blocks, 12 after output blocks."""


class XPortraitMotionModules(PlacedTemporalModules):
    """X-Portrait's temporal modules as one saveable diffusers model (``config.json`` + safetensors).

    A :class:`~genblocks.diffusion.PlacedTemporalModules` (attach/remove, :meth:`frames`, saving; constructor arguments
    ``input_blocks``, ``output_blocks``, ``module_channels``, ``output_before_upsampler``, ``num_attention_heads``,
    ``num_layers``, ``max_len``, ``norm_num_groups``, ``norm_per_frame``, ``zero_init``, ...) with X-Portrait's
    defaults. The modules are AnimateDiff "Vanilla" temporal transformers (``genblocks.diffusion.TemporalTransformer``:
    per-frame GroupNorm, 2 frame self-attentions with sinusoidal positions, GEGLU feed-forward, zero-initialised output
    projection), held in a :class:`~genblocks.diffusion.TemporalModuleSet` (attribute ``motion_modules``) keyed
    ``input_blocks_{i}`` / ``output_blocks_{j}`` by LDM block index. They are not part of the UNet's state dict:
    :meth:`attach` hooks them in after their blocks, and the frame count of the UNet's ``(b f)`` batch is set with
    :meth:`frames`. The defaults are X-Portrait's SD1.5 placement (``MotionPlacement.animatediff``: after input blocks
    1, 2, 4, 5, 7, 8, 10, 11 and all 12 output blocks, no middle module, modules after the upsampler), 8 heads, 1
    layer, ``max_len`` 24, 32 groups, per-frame GroupNorm, zero-initialised outputs.
    """

    set_attribute = "motion_modules"
    defaults: ClassVar[dict[str, object]] = {
        "input_blocks": SD15_INPUT_MOTION_BLOCKS,
        "output_blocks": SD15_OUTPUT_MOTION_BLOCKS,
        "module_channels": SD15_MOTION_CHANNELS,
    }

    @classmethod
    def from_unet(
        cls,
        unet: UNet2DConditionModel,
        num_attention_heads: int = 8,
        num_layers: int = 1,
        max_len: int = 24,
        norm_num_groups: int = 32,
        norm_per_frame: bool = True,
        output_before_upsampler: bool = False,
    ) -> XPortraitMotionModules:
        """Zero-initialised modules at X-Portrait's placement (``MotionPlacement.animatediff``) sized for ``unet``.

        On SD1.5 this gives input blocks 1, 2, 4, 5, 7, 8, 10, 11 and output blocks 0-11; a smaller UNet gets the same
        pattern (after every down-block layer and every output block).
        """
        return cls.for_placement(
            unet,
            MotionPlacement.animatediff(unet, output_before_upsampler=output_before_upsampler),
            num_attention_heads=num_attention_heads,
            num_layers=num_layers,
            max_len=max_len,
            norm_num_groups=norm_num_groups,
            norm_per_frame=norm_per_frame,
        )


@dataclass
class XPortraitComponents(ReferenceComponents):
    """The parts of an X-Portrait pipeline, as built or loaded (no wiring yet): genblocks'
    :class:`~genblocks.diffusion.ReferenceComponents` (``unet`` frozen, ``reference_unet``, ``vae``, ``text_encoder``,
    ``tokenizer``, ``scheduler`` with the LDM preset; X-Portrait's prompt is always empty) plus the ControlNets and the
    temporal modules; :meth:`as_dict` gives the keyword arguments of ``XPortraitPipeline``.

    Attributes:
        motion_controlnet: ControlNet on the raw, aligned driving frame.
        local_controlnet: ControlNet on the eye/eye/mouth patch image.
        motion_modules: Temporal modules (``None`` for a stage-1, image-only model).
    """

    motion_controlnet: ControlNetModel
    local_controlnet: ControlNetModel
    motion_modules: XPortraitMotionModules | None


class XPortraitModel(ReferenceDenoiser):
    """One X-Portrait denoising step: reference bank + summed ControlNets + temporal modules around a UNet.

    A :class:`~genblocks.diffusion.ReferenceDenoiser` (bank, :meth:`write_reference`, :meth:`clear_reference`, temporal
    modules) whose UNet also takes both ControlNets' summed residuals. Building the model attaches bank processors to
    ``reference_unet`` (write) and ``unet`` (read) and hooks the motion modules into ``unet``; the components are
    shared, not copied. A step is::

        model.write_reference(source_latents, t, text)          # reference UNet on the clean source latent, same t
        eps_c = model(x_t, t, text_frames, num_frames=f, motion_image=driving, local_image=patches)
        eps_u = model.unconditional(x_t, t, text_frames, num_frames=f)   # bare UNet (+ temporal modules)

    The batch of ``unet`` is laid out ``(b f)``: ``b`` sources, ``f`` frames each; the bank (``b`` entries) is repeated
    over frames.

    Args:
        unet (`UNet2DConditionModel`): The (frozen) denoising UNet.
        reference_unet (`UNet2DConditionModel`): The appearance UNet; same architecture as ``unet``.
        motion_controlnet (`ControlNetModel`): Reads the raw driving frame.
        local_controlnet (`ControlNetModel`): Reads the local patch image.
        motion_modules (`XPortraitMotionModules`, *optional*): Temporal modules; `None` for an image model.
        fusion_blocks (`str`, defaults to `"full"`): Blocks whose ``attn1`` reads the bank (``"full"`` or ``"midup"``).
        controlnet_scales (`tuple[float, float]`, defaults to `(1.0, 1.0)`): Default scales of the motion and local
            ControlNets.
    """

    def __init__(
        self,
        unet: UNet2DConditionModel,
        reference_unet: UNet2DConditionModel,
        motion_controlnet: ControlNetModel,
        local_controlnet: ControlNetModel,
        motion_modules: XPortraitMotionModules | None = None,
        fusion_blocks: FusionBlocks = "full",
        controlnet_scales: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        super().__init__(unet, reference_unet, fusion_blocks)
        self.controlnets = ControlNetStack(
            [motion_controlnet, local_controlnet], names=CONTROLNET_NAMES, scales=controlnet_scales
        )
        self.motion_modules: XPortraitMotionModules | None
        self.set_temporal_modules(motion_modules)

    @property
    def motion_controlnet(self) -> ControlNetModel:
        """The ControlNet on the raw driving frame."""
        return self.controlnets["motion"]

    @property
    def local_controlnet(self) -> ControlNetModel:
        """The ControlNet on the eye/eye/mouth patch image."""
        return self.controlnets["local"]

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        encoder_hidden_states: torch.Tensor,
        num_frames: int = 1,
        motion_image: torch.Tensor | None = None,
        local_image: torch.Tensor | None = None,
        use_reference: bool = True,
        controlnet_scales: tuple[float, float] | None = None,
    ) -> torch.Tensor:
        """The conditional pass: bank read, both ControlNets summed, temporal modules over ``num_frames``.

        Args:
            sample (`torch.Tensor` of shape `(B * F, 4, h, w)`): Noisy latents laid out ``(b f)``.
            timestep (`torch.Tensor` or `int`): Timestep (scalar or (B * F,)).
            encoder_hidden_states (`torch.Tensor` of shape `(B * F, T, D)`): Text context per frame.
            num_frames (`int`, defaults to 1): F, frames per source.
            motion_image (`torch.Tensor` of shape `(B * F, 3, H, W)`, *optional*): Aligned driving frames in [-1, 1];
                `None` leaves the motion ControlNet out.
            local_image (`torch.Tensor` of shape `(B * F, 3, H, W)`, *optional*): Patch images in [-1, 1]; `None`
                leaves the local ControlNet out.
            use_reference (`bool`, defaults to `True`): Read the bank (written by :meth:`write_reference`).
            controlnet_scales (`tuple[float, float]`, *optional*): Motion and local scales for this call; defaults to
                the stored ones. A scale of 0 skips the net.

        Returns:
            `torch.Tensor` of shape `(B * F, 4, h, w)`: the UNet's epsilon prediction.
        """
        self.check_sample(sample, num_frames, use_reference)
        scales = dict(self.controlnets.scales)
        if controlnet_scales is not None:
            scales = dict(zip(CONTROLNET_NAMES, (float(s) for s in controlnet_scales), strict=True))
        images = {"motion": motion_image, "local": local_image}
        for name, image in images.items():
            if image is None:
                scales[name] = 0.0
        residuals: dict[str, object] = {}
        if any(scales[name] != 0.0 for name in CONTROLNET_NAMES):
            placeholder = motion_image if motion_image is not None else local_image
            conditions = {name: image if image is not None else placeholder for name, image in images.items()}
            residuals = self.controlnets(
                sample, timestep, encoder_hidden_states, controlnet_cond=conditions, conditioning_scale=scales
            ).unet_kwargs()
        return self.denoise(sample, timestep, encoder_hidden_states, num_frames, use_reference, residuals)

    def unconditional(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        encoder_hidden_states: torch.Tensor,
        num_frames: int = 1,
    ) -> torch.Tensor:
        """The "controlnet-important" unconditional pass: the bare UNet (no bank, no ControlNets), temporal modules on.

        Upstream's ``uc=True`` branch still runs the motion modules; so does this one.

        Args:
            sample (`torch.Tensor` of shape `(B * F, 4, h, w)`): Noisy latents laid out ``(b f)``.
            timestep (`torch.Tensor` or `int`): Timestep.
            encoder_hidden_states (`torch.Tensor` of shape `(B * F, T, D)`): Unconditional (empty) text context.
            num_frames (`int`, defaults to 1): Frames per source.

        Returns:
            `torch.Tensor` of shape `(B * F, 4, h, w)`.
        """
        return self.denoise(sample, timestep, encoder_hidden_states, num_frames, use_reference=False)

    def enable_gradient_checkpointing(self) -> None:
        """Checkpoint the activations of both UNets and both ControlNets (for training)."""
        for module in (self.unet, self.reference_unet, *self.controlnets.nets):
            module.enable_gradient_checkpointing()


def build_x_portrait_modules(
    unet: UNet2DConditionModel, config: ModelConfig, with_motion_modules: bool = True, seed: int = 0
) -> tuple[UNet2DConditionModel, ControlNetModel, ControlNetModel, XPortraitMotionModules | None]:
    """The trainable parts, initialised as upstream: reference UNet and ControlNet encoders copied from ``unet``,
    zero-initialised ControlNet outputs and temporal modules.

    Args:
        unet (`UNet2DConditionModel`): The base UNet (not modified; build before wiring an ``XPortraitModel``).
        config (`ModelConfig`): ControlNet hint widths and temporal-module settings.
        with_motion_modules (`bool`, defaults to `True`): Build the temporal modules (`False` for stage 1).
        seed (`int`, defaults to 0): Seed of the freshly initialised layers (hint encoders).

    Returns:
        `tuple`: ``(reference_unet, motion_controlnet, local_controlnet, motion_modules)``.
    """
    reference_unet = copy_unet(unet)
    motion, local = (
        controlnet_from_unet(unet, seed + offset, config.controlnet_embedding_channels) for offset in (0, 1)
    )
    motion_modules = None
    if with_motion_modules:
        torch.manual_seed(seed)
        motion_modules = XPortraitMotionModules.from_unet(
            unet,
            num_attention_heads=config.temporal_heads,
            num_layers=config.temporal_layers,
            max_len=config.temporal_max_len,
            norm_num_groups=config.temporal_norm_groups,
            norm_per_frame=config.temporal_norm_per_frame,
            output_before_upsampler=config.temporal_before_upsampler,
        )
    return reference_unet, motion, local, motion_modules


def build_random_components(
    model_config: ModelConfig,
    random_config: RandomComponentsConfig,
    seed: int = 0,
    with_motion_modules: bool = True,
) -> XPortraitComponents:
    """All components, random and seeded, at ``model_config.resolution`` (tests, demo, benchmarks).

    Args:
        model_config (`ModelConfig`): Resolution, ControlNet hint widths, temporal settings.
        random_config (`RandomComponentsConfig`): Sizes of the base components.
        seed (`int`, defaults to 0): Base seed.
        with_motion_modules (`bool`, defaults to `True`): Build temporal modules.
    """
    unet, vae, text_encoder, tokenizer, scheduler = random_sd15_base(random_config, model_config.resolution, seed)
    reference_unet, motion, local, modules = build_x_portrait_modules(unet, model_config, with_motion_modules, seed)
    unet.requires_grad_(False)
    return XPortraitComponents(
        unet=unet,
        reference_unet=reference_unet,
        motion_controlnet=motion,
        local_controlnet=local,
        motion_modules=modules,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
    )


def build_base_components(
    base_model: str | os.PathLike,
    config: ModelConfig,
    with_motion_modules: bool = True,
    load_unet_weights: bool = True,
    seed: int = 0,
) -> XPortraitComponents:
    """Components on a diffusers SD1.5 folder (``unet``, ``vae``, ``text_encoder``, ``tokenizer`` sub-folders): the
    frozen UNet, VAE and text encoder from the folder; reference UNet and ControlNets initialised from its UNet; fresh
    zero-initialised temporal modules; the LDM DDIM scheduler.

    Args:
        base_model (`str` or `os.PathLike`): The SD1.5 folder (e.g. a local copy of ``stable-diffusion-v1-5``).
        config (`ModelConfig`): ControlNet hint widths and temporal-module settings.
        with_motion_modules (`bool`, defaults to `True`): Build temporal modules.
        load_unet_weights (`bool`, defaults to `True`): Load the UNet's weights (`False` builds it from its config
            only, e.g. when a converted checkpoint will overwrite it).
        seed (`int`, defaults to 0): Seed of the freshly initialised layers.
    """
    unet, vae, text_encoder, tokenizer = load_sd15_folder(base_model, load_unet_weights)
    reference_unet, motion, local, modules = build_x_portrait_modules(unet, config, with_motion_modules, seed)
    return XPortraitComponents(
        unet=unet,
        reference_unet=reference_unet,
        motion_controlnet=motion,
        local_controlnet=local,
        motion_modules=modules,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=ldm_ddim_scheduler(),
    )
