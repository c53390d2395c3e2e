"""humananim's model on diffusers: an SD1.5 UNet, a reference UNet and bank, a pose ControlNet whose hint carries the
hand motion-blur channels, and AnimateDiff temporal modules in diffusers' ``MotionAdapter`` layout (humananim spec §3).

Paper: High Quality Human Image Animation using Regional Supervision and Motion Blur Condition, Xu et al. (arXiv
2409.19580); no official code. The defaults follow its closest released relative, MagicAnimate (arXiv 2311.16498),
magic-research/magic-animate@HEAD ``configs/prompts/animation.yaml`` (``fusion_blocks: midup``) and
``configs/inference/inference.yaml`` (motion modules: Vanilla, 8 heads, 1 transformer block, 2 temporal
self-attentions, position table of 24, no middle module; DDIM β 0.00085 -> 0.012 ``linear``). Its UNet3D
(``magicanimate/models/unet_3d_blocks.py``) runs each motion module after a layer's resnet and attention and, in an
upsampling block, before the upsampler: diffusers' ``UNetMotionModel`` / ``MotionAdapter`` placement, kept here
(``MotionPlacement.animatediff(output_before_upsampler=True)``).

What is reused from ``genblocks.diffusion``: the bank processors (``attach_reference_pair``, ``write_reference_bank``,
``reference_mode``), the ControlNet wrapper (``ControlNetStack``), the temporal modules and their hooks
(``TemporalModules``) with the AnimateDiff / ``MotionAdapter`` key map (``convert_animatediff_motion_state_dict``),
the zero-initialised input widening (``widen_conv_in``) and the LDM DDIM scheduler. What lives here: one humananim
denoising step, the motion modules with their ``MotionAdapter`` export, and the component builders.

Known difference from MagicAnimate: its UNet3D uses "inflated" GroupNorm in the UNet's resnets (statistics over all
frames of a clip); the UNet here is the plain 2-D SD1.5 UNet (statistics per frame), with temporal mixing only in the
motion modules.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from diffusers.models.controlnets.controlnet import ControlNetModel
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  (diffusers' pipeline loader looks it up here)
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.schedulers.scheduling_ddim import DDIMScheduler

from genblocks.diffusion import (
    ControlNetStack,
    LdmDdimConfig,
    MotionPlacement,
    PlacedTemporalModules,
    ReferenceComponents,
    ReferenceDenoiser,
    controlnet_from_unet,
    copy_unet,
    ldm_ddim_scheduler,
    load_sd15_folder,
    widen_conv_in,
)
from genblocks.diffusion.reference_attention import FusionBlocks
from genblocks.diffusion.temporal import MIDDLE_NAME, convert_animatediff_motion_state_dict, unet_ldm_layout
from genblocks.errors import InputError
from genblocks.tiny import RandomComponentsConfig, random_sd15_base
from humananim.config import POSE_CHANNELS, ModelConfig

__all__ = [
    "CONTROLNET_NAME",
    "HumanAnimComponents",
    "HumanAnimModel",
    "HumanAnimMotionModules",
    "build_base_components",
    "build_humananim_modules",
    "build_random_components",
    "humananim_scheduler",
    "widen_pose_controlnet",
]

logger = logging.getLogger(__name__)

CONTROLNET_NAME = "pose"
"""Name of the pose ControlNet in the model's ``ControlNetStack``."""

SD15_INPUT_MOTION_BLOCKS: tuple[int, ...] = (1, 2, 4, 5, 7, 8, 10, 11)
SD15_OUTPUT_MOTION_BLOCKS: tuple[int, ...] = tuple(range(12))
SD15_MOTION_CHANNELS: tuple[int, ...] = (
    (320, 320, 640, 640, 1280, 1280, 1280, 1280) + (1280,) * 6 + (640,) * 3 + (320,) * 3
)
"""Channels of the 20 motion modules on SD1.5 (no middle module): 8 after down-block layers, 12 in the up blocks."""


class HumanAnimMotionModules(PlacedTemporalModules):
    """AnimateDiff "Vanilla" temporal modules placed as diffusers' ``MotionAdapter`` / MagicAnimate's UNet3D, as one
    saveable diffusers model.

    A :class:`~genblocks.diffusion.PlacedTemporalModules` (attach/remove, :meth:`frames`, saving; constructor arguments
    ``input_blocks``, ``output_blocks``, ``module_channels``, ``middle_block``, ``num_attention_heads``, ``num_layers``,
    ``max_len``, ``norm_num_groups``, ``norm_per_frame``, ``zero_init``, ...) whose defaults are the 20 SD1.5 modules
    (every down-block layer, all 12 output blocks, no middle module) run before the upsampler
    (``output_before_upsampler=True``), 8 heads, 1 layer, ``max_len`` 24, per-frame GroupNorm, zero-initialised
    outputs. The modules (attribute ``motion_modules``, keyed ``input_blocks_{i}`` / ``output_blocks_{j}`` /
    ``middle_block`` by LDM block index) are hooked into a plain ``UNet2DConditionModel`` with :meth:`attach`.
    AnimateDiff checkpoints (``mm_sd_v15*.ckpt``, MagicAnimate's ``temporal_attention.ckpt``) and diffusers
    ``MotionAdapter`` state dicts load with :meth:`load_motion_adapter`; :meth:`motion_adapter_state_dict` writes the
    ``MotionAdapter`` keys back.
    """

    set_attribute = "motion_modules"
    defaults: ClassVar[dict[str, object]] = {
        "input_blocks": SD15_INPUT_MOTION_BLOCKS,
        "output_blocks": SD15_OUTPUT_MOTION_BLOCKS,
        "module_channels": SD15_MOTION_CHANNELS,
        "output_before_upsampler": True,
    }

    @classmethod
    def from_unet(
        cls,
        unet: UNet2DConditionModel,
        middle_block: bool = False,
        num_attention_heads: int = 8,
        num_layers: int = 1,
        max_len: int = 24,
        norm_num_groups: int = 32,
        norm_per_frame: bool = True,
    ) -> HumanAnimMotionModules:
        """Zero-initialised modules at the ``MotionAdapter`` placement sized for ``unet`` (after every down-block
        layer and every up-block layer, optionally the middle block)."""
        placement = MotionPlacement.animatediff(unet, output_before_upsampler=True)
        return cls.for_placement(
            unet,
            dataclasses.replace(placement, middle_block=middle_block),
            num_attention_heads=num_attention_heads,
            num_layers=num_layers,
            max_len=max_len,
            norm_num_groups=norm_num_groups,
            norm_per_frame=norm_per_frame,
        )

    def adapter_key_map(self, unet: UNet2DConditionModel) -> dict[str, str]:
        """Our module names -> ``MotionAdapter`` prefixes on ``unet``: ``input_blocks_{i}`` ->
        ``down_blocks.{b}.motion_modules.{l}``, ``output_blocks_{j}`` -> ``up_blocks.{b}.motion_modules.{l}``,
        ``middle_block`` -> ``mid_block.motion_modules.0``."""
        layout = unet_ldm_layout(unet)
        names: dict[str, str] = {}
        for block in layout.input_blocks:
            if block.kind == "layer" and block.index in self.placement.input_blocks:
                names[f"input_blocks_{block.index}"] = (
                    f"down_blocks.{block.down_or_up_block}.motion_modules.{block.layer}"
                )
        for block in layout.output_blocks:
            if block.index in self.placement.output_blocks:
                names[f"output_blocks_{block.index}"] = (
                    f"up_blocks.{block.down_or_up_block}.motion_modules.{block.layer}"
                )
        if self.placement.middle_block:
            names[MIDDLE_NAME] = "mid_block.motion_modules.0"
        missing = sorted(set(self.module_set) - set(names))
        if missing:
            raise InputError(f"unet: motion modules {missing} have no MotionAdapter slot on this UNet's blocks")
        return names

    def motion_adapter_state_dict(self, unet: UNet2DConditionModel) -> dict[str, torch.Tensor]:
        """The weights in diffusers ``MotionAdapter`` keys (``down_blocks.{b}.motion_modules.{l}.norm.weight``, ...):
        ``MotionAdapter(...).load_state_dict(result, strict=True)`` takes them, and so does :meth:`load_motion_adapter`.

        Args:
            unet (`UNet2DConditionModel`): The UNet the modules belong to (fixes the block map).
        """
        names = self.adapter_key_map(unet)
        return {
            f"{names[module]}.{rest}": value.detach().clone()
            for key, value in self.module_set.state_dict().items()
            for module, _, rest in [key.partition(".")]
        }

    def load_motion_adapter(
        self, state_dict: Mapping[str, torch.Tensor], unet: UNet2DConditionModel, prefix: str = ""
    ) -> tuple[list[str], list[str]]:
        """Load AnimateDiff (``temporal_transformer.*`` sub-keys) or diffusers ``MotionAdapter`` weights.

        Args:
            state_dict (`Mapping[str, torch.Tensor]`): e.g. ``mm_sd_v15_v2.ckpt``, MagicAnimate's
                ``temporal_attention.ckpt`` or ``MotionAdapter.state_dict()``; keys outside motion modules are ignored.
            unet (`UNet2DConditionModel`): The UNet the modules belong to.
            prefix (`str`, defaults to `""`): Prefix before the motion keys (``"module."``, ``"unet."``).

        Returns:
            `tuple[list[str], list[str]]`: ``(missing, unmatched)``: our parameters the checkpoint did not fill and the
            checkpoint's motion keys with no place here. Both empty means every weight was replaced.
        """
        converted, unmatched = convert_animatediff_motion_state_dict(state_dict, unet, self.placement, prefix)
        own = self.module_set.state_dict()
        wrong = sorted(k for k, v in converted.items() if k in own and own[k].shape != v.shape)
        if wrong:
            raise InputError(
                f"motion weights: {len(wrong)} tensors have other shapes than this UNet's modules, e.g. {wrong[0]}: "
                f"{tuple(converted[wrong[0]].shape)} vs {tuple(own[wrong[0]].shape)}"
            )
        result = self.module_set.load_state_dict(converted, strict=False)
        return sorted(result.missing_keys), sorted(unmatched)


@dataclass
class HumanAnimComponents(ReferenceComponents):
    """The parts of a humananim pipeline, as built or loaded (no wiring yet): genblocks'
    :class:`~genblocks.diffusion.ReferenceComponents` (``unet``, frozen in the image and video stages;
    ``reference_unet``, MagicAnimate's appearance encoder; ``vae``, MagicAnimate's ``sd-vae-ft-mse``; ``text_encoder``
    and ``tokenizer``, the prompt is always empty; ``scheduler``, DDIM on the model's beta schedule) plus the pose
    ControlNet and the temporal modules; :meth:`as_dict` gives the keyword arguments of ``HumanAnimPipeline``.

    Attributes:
        controlnet: Pose ControlNet reading the ``3 + blur_channels``-channel hint.
        motion_modules: Temporal modules (``None`` for an image-stage model).
    """

    controlnet: ControlNetModel
    motion_modules: HumanAnimMotionModules | None


class HumanAnimModel(ReferenceDenoiser):
    """One humananim denoising step: reference bank + pose ControlNet + temporal modules around a UNet.

    A :class:`~genblocks.diffusion.ReferenceDenoiser` (bank, :meth:`write_reference`, :meth:`clear_reference`, temporal
    modules) whose UNet also takes the pose ControlNet's residuals. Building the model attaches bank processors to
    ``reference_unet`` (write) and ``unet`` (read) in the ``fusion_blocks`` and hooks the motion modules into ``unet``; the components are shared, not copied. A step is::

        model.write_reference(reference_latents, t, text)      # reference UNet on the clean reference latent, same t
        eps_c = model(x_t, t, text_frames, num_frames=f, hint=hints)              # bank + ControlNet + motion
        eps_u = model(x_t, t, text_frames, num_frames=f, use_reference=False)     # animation CFG's null branch

    The batch of ``unet`` is laid out ``(b f)``: ``b`` references, ``f`` frames each; the bank (``b`` entries) is
    repeated over the frames.

    Args:
        unet (`UNet2DConditionModel`): The denoising UNet.
        reference_unet (`UNet2DConditionModel`): The appearance UNet; same architecture as ``unet``.
        controlnet (`ControlNetModel`): The pose ControlNet.
        motion_modules (`HumanAnimMotionModules`, *optional*): Temporal modules; `None` for an image model.
        fusion_blocks (`str`, defaults to `"midup"`): Blocks whose ``attn1`` reads the bank (``"midup"``, ``"full"``).
        controlnet_scale (`float`, defaults to 1.0): Default conditioning scale of the pose ControlNet.
    """

    def __init__(
        self,
        unet: UNet2DConditionModel,
        reference_unet: UNet2DConditionModel,
        controlnet: ControlNetModel,
        motion_modules: HumanAnimMotionModules | None = None,
        fusion_blocks: FusionBlocks = "midup",
        controlnet_scale: float = 1.0,
    ) -> None:
        super().__init__(unet, reference_unet, fusion_blocks)
        self.controlnets = ControlNetStack([controlnet], names=(CONTROLNET_NAME,), scales=(controlnet_scale,))
        self.motion_modules: HumanAnimMotionModules | None
        self.set_temporal_modules(motion_modules)

    @property
    def controlnet(self) -> ControlNetModel:
        """The pose ControlNet."""
        return self.controlnets[CONTROLNET_NAME]

    @property
    def conditioning_channels(self) -> int:
        """Channels of the hint the ControlNet reads (3 pose + blur channels)."""
        return int(self.controlnet.config["conditioning_channels"])

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        encoder_hidden_states: torch.Tensor,
        num_frames: int = 1,
        hint: torch.Tensor | None = None,
        use_reference: bool = True,
        controlnet_scale: float | None = None,
    ) -> torch.Tensor:
        """One pass: bank read (``use_reference``), pose ControlNet on ``hint``, temporal modules over ``num_frames``.

        Args:
            sample (`torch.Tensor` of shape `(B * F, 4, h, w)`): Noisy latents laid out ``(b f)``.
            timestep (`torch.Tensor` or `int`): Timestep (scalar or (B * F,)).
            encoder_hidden_states (`torch.Tensor` of shape `(B * F, T, D)`): Text context per frame.
            num_frames (`int`, defaults to 1): F, frames per reference.
            hint (`torch.Tensor` of shape `(B * F, 3 + blur_channels, 8h, 8w)`, *optional*): Pose + blur hints (see
                ``humananim.config``); `None` leaves the ControlNet out (animation CFG's null branch).
            use_reference (`bool`, defaults to `True`): Read the bank (written by :meth:`write_reference`).
            controlnet_scale (`float`, *optional*): Scale for this call; defaults to the stored one. 0 skips the net.

        Returns:
            `torch.Tensor` of shape `(B * F, 4, h, w)`: the UNet's epsilon prediction.
        """
        self.check_sample(sample, num_frames, use_reference)
        scale = self.controlnets.scales[CONTROLNET_NAME] if controlnet_scale is None else float(controlnet_scale)
        residuals: dict[str, object] = {}
        if hint is not None and scale != 0.0:
            if hint.ndim != 4 or hint.shape[0] != sample.shape[0] or hint.shape[1] != self.conditioning_channels:
                raise InputError(
                    f"hint: expected ({sample.shape[0]}, {self.conditioning_channels}, H, W) (pose + blur channels "
                    f"per frame), got {tuple(hint.shape)}"
                )
            residuals = self.controlnets(
                sample,
                timestep,
                encoder_hidden_states,
                controlnet_cond={CONTROLNET_NAME: hint.to(sample.dtype)},
                conditioning_scale={CONTROLNET_NAME: scale},
            ).unet_kwargs()
        return self.denoise(sample, timestep, encoder_hidden_states, num_frames, use_reference, residuals)

    def enable_gradient_checkpointing(self) -> None:
        """Checkpoint the activations of both UNets and the ControlNet (for training)."""
        for module in (self.unet, self.reference_unet, self.controlnet):
            module.enable_gradient_checkpointing()


def humananim_scheduler(config: ModelConfig) -> DDIMScheduler:
    """The DDIM scheduler on ``config.beta_schedule`` (MagicAnimate: β 0.00085 -> 0.012 ``linear``)."""
    return ldm_ddim_scheduler(LdmDdimConfig(beta_schedule=config.beta_schedule))


def widen_pose_controlnet(controlnet: ControlNetModel, blur_channels: int = 3) -> ControlNetModel:
    """Widen a 3-channel pose ControlNet (MagicAnimate's DensePose one) to read ``3 + blur_channels`` hint channels.

    The new input channels of the hint encoder's first convolution start at exactly zero weight (the pretrained
    weights and bias are kept bit for bit), so the widened net computes what the pretrained one did until training
    moves them; ``config.conditioning_channels`` records the new width.

    Args:
        controlnet (`ControlNetModel`): A ControlNet with ``conditioning_channels == 3``; widened in place.
        blur_channels (`int`, defaults to 3): Channels to add.

    Returns:
        `ControlNetModel`: ``controlnet``.
    """
    channels = int(controlnet.config["conditioning_channels"])
    if channels != POSE_CHANNELS:
        raise InputError(
            f"controlnet: expected a {POSE_CHANNELS}-channel pose ControlNet to widen, got conditioning_channels={channels}"
        )
    if blur_channels == 0:
        return controlnet
    widen_conv_in(controlnet, blur_channels, attribute="controlnet_cond_embedding.conv_in")
    return controlnet


def build_humananim_modules(
    unet: UNet2DConditionModel, config: ModelConfig, with_motion_modules: bool = True, seed: int = 0
) -> tuple[UNet2DConditionModel, ControlNetModel, HumanAnimMotionModules | None]:
    """The trainable parts, initialised from ``unet``: the reference UNet (a copy), the pose ControlNet (encoder copied
    from ``unet``, zero-initialised outputs, ``config.conditioning_channels`` hint channels) and zero-initialised
    temporal modules.

    Args:
        unet (`UNet2DConditionModel`): The base UNet (not modified; build before wiring a ``HumanAnimModel``).
        config (`ModelConfig`): Hint widths and temporal-module settings.
        with_motion_modules (`bool`, defaults to `True`): Build the temporal modules (`False` for the image stage).
        seed (`int`, defaults to 0): Seed of the freshly initialised layers (hint encoder).

    Returns:
        `tuple`: ``(reference_unet, controlnet, motion_modules)``.
    """
    reference_unet = copy_unet(unet)
    controlnet = controlnet_from_unet(
        unet, seed, config.controlnet_embedding_channels, conditioning_channels=config.conditioning_channels
    )
    motion_modules = None
    if with_motion_modules:
        torch.manual_seed(seed)
        motion_modules = HumanAnimMotionModules.from_unet(
            unet,
            middle_block=config.temporal_mid_block,
            num_attention_heads=config.temporal_heads,
            num_layers=config.temporal_layers,
            max_len=config.temporal_max_len,
            norm_num_groups=config.temporal_norm_groups,
            norm_per_frame=config.temporal_norm_per_frame,
        )
    return reference_unet, controlnet, motion_modules


def build_random_components(
    model_config: ModelConfig,
    random_config: RandomComponentsConfig,
    seed: int = 0,
    with_motion_modules: bool = True,
) -> HumanAnimComponents:
    """All components, random and seeded (tests, demo, benchmarks; ``--config tiny``).

    Args:
        model_config (`ModelConfig`): Frame size, hint widths, temporal settings, beta schedule.
        random_config (`RandomComponentsConfig`): Sizes of the base components.
        seed (`int`, defaults to 0): Base seed.
        with_motion_modules (`bool`, defaults to `True`): Build temporal modules.
    """
    unet, vae, text_encoder, tokenizer, _ = random_sd15_base(random_config, model_config.height, seed)
    reference_unet, controlnet, modules = build_humananim_modules(unet, model_config, with_motion_modules, seed)
    unet.requires_grad_(False)
    return HumanAnimComponents(
        unet=unet,
        reference_unet=reference_unet,
        controlnet=controlnet,
        motion_modules=modules,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=humananim_scheduler(model_config),
    )


def build_base_components(
    base_model: str | os.PathLike,
    config: ModelConfig,
    with_motion_modules: bool = True,
    seed: int = 0,
) -> HumanAnimComponents:
    """Components on a diffusers SD1.5 folder (``unet``, ``vae``, ``text_encoder``, ``tokenizer`` sub-folders): the
    UNet, VAE and text encoder from the folder; reference UNet and pose ControlNet initialised from its UNet; fresh
    zero-initialised temporal modules; the DDIM scheduler on ``config.beta_schedule``.

    Args:
        base_model (`str` or `os.PathLike`): The SD1.5 folder (e.g. a local copy of ``stable-diffusion-v1-5`` with
            ``sd-vae-ft-mse`` in ``vae/``, as MagicAnimate uses).
        config (`ModelConfig`): Hint widths and temporal-module settings.
        with_motion_modules (`bool`, defaults to `True`): Build temporal modules.
        seed (`int`, defaults to 0): Seed of the freshly initialised layers.
    """
    unet, vae, text_encoder, tokenizer = load_sd15_folder(base_model)
    reference_unet, controlnet, modules = build_humananim_modules(unet, config, with_motion_modules, seed)
    return HumanAnimComponents(
        unet=unet,
        reference_unet=reference_unet,
        controlnet=controlnet,
        motion_modules=modules,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=humananim_scheduler(config),
    )
