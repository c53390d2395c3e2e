"""Training pieces of reference-UNet video models (issue 16 item 5): what X-Portrait, DiffPortrait3D and humananim each
need around :class:`~genblocks.training.DiffusionTrainingModule`.

Those models denoise a clip (frames or views) of one subject at once: a reference UNet reads the clean latent of a
reference image at the same timestep and fills a bank the denoising UNet reads, and temporal (or cross-view) modules
mix the frames of a ``(b f)`` batch. Training them takes the same steps in each package:

- the clip (B, F, 3, H, W) is encoded to latents laid out (B, 4, F, h, w), so the parent draws **one timestep and one
  noise tensor per clip** (:meth:`ReferenceVideoTrainingModule.encode_clips`);
- images are encoded with a VAE posterior sample drawn from the module's generator, so resumed runs redraw the same
  samples (:meth:`~ReferenceVideoTrainingModule.encode_images`);
- the noisy clip is flattened to the UNet's ``(b f)`` batch with the timesteps and the text context repeated per frame,
  and the prediction is folded back (:meth:`~ReferenceVideoTrainingModule.frame_batch`,
  :meth:`~ReferenceVideoTrainingModule.fold_frames`);
- the (empty-prompt) text context is computed once and held as a non-persistent buffer;
- :func:`loss_on_fixed_draws` gives a deterministic loss of a batch to compare before and after training steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from torch import nn

from genblocks.training.diffusion_module import DiffusionTrainingModule, PredictionType
from genblocks.training.optim import OptimizerConfig

__all__ = ["FrameBatch", "ReferenceVideoTrainingModule", "loss_on_fixed_draws"]


class FrameBatch:
    """A noisy clip flattened to a UNet's ``(b f)`` batch.

    Attributes:
        sample (`torch.Tensor` of shape `(B * F, C, h, w)`): The noisy latents, frame-major within each clip.
        timesteps (`torch.Tensor` of shape `(B * F,)`): Each clip's timestep repeated over its frames.
        context (`torch.Tensor` of shape `(B * F, T, D)`): The text context per frame.
        clip_context (`torch.Tensor` of shape `(B, T, D)`): The text context per clip (for the reference UNet).
        batch_size (`int`): B.
        num_frames (`int`): F.
    """

    def __init__(
        self,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        clip_context: torch.Tensor,
        batch_size: int,
        num_frames: int,
    ) -> None:
        self.sample = sample
        self.timesteps = timesteps
        self.context = context
        self.clip_context = clip_context
        self.batch_size = batch_size
        self.num_frames = num_frames


class ReferenceVideoTrainingModule(DiffusionTrainingModule):
    """A :class:`DiffusionTrainingModule` for clips denoised with a reference bank (see the module docstring).

    A subclass builds its model (the wiring of UNet, reference UNet, ControlNets, temporal modules), freezes what its
    stage keeps fixed, and overrides :meth:`encode_batch` (usually ``self.encode_clips(clips)``) and
    :meth:`predict` (usually :meth:`frame_batch`, the bank write, the model call, :meth:`fold_frames`).

    Args:
        unet (`nn.Module`): The model the optimizer trains (its parameters with ``requires_grad``).
        vae (`AutoencoderKL`): The (frozen) autoencoder.
        text_context (`torch.Tensor` of shape `(1, T, D)`): The text context of every sample (the empty prompt);
            stored detached as the non-persistent buffer ``text_context``.
        noise_scheduler, prediction_type, optimizer, condition_dropout, ema_decay, ema_update_after_step,
        gradient_checkpointing, seed: As :class:`DiffusionTrainingModule`.
    """

    text_context: torch.Tensor

    def __init__(
        self,
        unet: nn.Module,
        vae: AutoencoderKL,
        text_context: torch.Tensor,
        noise_scheduler: DDPMScheduler | None = None,
        prediction_type: PredictionType | None = "epsilon",
        optimizer: OptimizerConfig | None = None,
        condition_dropout: Mapping[str, float] | None = None,
        ema_decay: float | None = None,
        ema_update_after_step: int = 0,
        gradient_checkpointing: bool = False,
        loss_weight_reduction: Literal["weighted_mean", "mean"] = "weighted_mean",
        seed: int = 0,
    ) -> None:
        if text_context.ndim != 3 or text_context.shape[0] != 1:
            raise ValueError(f"text_context must be one context (1, T, D), got {tuple(text_context.shape)}")
        super().__init__(
            unet=unet,
            noise_scheduler=noise_scheduler,
            vae=vae,
            prediction_type=prediction_type,
            optimizer=optimizer,
            condition_dropout=condition_dropout,
            ema_decay=ema_decay,
            ema_update_after_step=ema_update_after_step,
            gradient_checkpointing=gradient_checkpointing,
            loss_weight_reduction=loss_weight_reduction,
            seed=seed,
        )
        self.register_buffer("text_context", text_context.detach(), persistent=False)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Scaled VAE latents of images (N, 3, H, W) in [-1, 1]: ``(mean + std * eps) * scaling_factor`` with ``eps``
        from the module's generator (drawn for the global batch, :meth:`randn`), without gradients.

        Returns:
            `torch.Tensor` of shape `(N, 4, h, w)`.
        """
        if self.vae is None:
            raise ValueError("encode_images needs the module's vae")
        with torch.no_grad():
            posterior = self.vae.encode(images.to(self.vae.dtype)).latent_dist
            noise = self.randn(posterior.mean.shape).to(device=posterior.mean.device, dtype=posterior.mean.dtype)
            return (posterior.mean + posterior.std * noise) * self.vae.config["scaling_factor"]

    def encode_clips(self, clips: torch.Tensor) -> torch.Tensor:
        """Clean latents of clips (B, F, 3, H, W), laid out (B, 4, F, h, w) so one timestep is drawn per clip."""
        if clips.ndim != 5:
            raise ValueError(f"clips must be (B, F, 3, H, W), got {tuple(clips.shape)}")
        latents = self.encode_images(clips.flatten(0, 1))
        return latents.view(*clips.shape[:2], *latents.shape[1:]).transpose(1, 2)

    def frame_batch(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor) -> FrameBatch:
        """Flatten noisy clips (B, C, F, h, w) at timesteps (B,) to the ``(b f)`` batch, with the text context."""
        batch_size, channels, num_frames, height, width = noisy_latents.shape
        sample = noisy_latents.transpose(1, 2).reshape(batch_size * num_frames, channels, height, width)
        clip_context = self.text_context.to(sample.dtype).expand(batch_size, -1, -1)
        return FrameBatch(
            sample=sample,
            timesteps=timesteps.repeat_interleave(num_frames),
            context=clip_context.repeat_interleave(num_frames, dim=0),
            clip_context=clip_context,
            batch_size=batch_size,
            num_frames=num_frames,
        )

    @staticmethod
    def fold_frames(prediction: torch.Tensor, frames: FrameBatch) -> torch.Tensor:
        """A ``(b f)`` prediction (B * F, C, h, w) back in the clip layout (B, C, F, h, w)."""
        _, channels, height, width = prediction.shape
        return prediction.view(frames.batch_size, frames.num_frames, channels, height, width).transpose(1, 2)


def loss_on_fixed_draws(
    module: DiffusionTrainingModule, batch: dict[str, Any], seeds: tuple[int, ...] = (0, 1, 2, 3)
) -> float:
    """Mean loss of ``batch`` over fixed seeds of the module's generator (timesteps, noise, VAE samples, dropout,
    augmentation), without gradients, restoring the generator: a deterministic number to compare before and after
    training steps.

    Args:
        module (`DiffusionTrainingModule`): Any module drawing from ``module.generator``.
        batch (`dict`): One collated batch (copied per seed, so ``compute_loss`` may add keys).
        seeds (`tuple[int, ...]`, defaults to `(0, 1, 2, 3)`): The seeds averaged over.
    """
    state = module.generator.get_state()
    losses = []
    with torch.no_grad():
        for seed in seeds:
            module.generator.manual_seed(seed)
            losses.append(float(module.compute_loss(dict(batch))))
    module.generator.set_state(state)
    return float(np.mean(losses))
