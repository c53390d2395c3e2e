"""Test fixtures only (library code never imports this): inverse LDM key maps that write official single-file
checkpoints from tiny diffusers models, for converter round-trip tests. The tiny components themselves are a product
feature and live in :mod:`genblocks.tiny`; the smoke runner lives in :mod:`genblocks.smoke`."""

from genblocks.testing.ldm_layout import (
    clip_to_ldm,
    controlnet_to_ldm,
    motion_modules_to_ldm,
    unet_encoder_to_ldm,
    unet_to_ldm,
    vae_to_ldm,
)

__all__ = [
    "clip_to_ldm",
    "controlnet_to_ldm",
    "motion_modules_to_ldm",
    "unet_encoder_to_ldm",
    "unet_to_ldm",
    "vae_to_ldm",
]
