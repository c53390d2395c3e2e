"""Progressive training of humananim on :func:`genblocks.training.fit` (humananim spec §4; issue 19 item 3).

Stages (``train.stage``, [unverified] split):

- ``image``: the reference UNet and the pose ControlNet learn on single frames (``num_frames = 1``), the UNet frozen;
- ``video``: only the temporal modules learn, on clips of ``train.num_frames``;
- ``hires``: everything but the VAE and text encoder fine-tunes on clips, with the shifted-SNR schedule
  (``train.snr_scale``: log SNR moves by ``-2 log(resolution / base_resolution)``).

One step: the clip's frames are VAE-encoded, noised at one timestep per clip, the reference UNet writes the bank from
the clean reference latent at that timestep, and the UNet + pose ControlNet (hint = skeleton + blur channels measured
on the ground-truth frames) + temporal modules predict the noise; the loss is :class:`humananim.losses.RegionalLoss`
(epsilon MSE + face/hand region MSE in ``loss.region_space`` + the identity term when a face embedder is given).
Condition dropout nulls a sample's reference image (zeros) with ``train.cond_drop_ref`` and its hint (zeros) with
``train.cond_drop_pose``. The optimizer is chosen by name (``train.optimizer.name``: ``adamw``, ``adamw8bit``,
``coap_adamw``).

Data: a ``humananim prepare`` manifest (``train.manifest``), or, when none is given, a synthetic set (a scripted dance
of a template skeleton rendered as coloured limbs: a smoke run, not training). Each sample holds ``frames`` (F, 3, H, W)
in [-1, 1], ``reference`` (3, H, W), ``hint`` (F, 6, H, W), pixel ``face_mask`` / ``hand_mask`` (F, H, W), ``face_boxes``
(F, 4) and ``face_valid`` (F,).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from genblocks.errors import InputError
from genblocks.training.fitting import FitResult, fit
from genblocks.training.optim import OptimizerConfig
from genblocks.training.reference_video import ReferenceVideoTrainingModule
from humananim.config import HumanAnimConfig, KeypointsConfig
from humananim.keypoints import Keypoints, body_template, load_keypoints, pose_hint, scripted_dance
from humananim.losses import LossTerms, RegionalLoss, keypoint_region_masks, shifted_scheduler
from humananim.modeling import HumanAnimComponents, HumanAnimModel, build_random_components
from humananim.pipeline import load_components

__all__ = [
    "HumanAnimDataModule",
    "HumanAnimTrainingModule",
    "ManifestClips",
    "SyntheticClips",
    "build_training",
    "make_sample",
    "train",
]

logger = logging.getLogger(__name__)


def make_sample(
    frames: np.ndarray,
    keypoints: Keypoints,
    reference: np.ndarray,
    blur: bool = True,
    settings: KeypointsConfig | None = None,
) -> dict[str, torch.Tensor]:
    """One training sample from uint8 frames and their keypoints.

    Args:
        frames: (F, H, W, 3) uint8 RGB clip (already at the training size).
        keypoints: (F, 128, 3) keypoints in the same frame size.
        reference: (H, W, 3) uint8 reference image.
        blur: Append the blur channels to the hint (``model.blur_channels == 3``).
        settings: The ``keypoints`` config: ``min_confidence`` and the blur weighting (``motion_gain``,
            ``sharpness_ref``: the sharpness is measured on ``frames``); ``None``: its defaults.

    Returns:
        The sample layout of the module docstring.
    """
    count, height, width = frames.shape[:3]
    if (keypoints.width, keypoints.height, len(keypoints)) != (width, height, count):
        raise InputError(
            f"keypoints: {len(keypoints)} frames of {keypoints.width}x{keypoints.height} do not match the clip "
            f"({count} frames of {width}x{height})"
        )
    settings = settings or KeypointsConfig()
    hint = pose_hint(
        keypoints,
        frames=frames,
        blur=blur,
        min_confidence=settings.min_confidence,
        motion_gain=settings.motion_gain,
        sharpness_ref=settings.sharpness_ref,
    )
    face, hand, boxes, valid = keypoint_region_masks(
        keypoints, (height, width), min_confidence=settings.min_confidence
    )
    to_unit = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return {
        "frames": to_unit,
        "reference": torch.from_numpy(reference).permute(2, 0, 1).float() / 127.5 - 1.0,
        "hint": torch.from_numpy(hint),
        "face_mask": face,
        "hand_mask": hand,
        "face_boxes": boxes,
        "face_valid": valid,
    }


class SyntheticClips(Dataset):
    """Deterministic synthetic clips: a template skeleton dancing, drawn as thick coloured limbs on grey.

    Args:
        size: ``(height, width)``.
        num_frames: Frames per clip.
        length: Number of clips.
        blur: Hint with blur channels.
        seed: Base seed (clip ``i`` uses ``seed + i``).
        settings: The ``keypoints`` config the hint is made with (:func:`make_sample`).
    """

    def __init__(
        self,
        size: tuple[int, int],
        num_frames: int,
        length: int = 8,
        blur: bool = True,
        seed: int = 0,
        settings: KeypointsConfig | None = None,
    ) -> None:
        self.size, self.num_frames, self.length, self.blur, self.seed = size, num_frames, length, blur, seed
        self.settings = settings

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        from humananim.keypoints import render_pose

        height, width = self.size
        rng = np.random.default_rng(self.seed + index)
        angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
        unit = height / 14
        cx, cy = width / 2 + rng.uniform(-0.1, 0.1) * width, 1.6 * unit
        face = np.stack([cx + 0.45 * unit * np.cos(angles), cy + 0.6 * unit * np.sin(angles)], 1)
        face[8], face[17:27, 1] = (cx, cy + 0.6 * unit), cy - 0.5 * unit
        dance = scripted_dance(body_template(face, width, height), self.num_frames + 1, seed=self.seed + index)
        colour = rng.integers(60, 200, 3)
        frames = np.clip(
            render_pose(dance, line_width=max(2, width // 12)).astype(np.int32) + colour // 2, 0, 255
        ).astype(np.uint8)
        reference = frames[0]
        clip = Keypoints(dance.points[1:], width, height)
        return make_sample(frames[1:], clip, reference, self.blur, self.settings)


def _read_frame(path: Path, size: tuple[int, int]) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((size[1], size[0]), Image.Resampling.BICUBIC))


class ManifestClips(Dataset):
    """Clips from a ``humananim prepare`` manifest: one random clip (and a random reference frame) per video.

    Args:
        manifest: ``manifest.jsonl`` (paths relative to its folder).
        size: ``(height, width)`` the frames are resized to.
        num_frames: Frames per clip.
        stride: Frame stride inside a clip.
        blur: Hint with blur channels.
        seed: Seed of the clip positions (item ``i`` uses ``seed + i``: the data is a pure function of the index).
        settings: The ``keypoints`` config the hint is made with (:func:`make_sample`).
    """

    def __init__(
        self,
        manifest: str | Path,
        size: tuple[int, int],
        num_frames: int,
        stride: int = 1,
        blur: bool = True,
        seed: int = 0,
        settings: KeypointsConfig | None = None,
    ) -> None:
        self.manifest = Path(manifest)
        if not self.manifest.is_file():
            raise InputError(f"train.manifest {self.manifest}: no such file (write it with `humananim prepare`)")
        self.root = self.manifest.parent
        self.rows = [json.loads(line) for line in self.manifest.read_text().splitlines() if line.strip()]
        if not self.rows:
            raise InputError(f"train.manifest {self.manifest}: no rows")
        span = (num_frames - 1) * stride + 1
        short = [row["frames"] for row in self.rows if int(row["num_frames"]) < span]
        if short:
            raise InputError(f"train.manifest: videos shorter than a clip of {span} frames: {short[:3]}")
        self.size, self.num_frames, self.stride, self.blur, self.seed = size, num_frames, stride, blur, seed
        self.settings = settings

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = self.rows[index]
        rng = random.Random(self.seed + index)
        total = int(row["num_frames"])
        start = rng.randrange(0, total - (self.num_frames - 1) * self.stride)
        picks = [start + k * self.stride for k in range(self.num_frames)]
        files = sorted((self.root / row["frames"]).glob("*.png"))
        frames = np.stack([_read_frame(files[i], self.size) for i in picks])
        reference = _read_frame(files[rng.randrange(total)], self.size)
        keypoints = load_keypoints(self.root / row["keypoints"])
        clip = Keypoints(keypoints.points[picks], keypoints.width, keypoints.height, keypoints.fps)
        clip = clip.resized(self.size[1], self.size[0])
        return make_sample(frames, clip, reference, self.blur, self.settings)


class HumanAnimDataModule(L.LightningDataModule):
    """A map-style dataset behind one training loader (``fit`` replaces its sampler with the step-indexed one)."""

    def __init__(self, dataset: Dataset, batch_size: int, num_workers: int = 0) -> None:
        super().__init__()
        self.dataset, self.batch_size, self.num_workers = dataset, batch_size, num_workers

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)


class HumanAnimTrainingModule(ReferenceVideoTrainingModule):
    """One humananim training step (module docstring) for a stage, on genblocks' reference-video pieces: clips encoded
    to (B, 4, F, h, w) with generator-drawn VAE samples (one timestep and one noise tensor per clip), the ``(b f)``
    frame batch with the empty-prompt context, the prediction folded back to the clip layout.

    Args:
        model: The wired :class:`HumanAnimModel` (its trainable parts are set by ``stage``).
        vae: The frozen VAE.
        text_context: (1, T, D) the empty prompt's text-encoder output (the prompt is always empty).
        config: The whole config (stage, loss, dropout, optimizer, schedule).
        face_embedder: Frozen face network for the identity term (``None``: the term is off).
    """

    def __init__(
        self,
        model: HumanAnimModel,
        vae: Any,
        text_context: torch.Tensor,
        config: HumanAnimConfig,
        face_embedder: torch.nn.Module | None = None,
    ) -> None:
        train_config = config.train
        base = DDPMScheduler(
            num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule=config.model.beta_schedule
        )
        super().__init__(
            unet=model,
            vae=vae,
            text_context=text_context,
            noise_scheduler=shifted_scheduler(base, train_config.snr_scale),
            prediction_type="epsilon",
            optimizer=train_config.optimizer if isinstance(train_config.optimizer, OptimizerConfig) else None,
            condition_dropout={"reference": train_config.cond_drop_ref, "hint": train_config.cond_drop_pose},
            ema_decay=train_config.ema_decay,
            gradient_checkpointing=train_config.gradient_checkpointing,
            seed=train_config.seed,
        )
        self.hparams.update({"stage": train_config.stage, "loss": asdict(config.loss)})
        self.model = model
        self.stage = train_config.stage
        loss = config.loss
        self.loss = RegionalLoss(
            self.noise_scheduler.alphas_cumprod,
            lambda_face=loss.lambda_face,
            lambda_hand=loss.lambda_hand,
            lambda_id=loss.lambda_id,
            id_loss_max_t=loss.id_loss_max_t,
            region_space=loss.region_space,
            face_embedder=face_embedder,
        )
        self.set_stage(self.stage)
        self.last_terms: LossTerms | None = None

    def set_stage(self, stage: str) -> None:
        """Freeze everything, then unfreeze the parts ``stage`` trains."""
        self.model.requires_grad_(False)
        parts: list[torch.nn.Module] = []
        if stage in ("image", "hires"):
            parts += [self.model.reference_unet, self.model.controlnet]
        if stage in ("video", "hires"):
            if self.model.motion_modules is None:
                raise InputError(f"train.stage={stage}: the model has no temporal modules")
            parts.append(self.model.motion_modules)
        if stage == "hires":
            parts.append(self.model.unet)
        if not parts:
            raise InputError(f"train.stage: expected image, video or hires, got {stage!r}")
        for part in parts:
            part.requires_grad_(True)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        assert self.vae is not None
        return self.vae.decode(latents / self.vae.config["scaling_factor"]).sample

    def encode_batch(self, batch: dict[str, Any]) -> torch.Tensor:
        """Clean latents of the clips ``batch["frames"]`` (B, F, 3, H, W), laid out (B, 4, F, h, w)."""
        return self.encode_clips(batch["frames"])

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Epsilon (B, 4, F, h, w) for noisy clips at timesteps (B,): the reference UNet writes the bank from the clean
        reference latent at the same t, then the UNet + pose ControlNet (hint (B, F, 6, H, W)) + temporal modules."""
        frames = self.frame_batch(noisy_latents, timesteps)
        self.model.write_reference(self.encode_images(batch["reference"]), timesteps, frames.clip_context)
        hint = batch["hint"].flatten(0, 1).to(frames.sample.dtype)
        prediction = self.model(
            frames.sample, frames.timesteps, frames.context, num_frames=frames.num_frames, hint=hint
        )
        self.model.clear_reference()
        return self.fold_frames(prediction, frames)

    def compute_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """Condition dropout, encode, one timestep and noise per clip, predict, and :class:`RegionalLoss` (epsilon MSE
        + face/hand region MSE + identity term); returns the total (the terms stay in ``last_terms``)."""
        batch = self.drop_conditions(batch)
        latents = self.encode_batch(batch)
        num_steps = self.noise_scheduler.config["num_train_timesteps"]
        timesteps = self.draw_global(
            lambda rows: torch.randint(0, num_steps, (rows,), generator=self.generator), latents.shape[0]
        ).to(latents.device)
        noise = self.randn(latents.shape).to(device=latents.device, dtype=latents.dtype)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)  # type: ignore[arg-type]
        prediction = self.predict(noisy, timesteps, batch)
        terms = self.loss(
            prediction,
            noise,
            noisy,
            latents,
            timesteps,
            batch["face_mask"],
            batch["hand_mask"],
            face_boxes=batch["face_boxes"],
            face_valid=batch["face_valid"],
            frames=batch["frames"].permute(0, 2, 1, 3, 4),
            decode=self._decode,
        )
        self.last_terms = terms
        return terms.total

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        if self.last_terms is not None:
            size = self._batch_size(batch)
            for name in ("plain", "face", "hand", "identity"):
                self.log(f"train/{name}", getattr(self.last_terms, name).detach(), batch_size=size)
        return loss


def save_trained_pipeline(parts: HumanAnimComponents, config: HumanAnimConfig, folder: Path) -> None:
    """Write the trained components (shared with the training module, so holding its weights) as a
    ``HumanAnimPipeline`` folder: ``humananim animate --set components.source=pretrained`` and the next stage's
    ``train.init_from`` read it."""
    from humananim.pipeline import HumanAnimPipeline

    pipeline = HumanAnimPipeline(**parts.as_dict(), fusion_blocks=config.model.fusion_blocks)  # type: ignore[arg-type]
    pipeline.save_pretrained(folder)


def build_training(
    config: HumanAnimConfig, face_embedder: torch.nn.Module | None = None, synthetic_clips: int = 8
) -> dict[str, Any]:
    """The keyword arguments of :func:`genblocks.training.fit` for ``config``: components from ``config.components``
    (random, an SD1.5 base folder or a pipeline folder), or from ``train.init_from`` (the previous stage's
    ``trained/``) when set; the trained pipeline is saved into the run's ``trained/``.

    Returns:
        ``{"module", "datamodule", "train_config", "save_trained", "config"}``.
    """
    train_config = config.train
    L.seed_everything(train_config.seed, workers=True, verbose=False)
    source = config
    if train_config.init_from is not None:  # the previous stage's trained/ folder
        source = replace(
            config, components=replace(config.components, source="pretrained", pretrained=train_config.init_from)
        )
    if source.components.source == "random":
        parts = build_random_components(config.model, config.random, config.components.seed, with_motion_modules=True)
    else:
        parts = load_components(source)
    model = HumanAnimModel(
        parts.unet,
        parts.reference_unet,
        parts.controlnet,
        parts.motion_modules,
        fusion_blocks=config.model.fusion_blocks,
        controlnet_scale=config.model.controlnet_scale,
    )
    with torch.no_grad():
        ids = parts.tokenizer(
            [""], padding="max_length", max_length=parts.tokenizer.model_max_length, return_tensors="pt"
        )
        context = parts.text_encoder(ids.input_ids)[0]
    module = HumanAnimTrainingModule(model, parts.vae, context, config, face_embedder)
    num_frames = 1 if train_config.stage == "image" else train_config.num_frames
    size = (config.model.height, config.model.width)
    if train_config.stage == "hires":
        scale = train_config.resolution / max(size)
        factor = 8 * 2 ** (len(config.random.block_out_channels) - 1)  # VAE factor x UNet downsampling
        size = (
            max(factor, round(size[0] * scale / factor) * factor),
            max(factor, round(size[1] * scale / factor) * factor),
        )
    blur = config.model.blur_channels == 3
    dataset: Dataset
    if train_config.manifest is None:
        dataset = SyntheticClips(size, num_frames, synthetic_clips, blur, train_config.seed, config.keypoints)
    else:
        dataset = ManifestClips(
            train_config.manifest,
            size,
            num_frames,
            config.data.frame_stride,
            blur,
            train_config.seed,
            config.keypoints,
        )
    datamodule = HumanAnimDataModule(dataset, train_config.batch_size, train_config.num_workers)
    return {
        "module": module,
        "datamodule": datamodule,
        "train_config": train_config,
        "save_trained": lambda trained, folder: save_trained_pipeline(parts, config, folder),
        "config": config,
    }


def train(config: HumanAnimConfig, out: str | Path, resume: bool = False, callbacks: Sequence[Any] = ()) -> FitResult:
    """Run one training stage into the run folder ``out`` (``humananim train``)."""
    arguments = build_training(config)
    return fit(out_dir=out, resume=resume, callbacks=callbacks, **arguments)
