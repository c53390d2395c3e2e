"""Training, beyond the authors (their code is inference-only): Lightning on ``genblocks`` ``DiffusionTrainingModule``.

Stages (spec §4, recipe [unverified]):

1. **appearance + view**: the reference UNet and the view ControlNet learn on pairs: a source image, a condition
   render of *another* subject at the target camera, and the target view as ground truth (one view per sample).
2. **cross-view**: everything else frozen, the cross-view modules learn on sequences of ``num_views`` target views.

Loss: epsilon MSE on the SD1.5 schedule (β 0.00085→0.012 ``scaled_linear``, 1000 steps), one timestep per sample
(shared by its views), the bank from the clean source latent at the same t. Condition dropout (``cond_drop``) zeroes
the source (null reference) or the condition renders per sample.

Data: a manifest (CSV / JSON lines) with columns ``source`` (image), ``targets`` and ``conditions`` (frames: a
JSON list of image paths with one entry per view) and optionally ``cameras`` ((V, 25) EG3D labels), or
:class:`SyntheticViewDataset` (multi-view renders of EG3D samples, PanoHead-style synthetic data) when no manifest
is given.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from diffportrait3d.cameras import cameras_at
from diffportrait3d.config import DiffPortrait3DConfig
from diffportrait3d.modeling_diffportrait3d import (
    DiffPortrait3DComponents,
    DiffPortrait3DModel,
    build_random_components,
)
from diffportrait3d.noise3d import EG3DConditionRenderer
from diffportrait3d.pipeline_diffportrait3d import DiffPortrait3DPipeline, load_pipeline
from genblocks.diffusion import encode_clip_prompt
from genblocks.gan.triplane import TriPlaneGenerator
from genblocks.training import ColumnSpec, ManifestDataModule, OptimizerConfig
from genblocks.training.reference_video import ReferenceVideoTrainingModule, loss_on_fixed_draws

__all__ = [
    "DiffPortrait3DTrainingModule",
    "SyntheticViewData",
    "SyntheticViewDataset",
    "build_components",
    "build_datamodule",
    "build_training_module",
    "loss_on_fixed_draws",
    "train",
    "train_from_config",
]

logger = logging.getLogger(__name__)


class DiffPortrait3DTrainingModule(ReferenceVideoTrainingModule):
    """Lightning module for both DiffPortrait3D training stages.

    Batch (images in [-1, 1]): ``"source"`` (B, 3, H, W); ``"targets"`` (B, V, 3, H, W) target views;
    ``"conditions"`` (B, V, 3, H, W) condition renders (another subject) at the target cameras. Stage 1 uses the first
    view only; stage 2 the first ``num_views``.

    Args:
        components (`DiffPortrait3DComponents`): The models (trained in place). Stage 2 needs ``view_modules``.
        stage (`int`, defaults to 1): 1 (reference UNet + view ControlNet) or 2 (cross-view modules only).
        num_views (`int`, defaults to 8): Views per sequence in stage 2.
        cond_drop (`float`, defaults to 0.1): Dropout probability of each condition [unverified].
        optimizer (`OptimizerConfig`, *optional*): Defaults to AdamW at lr 1e-5 [unverified].
        seed (`int`, defaults to 0): Seed of timesteps, noise and dropout.
    """

    def __init__(
        self,
        components: DiffPortrait3DComponents,
        stage: int = 1,
        num_views: int = 8,
        cond_drop: float = 0.1,
        optimizer: OptimizerConfig | None = None,
        seed: int = 0,
    ) -> None:
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage!r}")
        if stage == 2 and components.view_modules is None:
            raise ValueError("stage 2 trains the cross-view modules: components.view_modules is None")
        for part in (components.unet, components.vae, components.text_encoder):
            part.requires_grad_(False)
        components.reference_unet.requires_grad_(stage == 1)
        components.view_controlnet.requires_grad_(stage == 1)
        if components.view_modules is not None:
            components.view_modules.requires_grad_(stage == 2)
        model = DiffPortrait3DModel(
            components.unet,
            components.reference_unet,
            components.view_controlnet,
            components.view_modules if stage == 2 else None,
        )
        with torch.no_grad():
            text = encode_clip_prompt(components.tokenizer, components.text_encoder)
        super().__init__(
            unet=model,
            vae=components.vae,
            text_context=text,
            prediction_type="epsilon",
            optimizer=optimizer if optimizer is not None else OptimizerConfig(lr=1e-5),
            condition_dropout={"source": cond_drop, "conditions": cond_drop},
            seed=seed,
        )
        self.hparams.update({"stage": stage, "num_views": num_views, "cond_drop": cond_drop})
        self.model = model
        self.view_modules = components.view_modules if stage == 2 else None
        self.stage = stage
        self.num_views = 1 if stage == 1 else num_views

    def _views(self, batch: dict[str, Any], key: str) -> torch.Tensor:
        if key not in batch:
            raise ValueError(f"batches need {key!r} (B, V, 3, H, W); got keys {sorted(batch)}")
        views = batch[key]
        if views.ndim != 5 or views.shape[1] < self.num_views:
            raise ValueError(f"{key!r} must be (B, V >= {self.num_views}, 3, H, W), got {tuple(views.shape)}")
        return views[:, : self.num_views]

    def encode_batch(self, batch: dict[str, Any]) -> torch.Tensor:
        """Clean latents of the target views, (B, 4, V, h, w): one timestep per sample."""
        return self.encode_clips(self._views(batch, "targets"))

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Epsilon for noisy views (B, 4, V, h, w) at timesteps (B,): bank from the clean source latent at the same t,
        view ControlNet on the condition renders, cross-view modules in stage 2."""
        views = self.frame_batch(noisy_latents, timesteps)
        self.model.write_reference(self.encode_images(batch["source"]), timesteps, views.clip_context)
        eps = self.model(
            views.sample,
            views.timesteps,
            views.context,
            num_views=views.num_frames,
            view_image=self._views(batch, "conditions").flatten(0, 1).to(views.sample.dtype),
        )
        return self.fold_frames(eps, views)


class SyntheticViewDataset(Dataset):
    """Multi-view training samples rendered from EG3D generators (synthetic data; no download).

    Sample ``i``: subject ``i`` of ``generator`` seen frontally (``source``) and at ``num_views`` random yaw/pitch
    offsets (``targets``), and a different subject of ``condition_generator`` at the same cameras (``conditions``);
    images in [-1, 1] at ``resolution``, plus ``cameras`` (V, 25).

    Args:
        generator (`TriPlaneGenerator`): Renders the subjects.
        condition_generator (`TriPlaneGenerator`): Renders the condition subjects.
        length (`int`): Number of samples.
        num_views (`int`): Views per sample.
        resolution (`int`): Output side.
        max_yaw (`float`, defaults to 0.6), max_pitch (`float`, defaults to 0.2): Camera offset ranges (radians).
        seed (`int`, defaults to 0): Base seed (subject ``i`` uses ``seed + i``).
    """

    def __init__(
        self,
        generator: TriPlaneGenerator,
        condition_generator: TriPlaneGenerator,
        length: int,
        num_views: int,
        resolution: int,
        max_yaw: float = 0.6,
        max_pitch: float = 0.2,
        seed: int = 0,
    ) -> None:
        self.generator = generator
        self.condition_generator = condition_generator
        self.length, self.num_views, self.resolution = length, num_views, resolution
        self.max_yaw, self.max_pitch, self.seed = max_yaw, max_pitch, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(self.seed + index)
        yaw = (torch.rand(self.num_views, generator=gen) * 2 - 1) * self.max_yaw
        pitch = (torch.rand(self.num_views, generator=gen) * 2 - 1) * self.max_pitch
        cameras = torch.cat([cameras_at(torch.zeros(1), torch.zeros(1)), cameras_at(yaw, pitch)])
        subject = EG3DConditionRenderer(self.generator, seed=self.seed + index)(cameras)
        other = EG3DConditionRenderer(self.condition_generator, seed=self.seed + index + 10_000)(cameras[1:])
        resize = torch.nn.functional.interpolate
        subject = resize(subject, size=(self.resolution, self.resolution), mode="bilinear") * 2 - 1
        other = resize(other, size=(self.resolution, self.resolution), mode="bilinear") * 2 - 1
        return {"source": subject[0], "targets": subject[1:], "conditions": other, "cameras": cameras[1:]}


def build_datamodule(manifest: str | os.PathLike, config: DiffPortrait3DConfig) -> ManifestDataModule:
    """The manifest data module: columns ``source`` (image), ``targets`` and ``conditions`` (frames: a JSON list of
    image paths, one per view) and optional ``cameras`` (keypoints: (V, 25) EG3D labels of the target views)."""
    columns = [
        ColumnSpec("source", "image"),
        ColumnSpec("targets", "frames"),
        ColumnSpec("conditions", "frames"),
        ColumnSpec("cameras", "keypoints", optional=True),
    ]
    return ManifestDataModule(
        str(manifest), columns, resolution=config.model.resolution, batch_size=config.train.batch_size
    )


class SyntheticViewData(L.LightningDataModule):
    """:class:`SyntheticViewDataset` from two tiny EG3D generators (seeds 0 and 1) as a data module."""

    def __init__(self, config: DiffPortrait3DConfig) -> None:
        super().__init__()
        self.config = config

    def train_dataloader(self) -> DataLoader:
        from diffportrait3d.noise3d import tiny_eg3d

        config = self.config
        dataset = SyntheticViewDataset(
            tiny_eg3d(seed=0),
            tiny_eg3d(seed=1),
            length=config.train.synthetic_samples,
            num_views=config.model.views_per_batch,
            resolution=config.model.resolution,
            seed=config.seed,
        )
        return DataLoader(dataset, batch_size=config.train.batch_size, shuffle=True)


def build_training_module(
    config: DiffPortrait3DConfig, components: DiffPortrait3DComponents
) -> DiffPortrait3DTrainingModule:
    """The module of stage ``config.train.stage`` around ``components`` (trained in place)."""
    settings = config.train
    return DiffPortrait3DTrainingModule(
        components,
        stage=settings.stage,
        num_views=config.model.views_per_batch,
        cond_drop=settings.cond_drop,
        optimizer=settings.optimizer,
        seed=settings.seed,
    )


def train(
    config: DiffPortrait3DConfig,
    components: DiffPortrait3DComponents,
    out_dir: str | os.PathLike,
    data: L.LightningDataModule | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> Path:
    """Run stage ``config.train.stage`` through :func:`genblocks.training.fit` in the run folder ``out_dir``.

    Args:
        config: The run.
        components: The models (trained in place).
        out_dir: The run folder (``config.yaml``, ``checkpoints/``, ``metrics.csv``, ``loss.png``, ``trained/``).
        data: The data module; ``None``: synthetic EG3D renders (:class:`SyntheticViewData`).
        resume: Continue from ``out_dir/checkpoints/last.ckpt``.
        overwrite: Start again in a used folder.

    Returns:
        `Path`: ``out_dir/trained``, a ``DiffPortrait3DPipeline`` folder.
    """
    from genblocks.training import RunFolder, fit

    run = RunFolder.open(out_dir, resume=resume, overwrite=overwrite)
    module = build_training_module(config, components)

    def save(trained: L.LightningModule, folder: Path) -> None:
        pipeline = DiffPortrait3DPipeline(**components.as_dict(), views_per_batch=config.model.views_per_batch)
        pipeline.save_pretrained(folder, safe_serialization=True)

    result = fit(
        module,
        data if data is not None else SyntheticViewData(config),
        config.train,
        run,
        resume,
        config=config,
        save_trained=save,
    )
    logger.info("trained stage %d for %d steps; pipeline in %s", config.train.stage, result.global_step, run.trained)
    return run.trained


def build_components(config: DiffPortrait3DConfig) -> DiffPortrait3DComponents:
    """The components a run starts from: a saved pipeline folder (``source=pretrained``) or seeded random ones."""
    if config.source == "pretrained":
        pipe = load_pipeline(config)
        return DiffPortrait3DComponents(
            **{name: getattr(pipe, name) for name in DiffPortrait3DComponents.__dataclass_fields__}
        )
    return build_random_components(config.model, config.random, seed=config.seed)


def train_from_config(
    config: DiffPortrait3DConfig,
    out_dir: str | os.PathLike,
    manifest: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, object]:
    """``diffportrait3d train``: components from ``config`` (random or a pipeline folder), data from ``manifest`` or
    synthetic EG3D renders (tiny generators), one stage. Returns the trained folder, the stage and the steps."""
    components = build_components(config)
    data = build_datamodule(manifest, config) if manifest is not None else None
    folder = train(config, components, out_dir, data, resume=resume, overwrite=overwrite)
    return {"stage": config.train.stage, "pipeline": str(folder), "steps": config.train.max_steps}
