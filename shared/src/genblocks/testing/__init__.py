"""Seeded tiny components for tests (the analogue of diffusers' ``get_dummy_components``, no downloads) and inverse LDM key
maps that write official single-file checkpoints from them (converter round trips)."""

from genblocks.testing.components import (
    TinyComponents,
    tiny_clip_text_encoder,
    tiny_clip_tokenizer,
    tiny_controlnet,
    tiny_sd15_components,
    tiny_sdxl_text_encoders,
    tiny_sdxl_unet,
    tiny_unet,
    tiny_vae,
)
from genblocks.testing.ldm_layout import clip_to_ldm, controlnet_to_ldm, unet_encoder_to_ldm, unet_to_ldm, vae_to_ldm

__all__ = [
    "TinyComponents",
    "clip_to_ldm",
    "controlnet_to_ldm",
    "tiny_clip_text_encoder",
    "tiny_clip_tokenizer",
    "tiny_controlnet",
    "tiny_sd15_components",
    "tiny_sdxl_text_encoders",
    "tiny_sdxl_unet",
    "tiny_unet",
    "tiny_vae",
    "unet_encoder_to_ldm",
    "unet_to_ldm",
    "vae_to_ldm",
]
