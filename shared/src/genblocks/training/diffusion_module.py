"""Lightning training base for latent diffusion models (issue 4 item 5, spec genblocks §4).

:class:`DiffusionTrainingModule` samples timesteps and noise, builds the epsilon / v-prediction / sample target with a
diffusers noise scheduler, computes a plain, masked or region-weighted MSE, drops conditions per sample with
per-condition probabilities, keeps an EMA of the trainable weights (diffusers ``EMAModel``) and builds its optimizer
with :func:`genblocks.training.optim.build_optimizer`. Mixed precision, gradient accumulation, DDP and atomic checkpoints
come from the Lightning ``Trainer`` / ``ModelCheckpoint``. Every random draw (timesteps, noise, VAE sampling, condition
dropout) uses one generator owned by the module whose state goes into the checkpoint, together with the EMA, so a run
resumed with ``trainer.fit(ckpt_path=...)`` equals an uninterrupted one.

Subclasses adapt it to a paper by overriding the hooks :meth:`encode_batch` (batch -> clean latents),
:meth:`predict` (noisy latents, timesteps, batch -> model output) and :meth:`null_condition` (the value a dropped
condition takes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any, Literal, cast

import lightning as L
import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from diffusers.training_utils import EMAModel
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import nn

from genblocks.training.optim import OptimizerConfig, build_optimizer

__all__ = ["DiffusionTrainingModule", "PredictionType", "weighted_mse"]

logger = logging.getLogger(__name__)

PredictionType = Literal["epsilon", "v_prediction", "sample"]
_PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def weighted_mse(
    prediction: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    reduction: Literal["weighted_mean", "mean"] = "weighted_mean",
) -> torch.Tensor:
    """Mean squared error with an optional per-pixel weight map (a 0/1 mask or region weights).

    Args:
        prediction: (B, C, H, W) or (B, C, F, H, W) model output.
        target: Same shape as ``prediction``.
        weight: ``None`` or a map broadcastable to ``prediction`` after spatial resizing: (B, 1, H', W') or (B, H', W')
            for (B, C, H, W) predictions; (B, 1, F, H', W') or (B, F, H', W') full-resolution masks for (B, C, F, H, W)
            video predictions; resized to the prediction's (H, W) (and F) with ``area`` interpolation.
        reduction: ``"weighted_mean"``: ``sum(w * (p - t)^2) / sum(w)`` with ``w`` broadcast to the full shape (a
            masked MSE averages over the kept pixels only); ``"mean"``: ``mean(w * (p - t)^2)``.

    Returns:
        A scalar float32 loss.
    """
    squared = (prediction.float() - target.float()) ** 2
    if weight is None:
        return squared.mean()
    weight = weight.to(device=squared.device, dtype=torch.float32)
    if weight.ndim == squared.ndim - 1:
        weight = weight.unsqueeze(1)
    if weight.ndim != squared.ndim or weight.ndim not in (4, 5):
        raise ValueError(
            f"weighted_mse: weight must have shape (B, 1, H, W) / (B, H, W) for an image prediction or "
            f"(B, 1, F, H, W) / (B, F, H, W) for a video one, got {tuple(weight.shape)} for a {tuple(squared.shape)} "
            "prediction"
        )
    if weight.shape[2:] != squared.shape[2:]:
        # area resizing of each frame's map (F is kept when it matches: area over an unchanged axis is the identity)
        weight = F.interpolate(weight, size=squared.shape[2:], mode="area")
    weight = weight.expand_as(squared)
    if reduction == "mean":
        return (weight * squared).mean()
    return (weight * squared).sum() / weight.sum().clamp_min(torch.finfo(torch.float32).eps)


class DiffusionTrainingModule(L.LightningModule):
    """Denoising-diffusion training step for a diffusers UNet (or any denoiser, through the hooks).

    Batch layout of the default hooks: ``batch[latents_key]`` (B, 4, h, w) clean latents, or ``batch[image_key]``
    (B, 3, H, W) images in [-1, 1] when a ``vae`` is given; ``batch[context_key]`` (B, T, D) text context passed as
    ``encoder_hidden_states``; optionally ``batch[loss_weight_key]`` (B, 1, H', W') per-pixel loss weights.

    Args:
        unet: The denoiser; the default :meth:`predict` calls it as a diffusers ``UNet2DConditionModel``. Only its
            parameters with ``requires_grad`` (and those of any module a subclass adds) are trained.
        noise_scheduler: A diffusers ``DDPMScheduler``; ``None`` gives the SD1.5 training schedule (1000 steps,
            ``scaled_linear`` 0.00085..0.012).
        vae: Optional frozen ``AutoencoderKL``; when given, :meth:`encode_batch` encodes ``batch[image_key]``.
        prediction_type: ``"epsilon"``, ``"v_prediction"`` or ``"sample"``; ``None`` takes the scheduler's.
        optimizer: Optimizer choice; ``None`` is AdamW with :class:`OptimizerConfig` defaults.
        condition_dropout: Condition name -> probability that a sample's entry is replaced by its null value
            (:meth:`null_condition`), drawn independently per sample and per condition.
        ema_decay: EMA decay of the trainable weights; ``None`` disables the EMA. The decay at step ``s`` is diffusers'
            ``min(ema_decay, (1 + n) / (10 + n))`` with ``n = s - ema_update_after_step - 1`` (0 for ``n <= 0``).
        ema_update_after_step: Steps before the EMA starts averaging (it copies the weights until then).
        gradient_checkpointing: Call ``unet.enable_gradient_checkpointing()``.
        loss_weight_reduction: Reduction of the weighted MSE, see :func:`weighted_mse`.
        seed: Seed of the module's generator (timesteps, noise, dropout). Every rank uses the same seed and draws for
            the global batch, keeping its own rows (:meth:`draw_global`), so DDP on ``W`` processes matches one
            process on the ``W``-times larger batch.
        latents_key: Batch key of clean latents.
        image_key: Batch key of images (used with ``vae``).
        context_key: Batch key of the cross-attention context.
        loss_weight_key: Batch key of the optional per-pixel loss weight map.
    """

    def __init__(
        self,
        unet: nn.Module,
        noise_scheduler: DDPMScheduler | None = None,
        vae: AutoencoderKL | None = None,
        prediction_type: PredictionType | None = None,
        optimizer: OptimizerConfig | None = None,
        condition_dropout: Mapping[str, float] | None = None,
        ema_decay: float | None = None,
        ema_update_after_step: int = 0,
        gradient_checkpointing: bool = False,
        loss_weight_reduction: Literal["weighted_mean", "mean"] = "weighted_mean",
        seed: int = 0,
        latents_key: str = "latents",
        image_key: str = "image",
        context_key: str = "encoder_hidden_states",
        loss_weight_key: str = "loss_weight",
    ) -> None:
        super().__init__()
        self.optimizer_config = optimizer if optimizer is not None else OptimizerConfig()
        # Only this class's plain arguments, given explicitly: Lightning's automatic collection would also take every
        # subclass's constructor arguments (modules included) and deep-copy them. hparams stay plain containers so
        # checkpoints load with weights_only=True; a subclass adds its own with ``self.hparams.update(...)``.
        self.save_hyperparameters(
            {
                "prediction_type": prediction_type,
                "optimizer": asdict(self.optimizer_config),
                "condition_dropout": dict(condition_dropout or {}),
                "ema_decay": ema_decay,
                "ema_update_after_step": ema_update_after_step,
                "gradient_checkpointing": gradient_checkpointing,
                "loss_weight_reduction": loss_weight_reduction,
                "seed": seed,
                "latents_key": latents_key,
                "image_key": image_key,
                "context_key": context_key,
                "loss_weight_key": loss_weight_key,
            }
        )
        self.unet = unet
        self.vae = vae
        if vae is not None:
            vae.requires_grad_(False)
        self.noise_scheduler = noise_scheduler if noise_scheduler is not None else self.default_noise_scheduler()
        self.prediction_type: str = prediction_type or self.noise_scheduler.config["prediction_type"]
        if self.prediction_type not in _PREDICTION_TYPES:
            raise ValueError(f"prediction_type: expected one of {_PREDICTION_TYPES}, got {self.prediction_type!r}")
        self.condition_dropout = dict(condition_dropout or {})
        for name, p in self.condition_dropout.items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"condition_dropout[{name!r}]: expected a probability in [0, 1], got {p}")
        if ema_decay is not None and not 0.0 <= ema_decay <= 1.0:
            raise ValueError(f"ema_decay: expected a value in [0, 1] or None, got {ema_decay}")
        self.ema_decay = ema_decay
        self.ema_update_after_step = ema_update_after_step
        self.ema: EMAModel | None = None
        if gradient_checkpointing:
            enable_checkpointing = getattr(unet, "enable_gradient_checkpointing", None)
            if not callable(enable_checkpointing):
                raise ValueError("gradient_checkpointing=True needs a unet with enable_gradient_checkpointing()")
            enable_checkpointing()
        self.loss_weight_reduction = loss_weight_reduction
        self.seed = seed
        self.latents_key = latents_key
        self.image_key = image_key
        self.context_key = context_key
        self.loss_weight_key = loss_weight_key
        self.generator = torch.Generator().manual_seed(seed)
        self._generator_restored = False

    @staticmethod
    def default_noise_scheduler() -> DDPMScheduler:
        """The SD1.5 training schedule: 1000 steps, ``scaled_linear`` betas 0.00085..0.012, epsilon prediction."""
        return DDPMScheduler(
            num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
        )

    # ----------------------------------------------------------------- hooks a subclass overrides
    def encode_batch(self, batch: dict[str, Any]) -> torch.Tensor:
        """Clean latents (B, C, h, w) of a batch: ``batch[latents_key]``, or the VAE encoding of ``batch[image_key]``."""
        if self.vae is not None and self.image_key in batch:
            with torch.no_grad():
                images = batch[self.image_key].to(dtype=self.vae.dtype)
                posterior = self.vae.encode(images).latent_dist
                noise = self.randn(posterior.mean.shape).to(device=posterior.mean.device, dtype=posterior.mean.dtype)
                latents = posterior.mean + posterior.std * noise
            return latents * self.vae.config["scaling_factor"]
        if self.latents_key not in batch:
            raise ValueError(
                f"encode_batch: the batch has no {self.latents_key!r} entry (keys: {sorted(batch)}); pass latents, "
                "give a vae with images, or override encode_batch"
            )
        return batch[self.latents_key]

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Denoiser output (B, C, h, w) for noisy latents (B, C, h, w) at integer timesteps (B,)."""
        return self.unet(noisy_latents, timesteps, encoder_hidden_states=batch[self.context_key]).sample

    def null_condition(self, name: str, value: Any) -> Any:
        """The value a dropped condition takes, same layout as ``value``: zeros for tensors, ``""`` for strings."""
        if isinstance(value, torch.Tensor):
            return torch.zeros_like(value)
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return [""] * len(value)
        raise ValueError(
            f"condition_dropout: no default null value for condition {name!r} of type {type(value).__name__}; "
            "override null_condition"
        )

    # ----------------------------------------------------------------- pieces
    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters that are optimised and averaged by the EMA: those with ``requires_grad``."""
        return [p for p in self.parameters() if p.requires_grad]

    def _world(self) -> tuple[int, int]:
        if self._trainer is None:
            return 1, 0
        return self.trainer.world_size, self.trainer.global_rank

    def draw_global(self, draw: Callable[[int], torch.Tensor], local_batch: int) -> torch.Tensor:
        """Draw for the global batch and keep this rank's rows.

        Every rank holds the same generator state, calls ``draw(local_batch * world_size)`` and keeps rows
        ``[rank * local_batch, (rank + 1) * local_batch)``: a run on ``W`` processes with batch ``B`` each draws
        exactly what one process with batch ``W * B`` draws (equal local batches, as ``fit()``'s sampler gives).

        Args:
            draw: Draws a tensor whose first dimension is the given number of rows, from ``self.generator``.
            local_batch: This rank's batch size.

        Returns:
            This rank's rows, (local_batch, ...).
        """
        world, rank = self._world()
        full = draw(local_batch * world)
        return full[rank * local_batch : (rank + 1) * local_batch]

    def randn(self, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
        """Standard normal noise of ``shape`` (dim 0 is the batch) from the module's generator, drawn for the global
        batch on CPU (device independent) and sliced to this rank (:meth:`draw_global`)."""
        rest = tuple(shape[1:])
        return self.draw_global(lambda rows: torch.randn((rows, *rest), generator=self.generator), int(shape[0]))

    def drop_conditions(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Return a shallow copy of ``batch`` in which each configured condition is nulled per sample with its ``p``.

        Tensors (B, ...) get ``torch.where(drop, null, value)``; lists of length B get per-element replacement.
        """
        if not self.condition_dropout:
            return batch
        batch = dict(batch)
        for name, p in self.condition_dropout.items():
            if name not in batch:
                raise ValueError(f"condition_dropout: condition {name!r} is not in the batch (keys: {sorted(batch)})")
            value = batch[name]
            size = value.shape[0] if isinstance(value, torch.Tensor) else len(value)
            drop = self.draw_global(lambda rows: torch.rand(rows, generator=self.generator), size) < p
            if p <= 0.0 or not bool(drop.any()):
                continue
            null = self.null_condition(name, value)
            if isinstance(value, torch.Tensor):
                mask = drop.to(value.device).view(size, *([1] * (value.ndim - 1)))
                batch[name] = torch.where(mask, null, value)
            else:
                batch[name] = [n if d else v for v, n, d in zip(value, null, drop.tolist())]
        return batch

    def diffusion_target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Regression target: ``noise`` (epsilon), ``scheduler.get_velocity`` (v) or ``latents`` (sample)."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v_prediction":
            # diffusers annotates timesteps as the legacy torch.IntTensor; any integer tensor is what it takes.
            return self.noise_scheduler.get_velocity(latents, noise, cast(torch.IntTensor, timesteps))
        return latents

    def compute_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """One diffusion loss: drop conditions, encode, sample t and noise, add noise, predict, weighted MSE."""
        batch = self.drop_conditions(batch)
        latents = self.encode_batch(batch)
        bsz = latents.shape[0]
        num_steps = self.noise_scheduler.config["num_train_timesteps"]
        timesteps = self.draw_global(
            lambda rows: torch.randint(0, num_steps, (rows,), generator=self.generator), bsz
        ).to(latents.device)
        noise = self.randn(latents.shape).to(device=latents.device, dtype=latents.dtype)
        noisy = self.noise_scheduler.add_noise(latents, noise, cast(torch.IntTensor, timesteps))
        prediction = self.predict(noisy, timesteps, batch)
        target = self.diffusion_target(latents, noise, timesteps)
        return weighted_mse(prediction, target, batch.get(self.loss_weight_key), self.loss_weight_reduction)

    # ----------------------------------------------------------------- Lightning
    def setup(self, stage: str) -> None:
        if not self._generator_restored:
            self.generator.manual_seed(self.seed)
        if self.ema_decay is not None and self.ema is None:
            self.ema = EMAModel(
                self.trainable_parameters(), decay=self.ema_decay, update_after_step=self.ema_update_after_step
            )

    def on_fit_start(self) -> None:
        if self.ema is not None:
            self.ema.to(self.device)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.compute_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=self._batch_size(batch))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        state = self.generator.get_state()
        self.generator.manual_seed(self.seed + batch_idx)
        loss = self.compute_loss(batch)
        self.generator.set_state(state)
        self.log("val/loss", loss, sync_dist=True, batch_size=self._batch_size(batch))
        return loss

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: torch.optim.Optimizer | LightningOptimizer,
        optimizer_closure: Callable[[], Any] | None = None,
    ) -> None:
        """Lightning's optimizer step, then one EMA update (so EMA steps follow optimizer steps, not micro-batches)."""
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.ema is not None:
            self.ema.step(self.trainable_parameters())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return build_optimizer(self, self.optimizer_config)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Every rank holds the same generator state (draws are global, see draw_global), so one state is saved.
        checkpoint["genblocks_generator_states"] = self.generator.get_state().unsqueeze(0)
        if self.ema is not None:
            checkpoint["genblocks_ema"] = self.ema.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("genblocks_generator_states")
        if states is not None:
            self.generator.set_state(states[0].clone())
            self._generator_restored = True
        if "genblocks_ema" in checkpoint:
            if self.ema is None:
                self.ema = EMAModel(
                    self.trainable_parameters(),
                    decay=self.ema_decay if self.ema_decay is not None else 0.9999,
                    update_after_step=self.ema_update_after_step,
                )
            self.ema.load_state_dict(checkpoint["genblocks_ema"])
        elif self.ema is not None:
            logger.warning("checkpoint has no EMA state; the EMA restarts from the loaded weights")

    @contextmanager
    def ema_weights(self) -> Iterator[None]:
        """Temporarily swap the EMA weights into the trainable parameters (e.g. for validation or export)."""
        if self.ema is None:
            raise ValueError("ema_weights: the EMA is disabled (ema_decay=None)")
        params = self.trainable_parameters()
        self.ema.store(params)
        self.ema.copy_to(params)
        try:
            yield
        finally:
            self.ema.restore(params)

    def _batch_size(self, batch: dict[str, Any]) -> int:
        for value in batch.values():
            if isinstance(value, torch.Tensor):
                return int(value.shape[0])
        return 1
