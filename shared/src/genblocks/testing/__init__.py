"""Seeded tiny components for tests: the analogue of diffusers' ``get_dummy_components`` (no downloads)."""

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

__all__ = [
    "TinyComponents",
    "tiny_clip_text_encoder",
    "tiny_clip_tokenizer",
    "tiny_controlnet",
    "tiny_sd15_components",
    "tiny_sdxl_text_encoders",
    "tiny_sdxl_unet",
    "tiny_unet",
    "tiny_vae",
]
