"""Training of the two DREAM-Talk stages on genblocks' ``fit()`` (one run folder, exact kill/resume).

- ``train.stage="emodiff"``: epsilon-prediction diffusion over windows of motion (L_simple = E||eps - eps_theta||^2,
  spec §4) with the audio and the style dropped independently per window (``cfg.p_drop_audio``,
  ``cfg.p_drop_style``), through genblocks' :class:`~genblocks.training.DiffusionTrainingModule` (its generator draws
  timesteps, noise and dropout, and is saved with each checkpoint).
- ``train.stage="lip"``: the lip refiner learns to restore the mouth channels of a window whose mouth channels were
  perturbed (offset, scale and temporal jitter drawn from the module's generator, standing in for EmoDiff's
  imprecise lips): L2 on the 27 mouth channels + ``lip.w_vel`` x velocity L2 + ``lip.w_sync`` x a user-given lip-sync
  expert loss (:data:`SyncLoss`, off by default; from the CLI a TorchScript file, ``lip.sync_model``).

Data: a JSONL manifest (one row per clip: ``{"audio": wav, "motion": .json/.csv/.npy, "emotion": label,
"speaker": id}``, paths relative to the manifest; the style clip of a row is another clip with its emotion label, or
itself) cut into windows, or, without a manifest, :class:`SyntheticWindows` whose mouth follows the audio and whose
expression follows an emotion (the tiny config).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dream_talk.config import DreamTalkConfig
from dream_talk.modeling_dream_talk import EmoDiff, LipRefiner, StyleEncoder, fit_style_length
from dream_talk.motion import mouth_indices
from dream_talk.pipeline_dream_talk import DreamTalkPipeline, build_components
from genblocks.errors import InputError
from genblocks.training.diffusion_module import DiffusionTrainingModule
from genblocks.training.fitting import FitResult, fit
from genblocks.training.optim import build_optimizer

__all__ = [
    "EmoDiffTrainingModule",
    "LipTrainingModule",
    "ManifestWindows",
    "MotionDataModule",
    "SyncLoss",
    "SyntheticWindows",
    "build_training",
    "lip_loss",
    "load_sync_expert",
    "train",
]

logger = logging.getLogger(__name__)

SyncLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A lip-sync expert hook: ``(motion (B, T, M), audio (B, T, A)) -> scalar loss`` (e.g. SyncNet on rendered mouths)."""


class _FrozenExpert:
    """A loaded TorchScript expert as a plain callable (not a submodule, so the optimizer and checkpoints skip it)."""

    def __init__(self, model: Callable[..., Any]) -> None:
        self.model = model

    def __call__(self, motion: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        if isinstance(self.model, torch.nn.Module):
            self.model.to(motion.device)
        loss = torch.as_tensor(self.model(motion, audio))
        if loss.numel() != 1:
            raise InputError(f"lip.sync_model must return a scalar loss, got shape {tuple(loss.shape)}")
        return loss.reshape(())


def load_sync_expert(path: str | Path) -> SyncLoss:
    """Load the TorchScript lip-sync expert of ``lip.sync_model`` (``torch.jit.load`` on CPU, weights frozen).

    Args:
        path: A TorchScript file whose module is called as ``expert(motion (B, T, M), audio (B, T, A)) -> loss``.

    Returns:
        A :data:`SyncLoss` whose gradients flow to the motion but never into the expert.

    Raises:
        InputError: naming ``lip.sync_model`` when the file is missing or not TorchScript.
    """
    from genblocks.metrics import load_feature_extractor

    return _FrozenExpert(load_feature_extractor(path, "lip.sync_model"))


class SyntheticWindows(Dataset):
    """Deterministic synthetic training windows: audio drives the mouth, an emotion drives the rest.

    Window ``i`` (its own seeded RNG): a smooth random audio feature track a(t) (T, A); jawOpen =
    0.8 sigmoid(w . a(t)), the other mouth channels 0.3 sigmoid(W a(t)); one of ``emotions`` fixed expression offsets
    (smile, brows, squint...) on every channel; slow sinusoidal head pose. The style clip is another window of the same
    emotion with other audio.

    Args:
        count: Number of windows.
        frames: T.
        audio_dim: A.
        style_frames: S.
        pose_dim: P.
        emotions: Number of emotion offsets.
        seed: Base seed.
    """

    def __init__(
        self,
        count: int,
        frames: int,
        audio_dim: int,
        style_frames: int,
        pose_dim: int = 6,
        emotions: int = 4,
        seed: int = 0,
    ) -> None:
        self.count, self.frames, self.audio_dim, self.style_frames, self.pose_dim = (
            count,
            frames,
            audio_dim,
            style_frames,
            pose_dim,
        )
        self.seed = seed
        shared = np.random.default_rng(seed)
        self.mouth_weights = shared.standard_normal((audio_dim, 27)).astype(np.float32) / np.sqrt(audio_dim)
        offsets = shared.uniform(0.0, 0.5, (emotions, 52)) * (shared.uniform(size=(emotions, 52)) < 0.3)
        self.offsets = offsets.astype(np.float32)

    def __len__(self) -> int:
        return self.count

    def _clip(self, rng: np.random.Generator, frames: int, emotion: int) -> tuple[np.ndarray, np.ndarray]:
        walk = np.cumsum(rng.standard_normal((frames + 4, self.audio_dim)), axis=0)
        kernel = np.ones(5) / 5
        audio = np.stack([np.convolve(walk[:, d], kernel, mode="valid") for d in range(self.audio_dim)], axis=1)
        audio = (audio - audio.mean(0)) / (audio.std(0) + 1e-6)
        motion = np.zeros((frames, 52 + self.pose_dim), np.float32)
        motion[:, :52] = self.offsets[emotion]
        mouth = 0.3 / (1 + np.exp(-(audio @ self.mouth_weights)))
        mouth[:, 3] = 0.8 / (1 + np.exp(-audio[:, 0] * 2))  # jawOpen is channel 17 = mouth index 3
        motion[:, mouth_indices()] += mouth
        if self.pose_dim:
            t = np.arange(frames)[:, None]
            phase = rng.uniform(0, 2 * np.pi, self.pose_dim)
            motion[:, 52:] = 0.1 * np.sin(2 * np.pi * t / max(frames, 2) + phase)
        return audio.astype(np.float32), motion.astype(np.float32)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index])
        emotion = int(rng.integers(len(self.offsets)))
        audio, motion = self._clip(rng, self.frames, emotion)
        _, style = self._clip(rng, self.style_frames, emotion)
        return _item(motion, audio, style)


def _item(motion: np.ndarray, audio: np.ndarray, style: np.ndarray) -> dict[str, torch.Tensor]:
    return {
        "motion": torch.from_numpy(motion),
        "audio": torch.from_numpy(audio),
        "initial_state": torch.from_numpy(motion[0].copy()),
        "style": torch.from_numpy(style),
        "audio_keep": torch.tensor(1.0),
        "style_keep": torch.tensor(1.0),
    }


class ManifestWindows(Dataset):
    """Windows of T frames (stride T // 2) cut from the clips of a JSONL manifest.

    Each row: ``{"audio": path, "motion": path, "emotion": label (optional), "speaker": id (optional)}``; paths are
    relative to the manifest's folder. Audio features are computed once with the config's front-end at the motion's
    frame rate; the style of a window is the motion of the next clip with the same emotion label (itself when it is the
    only one), centre-cropped or looped to ``emodiff.style_frames`` as the style encoder would (so clips of any length
    batch together).

    Args:
        manifest: The JSONL file.
        config: The whole config (front-end, window, pose size, fps of CSV/NPY motion).
    """

    def __init__(self, manifest: str | Path, config: DreamTalkConfig) -> None:
        from dream_talk.audio_features import AudioFrontEnd, load_speech
        from dream_talk.evaluation import read_manifest
        from dream_talk.motion import read_motion

        manifest = Path(manifest)
        rows = read_manifest(manifest, "train.manifest")
        front = AudioFrontEnd(config.audio)
        window = config.emodiff.window
        clips: list[tuple[np.ndarray, np.ndarray, str]] = []
        for row in rows:
            motion = read_motion(manifest.parent / row["motion"], config.motion.fps, config.motion.pose_dim)
            samples, rate = load_speech(manifest.parent / row["audio"], config.audio)
            audio = front(samples, rate, motion.fps, motion.num_frames)
            clips.append((audio, motion.values, str(row.get("emotion", ""))))
        self.items: list[tuple[int, int]] = []
        for index, (_, values, _) in enumerate(clips):
            starts = range(0, max(values.shape[0] - window, 0) + 1, max(window // 2, 1))
            self.items += [(index, start) for start in starts if values.shape[0] >= window]
        if not self.items:
            raise InputError(f"train.manifest {manifest}: no clip holds a full window of {window} frames")
        self.clips, self.window, self.style_frames = clips, window, config.emodiff.style_frames

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        clip, start = self.items[index]
        audio, motion, emotion = self.clips[clip]
        same = [i for i, c in enumerate(self.clips) if c[2] == emotion]
        partner = torch.from_numpy(self.clips[same[(same.index(clip) + 1) % len(same)]][1])
        style = fit_style_length(partner[None], self.style_frames)[0].numpy()
        end = start + self.window
        return _item(motion[start:end], audio[start:end], style)


class MotionDataModule(L.LightningDataModule):
    """One training loader over a map-style dataset (``fit`` replaces its sampler with the step-indexed one)."""

    def __init__(self, dataset: Dataset, batch_size: int) -> None:
        super().__init__()
        self.dataset, self.batch_size = dataset, batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False)


class EmoDiffTrainingModule(DiffusionTrainingModule):
    """EmoDiff's diffusion step: batch ``motion`` (B, T, M) is the clean sample; ``audio_keep`` / ``style_keep`` (B,)
    are the conditions genblocks drops (nulled to 0, which selects EmoDiff's learned null tokens).

    Args:
        emodiff: The denoiser.
        style_encoder: Its style encoder (trained jointly).
        config: The whole config (schedule, CFG dropout, optimizer, seed).
    """

    def __init__(self, emodiff: EmoDiff, style_encoder: StyleEncoder, config: DreamTalkConfig) -> None:
        from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

        d = config.diffusion
        scheduler = DDPMScheduler(
            num_train_timesteps=d.steps,
            beta_schedule="squaredcos_cap_v2" if d.schedule == "cosine" else "linear",
            beta_start=d.beta_start,
            beta_end=d.beta_end,
        )
        super().__init__(
            emodiff,
            noise_scheduler=scheduler,
            prediction_type="epsilon",
            optimizer=config.train.optimizer,
            condition_dropout={"audio_keep": config.cfg.p_drop_audio, "style_keep": config.cfg.p_drop_style},
            seed=config.train.seed,
            latents_key="motion",
        )
        self.style_encoder = style_encoder

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """EmoDiff's noise prediction (B, T, M) for noisy motion (B, T, M)."""
        return self.unet(
            noisy_latents,
            timesteps,
            batch["audio"],
            batch["initial_state"],
            self.style_encoder(batch["style"]),
            audio_keep=batch["audio_keep"],
            style_keep=batch["style_keep"],
        )


def lip_loss(
    refined: torch.Tensor,
    target: torch.Tensor,
    audio: torch.Tensor,
    w_vel: float = 1.0,
    w_sync: float = 0.0,
    sync_loss: SyncLoss | None = None,
) -> dict[str, torch.Tensor]:
    """The lip-refinement losses on the mouth channels.

    Args:
        refined: (B, T, M) refined motion.
        target: (B, T, M) ground truth.
        audio: (B, T, A) audio features (for the sync hook).
        w_vel: Weight of the velocity (first-difference) L2.
        w_sync: Weight of ``sync_loss``; must be 0 when no hook is given.
        sync_loss: The lip-sync expert hook.

    Returns:
        ``{"loss", "l2", "velocity", "sync"}`` scalars.
    """
    mouth = torch.tensor(mouth_indices(), device=refined.device)
    pred, true = refined[..., mouth], target[..., mouth]
    l2 = (pred - true).square().mean()
    velocity = (pred.diff(dim=1) - true.diff(dim=1)).square().mean() if pred.shape[1] > 1 else pred.new_zeros(())
    if w_sync > 0 and sync_loss is None:
        raise ValueError("lip.w_sync > 0 needs a lip-sync expert (sync_loss)")
    sync = sync_loss(refined, audio) if sync_loss is not None else pred.new_zeros(())
    return {"loss": l2 + w_vel * velocity + w_sync * sync, "l2": l2, "velocity": velocity, "sync": sync}


class LipTrainingModule(L.LightningModule):
    """The lip stage: restore perturbed mouth channels (module docstring).

    Args:
        lip_refiner: The refiner.
        config: The whole config (lip loss weights, optimizer, seed).
        sync_loss: Optional lip-sync expert hook (used when ``lip.w_sync > 0``).
    """

    def __init__(self, lip_refiner: LipRefiner, config: DreamTalkConfig, sync_loss: SyncLoss | None = None) -> None:
        super().__init__()
        self.lip_refiner = lip_refiner
        self.w_vel, self.w_sync, self.sync_loss = config.lip.w_vel, config.lip.w_sync, sync_loss
        self.optimizer_config = config.train.optimizer
        self.seed = config.train.seed
        self.generator = torch.Generator().manual_seed(self.seed)
        self._restored = False

    def perturb(self, motion: torch.Tensor) -> torch.Tensor:
        """Motion with its mouth channels offset, scaled and jittered per window (draws from the module's generator)."""
        batch, frames, _ = motion.shape
        mouth = torch.tensor(mouth_indices())
        offset = 0.2 * torch.randn(batch, 1, len(mouth), generator=self.generator)
        scale = 1.0 + 0.3 * torch.randn(batch, 1, len(mouth), generator=self.generator)
        jitter = 0.05 * torch.randn(batch, frames, len(mouth), generator=self.generator)
        noisy = motion.clone()
        noisy[..., mouth] = motion[..., mouth] * scale.to(motion) + offset.to(motion) + jitter.to(motion)
        return noisy

    def setup(self, stage: str) -> None:
        if not self._restored:
            self.generator.manual_seed(self.seed)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The lip loss of one batch: perturb the mouth channels, refine, compare with the clean motion."""
        refined = self.lip_refiner(self.perturb(batch["motion"]), batch["audio"], batch["style"])
        return lip_loss(refined, batch["motion"], batch["audio"], self.w_vel, self.w_sync, self.sync_loss)["loss"]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.compute_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["motion"].shape[0])
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return build_optimizer(self, self.optimizer_config)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["dream_talk_generator"] = self.generator.get_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.generator.set_state(checkpoint["dream_talk_generator"].clone())
        self._restored = True


def build_training(config: DreamTalkConfig, sync_loss: SyncLoss | None = None) -> dict[str, Any]:
    """The keyword arguments of :func:`genblocks.training.fit` for ``config.train.stage``: seeded random components,
    the manifest's or synthetic windows, and a ``save_trained`` that writes a pipeline folder (``emodiff`` stage:
    ``emodiff`` + ``style_encoder``; ``lip`` stage: ``lip_refiner``; both with ``config.json``).

    Args:
        config: The whole config.
        sync_loss: The lip stage's lip-sync expert; None reads ``lip.sync_model`` when it is set.

    Returns:
        ``{"module", "datamodule", "train_config", "save_trained", "config"}``.

    Raises:
        InputError: ``lip.w_sync > 0`` in the lip stage with no expert, or an unreadable ``lip.sync_model``.
    """
    t = config.train
    if t.stage == "lip" and sync_loss is None:
        if config.lip.sync_model is not None:
            sync_loss = load_sync_expert(config.lip.sync_model)
        elif config.lip.w_sync > 0:
            raise InputError(
                f"lip.w_sync={config.lip.w_sync} needs a lip-sync expert: set lip.sync_model to a TorchScript file"
            )
    L.seed_everything(t.seed, workers=True, verbose=False)
    emodiff, style_encoder, lip_refiner = build_components(config)
    for part in (emodiff, style_encoder, lip_refiner):
        part.train()
    dataset: Dataset
    if t.manifest is None:
        e = config.emodiff
        dataset = SyntheticWindows(
            t.synthetic_windows,
            e.window,
            config.audio.feature_dim,
            e.style_frames,
            config.motion.pose_dim,
            seed=t.seed,
        )
    else:
        dataset = ManifestWindows(t.manifest, config)
    module: L.LightningModule
    if t.stage == "emodiff":
        module = EmoDiffTrainingModule(emodiff, style_encoder, config)

        def save_trained(trained: L.LightningModule, folder: Path) -> None:
            DreamTalkPipeline(emodiff.eval(), style_encoder.eval(), None, config).save_pretrained(folder)

    else:
        module = LipTrainingModule(lip_refiner, config, sync_loss)

        def save_trained(trained: L.LightningModule, folder: Path) -> None:
            DreamTalkPipeline(emodiff, style_encoder, lip_refiner.eval(), config).save_pretrained(
                folder, parts=("lip_refiner",)
            )

    return {
        "module": module,
        "datamodule": MotionDataModule(dataset, t.batch_size),
        "train_config": t,
        "save_trained": save_trained,
        "config": config,
    }


def train(config: DreamTalkConfig, out: str | Path, resume: bool = False, callbacks: Sequence[Any] = ()) -> FitResult:
    """Run one training stage into the run folder ``out`` (``dream-talk train``)."""
    return fit(out_dir=out, resume=resume, callbacks=callbacks, **build_training(config))
