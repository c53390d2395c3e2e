"""Seeded tiny components for tests (the analogue of diffusers' ``get_dummy_components``, no downloads) and inverse LDM key
maps that write official single-file checkpoints from them (converter round trips)."""

from genblocks.testing.components import (
    RandomComponentsConfig,
    TinyComponents,
    random_sd15_base,
    tiny_clip_text_encoder,
    tiny_clip_tokenizer,
    tiny_controlnet,
    tiny_sd15_components,
    tiny_sdxl_text_encoders,
    tiny_sdxl_unet,
    tiny_unet,
    tiny_vae,
)
from genblocks.testing.ldm_layout import (
    clip_to_ldm,
    controlnet_to_ldm,
    motion_modules_to_ldm,
    unet_encoder_to_ldm,
    unet_to_ldm,
    vae_to_ldm,
)
from genblocks.testing.smoke import SmokeError, run_smoke

__all__ = [
    "RandomComponentsConfig",
    "SmokeError",
    "TinyComponents",
    "clip_to_ldm",
    "controlnet_to_ldm",
    "motion_modules_to_ldm",
    "random_sd15_base",
    "run_smoke",
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
