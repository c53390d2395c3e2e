"""genblocks.training.reference_video: clip encoding layout, the (b f) flattening, one timestep per clip, fixed draws."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from genblocks.tiny import tiny_vae
from genblocks.training.reference_video import ReferenceVideoTrainingModule, loss_on_fixed_draws


class _FrameModel(nn.Module):
    """A per-frame convolution whose output also depends on its (b f) timestep and context."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.seen: list[torch.Tensor] = []

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        self.seen.append(timesteps.clone())
        return self.conv(sample) + timesteps.view(-1, 1, 1, 1) * 1e-3 + context.mean() * 0


class _Module(ReferenceVideoTrainingModule):
    def encode_batch(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.encode_clips(batch["frames"])

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        frames = self.frame_batch(noisy_latents, timesteps)
        return self.fold_frames(self.unet(frames.sample, frames.timesteps, frames.context), frames)


def _module(seed: int = 0) -> _Module:
    torch.manual_seed(0)
    return _Module(unet=_FrameModel(), vae=tiny_vae(0), text_context=torch.randn(1, 5, 8), seed=seed)


def test_clips_encode_frame_by_frame_into_the_clip_layout() -> None:
    module = _module()
    clips = torch.rand(2, 3, 3, 16, 16) * 2 - 1
    latents = module.encode_clips(clips)
    assert latents.shape == (2, 4, 3, 8, 8)
    module.generator.manual_seed(0)
    flat = module.encode_images(clips.flatten(0, 1))  # the same draws, frame-major
    module.generator.manual_seed(0)
    torch.testing.assert_close(module.encode_clips(clips), flat.view(2, 3, 4, 8, 8).transpose(1, 2), rtol=0, atol=0)
    with pytest.raises(ValueError, match="clips"):
        module.encode_clips(clips[0])


def test_frame_batch_round_trip_and_one_timestep_per_clip() -> None:
    module = _module()
    noisy = torch.randn(2, 4, 3, 8, 8)
    frames = module.frame_batch(noisy, torch.tensor([7, 900]))
    assert frames.sample.shape == (6, 4, 8, 8) and frames.context.shape == (6, 5, 8)
    assert frames.timesteps.tolist() == [7, 7, 7, 900, 900, 900]
    assert torch.equal(frames.sample[4], noisy[1, :, 1])  # clip 1, frame 1
    assert torch.equal(module.fold_frames(frames.sample, frames), noisy)
    module.compute_loss({"frames": torch.rand(2, 3, 3, 16, 16) * 2 - 1})
    seen = module.unet.seen[-1].view(2, 3)
    assert torch.equal(seen, seen[:, :1].expand(2, 3))  # every frame of a clip shares its clip's timestep


def test_loss_on_fixed_draws_is_deterministic_and_restores_the_generator() -> None:
    module = _module()
    batch = {"frames": torch.rand(2, 2, 3, 16, 16) * 2 - 1}
    state = module.generator.get_state()
    first = loss_on_fixed_draws(module, batch)
    assert torch.equal(module.generator.get_state(), state)
    assert loss_on_fixed_draws(module, batch) == first
    assert loss_on_fixed_draws(module, batch, seeds=(5,)) != first


def test_text_context_must_be_one_context() -> None:
    with pytest.raises(ValueError, match="text_context"):
        _Module(unet=_FrameModel(), vae=tiny_vae(0), text_context=torch.randn(2, 5, 8))
