"""``PortraitEditPipeline``: a source portrait + a target prompt -> the edited portrait, its edit mask and the
reconstruction (spec §5).

Paper: arXiv 2407.20455 (Chen et al.). Upstream: bytedance/feature-preserve-portrait-editing@570c18ac9dc7da45285e80b222d40ffb673c4ce2
``pipelines/pipeline.py`` (``StableDiffusionImg2ImgPipeline.__call__``: the 4-way batch ``[null, all, img, img+concat]``
with text ``[neg, prompt, neg, neg]``, image tokens ``[null, img, img, img]`` and concat ``[0, src, 0, src]``, guided as
``null + s1 (img - null) + s2 (img+concat - img) + s3 (all - img+concat)``; ``generate_mask``: DiffEdit's mask from
the source noised to strength 0.5 on a 50-step schedule, clamped at 3x its mean) and ``demo.py`` (UniPC, 20 steps,
s = (3, 2, 4), start noise ``randn(1, 4, 64, 64)``).

What is ours (each a documented difference, see the README's "Differences from the official code"):

- guidance runs whenever any scale differs from 1 (upstream: only when s1 > 1 or s2 > 1, so (1, 1, 4) ignores s3);
- the image conditions come from the pipeline's ``generator`` (or the posterior mean, or are passed in), not from the
  global random stream; the CLIP tower is the registered ``image_encoder``;
- the edit mask draws independent noise per sample and guides every sample with its own 4-way batch (upstream's 10
  "samples" are one noisy latent repeated, and its text rows come in blocks of 10 while image rows cycle every 4);
  identical prompts give a zero mask, not NaN; the clamp uses each image's own mean;
- mask-guided sampling (the demo does not use the mask): ``mask_blend="latent"`` replaces the latents outside the mask
  after every step by those of a reconstruction run (source prompt, same start noise), the blend upstream's ``__call__``
  codes with ``rec_latents`` that no released code builds; ``mask_blend="eps"`` blends the two predicted noises (the
  patent's "mask-guided predicted noise");
- ``null_mode="matched"`` uses the training nulls (mid-grey pixels through the VAE) instead of upstream's inference
  nulls (black image through the VAE for the tokens, a zero latent for the concat input).

Anatomy after diffusers' ``StableDiffusionControlNetPipeline``: typed components, ``check_inputs``, numbered steps in
``__call__``, ``generator`` / ``output_type`` / ``return_dict`` and a dataclass output. Blocks from genblocks:
``encode_clip_prompt``, ``vae_encode``, ``vae_decode_chunked``, ``nested_cfg``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers.image_processor import VaeImageProcessor
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModel

from genblocks.devices import resolve_device, torch_dtype
from genblocks.diffusion import encode_clip_prompt, nested_cfg, vae_decode_chunked, vae_encode
from genblocks.errors import InputError
from portrait_edit.modeling_portrait_edit import (
    COMBINE_TYPES,
    EmbeddingAdapter,
    PortraitEditComponents,
    black_clip_pixels,
    build_base_components,
    build_random_components,
    clip_pixels,
    combine_context,
    encode_image_tokens,
    null_pixels,
)

if TYPE_CHECKING:
    from portrait_edit.config import PortraitEditConfig

__all__ = [
    "ImageConditions",
    "PortraitEditPipeline",
    "PortraitEditPipelineOutput",
    "load_pipeline",
    "sampling_options",
]

logger = logging.getLogger(__name__)

ImageInput = PIL.Image.Image | Sequence[PIL.Image.Image] | torch.Tensor
Generators = torch.Generator | list[torch.Generator] | None


@dataclass
class PortraitEditPipelineOutput(BaseOutput):
    """What one edit returns.

    Attributes:
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`): The edits: PIL images, (B, H, W, 3) in [0, 1]
            (``"np"``), (B, 3, H, W) in [0, 1] (``"pt"``), or the final latents (B, 4, h, w) (``"latent"``).
        masks (`torch.Tensor` of shape `(B, 1, h, w)`, *optional*): The soft edit mask in [0, 1] at latent resolution
            (``None`` when ``use_mask=False``).
        reconstructions (same type as ``images``, *optional*): The reconstruction run (source prompt, same start
            noise) whose latents fill the region outside the mask (``mask_blend="latent"`` only, else ``None``).
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    masks: torch.Tensor | None = None
    reconstructions: list[PIL.Image.Image] | np.ndarray | torch.Tensor | None = None


@dataclass
class ImageConditions:
    """The source image's conditions and their nulls, one row per image.

    Attributes:
        latents (`torch.Tensor` of shape `(B, 4, h, w)`): Scaled source latents (concat input, the mask's clean latents).
        tokens (`torch.Tensor` of shape `(B, N, D)`): Image embedding, ``adapter(CLIP(source), latents)``.
        null_latents (`torch.Tensor` of shape `(B, 4, h, w)`): Concat null (zeros upstream, VAE(grey) matched).
        null_tokens (`torch.Tensor` of shape `(B, N, D)`): Image-embedding null, ``adapter(CLIP(black), VAE(null
            image))``.
    """

    latents: torch.Tensor
    tokens: torch.Tensor
    null_latents: torch.Tensor
    null_tokens: torch.Tensor

    def repeat_interleave(self, repeats: int) -> ImageConditions:
        """Every row repeated ``repeats`` times in place (B -> B * repeats, rows of one image adjacent)."""
        return ImageConditions(
            *(
                t.repeat_interleave(repeats, dim=0)
                for t in (self.latents, self.tokens, self.null_latents, self.null_tokens)
            )
        )


def _as_list(value: str | Sequence[str], batch_size: int, name: str) -> list[str]:
    values = [value] * batch_size if isinstance(value, str) else list(value)
    if len(values) != batch_size:
        raise InputError(f"{name}: expected one string or {batch_size} (one per image), got {len(values)}")
    return values


def _generator_for(generator: Generators, index: int) -> torch.Generator | None:
    return generator[index] if isinstance(generator, list) else generator


class PortraitEditPipeline(DiffusionPipeline):
    r"""Feature-preserving portrait editing with a Multi-Conditioned Diffusion Model (arXiv 2407.20455).

    The UNet sees the noisy latent concatenated with the source latent (8 channels) and cross-attends to
    ``combine_context(text, adapter(CLIP(source), source latent))``; sampling uses 4-way nested classifier-free guidance
    over the image embedding (s1), the concat input (s2) and the text (s3), optionally guided by a DiffEdit-style edit
    mask so that everything outside the edit follows the reconstruction of the source.

    Args:
        vae ([`AutoencoderKL`]): The KL autoencoder.
        text_encoder ([`~transformers.CLIPTextModel`]): CLIP text encoder.
        tokenizer ([`~transformers.CLIPTokenizer`]): Its tokenizer.
        unet ([`UNet2DConditionModel`]): The denoiser, ``conv_in`` widened to take 2 x latent channels.
        image_encoder ([`~transformers.CLIPVisionModel`]): CLIP vision tower (``last_hidden_state`` feeds the adapter).
        feature_extractor ([`~transformers.CLIPImageProcessor`]): Its preprocessing.
        adapter ([`EmbeddingAdapter`]): CLIP tokens + pooled latent tokens -> context tokens.
        scheduler ([`SchedulerMixin`]): UniPC in the paper's setting (any diffusers scheduler with ``add_noise``).
        combine_type (`str`, defaults to `"concat"`): ``"concat"``, ``"add"`` or ``"img_only"`` (see
            :func:`~portrait_edit.modeling_portrait_edit.combine_context`).
    """

    model_cpu_offload_seq = "text_encoder->image_encoder->adapter->unet->vae"  # type: ignore[assignment]

    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    unet: UNet2DConditionModel
    image_encoder: CLIPVisionModel
    feature_extractor: CLIPImageProcessor
    adapter: EmbeddingAdapter
    scheduler: Any  # UniPC (any diffusers scheduler with add_noise)

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        image_encoder: CLIPVisionModel,
        feature_extractor: CLIPImageProcessor,
        adapter: EmbeddingAdapter,
        scheduler: SchedulerMixin,
        combine_type: str = "concat",
    ) -> None:
        super().__init__()
        if combine_type not in COMBINE_TYPES:
            raise InputError(f"combine_type: expected one of {COMBINE_TYPES}, got {combine_type!r}")
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            image_encoder=image_encoder,
            feature_extractor=feature_extractor,
            adapter=adapter,
            scheduler=scheduler,
        )
        self.register_to_config(combine_type=combine_type)
        vae_config: Any = vae.config
        self.vae_scale_factor = 2 ** (len(vae_config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    @property
    def latent_channels(self) -> int:
        """Channels of the (noisy and source) latents."""
        return int(self.vae.config["latent_channels"])

    @property
    def default_resolution(self) -> int:
        """Image side the UNet was configured for: ``unet.config.sample_size * vae_scale_factor``."""
        return int(self.unet.config["sample_size"]) * self.vae_scale_factor

    # ----------------------------------------------------------------------------------------------------------------
    # Inputs
    # ----------------------------------------------------------------------------------------------------------------

    def check_inputs(
        self,
        image: ImageInput,
        prompt: str | Sequence[str],
        source_prompt: str | Sequence[str] | None,
        height: int,
        width: int,
        guidance_scales: Sequence[float],
        use_mask: bool,
        mask: torch.Tensor | None,
        mask_blend: str,
        mask_strength: float,
        mask_samples: int,
        mask_clamp: float,
        null_mode: str,
        image_latents: torch.Tensor | str,
    ) -> int:
        """Validate the arguments of :meth:`__call__`; returns the batch size (number of source images).

        Raises:
            InputError: naming the argument and what was expected.
        """
        if isinstance(image, torch.Tensor):
            if image.ndim != 4 or image.shape[1] != 3:
                raise InputError(f"image: expected a (B, 3, H, W) tensor in [0, 1], got shape {tuple(image.shape)}")
            batch_size = image.shape[0]
        elif isinstance(image, PIL.Image.Image):
            batch_size = 1
        elif isinstance(image, Sequence) and image and all(isinstance(i, PIL.Image.Image) for i in image):
            batch_size = len(image)
        else:
            raise InputError(
                f"image: expected a PIL image, a list of them or a (B, 3, H, W) tensor, got {type(image)}"
            )
        _as_list(prompt, batch_size, "prompt")
        if source_prompt is not None:
            _as_list(source_prompt, batch_size, "source_prompt")
        if height % self.vae_scale_factor or width % self.vae_scale_factor:
            raise InputError(
                f"height, width: expected multiples of the VAE factor {self.vae_scale_factor}, got {height}x{width}"
            )
        latent_size = int(self.adapter.config["latent_size"])
        if latent_size != height // self.vae_scale_factor or height != width:
            side = latent_size * self.vae_scale_factor
            raise InputError(f"height, width: this adapter was built for {side}x{side} images, got {height}x{width}")
        if len(guidance_scales) != 3:
            raise InputError(f"guidance_scales: expected (s1, s2, s3), got {tuple(guidance_scales)}")
        if use_mask and mask is None and source_prompt is None:
            raise InputError(
                "source_prompt: expected a prompt describing the source (e.g. 'a man') when use_mask=True"
            )
        if mask is not None:
            expected = (batch_size, 1, height // self.vae_scale_factor, width // self.vae_scale_factor)
            if tuple(mask.shape) != expected:
                raise InputError(f"mask: expected shape {expected}, got {tuple(mask.shape)}")
            if use_mask and mask_blend == "latent" and source_prompt is None:
                raise InputError('source_prompt: expected a prompt for the reconstruction run of mask_blend="latent"')
        if mask_blend not in ("latent", "eps"):
            raise InputError(f'mask_blend: expected "latent" or "eps", got {mask_blend!r}')
        if use_mask and mask_blend == "eps" and source_prompt is None:
            raise InputError('source_prompt: expected a prompt for mask_blend="eps"')
        if not 0.0 < mask_strength <= 1.0:
            raise InputError(f"mask_strength: expected a value in (0, 1], got {mask_strength}")
        if mask_samples < 1:
            raise InputError(f"mask_samples: expected a positive integer, got {mask_samples}")
        if mask_clamp <= 0:
            raise InputError(f"mask_clamp: expected a positive number, got {mask_clamp}")
        if null_mode not in ("upstream", "matched"):
            raise InputError(f'null_mode: expected "upstream" or "matched", got {null_mode!r}')
        if isinstance(image_latents, str):
            if image_latents not in ("sample", "mean"):
                raise InputError(f'image_latents: expected "sample", "mean" or a tensor, got {image_latents!r}')
        else:
            expected = (
                batch_size,
                self.latent_channels,
                height // self.vae_scale_factor,
                width // self.vae_scale_factor,
            )
            if tuple(image_latents.shape) != expected:
                raise InputError(f"image_latents: expected shape {expected}, got {tuple(image_latents.shape)}")
        return batch_size

    def preprocess_image(
        self, image: ImageInput, height: int, width: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Source images -> VAE pixels in [-1, 1], (B, 3, H, W), and CLIP pixel values, (B, 3, S, S).

        PIL images of another size are resized (Lanczos) to ``width x height`` first, tensors (in [0, 1]) bilinearly;
        the CLIP values come from ``feature_extractor`` (resize, centre crop, normalise).
        """
        if isinstance(image, torch.Tensor):
            pixels01 = image.float()
            if pixels01.shape[-2:] != (height, width):
                logger.info("resizing the source from %s to %dx%d", tuple(pixels01.shape[-2:]), height, width)
                pixels01 = F.interpolate(pixels01, (height, width), mode="bilinear", antialias=True).clamp(0, 1)
            clip_values = clip_pixels(self.feature_extractor, pixels01, device, dtype)
            pixels = pixels01 * 2.0 - 1.0
        else:
            images = [image] if isinstance(image, PIL.Image.Image) else list(image)
            images = [i.convert("RGB") for i in images]
            if any(i.size != (width, height) for i in images):
                logger.info("resizing the source to %dx%d", width, height)
                images = [i.resize((width, height), PIL.Image.Resampling.LANCZOS) for i in images]
            clip_values = clip_pixels(self.feature_extractor, images, device, dtype)
            arrays = np.stack([np.asarray(i, dtype=np.float32) / 255.0 for i in images])
            pixels = torch.from_numpy(arrays).permute(0, 3, 1, 2) * 2.0 - 1.0
        return pixels.to(device=device, dtype=dtype), clip_values

    def encode_prompts(self, prompts: Sequence[str], device: torch.device) -> torch.Tensor:
        """CLIP text contexts, (B, T, D), each prompt encoded on its own and padded to the tokenizer's maximum."""
        cache: dict[str, torch.Tensor] = {}
        for prompt in prompts:
            if prompt not in cache:
                cache[prompt] = encode_clip_prompt(self.tokenizer, self.text_encoder, prompt, device)
        return torch.cat([cache[p] for p in prompts])

    def _encode_latents(self, pixels: torch.Tensor, mode: str, generator: Generators) -> torch.Tensor:
        draws = cast(torch.Generator | None, generator)  # diffusers' posterior sample takes a list of generators too
        return vae_encode(self.vae, pixels, chunk_size=max(len(pixels), 1), sample=mode == "sample", generator=draws)

    def prepare_image_conditions(
        self,
        pixels: torch.Tensor,
        clip_values: torch.Tensor,
        null_mode: str = "upstream",
        image_latents: torch.Tensor | str = "sample",
        negative_image_latents: torch.Tensor | None = None,
        generator: Generators = None,
    ) -> ImageConditions:
        """The source's conditions and their nulls (spec §5.3-5.4).

        Args:
            pixels (`torch.Tensor` of shape `(B, 3, H, W)`): Source in [-1, 1].
            clip_values (`torch.Tensor` of shape `(B, 3, S, S)`): Source CLIP pixel values.
            null_mode (`str`): ``"upstream"``: tokens of a black image (CLIP and VAE), zero concat latent;
                ``"matched"``: CLIP of a black image, VAE of mid-grey pixels for the tokens and the concat input.
            image_latents (`torch.Tensor` or `str`): The source latents (B, 4, h, w), or ``"sample"`` / ``"mean"`` of
                the VAE posterior.
            negative_image_latents (`torch.Tensor` of shape `(B, 4, h, w)`, *optional*): Latents of the null image
                (black or grey); encoded as ``image_latents`` says when not given.
            generator (`torch.Generator` or list, *optional*): Draws the posterior samples (source first, then the
                null image).
        """
        batch_size, device, dtype = pixels.shape[0], pixels.device, pixels.dtype
        mode = image_latents if isinstance(image_latents, str) else "sample"
        latents = (
            self._encode_latents(pixels, mode, generator)
            if isinstance(image_latents, str)
            else image_latents.to(device=device, dtype=dtype)
        )
        tokens = encode_image_tokens(self.image_encoder, self.adapter, clip_values, latents)
        kind = "black" if null_mode == "upstream" else "grey"
        if negative_image_latents is None:
            null_image = null_pixels(kind, batch_size, pixels.shape[2], pixels.shape[3], device, dtype)
            negative_image_latents = self._encode_latents(null_image, mode, generator)
        negative_image_latents = negative_image_latents.to(device=device, dtype=dtype)
        null_clip = black_clip_pixels(self.feature_extractor, batch_size, device, dtype)
        null_tokens = encode_image_tokens(self.image_encoder, self.adapter, null_clip, negative_image_latents)
        null_latents = torch.zeros_like(latents) if null_mode == "upstream" else negative_image_latents
        return ImageConditions(latents, tokens, null_latents, null_tokens)

    # ----------------------------------------------------------------------------------------------------------------
    # Guidance
    # ----------------------------------------------------------------------------------------------------------------

    def guided_noise(
        self,
        latent_groups: Sequence[torch.Tensor],
        text_groups: Sequence[torch.Tensor],
        null_text: torch.Tensor,
        conditions: ImageConditions,
        timestep: torch.Tensor,
        guidance_scales: Sequence[float],
        scheduler: Any = None,
    ) -> list[torch.Tensor]:
        """4-way nested CFG for several groups of latents in one UNet batch.

        Each group is laid out as upstream's batch ``[null, all, img, img+concat]`` (rows of one branch adjacent), the
        groups one after the other, and guided as ``nested_cfg([null, img, img+concat, all], (s1, s2, s3))``. With all
        three scales equal to 1 only the all-condition branch runs.

        Args:
            latent_groups (`Sequence[torch.Tensor]`): G tensors of shape `(n, 4, h, w)` (noisy latents).
            text_groups (`Sequence[torch.Tensor]`): G text contexts, `(n, T, D)` each.
            null_text (`torch.Tensor` of shape `(n, T, D)`): The text null (negative prompt).
            conditions (`ImageConditions`): n rows of image conditions, shared by the groups.
            timestep (`torch.Tensor`): The current timestep.
            guidance_scales (`Sequence[float]`): (s1 image embedding, s2 concat, s3 text).
            scheduler (`SchedulerMixin`, *optional*): Whose ``scale_model_input`` applies (default: the pipeline's).

        Returns:
            `list[torch.Tensor]`: G guided noise predictions, `(n, 4, h, w)` each.
        """
        scheduler = self.scheduler if scheduler is None else scheduler
        guided = any(s != 1.0 for s in guidance_scales)
        combine = self.config["combine_type"]
        c = conditions
        latents, concat, contexts = [], [], []
        for group, text in zip(latent_groups, text_groups, strict=True):
            if guided:
                latents.append(torch.cat([group] * 4))
                concat.append(torch.cat([c.null_latents, c.latents, c.null_latents, c.latents]))
                contexts.append(
                    torch.cat(
                        [
                            combine_context(null_text, c.null_tokens, combine),
                            combine_context(text, c.tokens, combine),
                            combine_context(null_text, c.tokens, combine),
                            combine_context(null_text, c.tokens, combine),
                        ]
                    )
                )
            else:
                latents.append(group)
                concat.append(c.latents)
                contexts.append(combine_context(text, c.tokens, combine))
        model_input = scheduler.scale_model_input(torch.cat(latents), timestep)
        model_input = torch.cat([model_input, torch.cat(concat).to(model_input.dtype)], dim=1)
        context = torch.cat(contexts).to(self.unet.dtype)
        noise = self.unet(model_input.to(self.unet.dtype), timestep, encoder_hidden_states=context).sample
        if not guided:
            return list(noise.chunk(len(latent_groups)))
        results = []
        for group_noise in noise.chunk(len(latent_groups)):
            null, everything, image, image_concat = group_noise.chunk(4)
            results.append(nested_cfg([null, image, image_concat, everything], guidance_scales))
        return results

    # ----------------------------------------------------------------------------------------------------------------
    # Edit mask
    # ----------------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate_mask(
        self,
        conditions: ImageConditions,
        prompt_embeds: torch.Tensor,
        source_prompt_embeds: torch.Tensor,
        negative_prompt_embeds: torch.Tensor,
        guidance_scales: Sequence[float] = (3.0, 2.0, 4.0),
        mask_strength: float = 0.5,
        mask_samples: int = 10,
        mask_steps: int = 50,
        mask_clamp: float = 3.0,
        generator: Generators = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The DiffEdit-style edit mask, done as intended (spec §5.5).

        For each image, ``mask_samples`` independent noise maps bring its source latent to ``mask_strength`` of a
        ``mask_steps``-step schedule; each noisy latent gets the 4-way guided noise prediction once with the target and
        once with the source prompt; ``|eps_tgt - eps_src|`` is averaged over samples and channels, clamped at
        ``mask_clamp`` x its mean and divided by that, giving a soft mask in [0, 1]. Identical prompts give zeros.

        Args:
            conditions (`ImageConditions`): B rows.
            prompt_embeds (`torch.Tensor` of shape `(B, T, D)`): Target prompts.
            source_prompt_embeds (`torch.Tensor` of shape `(B, T, D)`): Source prompts.
            negative_prompt_embeds (`torch.Tensor` of shape `(B, T, D)`): The text null.
            guidance_scales (`Sequence[float]`): (s1, s2, s3).
            mask_strength (`float`): Noise level, as a fraction of ``mask_steps``.
            mask_samples (`int`): Independent noise samples per image.
            mask_steps (`int`): Schedule length that ``mask_strength`` refers to.
            mask_clamp (`float`): Clamp ratio.
            generator (`torch.Generator` or list, *optional*): Draws the noise, ``(mask_samples, 4, h, w)`` per image.
            noise (`torch.Tensor` of shape `(B * mask_samples, 4, h, w)`, *optional*): The noise maps, rows of one
                image adjacent.

        Returns:
            `torch.Tensor` of shape `(B, 1, h, w)` in [0, 1].
        """
        latents = conditions.latents
        batch_size, shape = latents.shape[0], latents.shape[1:]
        scheduler: Any = self.scheduler.__class__.from_config(self.scheduler.config)
        scheduler.set_timesteps(mask_steps, device=latents.device)
        start = max(mask_steps - min(int(mask_steps * mask_strength), mask_steps), 0)
        timestep = scheduler.timesteps[start]  # upstream get_timesteps(steps, strength)[0][0]
        rows = batch_size * mask_samples
        if noise is None:
            noise = torch.cat(
                [
                    randn_tensor((mask_samples, *shape), _generator_for(generator, b), latents.device, latents.dtype)
                    for b in range(batch_size)
                ]
            )
        elif tuple(noise.shape) != (rows, *shape):
            raise InputError(f"noise: expected shape {(rows, *tuple(shape))}, got {tuple(noise.shape)}")
        clean = latents.repeat_interleave(mask_samples, dim=0)
        noisy = scheduler.add_noise(clean, noise.to(latents), timestep.reshape(1).repeat(rows))
        repeated = conditions.repeat_interleave(mask_samples)
        source_eps, target_eps = self.guided_noise(
            [noisy, noisy],
            [
                source_prompt_embeds.repeat_interleave(mask_samples, 0),
                prompt_embeds.repeat_interleave(mask_samples, 0),
            ],
            negative_prompt_embeds.repeat_interleave(mask_samples, 0),
            repeated,
            timestep,
            guidance_scales,
            scheduler=scheduler,
        )
        difference = (target_eps - source_eps).abs().reshape(batch_size, mask_samples, *shape).mean(dim=(1, 2))
        magnitude = difference.mean(dim=(1, 2), keepdim=True) * mask_clamp  # (B, 1, 1)
        safe = torch.where(magnitude > 0, magnitude, torch.ones_like(magnitude))
        mask = difference.clamp(min=0).minimum(magnitude) / safe
        same = [torch.equal(p, s) for p, s in zip(prompt_embeds, source_prompt_embeds, strict=True)]
        keep = (magnitude > 0) & ~torch.tensor(same, device=mask.device)[:, None, None]
        return torch.where(keep, mask, torch.zeros_like(mask)).unsqueeze(1)

    # ----------------------------------------------------------------------------------------------------------------
    # Call
    # ----------------------------------------------------------------------------------------------------------------

    def prepare_latents(
        self,
        batch_size: int,
        height: int,
        width: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: Generators,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Start noise (B, 4, h, w) scaled by the scheduler's ``init_noise_sigma`` (given ``latents`` are scaled too)."""
        shape = (batch_size, self.latent_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise InputError(f"latents: expected shape {shape}, got {tuple(latents.shape)}")
        return latents.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma

    def _decode(self, latents: torch.Tensor, output_type: str) -> list[PIL.Image.Image] | np.ndarray | torch.Tensor:
        if output_type == "latent":
            return latents
        images = vae_decode_chunked(self.vae, latents, chunk_size=max(len(latents), 1))
        return self.image_processor.postprocess(images.float(), output_type=output_type)  # type: ignore[return-value]

    @torch.no_grad()
    def __call__(
        self,
        image: ImageInput,
        prompt: str | Sequence[str],
        source_prompt: str | Sequence[str] | None = None,
        negative_prompt: str | Sequence[str] = "",
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 20,
        guidance_scale_image: float = 3.0,
        guidance_scale_concat: float = 2.0,
        guidance_scale_text: float = 4.0,
        null_mode: Literal["upstream", "matched"] = "upstream",
        image_latents: torch.Tensor | Literal["sample", "mean"] = "sample",
        negative_image_latents: torch.Tensor | None = None,
        use_mask: bool = True,
        mask: torch.Tensor | None = None,
        mask_blend: Literal["latent", "eps"] = "latent",
        mask_strength: float = 0.5,
        mask_samples: int = 10,
        mask_steps: int = 50,
        mask_clamp: float = 3.0,
        mask_noise: torch.Tensor | None = None,
        generator: Generators = None,
        latents: torch.Tensor | None = None,
        output_type: Literal["pil", "np", "pt", "latent"] = "pil",
        return_dict: bool = True,
    ) -> PortraitEditPipelineOutput | tuple[Any, ...]:
        r"""Edit portraits.

        Args:
            image (`PIL.Image.Image`, list of them, or `torch.Tensor` of shape `(B, 3, H, W)` in [0, 1]): The source
                portraits (aligned faces; see ``portrait_edit.photo`` for whole photos).
            prompt (`str` or list): The target prompt, e.g. ``"a man, santa claus costume"``; ``""`` is valid (the CFG
                null).
            source_prompt (`str` or list, *optional*): The prompt describing the source (``"a man"``): the mask
                compares it with ``prompt``, and the reconstruction run uses it. Required when ``use_mask`` is set.
            negative_prompt (`str` or list, defaults to `""`): The text null.
            height (`int`, *optional*): Defaults to the UNet's ``sample_size`` times the VAE factor.
            width (`int`, *optional*): As ``height``.
            num_inference_steps (`int`, defaults to 20): Scheduler steps.
            guidance_scale_image (`float`, defaults to 3.0): s1, the image embedding.
            guidance_scale_concat (`float`, defaults to 2.0): s2, the concat input.
            guidance_scale_text (`float`, defaults to 4.0): s3, the text. All three at 1 runs the all-condition
                prediction alone (no guidance).
            null_mode (`str`, defaults to `"upstream"`): See :meth:`prepare_image_conditions`.
            image_latents (`torch.Tensor` of shape `(B, 4, h, w)` or `str`, defaults to `"sample"`): The source latents,
                or how to get them from the VAE posterior: ``"sample"`` (drawn from ``generator``) or ``"mean"``.
            negative_image_latents (`torch.Tensor` of shape `(B, 4, h, w)`, *optional*): Latents of the null image.
            use_mask (`bool`, defaults to `True`): Mask-guided sampling.
            mask (`torch.Tensor` of shape `(B, 1, h, w)`, *optional*): A given mask in [0, 1] (else
                :meth:`generate_mask` builds it).
            mask_blend (`str`, defaults to `"latent"`): ``"latent"``: after each step, ``latents = latents * mask +
                reconstruction_latents * (1 - mask)``; ``"eps"``: ``eps = eps_target * mask + eps_source * (1 -
                mask)`` (source prompt, same latents).
            mask_strength (`float`, defaults to 0.5), mask_samples (`int`, defaults to 10), mask_steps (`int`,
                defaults to 50), mask_clamp (`float`, defaults to 3.0): See :meth:`generate_mask`.
            mask_noise (`torch.Tensor` of shape `(B * mask_samples, 4, h, w)`, *optional*): The mask's noise maps.
            generator (`torch.Generator` or list, *optional*): Draws, in order, the source posterior sample, the null
                image's posterior sample, the mask noise and the start noise (a list: one generator per image).
            latents (`torch.Tensor` of shape `(B, 4, h, w)`, *optional*): Start noise.
            output_type (`str`, defaults to `"pil"`): ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"``.
            return_dict (`bool`, defaults to `True`): Return a :class:`PortraitEditPipelineOutput` (else a tuple
                ``(images, masks, reconstructions)``).
        """
        # 0. Defaults and checks
        height = height or self.default_resolution
        width = width or self.default_resolution
        scales = (float(guidance_scale_image), float(guidance_scale_concat), float(guidance_scale_text))
        batch_size = self.check_inputs(
            image, prompt, source_prompt, height, width, scales, use_mask, mask, mask_blend, mask_strength,
            mask_samples, mask_clamp, null_mode, image_latents,
        )  # fmt: skip
        device, dtype = self._execution_device, self.unet.dtype

        # 1. Text: target, source and null contexts (B, T, D)
        prompt_embeds = self.encode_prompts(_as_list(prompt, batch_size, "prompt"), device)
        negative_embeds = self.encode_prompts(_as_list(negative_prompt, batch_size, "negative_prompt"), device)
        source_embeds = (
            self.encode_prompts(_as_list(source_prompt, batch_size, "source_prompt"), device)
            if source_prompt is not None
            else None
        )

        # 2. Image conditions: source latents, image embedding and their nulls
        pixels, clip_values = self.preprocess_image(image, height, width, device, dtype)
        conditions = self.prepare_image_conditions(
            pixels, clip_values, null_mode, image_latents, negative_image_latents, generator
        )

        # 3. Edit mask
        if use_mask and mask is None:
            assert source_embeds is not None  # check_inputs
            mask = self.generate_mask(
                conditions, prompt_embeds, source_embeds, negative_embeds, scales, mask_strength, mask_samples,
                mask_steps, mask_clamp, generator, mask_noise,
            )  # fmt: skip
        mask = mask.to(device=device, dtype=dtype) if (use_mask and mask is not None) else None

        # 4. Timesteps and start noise (the reconstruction run starts from the same noise)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        latents = self.prepare_latents(batch_size, height, width, dtype, device, generator, latents)
        reconstruct = mask is not None and mask_blend == "latent"
        source_context = source_embeds if source_embeds is not None else prompt_embeds  # unused without a mask
        if reconstruct:
            latents = torch.cat([latents, latents])

        # 5. Denoising loop
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for t in timesteps:
                if mask is None:
                    (eps,) = self.guided_noise([latents], [prompt_embeds], negative_embeds, conditions, t, scales)
                elif reconstruct:
                    edit_eps, rec_eps = self.guided_noise(
                        [latents[:batch_size], latents[batch_size:]],
                        [prompt_embeds, source_context],
                        negative_embeds,
                        conditions,
                        t,
                        scales,
                    )
                    eps = torch.cat([edit_eps, rec_eps])
                else:
                    target_eps, source_eps = self.guided_noise(
                        [latents, latents], [prompt_embeds, source_context], negative_embeds, conditions, t, scales
                    )
                    eps = target_eps * mask + source_eps * (1 - mask)
                latents = self.scheduler.step(eps, t, latents).prev_sample
                if reconstruct:
                    assert mask is not None
                    edit, rec = latents[:batch_size], latents[batch_size:]
                    latents = torch.cat([edit * mask + rec * (1 - mask), rec])
                progress_bar.update()

        # 6. Decode
        images = self._decode(latents[:batch_size], output_type)
        reconstructions = self._decode(latents[batch_size:], output_type) if reconstruct else None
        masks = mask.float().cpu() if mask is not None else None
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, masks, reconstructions)
        return PortraitEditPipelineOutput(images=images, masks=masks, reconstructions=reconstructions)


# --------------------------------------------------------------------------------------------------------------------
# Loading from a config
# --------------------------------------------------------------------------------------------------------------------


def load_pipeline(config: PortraitEditConfig) -> PortraitEditPipeline:
    """A ``PortraitEditPipeline`` as ``config.model`` describes it, on ``model.device`` in ``model.dtype``.

    ``source="random"`` gives an untrained pipeline (tests, demo, benchmarks): its images show the plumbing, not an
    edit. ``source="pretrained"`` loads a folder written by ``save_pretrained`` or ``portrait-edit convert``;
    ``source="base"`` starts from an SD1.5 folder and a CLIP vision folder (widened UNet, fresh adapter).

    Raises:
        InputError: the pretrained folder is not a pipeline folder.
    """
    from pathlib import Path

    model = config.model
    dtype = torch_dtype(model.dtype)
    if model.source == "pretrained":
        folder = Path(model.pretrained or "")
        if not (folder / "model_index.json").is_file():
            raise InputError(
                f"model.pretrained={model.pretrained!r}: expected a PortraitEditPipeline folder (model_index.json); "
                "write one with `portrait-edit convert`"
            )
        pipeline = PortraitEditPipeline.from_pretrained(folder, torch_dtype=dtype)
    else:
        components: PortraitEditComponents
        if model.source == "base":
            assert model.base_model is not None and model.image_encoder is not None  # ModelConfig checks
            components = build_base_components(model.base_model, model.image_encoder, model)
        else:
            components = build_random_components(model)
        pipeline = PortraitEditPipeline(**components.as_dict(), combine_type=model.combine_type)  # type: ignore[arg-type]
        if dtype != torch.float32:
            pipeline.to(dtype=dtype)
    pipeline.to(resolve_device(model.device))
    return pipeline


def sampling_options(config: PortraitEditConfig) -> dict[str, Any]:
    """The :meth:`PortraitEditPipeline.__call__` keyword arguments that ``config.sampling`` sets (the caller passes the
    image, prompts and generator)."""
    s = config.sampling
    return {
        "num_inference_steps": s.num_inference_steps,
        "guidance_scale_image": s.guidance_scale_image,
        "guidance_scale_concat": s.guidance_scale_concat,
        "guidance_scale_text": s.guidance_scale_text,
        "null_mode": s.null_mode,
        "image_latents": s.image_latents,
        "negative_prompt": s.negative_prompt,
        "use_mask": s.use_mask,
        "mask_blend": s.mask_blend,
        "mask_strength": s.mask_strength,
        "mask_samples": s.mask_samples,
        "mask_steps": s.mask_steps,
        "mask_clamp": s.mask_clamp,
        "height": s.height or config.model.resolution,
        "width": s.width or config.model.resolution,
    }
