"""Tiny, seeded SD1.5- and SDXL-shaped components built from configs (spec genblocks §9), for every package's tests.

Each factory calls ``torch.manual_seed(seed)`` before building, so two calls give identical weights. Sizes follow the
spec's tiny test configuration: ``block_out_channels=(32, 64)``, one layer per block, cross-attention width 32,
``norm_num_groups=8`` (motion-module GroupNorms must divide the channels), latent ``sample_size=8``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

TEXT_WIDTH = 32


def tiny_unet(seed: int = 0, cross_attention_dim: int = TEXT_WIDTH, in_channels: int = 4) -> UNet2DConditionModel:
    """A 2-level SD1.5-shaped UNet: (B, 4, 8, 8) latents, (B, T, 32) text context."""
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
    torch.manual_seed(seed)
    return ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=(8, 8, 16, 16), conditioning_channels=conditioning_channels
    )


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    """A 2-level VAE: (B, 3, 16, 16) images <-> (B, 4, 8, 8) latents."""
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
    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    tokenizer.model_max_length = 16
    return tokenizer


def _tiny_clip_text_config(hidden_size: int, projection_dim: int | None = None) -> CLIPTextConfig:
    extra = {} if projection_dim is None else {"projection_dim": projection_dim}
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
    torch.manual_seed(seed)
    return CLIPTextModel(_tiny_clip_text_config(hidden_size))


def tiny_sdxl_text_encoders(seed: int = 0) -> tuple[CLIPTextModel, CLIPTextModelWithProjection]:
    """SDXL's two text encoders, tiny: widths 32 + 32 concatenate to the 64-wide context of ``tiny_sdxl_unet``.

    The second one has a 32-d text projection, the pooled ``text_embeds`` of ``tiny_sdxl_unet``'s added conditions
    (with 6 ``time_ids`` x 8 = 48, projection input 32 + 48 = 80).
    """
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
