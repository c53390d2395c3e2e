"""``DiffPortrait3DPipeline``: one portrait + target cameras (or condition images) -> novel views (spec §5).

Paper: arXiv 2312.13016 (Gu et al., CVPR 2024).
Upstream: FreedomGu/DiffPortrait3D@f3ef2dbe55ad0408c8cdbfdf211e0509e7388be1
``inference.py``: DDIM 50 steps with eta 0.5, ``unconditional_guidance_scale=3`` in ``controlnet_important`` mode (the
unconditional pass is the bare UNet with the empty text: no bank, no ControlNet residuals), 8 views denoised together,
start latents ``q_sample(encode(render), t=999)`` of the 3D-aware noise renders (``denoise_from_fea_map``) or noise.

Anatomy after diffusers' ``StableDiffusionControlNetPipeline``: typed components, ``check_inputs``, numbered steps,
``generator`` / ``output_type`` / ``return_dict``. Blocks from genblocks: ``ldm_ddim_scheduler`` /
``set_ldm_timesteps``, ``q_sample_start``, ``plain_cfg``, ``vae_encode`` / ``vae_decode_chunked``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers.image_processor import VaeImageProcessor
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.controlnets.controlnet import ControlNetModel
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextModel, CLIPTokenizer

from diffportrait3d.cameras import check_cameras
from diffportrait3d.config import DiffPortrait3DConfig
from diffportrait3d.modeling_diffportrait3d import (
    DiffPortrait3DComponents,
    DiffPortrait3DModel,
    DiffPortrait3DViewModules,
    build_random_components,
)
from genblocks.devices import resolve_device
from genblocks.diffusion import encode_clip_prompt, plain_cfg, q_sample_start, vae_decode_chunked, vae_encode
from genblocks.diffusion.reference_attention import FusionBlocks
from genblocks.diffusion.sampling import set_ldm_timesteps

__all__ = [
    "ConditionRenderer",
    "DiffPortrait3DPipeline",
    "DiffPortrait3DPipelineOutput",
    "ImageLike",
    "images_to_tensor",
    "load_pipeline",
    "resolve_device",
]

logger = logging.getLogger(__name__)

ImageLike = PIL.Image.Image | np.ndarray | torch.Tensor
"""A PIL image, a uint8 array (H, W, 3) or a float tensor (3, H, W) in [0, 1]."""
ConditionRenderer = Callable[[torch.Tensor], torch.Tensor]
"""Maps camera labels (V, 25) to condition renders (V, 3, H, W) in [0, 1] (e.g. ``noise3d.EG3DConditionRenderer``)."""
OutputType = Literal["pil", "np", "pt", "latent"]


@dataclass
class DiffPortrait3DPipelineOutput(BaseOutput):
    """Output of :class:`DiffPortrait3DPipeline`.

    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`): The V views: PIL images, (V, H, W, 3) in
            [0, 1] (``"np"``), (V, 3, H, W) in [0, 1] (``"pt"``) or latents (V, 4, h, w) (``"latent"``).
        condition_images (`torch.Tensor` of shape `(V, 3, H, W)`): The view ControlNet's hints, in [0, 1].
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    condition_images: torch.Tensor


def images_to_tensor(images: ImageLike | Sequence[ImageLike], name: str, resolution: int) -> torch.Tensor:
    """Images -> float tensor (N, 3, R, R) in [0, 1], resized (not cropped) to ``resolution``.

    Args:
        images: One image or a sequence (PIL, uint8 arrays (H, W, 3) / (N, H, W, 3), float tensors (3, H, W) /
            (N, 3, H, W) in [0, 1]).
        name (`str`): The argument's name, for errors.
        resolution (`int`): Output side.
    """
    if isinstance(images, (PIL.Image.Image, np.ndarray, torch.Tensor)):
        items: list[Any] = [images]
    else:
        items = list(images)
    tensors = []
    for item in items:
        if isinstance(item, PIL.Image.Image):
            item = np.asarray(item.convert("RGB"))
        if isinstance(item, np.ndarray):
            if item.dtype != np.uint8 or item.shape[-1] != 3 or item.ndim not in (3, 4):
                raise ValueError(
                    f"{name} arrays must be uint8 (H, W, 3) or (N, H, W, 3), got {item.dtype} {item.shape}"
                )
            # a copy: a PIL image's array is read-only, which torch.from_numpy warns about
            item = torch.from_numpy(np.array(item)).float().div(255).movedim(-1, -3)
        if not isinstance(item, torch.Tensor) or item.ndim not in (3, 4) or item.shape[-3] != 3:
            raise ValueError(f"{name} must be RGB images: PIL, uint8 (H, W, 3) arrays or float (3, H, W) tensors")
        item = item.float()
        if not torch.isfinite(item).all():
            raise ValueError(f"{name} contains NaN or inf values")
        tensors.append(item if item.ndim == 4 else item[None])
    if not tensors:
        raise ValueError(f"{name} is empty")
    out = []
    for tensor in tensors:
        if tensor.shape[-2:] != (resolution, resolution):
            tensor = F.interpolate(tensor, size=(resolution, resolution), mode="bilinear", antialias=True)
        out.append(tensor.clamp(0, 1))
    return torch.cat(out)


class DiffPortrait3DPipeline(DiffusionPipeline):
    """DiffPortrait3D novel-view synthesis: a frozen SD1.5 UNet reads the portrait's appearance from a reference UNet's
    bank, the camera from a ControlNet on a condition render of another subject at that camera, and keeps the views of
    a batch consistent with cross-view attention.

    Args:
        vae (`AutoencoderKL`): SD KL autoencoder (scale 0.18215).
        text_encoder (`CLIPTextModel`): CLIP text encoder; the prompt is empty.
        tokenizer (`CLIPTokenizer`): Its tokenizer.
        unet (`UNet2DConditionModel`): The frozen denoising UNet.
        reference_unet (`UNet2DConditionModel`): The appearance reference UNet.
        view_controlnet (`ControlNetModel`): ControlNet on the condition render.
        scheduler (`DDIMScheduler`): DDIM with the LDM preset.
        view_modules (`DiffPortrait3DViewModules`, *optional*): Cross-view modules; without them views are independent.
        views_per_batch (`int`, defaults to 8): Views denoised together (the cross-view modules' sequence).
        fusion_blocks (`str`, defaults to `"full"`): Blocks whose self-attention reads the bank.
    """

    model_cpu_offload_seq = "text_encoder->reference_unet->view_controlnet->unet->vae"
    _exclude_from_cpu_offload: ClassVar[list[str]] = ["view_modules"]
    _optional_components: ClassVar[list[str]] = ["view_modules"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        reference_unet: UNet2DConditionModel,
        view_controlnet: ControlNetModel,
        scheduler: DDIMScheduler,
        view_modules: DiffPortrait3DViewModules | None = None,
        views_per_batch: int = 8,
        fusion_blocks: FusionBlocks = "full",
    ) -> None:
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            reference_unet=reference_unet,
            view_controlnet=view_controlnet,
            scheduler=scheduler,
            view_modules=view_modules,
        )
        self.register_to_config(views_per_batch=views_per_batch, fusion_blocks=fusion_blocks)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        factor = 2 ** (len(view_controlnet.config.conditioning_embedding_out_channels) - 1)
        if factor != self.vae_scale_factor:
            raise ValueError(
                f"view_controlnet reads hints {factor}x the latent size but the VAE downsamples by "
                f"{self.vae_scale_factor}; build it with as many hint-encoder widths as the VAE has levels"
            )
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        self.model = DiffPortrait3DModel(unet, reference_unet, view_controlnet, view_modules, fusion_blocks)

    @property
    def default_resolution(self) -> int:
        """The UNet's native image side (``sample_size * vae_scale_factor``)."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    def check_inputs(
        self,
        cameras: torch.Tensor | Sequence[Sequence[float]] | None,
        condition_images: torch.Tensor | Sequence[ImageLike] | None,
        condition_renderer: ConditionRenderer | None,
        num_inference_steps: int,
        guidance_scale: float,
        eta: float,
        views_per_batch: int,
        start_timestep: int,
        resolution: int,
        latents: torch.Tensor | None,
        noise_renders: torch.Tensor | None,
        noise_prior: str = "none",
    ) -> tuple[torch.Tensor | None, int]:
        """Validate the arguments of ``__call__``; returns the checked cameras (or None) and the number of views.

        Raises:
            ValueError: naming the bad input (empty or non-finite cameras, mismatched condition images, ...).
        """
        checked = None
        num_views: int | None = None
        if cameras is not None:
            if not isinstance(cameras, torch.Tensor) and len(cameras) == 0:
                raise ValueError("cameras is empty: give at least one camera")
            checked = check_cameras(torch.as_tensor(cameras, dtype=torch.float32), "cameras")
            num_views = checked.shape[0]
        if condition_images is not None:
            count = len(condition_images)
            if count == 0:
                raise ValueError("condition_images is empty: give one image per view")
            if num_views is not None and count != num_views:
                raise ValueError(f"condition_images has {count} images but cameras has {num_views} cameras")
            num_views = count
        elif checked is not None and condition_renderer is None:
            raise ValueError("cameras need condition_images or a condition_renderer that renders them")
        if num_views is None:
            raise ValueError("give cameras (with a condition_renderer) or condition_images")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if guidance_scale < 1.0:
            raise ValueError(f"guidance_scale must be >= 1, got {guidance_scale}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        max_views = self.view_modules.max_views if self.view_modules is not None else views_per_batch
        if not 1 <= views_per_batch <= max_views:
            raise ValueError(f"views_per_batch must be in [1, {max_views}], got {views_per_batch}")
        if not 0 <= start_timestep < self.scheduler.config.num_train_timesteps:
            raise ValueError(f"start_timestep must be in [0, {self.scheduler.config.num_train_timesteps})")
        if resolution % self.vae_scale_factor:
            raise ValueError(f"resolution must be divisible by {self.vae_scale_factor}, got {resolution}")
        latent_shape = (num_views, 4, resolution // self.vae_scale_factor, resolution // self.vae_scale_factor)
        if latents is not None and tuple(latents.shape) != latent_shape:
            raise ValueError(f"latents must have shape {latent_shape}, got {tuple(latents.shape)}")
        if noise_prior not in ("none", "source", "eg3d"):
            raise ValueError(f"noise_prior must be 'none', 'source' or 'eg3d', got {noise_prior!r}")
        if noise_prior == "eg3d" and noise_renders is None and latents is None:
            raise ValueError(
                "noise_prior='eg3d' needs noise_renders (the 3D-aware renders of EG3DNoisePrior.renders) or latents"
            )
        if noise_renders is not None and len(noise_renders) != num_views:
            raise ValueError(f"noise_renders has {len(noise_renders)} images but there are {num_views} views")
        return checked, num_views

    def encode_prompt(self, prompt: str, device: torch.device) -> torch.Tensor:
        """CLIP context of ``prompt``: (1, T, D)."""
        return encode_clip_prompt(self.tokenizer, self.text_encoder, prompt, device)

    def prepare_latents(
        self,
        num_views: int,
        resolution: int,
        source_latents: torch.Tensor,
        noise_prior: Literal["none", "source", "eg3d"],
        start_timestep: int,
        generator: torch.Generator | None,
        noise_render_latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Start latents (V, 4, h, w): ``q_sample`` of the 3D-aware noise renders' latents when given, else of the
        source latent (``noise_prior="source"``), else pure Gaussian noise."""
        side = resolution // self.vae_scale_factor
        shape = (num_views, 4, side, side)
        noise = randn_tensor(shape, generator=generator, device=source_latents.device, dtype=source_latents.dtype)
        if noise_render_latents is not None:
            return q_sample_start(noise_render_latents, self.scheduler, timestep=start_timestep, noise=noise)
        if noise_prior == "source":
            clean = source_latents.expand(num_views, -1, -1, -1)
            return q_sample_start(clean, self.scheduler, timestep=start_timestep, noise=noise)
        return noise * self.scheduler.init_noise_sigma

    @torch.no_grad()
    def __call__(
        self,
        image: ImageLike,
        cameras: torch.Tensor | Sequence[Sequence[float]] | None = None,
        condition_images: torch.Tensor | Sequence[ImageLike] | None = None,
        condition_renderer: ConditionRenderer | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 3.0,
        eta: float = 0.5,
        views_per_batch: int | None = None,
        noise_prior: Literal["none", "source", "eg3d"] = "none",
        noise_renders: torch.Tensor | None = None,
        start_timestep: int = 999,
        ldm_timesteps: bool = True,
        use_reference: bool = True,
        controlnet_scale: float = 1.0,
        resolution: int | None = None,
        vae_chunk_size: int = 8,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: OutputType = "pil",
        return_dict: bool = True,
    ) -> DiffPortrait3DPipelineOutput | tuple[Any, ...]:
        """Render ``image`` from new views.

        Args:
            image: The portrait (PIL, uint8 (H, W, 3) or float (3, H, W) in [0, 1]); resized to ``resolution``.
            cameras (`torch.Tensor` of shape `(V, 25)`, *optional*): Target cameras as EG3D labels
                (:mod:`diffportrait3d.cameras`); rendered to condition images by ``condition_renderer``.
            condition_images (*optional*): V condition images (a different subject at each target view), in [0, 1];
                when given with ``cameras`` their counts must match.
            condition_renderer (`ConditionRenderer`, *optional*): Renders ``cameras`` when ``condition_images`` is
                not given (e.g. :class:`diffportrait3d.noise3d.EG3DConditionRenderer`).
            num_inference_steps (`int`, defaults to 50): DDIM steps.
            guidance_scale (`float`, defaults to 3.0): CFG scale; 1 skips the unconditional pass.
            eta (`float`, defaults to 0.5): DDIM eta.
            views_per_batch (`int`, *optional*): Views denoised together; defaults to the pipeline's config.
            noise_prior (`str`, defaults to `"none"`): ``"none"`` (Gaussian), ``"source"`` (q-sample of the portrait
                latent) or ``"eg3d"`` (the paper's 3D-aware noise: q-sample of the ``noise_renders``' latents, which
                it requires unless ``latents`` are given); ``noise_renders``, when given, set the start latents
                whatever this says; ``inference.noise_prior`` of the config passes straight through.
            noise_renders (`torch.Tensor` of shape `(V, 3, H, W)`, *optional*): 3D-aware noise renders in [0, 1]
                (:class:`diffportrait3d.noise3d.EG3DNoisePrior`); start latents are their q-sampled latents.
            start_timestep (`int`, defaults to 999): t of the q-sampled start latents.
            ldm_timesteps (`bool`, defaults to `True`): LDM's DDIM timestep spacing.
            use_reference (`bool`, defaults to `True`): Read the portrait's reference bank.
            controlnet_scale (`float`, defaults to 1.0): Scale of the view ControlNet.
            resolution (`int`, *optional*): Output side; defaults to the UNet's native size.
            vae_chunk_size (`int`, defaults to 8): Images per VAE call.
            generator (`torch.Generator`, *optional*): Seeds encoding, start noise and DDIM noise.
            latents (`torch.Tensor` of shape `(V, 4, h, w)`, *optional*): Start latents.
            output_type (`str`, defaults to `"pil"`): ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"``.
            return_dict (`bool`, defaults to `True`): Return a :class:`DiffPortrait3DPipelineOutput`.

        Returns:
            `DiffPortrait3DPipelineOutput` (or ``(images, condition_images)``).
        """
        # 1. Check inputs
        resolution = resolution if resolution is not None else self.default_resolution
        views_per_batch = views_per_batch if views_per_batch is not None else int(self.config.views_per_batch)
        checked, num_views = self.check_inputs(
            cameras, condition_images, condition_renderer, num_inference_steps, guidance_scale, eta, views_per_batch,
            start_timestep, resolution, latents, noise_renders, noise_prior,
        )  # fmt: skip
        device = self._execution_device
        dtype = self.unet.dtype

        # 2. Condition images: given, or rendered at the cameras
        if condition_images is None and condition_renderer is not None and checked is not None:
            condition_images = condition_renderer(checked)
        if condition_images is None:
            raise ValueError("condition_images is missing and no condition_renderer was given")
        conditions = images_to_tensor(condition_images, "condition_images", resolution)
        if conditions.shape[0] != num_views:
            raise ValueError(f"condition_images has {conditions.shape[0]} images, expected {num_views}")
        hints = (conditions * 2 - 1).to(device=device, dtype=dtype)
        portrait = images_to_tensor(image, "image", resolution)
        if portrait.shape[0] != 1:
            raise ValueError(f"image must be one portrait, got {portrait.shape[0]}")

        # 3. Empty-text context (the conditional and unconditional passes share it)
        text = self.encode_prompt("", device).to(dtype)

        # 4. Timesteps
        if ldm_timesteps:
            timesteps = set_ldm_timesteps(self.scheduler, num_inference_steps, device=device)
        else:
            self.scheduler.set_timesteps(num_inference_steps, device=device)
            timesteps = self.scheduler.timesteps

        # 5. Source latent and start latents
        source_latents = vae_encode(
            self.vae, (portrait * 2 - 1).to(device=device, dtype=self.vae.dtype), generator=generator
        ).to(dtype)
        if latents is None:
            render_latents = None
            if noise_renders is not None:
                renders = images_to_tensor(noise_renders, "noise_renders", resolution)
                render_latents = vae_encode(
                    self.vae, (renders * 2 - 1).to(device=device, dtype=self.vae.dtype),
                    chunk_size=vae_chunk_size, generator=generator,
                ).to(dtype)  # fmt: skip
            latents = self.prepare_latents(
                num_views, resolution, source_latents, noise_prior, start_timestep, generator, render_latents
            )
        latents = latents.to(device=device, dtype=dtype)
        batches = [list(range(s, min(s + views_per_batch, num_views))) for s in range(0, num_views, views_per_batch)]

        # 6. Denoising: bank once per step, view batches, bare-UNet CFG
        for t in self.progress_bar(timesteps):
            if use_reference:
                self.model.write_reference(source_latents, t, text)
            noise_pred = torch.empty_like(latents)
            for views in batches:
                count = len(views)
                chunk, context = latents[views], text.expand(count, -1, -1)
                eps = self.model(
                    chunk, t, context, num_views=count, view_image=hints[views], use_reference=use_reference,
                    controlnet_scale=controlnet_scale,
                )  # fmt: skip
                if guidance_scale != 1.0:
                    eps = plain_cfg(self.model.unconditional(chunk, t, context, num_views=count), eps, guidance_scale)
                noise_pred[views] = eps
            latents = self.scheduler.step(noise_pred, t, latents, eta=eta, generator=generator).prev_sample
        self.model.clear_reference()

        # 7. Decode
        if output_type == "latent":
            images: Any = latents
        else:
            decoded = vae_decode_chunked(self.vae, latents, chunk_size=vae_chunk_size)
            images = self.image_processor.postprocess(decoded.float(), output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, conditions
        return DiffPortrait3DPipelineOutput(images=images, condition_images=conditions)


def load_pipeline(config: DiffPortrait3DConfig) -> DiffPortrait3DPipeline:
    """A pipeline as ``config`` describes: seeded random components (``source="random"``) or a saved pipeline folder
    (``source="pretrained"``, written by ``save_pretrained`` or ``diffportrait3d convert``), on ``config.device`` in
    ``config.dtype`` (weights cast after building, or loaded with ``torch_dtype``)."""
    dtype = getattr(torch, config.dtype)
    if config.source == "pretrained":
        folder = Path(config.pretrained)
        if not (folder / "model_index.json").is_file():
            raise ValueError(f"pretrained={config.pretrained!r} is not a DiffPortrait3DPipeline folder")
        pipeline = DiffPortrait3DPipeline.from_pretrained(folder, torch_dtype=dtype)
    else:
        parts: DiffPortrait3DComponents = build_random_components(config.model, config.random, seed=config.seed)
        pipeline = DiffPortrait3DPipeline(
            **parts.as_dict(), views_per_batch=config.model.views_per_batch, fusion_blocks=config.model.fusion_blocks
        )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(resolve_device(config.device), dtype)  # random components are cast here
