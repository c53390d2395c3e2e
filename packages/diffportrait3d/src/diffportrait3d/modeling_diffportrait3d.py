"""DiffPortrait3D's model on diffusers: a frozen SD1.5 UNet, an appearance reference UNet, a view ControlNet and
cross-view attention modules (DiffPortrait3D spec §3).

Paper: DiffPortrait3D: Controllable Diffusion for Zero-Shot Portrait View Synthesis, Gu et al., CVPR 2024
(arXiv 2312.13016). Upstream: FreedomGu/DiffPortrait3D@f3ef2dbe55ad0408c8cdbfdf211e0509e7388be1
``control_model/ControlNet/cldm/cldm.py`` (``ControlLDMReferenceOnlyPose``) and
``ldm/modules/diffusionmodules/openaimodel.py`` (``UNetModel_Temporal``):

- the reference UNet (``control_model``) runs on the clean source latent at the current t and writes the bank; the
  main UNet's ``attn1`` reads K = V = [x; bank];
- the view ControlNet (``pose_control_model``) reads an RGB render of *another* subject at the target camera and adds
  12 skip residuals plus the mid residual;
- cross-view modules (AnimateDiff-style, 8 heads, 1 block, ``max_len`` 32, zero-initialised output) follow input
  blocks 1-11, every output block, a second one after each upsampler, and a middle module that only the unconditional
  pass calls (``mid_module_in_uncond_only``);
- the unconditional pass (``uc=True``) is the bare UNet: no bank, no ControlNet residuals.

What is reused from genblocks: the bank processors, ``ControlNetStack`` residual plumbing, the temporal modules with
the ``MotionPlacement.diffportrait3d`` preset. What lives here: the wiring of one step, the modules as a saveable
diffusers model and component builders.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import ClassVar

import torch
from diffusers.models.controlnets.controlnet import ControlNetModel
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  (diffusers' pipeline loader looks it up here)
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

from diffportrait3d.config import ModelConfig, RandomComponentsConfig
from genblocks.diffusion import (
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

__all__ = [
    "DiffPortrait3DComponents",
    "DiffPortrait3DModel",
    "DiffPortrait3DViewModules",
    "build_base_components",
    "build_random_components",
    "build_trainable_parts",
]

logger = logging.getLogger(__name__)


class DiffPortrait3DViewModules(PlacedTemporalModules):
    """DiffPortrait3D's cross-view attention modules as one saveable diffusers model (``config.json`` + safetensors).

    A :class:`~genblocks.diffusion.PlacedTemporalModules` (attach/remove, frames, unconditional pass, saving;
    constructor arguments ``input_blocks``, ``output_blocks``, ``output_second_blocks``, ``middle_block``,
    ``middle_uncond_only``, ``module_channels``, ``num_attention_heads``, ``num_layers``, ``max_len``,
    ``norm_num_groups``, ``zero_init``, ...) with DiffPortrait3D's defaults (no modules until placed, ``max_len`` 32).
    The modules are AnimateDiff "Vanilla" temporal transformers (``genblocks.diffusion.TemporalTransformer``) run over
    the *views* of a ``(b v)`` batch, held in a :class:`~genblocks.diffusion.TemporalModuleSet` (attribute
    ``view_modules``) keyed ``input_blocks_{i}``, ``middle_block``, ``output_blocks_{j}[_1]``. They are hooked into a
    UNet with :meth:`attach`; the views per sample are set with :meth:`views`, the unconditional pass with
    :meth:`unconditional_pass` (it enables the middle module when ``middle_uncond_only``).
    """

    set_attribute = "view_modules"
    defaults: ClassVar[dict[str, object]] = {"max_len": 32}

    @classmethod
    def from_unet(
        cls,
        unet: UNet2DConditionModel,
        num_attention_heads: int = 8,
        num_layers: int = 1,
        max_len: int = 32,
        norm_num_groups: int = 32,
        middle_uncond_only: bool = True,
        zero_init: bool = True,
    ) -> DiffPortrait3DViewModules:
        """Modules at DiffPortrait3D's placement (``MotionPlacement.diffportrait3d``) sized for ``unet``.

        On SD1.5: input blocks 1-11, the middle block, output blocks 0-11 with second modules after 2, 5, 8
        (29 modules); a smaller UNet gets the same pattern.
        """
        return cls.for_placement(
            unet,
            MotionPlacement.diffportrait3d(unet, middle_uncond_only=middle_uncond_only),
            num_attention_heads=num_attention_heads,
            num_layers=num_layers,
            max_len=max_len,
            norm_num_groups=norm_num_groups,
            zero_init=zero_init,
        )

    @property
    def max_views(self) -> int:
        """The most views one UNet call may have (:attr:`max_frames`)."""
        return self.max_frames

    def views(self, num_views: int) -> contextlib.AbstractContextManager[DiffPortrait3DViewModules]:
        """Inside the ``with`` block the hooked UNet's batch is laid out ``(b v)`` with ``num_views`` views."""
        return self.frames(num_views)


@dataclass
class DiffPortrait3DComponents(ReferenceComponents):
    """The parts of a DiffPortrait3D pipeline, as built or loaded (no wiring yet): genblocks'
    :class:`~genblocks.diffusion.ReferenceComponents` (``unet`` frozen, ``reference_unet`` = upstream
    ``control_model``, ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler`` with the LDM preset; the prompt is always
    empty) plus the view ControlNet and the cross-view modules; :meth:`as_dict` gives the keyword arguments of
    ``DiffPortrait3DPipeline``.

    Attributes:
        view_controlnet: ControlNet on the condition render at the target camera (upstream ``pose_control_model``).
        view_modules: Cross-view modules (``None`` for a stage-1 model).
    """

    view_controlnet: ControlNetModel
    view_modules: DiffPortrait3DViewModules | None


class DiffPortrait3DModel(ReferenceDenoiser):
    """One DiffPortrait3D denoising step around a UNet: reference bank + view ControlNet + cross-view modules.

    A :class:`~genblocks.diffusion.ReferenceDenoiser` (bank, :meth:`write_reference`, :meth:`clear_reference`, the
    view modules under ``view_modules``) whose UNet also takes the view ControlNet's residuals. Building the model
    attaches bank processors to ``reference_unet`` (write) and ``unet`` (read) and hooks the view modules into
    ``unet``; components are shared, not copied. A step is::

        model.write_reference(source_latents, t, text)               # clean source latent, same t
        eps_c = model(x_t, t, text_views, num_views=v, view_image=cond)
        eps_u = model.unconditional(x_t, t, text_views, num_views=v)  # bare UNet (+ view modules, middle one on)

    Args:
        unet (`UNet2DConditionModel`): The frozen denoising UNet.
        reference_unet (`UNet2DConditionModel`): The appearance UNet; same architecture as ``unet``.
        view_controlnet (`ControlNetModel`): Reads the condition render at the target camera.
        view_modules (`DiffPortrait3DViewModules`, *optional*): Cross-view modules; `None` denoises views
            independently.
        fusion_blocks (`str`, defaults to `"full"`): Blocks whose ``attn1`` reads the bank.
    """

    temporal_attribute = "view_modules"
    frames_name = "num_views"

    def __init__(
        self,
        unet: UNet2DConditionModel,
        reference_unet: UNet2DConditionModel,
        view_controlnet: ControlNetModel,
        view_modules: DiffPortrait3DViewModules | None = None,
        fusion_blocks: FusionBlocks = "full",
    ) -> None:
        super().__init__(unet, reference_unet, fusion_blocks)
        self.view_controlnet = view_controlnet
        self.view_modules: DiffPortrait3DViewModules | None
        self.set_temporal_modules(view_modules)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        encoder_hidden_states: torch.Tensor,
        num_views: int = 1,
        view_image: torch.Tensor | None = None,
        use_reference: bool = True,
        controlnet_scale: float = 1.0,
    ) -> torch.Tensor:
        """The conditional pass: bank read, view ControlNet residuals, cross-view modules over ``num_views``.

        Args:
            sample (`torch.Tensor` of shape `(B * V, 4, h, w)`): Noisy latents laid out ``(b v)``.
            timestep (`torch.Tensor` or `int`): Timestep.
            encoder_hidden_states (`torch.Tensor` of shape `(B * V, T, D)`): Text context per view.
            num_views (`int`, defaults to 1): V, views per portrait.
            view_image (`torch.Tensor` of shape `(B * V, 3, H, W)`, *optional*): Condition renders in [-1, 1];
                `None` leaves the ControlNet out.
            use_reference (`bool`, defaults to `True`): Read the bank.
            controlnet_scale (`float`, defaults to 1.0): Scale of the ControlNet residuals.

        Returns:
            `torch.Tensor` of shape `(B * V, 4, h, w)`: the epsilon prediction.
        """
        self.check_sample(sample, num_views, use_reference)
        residuals: dict[str, object] = {}
        if view_image is not None and controlnet_scale != 0.0:
            if view_image.shape[0] != sample.shape[0]:
                raise ValueError(f"view_image must have {sample.shape[0]} images, got {tuple(view_image.shape)}")
            down, mid = self.view_controlnet(
                sample,
                timestep,
                encoder_hidden_states=encoder_hidden_states,
                controlnet_cond=view_image,
                conditioning_scale=controlnet_scale,
                return_dict=False,
            )
            residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        return self.denoise(sample, timestep, encoder_hidden_states, num_views, use_reference, residuals)

    def unconditional(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        encoder_hidden_states: torch.Tensor,
        num_views: int = 1,
    ) -> torch.Tensor:
        """The unconditional pass (upstream ``uc=True``): bare UNet, no bank, no ControlNet; view modules on, the
        middle one included when it is ``middle_uncond_only``.

        Args:
            sample (`torch.Tensor` of shape `(B * V, 4, h, w)`): Noisy latents.
            timestep (`torch.Tensor` or `int`): Timestep.
            encoder_hidden_states (`torch.Tensor` of shape `(B * V, T, D)`): Empty-text context.
            num_views (`int`, defaults to 1): Views per portrait.

        Returns:
            `torch.Tensor` of shape `(B * V, 4, h, w)`.
        """
        return self.denoise(
            sample, timestep, encoder_hidden_states, num_views, use_reference=False, unconditional=True
        )

    def enable_gradient_checkpointing(self) -> None:
        """Checkpoint the activations of both UNets and the ControlNet (training)."""
        for module in (self.unet, self.reference_unet, self.view_controlnet):
            module.enable_gradient_checkpointing()


def build_trainable_parts(
    unet: UNet2DConditionModel, config: ModelConfig, with_view_modules: bool = True, seed: int = 0
) -> tuple[UNet2DConditionModel, ControlNetModel, DiffPortrait3DViewModules | None]:
    """Reference UNet (copy of ``unet``), view ControlNet (``ControlNetModel.from_unet``) and zero-initialised
    cross-view modules, as upstream initialises them.

    Args:
        unet (`UNet2DConditionModel`): The base UNet (not modified).
        config (`ModelConfig`): Hint widths and view-module settings.
        with_view_modules (`bool`, defaults to `True`): Build the cross-view modules (`False` for stage 1).
        seed (`int`, defaults to 0): Seed of freshly initialised layers.

    Returns:
        `tuple`: ``(reference_unet, view_controlnet, view_modules)``.
    """
    reference_unet = copy_unet(unet)
    controlnet = controlnet_from_unet(unet, seed, config.controlnet_embedding_channels, match_dtype=True)
    modules = None
    if with_view_modules:
        torch.manual_seed(seed)
        modules = DiffPortrait3DViewModules.from_unet(
            unet,
            num_attention_heads=config.view_heads,
            num_layers=config.view_layers,
            max_len=config.view_max_len,
            norm_num_groups=config.view_norm_groups,
            middle_uncond_only=config.mid_module_in_uncond_only,
        )
    return reference_unet, controlnet, modules


def build_random_components(
    model_config: ModelConfig,
    random_config: RandomComponentsConfig,
    seed: int = 0,
    with_view_modules: bool = True,
) -> DiffPortrait3DComponents:
    """All components, random and seeded, at ``model_config.resolution`` (tests, demo, benchmarks)."""
    unet, vae, text_encoder, tokenizer, scheduler = random_sd15_base(random_config, model_config.resolution, seed)
    reference_unet, controlnet, modules = build_trainable_parts(unet, model_config, with_view_modules, seed)
    unet.requires_grad_(False)
    return DiffPortrait3DComponents(
        unet=unet,
        reference_unet=reference_unet,
        view_controlnet=controlnet,
        view_modules=modules,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
    )


def build_base_components(
    base_model: str | os.PathLike, config: ModelConfig, with_view_modules: bool = True, seed: int = 0
) -> DiffPortrait3DComponents:
    """Components on a diffusers SD1.5 folder (``unet``, ``vae``, ``text_encoder``, ``tokenizer``): frozen UNet, VAE
    and text encoder from it; reference UNet and view ControlNet initialised from its UNet; fresh zero-initialised
    cross-view modules; the LDM DDIM scheduler.

    Args:
        base_model (`str` or `os.PathLike`): The SD1.5 folder.
        config (`ModelConfig`): Hint widths and view-module settings.
        with_view_modules (`bool`, defaults to `True`): Build cross-view modules.
        seed (`int`, defaults to 0): Seed of freshly initialised layers.
    """
    unet, vae, text_encoder, tokenizer = load_sd15_folder(base_model)
    reference_unet, controlnet, modules = build_trainable_parts(unet, config, with_view_modules, seed)
    return DiffPortrait3DComponents(
        unet=unet,
        reference_unet=reference_unet,
        view_controlnet=controlnet,
        view_modules=modules,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=ldm_ddim_scheduler(),
    )
