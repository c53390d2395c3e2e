"""Tiny seeded ID-Patch components for tests and smoke runs (spec id-patch §9); no downloads.

UNet, ControlNet, text encoders and tokenizers are genblocks' tiny SDXL parts (`genblocks.tiny`); the VAE is built
here with four levels (a factor-8 VAE, so 64-px images give the 8 × 8 latents of ``tiny_sdxl_unet`` and the 64-px
hints of ``tiny_controlnet``; genblocks' ``tiny_vae`` has factor 2). The projector uses face dim 16, ID tokens 2 × 64
and 8-px patches; the face encoder is a random module with L2-normalised output.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import PIL.Image
import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler
from torch import nn

from genblocks.tiny import tiny_clip_tokenizer, tiny_controlnet, tiny_sdxl_text_encoders, tiny_sdxl_unet
from id_patch.condition import ImageLike
from id_patch.modeling_id_patch import IDPatchConfig, IDPatchProjector
from id_patch.pipeline_id_patch import IDPatchPipeline
from id_patch.preprocessing import SubjectFaces, to_rgb_uint8

__all__ = [
    "TINY_ID_PATCH_CONFIG",
    "TinyFaceEncoder",
    "random_face_image",
    "sdxl_euler_scheduler",
    "tiny_face_encoder",
    "tiny_id_patch_pipeline",
    "tiny_id_projector",
    "tiny_vae_x8",
]

TINY_ID_PATCH_CONFIG = IDPatchConfig(
    face_dim=16,
    num_tokens=2,
    token_dim=64,
    patch_size=8,
    proj_type="faceid_mlp",
    mlp_mult=1,
    resampler_hidden_dim=32,
    resampler_depth=2,
    resampler_heads=2,
    resampler_dim_head=16,
    resampler_ff_mult=2,
)
"""Spec §9: face dim 16, 2 ID tokens of width 64 (the tiny UNet's context), 8-px patches at 64-px images."""


def tiny_id_projector(seed: int = 0, proj_type: str = "faceid_mlp") -> IDPatchProjector:
    """`IDPatchProjector` with `TINY_ID_PATCH_CONFIG` sizes and the given projection type, seeded."""
    config = IDPatchConfig(**{**TINY_ID_PATCH_CONFIG.to_dict(), "proj_type": proj_type})
    torch.manual_seed(seed)
    return IDPatchProjector.from_id_patch_config(config)


def tiny_vae_x8(seed: int = 0) -> AutoencoderKL:
    """A 4-level VAE (downsampling factor 8): (B, 3, 64, 64) images <-> (B, 4, 8, 8) latents."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )


def sdxl_euler_scheduler() -> EulerDiscreteScheduler:
    """SDXL's ``EulerDiscreteScheduler`` configuration (scaled-linear betas 0.00085–0.012, leading spacing)."""
    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type="epsilon",
    )


def tiny_id_patch_pipeline(seed: int = 0, proj_type: str = "faceid_mlp") -> IDPatchPipeline:
    """An `IDPatchPipeline` of tiny random SDXL parts: 64-px images, 8 × 8 latents, 64-wide context, 16 text tokens.

    Args:
        seed (`int`, defaults to 0): seed of every component.
        proj_type (`str`, defaults to `"faceid_mlp"`): projection type of the ID projector.

    Returns:
        `IDPatchPipeline`: on CPU, float32, without watermarking.
    """
    unet = tiny_sdxl_unet(seed)
    controlnet = tiny_controlnet(unet, conditioning_channels=3, seed=seed)
    text_encoder, text_encoder_2 = tiny_sdxl_text_encoders(seed)
    pipe = IDPatchPipeline(
        vae=tiny_vae_x8(seed),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tiny_clip_tokenizer(),
        tokenizer_2=tiny_clip_tokenizer(),
        unet=unet,
        controlnet=controlnet,
        scheduler=sdxl_euler_scheduler(),
        id_projector=tiny_id_projector(seed, proj_type),
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


class TinyFaceEncoder(nn.Module):
    """A random "face encoder" for tests: image -> 8 × 8 RGB thumbnail -> Linear -> L2-normalised ``face_dim`` vector.

    Follows the `id_patch.preprocessing.FaceEncoder` protocol; every image counts as one face filling the frame (box =
    the image, 5 points at fixed relative places).

    Args:
        face_dim (`int`, defaults to 16): output width.
    """

    def __init__(self, face_dim: int = 16) -> None:
        super().__init__()
        self.embedding_dim = face_dim
        self.proj = nn.Linear(3 * 8 * 8, face_dim)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, face_dim), unit norm."""
        thumbs = nn.functional.interpolate(images.float(), size=(8, 8), mode="area").flatten(1)
        return nn.functional.normalize(self.proj(thumbs), dim=-1)

    def encode_subjects(self, images: Sequence[ImageLike]) -> SubjectFaces:
        """One embedding per image (see the class docstring)."""
        arrays = [to_rgb_uint8(image, name=f"face_images[{i}]") for i, image in enumerate(images)]
        embeds = torch.cat([self(torch.tensor(a).permute(2, 0, 1)[None].float() / 255.0) for a in arrays], dim=0)
        relative = np.array([[0.35, 0.4], [0.65, 0.4], [0.5, 0.55], [0.38, 0.72], [0.62, 0.72]], dtype=np.float32)
        boxes = [[0.0, 0.0, a.shape[1] - 1.0, a.shape[0] - 1.0] for a in arrays]
        landmarks = [relative * np.array([a.shape[1], a.shape[0]], dtype=np.float32) for a in arrays]
        return SubjectFaces(
            embeds=embeds,
            boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            landmarks5=torch.from_numpy(np.stack(landmarks)).reshape(-1, 5, 2),
        )


def tiny_face_encoder(seed: int = 0, face_dim: int = 16) -> TinyFaceEncoder:
    """A seeded `TinyFaceEncoder`."""
    torch.manual_seed(seed)
    return TinyFaceEncoder(face_dim).eval()


def random_face_image(seed: int = 0, size: int = 32) -> PIL.Image.Image:
    """A random RGB image standing in for a subject photo (for the tiny encoder only)."""
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
