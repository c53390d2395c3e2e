"""The Multi-Conditioned Diffusion Model's own parts (spec §3): the embedding adapter, the widened UNet, the context
combinations, the condition nulls, and builders of the whole component set (random, from a base SD1.5 model).

Paper: arXiv 2407.20455 (Chen et al., "Learning Feature-Preserving Portrait Editing from Generated Pairs").
Upstream: bytedance/feature-preserve-portrait-editing@570c18ac9dc7da45285e80b222d40ffb673c4ce2 ``models/models.py``
(``Embedding_Adapter``: ``MaxPool2d(2)`` on the source latent, ``vae2clip = Linear(1024, 768)``, concatenation after
the 50 CLIP tokens, ``linear1 = Linear(54, 50)`` across the token axis with weight ``eye(50, 54)``; ``get_unet``:
``conv_in`` widened by 4 zero-initialised channels) and ``pipelines/pipeline.py`` (``_encode_image``: CLIP
``last_hidden_state`` of the image and of a black image; the ``combine_type`` branches of ``__call__``).

The adapter's sizes are derived from the components (CLIP tokens and width, latent channels and side) instead of being
hard-coded for 512-px images and ViT-B/32; its parameter names (``vae2clip``, ``linear1``) are upstream's, so an
official ``adapter.pth`` loads as it is (after stripping DDP ``module.`` prefixes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from genblocks.diffusion import widen_conv_in
from genblocks.errors import InputError

if TYPE_CHECKING:
    import PIL.Image
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from diffusers.schedulers.scheduling_unipc_multistep import UniPCMultistepScheduler
    from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModel

    from portrait_edit.config import ModelConfig, RandomClipVisionConfig

__all__ = [
    "COMBINE_TYPES",
    "NULL_PIXEL_VALUES",
    "EmbeddingAdapter",
    "PortraitEditComponents",
    "adapter_output_tokens",
    "black_clip_pixels",
    "build_adapter",
    "build_base_components",
    "build_random_components",
    "clip_pixels",
    "clip_token_count",
    "combine_context",
    "encode_image_tokens",
    "null_pixels",
    "random_clip_vision",
    "unipc_scheduler",
    "widen_unet",
]

CombineType = Literal["concat", "add", "img_only"]
COMBINE_TYPES: tuple[str, ...] = ("concat", "add", "img_only")

NULL_PIXEL_VALUES: dict[str, float] = {"black": -1.0, "grey": 0.0}
"""Normalised ([-1, 1]) pixel values of the null images: ``"black"`` (upstream's inference null for the embedding's
VAE part, ``torch.zeros`` pixels normalised) and ``"grey"`` (the training null: the normalised tensor set to 0)."""

SD15_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
}
"""The SD1.5 noise schedule (``scheduler_config.json`` of SD1.5 and Realistic Vision), for random components."""


class EmbeddingAdapter(ModelMixin, ConfigMixin):  # type: ignore[misc]  # diffusers' two config_name types
    """CLIP vision tokens + pooled source-latent tokens -> context tokens (upstream ``Embedding_Adapter``).

    The source latent (B, C, h, w) is max-pooled by ``vae_pool`` and flattened to C tokens of ``(h / pool) * (w /
    pool)`` features, which ``vae2clip`` maps to the CLIP width; the C tokens follow the CLIP tokens, and ``linear1``
    mixes the ``clip_tokens + C`` tokens into ``output_tokens`` along the token axis. Its weight starts at
    ``eye(output_tokens, clip_tokens + C)``, so the untrained adapter passes the CLIP tokens through (its bias keeps
    PyTorch's default initialisation, as upstream).

    SD1.5 + ViT-B/32 at 512 px: ``Linear(1024, 768)`` and ``Linear(54, 50)``; the tiny configuration: ``Linear(16, 32)``
    and ``Linear(21, 17)``.

    Args:
        clip_tokens: Tokens of the CLIP vision ``last_hidden_state`` (50 for ViT-B/32 at 224: 7 x 7 patches + CLS).
        clip_dim: Their width (768), which is also the UNet's ``cross_attention_dim``.
        latent_channels: Channels of the source latent (4), the number of VAE tokens.
        latent_size: Side of the (square) source latent (64 at 512 px).
        vae_pool: Max-pool window (2).
        output_tokens: Tokens out (``None``: ``clip_tokens``; ``combine_type="add"`` needs the text's token count).
    """

    @register_to_config
    def __init__(
        self,
        clip_tokens: int = 50,
        clip_dim: int = 768,
        latent_channels: int = 4,
        latent_size: int = 64,
        vae_pool: int = 2,
        output_tokens: int | None = None,
    ) -> None:
        super().__init__()
        if latent_size % vae_pool:
            raise InputError(f"vae_pool: expected a divisor of the latent side {latent_size}, got {vae_pool}")
        pooled = latent_size // vae_pool
        out = clip_tokens if output_tokens is None else output_tokens
        self.pool = nn.MaxPool2d(vae_pool)
        self.vae2clip = nn.Linear(pooled * pooled, clip_dim)
        self.linear1 = nn.Linear(clip_tokens + latent_channels, out)
        with torch.no_grad():
            self.linear1.weight.copy_(torch.eye(out, clip_tokens + latent_channels))

    @property
    def num_output_tokens(self) -> int:
        """Tokens the adapter emits."""
        return self.linear1.out_features

    def forward(self, clip_embeds: torch.Tensor, vae_latents: torch.Tensor) -> torch.Tensor:
        """Mix CLIP tokens and pooled latent tokens.

        Args:
            clip_embeds (`torch.Tensor` of shape `(B, clip_tokens, clip_dim)`): CLIP vision ``last_hidden_state``.
            vae_latents (`torch.Tensor` of shape `(B, latent_channels, latent_size, latent_size)`): the scaled source
                latent.

        Returns:
            `torch.Tensor` of shape `(B, output_tokens, clip_dim)`.
        """
        config: Any = self.config
        expected_clip = (config.clip_tokens, config.clip_dim)
        if clip_embeds.ndim != 3 or tuple(clip_embeds.shape[1:]) != expected_clip:
            raise InputError(
                f"clip_embeds: expected shape (B, {expected_clip[0]}, {expected_clip[1]}), got "
                f"{tuple(clip_embeds.shape)}"
            )
        expected_latent = (config.latent_channels, config.latent_size, config.latent_size)
        if vae_latents.ndim != 4 or tuple(vae_latents.shape[1:]) != expected_latent:
            raise InputError(
                f"vae_latents: expected shape (B, {', '.join(map(str, expected_latent))}), got "
                f"{tuple(vae_latents.shape)}"
            )
        vae_tokens = self.vae2clip(self.pool(vae_latents).flatten(2))  # (B, C, clip_dim)
        tokens = torch.cat((clip_embeds, vae_tokens), dim=1)  # (B, clip_tokens + C, clip_dim)
        return self.linear1(tokens.transpose(1, 2)).transpose(1, 2)


def clip_token_count(image_encoder: CLIPVisionModel) -> int:
    """Tokens of a CLIP vision ``last_hidden_state``: ``(image_size / patch_size) ** 2`` patches + CLS."""
    config: Any = image_encoder.config
    return (config.image_size // config.patch_size) ** 2 + 1


def adapter_output_tokens(combine_type: str, clip_tokens: int, text_tokens: int) -> int:
    """The adapter's token count for a ``combine_type``: the text's for ``"add"`` (upstream ``output_nc=77``), else the
    CLIP token count."""
    if combine_type not in COMBINE_TYPES:
        raise InputError(f"combine_type: expected one of {COMBINE_TYPES}, got {combine_type!r}")
    return text_tokens if combine_type == "add" else clip_tokens


def build_adapter(
    image_encoder: CLIPVisionModel,
    vae: AutoencoderKL,
    tokenizer: CLIPTokenizer,
    resolution: int,
    combine_type: str = "concat",
    vae_pool: int = 2,
    seed: int = 0,
) -> EmbeddingAdapter:
    """A fresh adapter whose sizes follow the components.

    Args:
        image_encoder (`CLIPVisionModel`): Gives the CLIP token count and width.
        vae (`AutoencoderKL`): Gives the latent channels and the downsampling factor.
        tokenizer (`CLIPTokenizer`): Gives the text token count (``combine_type="add"``).
        resolution (`int`): Image side; the latent side is ``resolution / vae_factor``.
        combine_type (`str`, defaults to `"concat"`): See :func:`combine_context`.
        vae_pool (`int`, defaults to 2): Max-pool window on the latent.
        seed (`int`, defaults to 0): ``torch.manual_seed`` before the layers are initialised.
    """
    vae_config: Any = vae.config  # type: ignore[attr-defined]
    factor = 2 ** (len(vae_config.block_out_channels) - 1)
    if resolution % factor:
        raise InputError(f"resolution: expected a multiple of the VAE factor {factor}, got {resolution}")
    clip_tokens = clip_token_count(image_encoder)
    torch.manual_seed(seed)
    return EmbeddingAdapter(
        clip_tokens=clip_tokens,
        clip_dim=image_encoder.config.hidden_size,
        latent_channels=vae_config.latent_channels,
        latent_size=resolution // factor,
        vae_pool=vae_pool,
        output_tokens=adapter_output_tokens(combine_type, clip_tokens, tokenizer.model_max_length),
    )


def widen_unet(unet: UNet2DConditionModel, source_channels: int = 4) -> UNet2DConditionModel:
    """Widen ``conv_in`` in place to take the source latent after the noisy latent (4 + 4 = 8 channels for SD1.5).

    The new input weights are zero, the pretrained weights and bias are kept bit for bit, and ``config.in_channels``
    records the new width (upstream's ``get_unet`` re-initialises the bias and leaves ``in_channels`` at 4).
    """
    return cast("UNet2DConditionModel", widen_conv_in(cast(nn.Module, unet), source_channels))


def combine_context(text_embeds: torch.Tensor, image_tokens: torch.Tensor, combine_type: str) -> torch.Tensor:
    """The UNet's cross-attention context from text and image tokens (upstream's ``combine_type`` branches).

    Args:
        text_embeds (`torch.Tensor` of shape `(B, T, D)`): CLIP text ``last_hidden_state``.
        image_tokens (`torch.Tensor` of shape `(B, N, D)`): :class:`EmbeddingAdapter` output.
        combine_type (`str`): ``"concat"``: ``[text; image]``, (B, T + N, D); ``"add"``: ``text + image`` (N = T),
            (B, T, D); ``"img_only"``: the image tokens, (B, N, D).
    """
    if combine_type == "concat":
        return torch.cat([text_embeds, image_tokens], dim=1)
    if combine_type == "add":
        if text_embeds.shape != image_tokens.shape:
            raise InputError(
                f'combine_type "add": expected image tokens of the text\'s shape {tuple(text_embeds.shape)}, got '
                f"{tuple(image_tokens.shape)}"
            )
        return text_embeds + image_tokens
    if combine_type == "img_only":
        return image_tokens
    raise InputError(f"combine_type: expected one of {COMBINE_TYPES}, got {combine_type!r}")


def null_pixels(
    kind: str,
    batch_size: int,
    height: int,
    width: int,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A batch of null images, normalised to [-1, 1], for the VAE: (B, 3, H, W) filled with
    ``NULL_PIXEL_VALUES[kind]`` (``"black"``: -1, ``"grey"``: 0)."""
    if kind not in NULL_PIXEL_VALUES:
        raise InputError(f"null image: expected one of {tuple(NULL_PIXEL_VALUES)}, got {kind!r}")
    return torch.full((batch_size, 3, height, width), NULL_PIXEL_VALUES[kind], device=device, dtype=dtype)


def clip_pixels(
    feature_extractor: CLIPImageProcessor,
    images: list[PIL.Image.Image] | torch.Tensor,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """CLIP pixel values of images, as the processor makes them (resize, centre crop, normalise).

    Args:
        feature_extractor (`CLIPImageProcessor`): The processor.
        images (`list[PIL.Image.Image]` or `torch.Tensor` of shape `(B, 3, H, W)` in [0, 1]): The images.

    Returns:
        `torch.Tensor` of shape `(B, 3, S, S)`, S the processor's crop size.
    """
    if isinstance(images, torch.Tensor):
        arrays = [image.detach().float().cpu().permute(1, 2, 0).numpy() for image in images]
        values = feature_extractor(images=arrays, do_rescale=False, return_tensors="pt").pixel_values
    else:
        values = feature_extractor(images=images, return_tensors="pt").pixel_values
    return values.to(device=device, dtype=dtype)


def black_clip_pixels(
    feature_extractor: CLIPImageProcessor,
    batch_size: int,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """CLIP pixel values of black images (the CLIP part of both the inference and the training null), (B, 3, S, S)."""
    import PIL.Image

    crop = feature_extractor.crop_size  # a dict or transformers' SizeDict
    black = PIL.Image.new("RGB", (int(crop["width"]), int(crop["height"])))
    return clip_pixels(feature_extractor, [black], device, dtype).expand(batch_size, -1, -1, -1)


def encode_image_tokens(
    image_encoder: CLIPVisionModel,
    adapter: EmbeddingAdapter,
    clip_pixel_values: torch.Tensor,
    vae_latents: torch.Tensor,
) -> torch.Tensor:
    """The image embedding: ``adapter(CLIP(image).last_hidden_state, source latent)``.

    Args:
        image_encoder (`CLIPVisionModel`): CLIP vision tower.
        adapter (`EmbeddingAdapter`): The adapter.
        clip_pixel_values (`torch.Tensor` of shape `(B, 3, S, S)`): CLIP-normalised pixels.
        vae_latents (`torch.Tensor` of shape `(B, 4, h, w)`): Scaled source latents.

    Returns:
        `torch.Tensor` of shape `(B, output_tokens, D)`.
    """
    clip_embeds = image_encoder(pixel_values=clip_pixel_values.to(image_encoder.dtype)).last_hidden_state
    return adapter(clip_embeds.to(adapter.dtype), vae_latents.to(adapter.dtype))


def unipc_scheduler(config: dict[str, object] | None = None) -> UniPCMultistepScheduler:
    """UniPC (the demo's sampler), from a base scheduler's config (``UniPCMultistepScheduler.from_config``) or SD1.5's
    noise schedule."""
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler.from_config(dict(config) if config is not None else SD15_SCHEDULER)


def random_clip_vision(
    config: RandomClipVisionConfig, image_size: int, seed: int = 0
) -> tuple[CLIPVisionModel, CLIPImageProcessor]:
    """A seeded random CLIP vision tower and its processor (resize and crop to ``image_size``, CLIP's mean and std).

    Args:
        config (`RandomClipVisionConfig`): Sizes.
        image_size (`int`): Input side (``(image_size / patch_size) ** 2 + 1`` tokens).
        seed (`int`, defaults to 0): ``torch.manual_seed`` before the weights are drawn.
    """
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    if image_size % config.patch_size:
        raise InputError(
            f"model.clip_image_size: expected a multiple of the patch {config.patch_size}, got {image_size}"
        )
    torch.manual_seed(seed)
    model = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            image_size=image_size,
            patch_size=config.patch_size,
        )
    )
    processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return model.eval(), processor


@dataclass
class PortraitEditComponents:
    """The parts of a ``PortraitEditPipeline``, as built or loaded.

    Attributes:
        unet: SD1.5-class UNet with an 8-channel ``conv_in`` (noisy latent + source latent).
        vae: KL autoencoder.
        text_encoder: CLIP text encoder.
        tokenizer: CLIP tokenizer.
        image_encoder: CLIP vision tower (frozen).
        feature_extractor: Its image processor.
        adapter: The embedding adapter.
        scheduler: UniPC.
    """

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    image_encoder: CLIPVisionModel
    feature_extractor: CLIPImageProcessor
    adapter: EmbeddingAdapter
    scheduler: UniPCMultistepScheduler

    def as_dict(self) -> dict[str, object]:
        """``{name: component}``, the component keyword arguments of ``PortraitEditPipeline`` (no copies)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def build_random_components(config: ModelConfig, seed: int | None = None) -> PortraitEditComponents:
    """All components, random and seeded, at ``config.resolution`` (tests, demo, benchmarks, ``--config tiny``).

    Args:
        config (`ModelConfig`): ``random`` and ``random_clip`` sizes, ``resolution``, ``clip_image_size``,
            ``combine_type``, ``vae_pool``.
        seed (`int`, *optional*): Overrides ``config.seed``.
    """
    from genblocks.tiny import random_sd15_base

    seed = config.seed if seed is None else seed
    unet, vae, text_encoder, tokenizer, _ = random_sd15_base(config.random, config.resolution, seed)
    image_encoder, feature_extractor = random_clip_vision(config.random_clip, config.clip_image_size, seed)
    adapter = build_adapter(
        image_encoder, vae, tokenizer, config.resolution, config.combine_type, config.vae_pool, seed=seed
    )
    return PortraitEditComponents(
        unet=widen_unet(unet, int(vae.config["latent_channels"])),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        image_encoder=image_encoder,
        feature_extractor=feature_extractor,
        adapter=adapter,
        scheduler=unipc_scheduler(),
    )


def build_base_components(
    base_model: str | os.PathLike,
    image_encoder: str | os.PathLike,
    config: ModelConfig,
    load_unet_weights: bool = True,
) -> PortraitEditComponents:
    """Components on a diffusers SD1.5 folder plus a CLIP vision folder (training from scratch, the converter).

    The UNet's ``conv_in`` is widened to 8 channels (zero new weights), the adapter is fresh, and the scheduler is UniPC
    on the base model's noise schedule.

    Args:
        base_model (`str` or `os.PathLike`): Folder with ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/`` and
            ``scheduler/``.
        image_encoder (`str` or `os.PathLike`): Folder of a ``CLIPVisionModel`` with its preprocessor config (a
            local copy of ``openai/clip-vit-base-patch32``).
        config (`ModelConfig`): ``resolution``, ``combine_type``, ``vae_pool``, ``seed``.
        load_unet_weights (`bool`, defaults to `True`): Load the UNet's weights (`False` builds it from its config,
            when a converted checkpoint overwrites it).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModel

    root = Path(base_model)
    missing = [name for name in ("unet", "vae", "text_encoder", "tokenizer") if not (root / name).is_dir()]
    if missing:
        raise InputError(f"base model {root}: expected a diffusers SD1.5 folder, missing {', '.join(missing)}/")
    clip_root = Path(image_encoder)
    if not (clip_root / "config.json").is_file():
        raise InputError(f"image encoder {clip_root}: expected a CLIP vision folder with config.json")
    if load_unet_weights:
        unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet")
    else:
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(root, subfolder="unet"))
    vae = AutoencoderKL.from_pretrained(root, subfolder="vae")
    tokenizer = CLIPTokenizer.from_pretrained(root, subfolder="tokenizer")
    vision = CLIPVisionModel.from_pretrained(clip_root).eval()
    scheduler_config = None
    if (root / "scheduler" / "scheduler_config.json").is_file():
        from diffusers import UniPCMultistepScheduler

        scheduler_config = dict(UniPCMultistepScheduler.load_config(root, subfolder="scheduler"))
    return PortraitEditComponents(
        unet=widen_unet(unet, int(vae.config["latent_channels"])),
        vae=vae,
        text_encoder=CLIPTextModel.from_pretrained(root, subfolder="text_encoder"),
        tokenizer=tokenizer,
        image_encoder=vision,
        feature_extractor=CLIPImageProcessor.from_pretrained(clip_root),
        adapter=build_adapter(
            vision, vae, tokenizer, config.resolution, config.combine_type, config.vae_pool, seed=config.seed
        ),
        scheduler=unipc_scheduler(scheduler_config),
    )
