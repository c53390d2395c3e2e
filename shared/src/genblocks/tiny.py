"""Tiny, seeded SD1.5- and SDXL-shaped components built from configs (spec genblocks §9): what ``--config tiny`` builds.

A product feature, not only a test fixture: every package's tiny config runs on these, so anyone can try a package with
no weights. Importing this module is cheap (diffusers and transformers are imported inside the factories), so a
package's ``config.py`` may use :class:`RandomComponentsConfig` without slowing ``<pkg> --help``.

Each factory calls ``torch.manual_seed(seed)`` before building, so two calls give identical weights. Sizes follow the
spec's tiny test configuration: ``block_out_channels=(32, 64)``, one layer per block, cross-attention width 32,
``norm_num_groups=8`` (motion-module GroupNorms must divide the channels), latent ``sample_size=8``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.controlnets.controlnet import ControlNetModel
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

__all__ = [
    "TEXT_WIDTH",
    "RandomComponentsConfig",
    "TinyComponents",
    "random_sd15_base",
    "tiny_clip_text_encoder",
    "tiny_clip_tokenizer",
    "tiny_controlnet",
    "tiny_sd15_components",
    "tiny_sdxl_text_encoders",
    "tiny_sdxl_unet",
    "tiny_unet",
    "tiny_vae",
]

TEXT_WIDTH = 32


def tiny_unet(seed: int = 0, cross_attention_dim: int = TEXT_WIDTH, in_channels: int = 4) -> UNet2DConditionModel:
    """A 2-level SD1.5-shaped UNet: (B, 4, 8, 8) latents, (B, T, 32) text context."""
    import torch
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def tiny_sdxl_unet(seed: int = 0) -> UNet2DConditionModel:
    """A 2-level SDXL-shaped UNet: text-time additional embeddings, linear projections, 2 transformer layers per block.

    Its forward needs ``added_cond_kwargs={"text_embeds": (B, 32), "time_ids": (B, 6)}``.
    """
    import torch
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=(2, 4),
        transformer_layers_per_block=(1, 2),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=80,
        norm_num_groups=8,
    )


def tiny_controlnet(unet: UNet2DConditionModel, conditioning_channels: int = 3, seed: int = 0) -> ControlNetModel:
    """A ControlNet initialised from ``unet`` (diffusers ``from_unet``) reading 64-px images of any channel count."""
    import torch
    from diffusers.models.controlnets.controlnet import ControlNetModel

    torch.manual_seed(seed)
    return ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=(8, 8, 16, 16), conditioning_channels=conditioning_channels
    )


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    """A 2-level VAE: (B, 3, 16, 16) images <-> (B, 4, 8, 8) latents."""
    import torch
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
    )


def _byte_symbols() -> list[str]:
    """The 256 printable symbols byte-level BPE uses for the bytes 0..255 (printable bytes map to themselves)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def tiny_clip_tokenizer() -> CLIPTokenizer:
    """A real CLIP BPE tokenizer over a tiny byte-level vocabulary (every byte symbol, no merges), max length 16."""
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    tokenizer.model_max_length = 16
    return tokenizer


def _tiny_clip_text_config(hidden_size: int, projection_dim: int | None = None) -> CLIPTextConfig:
    from transformers import CLIPTextConfig

    extra: dict[str, Any] = {} if projection_dim is None else {"projection_dim": projection_dim}
    return CLIPTextConfig(
        vocab_size=len(tiny_clip_tokenizer()),
        hidden_size=hidden_size,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=16,
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
        **extra,
    )


def tiny_clip_text_encoder(seed: int = 0, hidden_size: int = TEXT_WIDTH) -> CLIPTextModel:
    """A 2-layer CLIP text encoder matching ``tiny_clip_tokenizer``: (B, 16) ids -> (B, 16, hidden_size)."""
    import torch
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    return CLIPTextModel(_tiny_clip_text_config(hidden_size))


def tiny_sdxl_text_encoders(seed: int = 0) -> tuple[CLIPTextModel, CLIPTextModelWithProjection]:
    """SDXL's two text encoders, tiny: widths 32 + 32 concatenate to the 64-wide context of ``tiny_sdxl_unet``.

    The second one has a 32-d text projection, the pooled ``text_embeds`` of ``tiny_sdxl_unet``'s added conditions
    (with 6 ``time_ids`` x 8 = 48, projection input 32 + 48 = 80).
    """
    import torch
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    first = CLIPTextModel(_tiny_clip_text_config(TEXT_WIDTH))
    second = CLIPTextModelWithProjection(_tiny_clip_text_config(TEXT_WIDTH, projection_dim=32))
    return first, second


@dataclass
class TinyComponents:
    """The parts of a tiny SD1.5 pipeline."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: DDIMScheduler


def tiny_sd15_components(seed: int = 0) -> TinyComponents:
    """UNet, VAE, CLIP text encoder + tokenizer and the LDM DDIM scheduler preset, all tiny and seeded."""
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler

    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
    )
    return TinyComponents(
        unet=tiny_unet(seed),
        vae=tiny_vae(seed),
        text_encoder=tiny_clip_text_encoder(seed),
        tokenizer=tiny_clip_tokenizer(),
        scheduler=scheduler,
    )


@dataclass(frozen=True)
class RandomComponentsConfig:
    """Sizes of seeded random stand-ins for SD1.5's UNet, VAE and text encoder (tests, demos, benchmarks), a config
    section of the packages built on SD1.5 (``components.random``).

    The UNet follows SD1.5's pattern at any depth: cross-attention in every level but the last, ``layers_per_block``
    resnets per level. The VAE has ``len(vae_block_out_channels) - 1`` downsamplings; with four levels it has SD's
    factor 8, which a ControlNet hint encoder must match.

    Args:
        block_out_channels: UNet widths per level.
        layers_per_block: Resnets per down level.
        attention_head_dim: UNet attention heads (diffusers' legacy name for the head count of SD1.x).
        cross_attention_dim: Width of the text context (and of the random CLIP text encoder).
        norm_num_groups: GroupNorm groups of UNet and ControlNets.
        vae_block_out_channels: VAE widths per level.
        vae_norm_num_groups: GroupNorm groups of the VAE.
    """

    block_out_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    attention_head_dim: int = 8
    cross_attention_dim: int = 32
    norm_num_groups: int = 8
    vae_block_out_channels: tuple[int, ...] = (8, 8, 8, 8)
    vae_norm_num_groups: int = 8


def random_sd15_base(
    config: RandomComponentsConfig, resolution: int, seed: int = 0
) -> tuple[UNet2DConditionModel, AutoencoderKL, CLIPTextModel, CLIPTokenizer, DDIMScheduler]:
    """Seeded random stand-ins for SD1.5's UNet, VAE, text encoder, tokenizer and the LDM DDIM scheduler.

    Args:
        config (`RandomComponentsConfig`): Sizes.
        resolution (`int`): Image side; the UNet's ``sample_size`` is ``resolution / vae_factor``.
        seed (`int`, defaults to 0): ``torch.manual_seed`` before each component.

    Returns:
        `tuple`: ``(unet, vae, text_encoder, tokenizer, scheduler)``.
    """
    import torch
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

    from genblocks.diffusion.sampling import ldm_ddim_scheduler

    levels = len(config.vae_block_out_channels)
    vae_factor = 2 ** (levels - 1)
    if resolution % vae_factor:
        raise ValueError(f"resolution {resolution} must be divisible by the VAE factor {vae_factor}")
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(config.vae_block_out_channels),
        latent_channels=4,
        norm_num_groups=config.vae_norm_num_groups,
        sample_size=resolution,
        scaling_factor=0.18215,
    )
    unet_levels = len(config.block_out_channels)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=resolution // vae_factor,
        in_channels=4,
        out_channels=4,
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        down_block_types=("CrossAttnDownBlock2D",) * (unet_levels - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (unet_levels - 1),
        cross_attention_dim=config.cross_attention_dim,
        attention_head_dim=config.attention_head_dim,
        norm_num_groups=config.norm_num_groups,
    )
    text_encoder = tiny_clip_text_encoder(seed=seed, hidden_size=config.cross_attention_dim)
    return unet, vae, text_encoder, tiny_clip_tokenizer(), ldm_ddim_scheduler()
