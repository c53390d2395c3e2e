"""Shared helpers of the x-portrait tests: the tiny configuration (X-Portrait spec §9) and synthetic landmarks."""

from __future__ import annotations

import numpy as np
import torch

from x_portrait.config import ModelConfig, RandomComponentsConfig
from x_portrait.modeling_x_portrait import XPortraitComponents, build_random_components

RESOLUTION = 64
PATCH = 16

TINY_MODEL = ModelConfig(
    resolution=RESOLUTION,
    patch_size=PATCH,
    landmark_scale=2,
    controlnet_embedding_channels=(8, 8, 16, 16),
    temporal_heads=2,
    temporal_max_len=8,
    temporal_norm_groups=8,
)
TINY_RANDOM = RandomComponentsConfig()


def tiny_components(seed: int = 0, with_motion_modules: bool = True) -> XPortraitComponents:
    """Seeded tiny components: 64-px frames, 8x8 latents."""
    return build_random_components(TINY_MODEL, TINY_RANDOM, seed=seed, with_motion_modules=with_motion_modules)


def randomize_motion_modules(components: XPortraitComponents, seed: int = 1) -> None:
    """Give the zero-initialised temporal output projections random weights (so they are no longer identities)."""
    generator = torch.Generator().manual_seed(seed)
    assert components.motion_modules is not None
    with torch.no_grad():
        for name, param in components.motion_modules.named_parameters():
            if "proj_out" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


def face_landmarks(
    center: tuple[float, float] = (32.0, 32.0), scale: float = 1.0, jitter: float = 0.0, seed: int = 0
) -> np.ndarray:
    """A plausible 68-point face (iBUG order) in a 64-px frame: jaw, brows, nose, eyes, mouth."""
    rng = np.random.default_rng(seed)
    points = np.zeros((68, 2))
    jaw_x = np.linspace(-14, 14, 17)
    points[0:17] = np.stack([jaw_x, 10 - 0.3 * np.abs(jaw_x)], 1)
    points[17:22] = np.stack([np.linspace(-12, -3, 5), np.full(5, -10.0)], 1)
    points[22:27] = np.stack([np.linspace(3, 12, 5), np.full(5, -10.0)], 1)
    nose_x = np.r_[np.zeros(4), np.linspace(-3, 3, 5)]
    points[27:36] = np.stack([nose_x, np.r_[np.linspace(-6, 0, 4), np.full(5, 2.0)]], 1)
    points[36:42] = np.stack([np.linspace(-10, -4, 6), np.full(6, -6.0)], 1)
    points[42:48] = np.stack([np.linspace(4, 10, 6), np.full(6, -6.0)], 1)
    points[48:68] = np.stack([np.linspace(-6, 6, 20), np.full(20, 8.0)], 1)
    points = points * scale + np.asarray(center) + rng.normal(0, jitter, (68, 2))
    return points


def tiny_pipeline(seed: int = 0, with_motion_modules: bool = True, random_temporal: bool = False):
    """A tiny ``XPortraitPipeline`` (patch 16 at 64 px)."""
    from x_portrait.pipeline_x_portrait import XPortraitPipeline

    components = tiny_components(seed, with_motion_modules)
    if random_temporal:
        randomize_motion_modules(components)
    pipe = XPortraitPipeline(**components.as_dict(), patch_size=PATCH, landmark_scale=2)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_video(num_frames: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """A source image (3, 64, 64), driving frames (F, 3, 64, 64) in [0, 1] and their 68-point landmarks."""
    generator = torch.Generator().manual_seed(seed)
    source = torch.rand(3, RESOLUTION, RESOLUTION, generator=generator)
    driving = torch.rand(num_frames, 3, RESOLUTION, RESOLUTION, generator=generator)
    source_landmarks = face_landmarks(center=(32.0, 32.0), scale=1.0, seed=seed)
    driving_landmarks = np.stack(
        [
            face_landmarks(center=(30.0 + i, 33.0 - i / 2), scale=0.9 + 0.03 * i, seed=seed + i)
            for i in range(num_frames)
        ]
    )
    return source, driving, source_landmarks, driving_landmarks
