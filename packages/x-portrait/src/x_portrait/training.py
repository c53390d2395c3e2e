"""Training X-Portrait (beyond the authors, who released inference only): two Lightning stages on
``genblocks.training.DiffusionTrainingModule`` (X-Portrait spec §4).

- Stage ``"image"``: the reference UNet and both ControlNets learn on image pairs. A sample is a source frame and a
  target frame of the same person; the control image is the target's motion transferred to *another identity* by a
  cross-reenactment network, randomly scaled (to break shape leakage), and its eye/eye/mouth patches are the local
  hint. The model reconstructs the target from the source's appearance and the control image.
- Stage ``"temporal"``: only the zero-initialised temporal modules learn, on clips, with everything else frozen.

Loss: epsilon MSE (``l_simple_weight`` 1) on the SD1.5 schedule (1000 steps, ``scaled_linear`` 0.00085-0.012), one
timestep per clip. The cross-reenactment network is a pluggable callable (:data:`Reenactor`); the default,
:class:`WarpReenactor`, is a random affine warp of the target, which keeps the motion and changes the face geometry but
not the identity (a stand-in for the face-vid2vid-like network of the paper). Dataset, learning rate, batch size and
condition dropout are [unverified] and come from :class:`~x_portrait.config.TrainConfig`.

Every per-sample random draw (clip start, reenactor warp, scale augmentation, condition dropout, VAE sampling, timestep,
noise) is made for the global batch from the module's one generator and sliced to this rank's rows
(``DiffusionTrainingModule.draw_global``), so ``W`` DDP processes on batch ``B`` draw exactly what one process draws on
batch ``W * B``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch

from genblocks.diffusion import encode_clip_prompt
from genblocks.diffusion.reference_attention import FusionBlocks
from genblocks.training import ColumnSpec, ManifestDataModule, OptimizerConfig
from genblocks.training.reference_video import ReferenceVideoTrainingModule, loss_on_fixed_draws
from x_portrait.config import XPortraitConfig
from x_portrait.modeling_x_portrait import XPortraitComponents, XPortraitModel
from x_portrait.pipeline_x_portrait import XPortraitPipeline
from x_portrait.preprocessing import local_patch_images, similarity_matrix, warp_affine

__all__ = [
    "IdentityReenactor",
    "Reenactor",
    "UniformDraw",
    "WarpReenactor",
    "XPortraitTrainingModule",
    "build_datamodule",
    "generator_draw",
    "loss_on_fixed_draws",
    "random_scale",
    "train",
]

logger = logging.getLogger(__name__)

UniformDraw = Callable[[tuple[int, ...]], torch.Tensor]
"""Per-sample randomness: ``draw(shape)`` returns float64 uniforms in [0, 1) of ``shape``, dim 0 the batch.

In training (:meth:`XPortraitTrainingModule.uniform`) the rows are this rank's rows of one draw for the global batch;
:func:`generator_draw` makes one from a plain ``torch.Generator``."""

Reenactor = Callable[[torch.Tensor, torch.Tensor | None, UniformDraw], tuple[torch.Tensor, torch.Tensor | None]]
"""Cross-identity reenactment: ``(frames, landmarks, draw) -> (control_frames, control_landmarks)``.

``frames`` are target clips (B, F, 3, H, W) in [-1, 1], ``landmarks`` their 68 points (B, F, 68, 2) or `None`; the
result shows the same motion on another identity, with its landmarks (or `None` when unknown, which leaves the local
hint empty). Draw per-clip randomness from ``draw`` (a :data:`UniformDraw`, one row per clip), so DDP ranks slice one
global draw."""


def generator_draw(generator: torch.Generator) -> UniformDraw:
    """A :data:`UniformDraw` from ``generator`` alone (one process; no rank slicing)."""
    return lambda shape: torch.rand(shape, generator=generator, dtype=torch.float64)


def _as_draw(draw: UniformDraw | torch.Generator) -> UniformDraw:
    return generator_draw(draw) if isinstance(draw, torch.Generator) else draw


def _matrices(size: tuple[int, int], angle: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) maps: rotate by ``angle`` (radians) and scale about the frame centre, then shift by (B, 2) pixels."""
    center = ((size[1] - 1) / 2, (size[0] - 1) / 2)
    matrices = [
        similarity_matrix(center, float(a), float(s), (float(dx), float(dy)))
        for a, s, (dx, dy) in zip(angle, scale, shift, strict=True)
    ]
    return torch.from_numpy(np.stack(matrices))


def _apply(
    frames: torch.Tensor, landmarks: torch.Tensor | None, matrices: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Warp clips (B, F, 3, H, W) with one (2, 3) matrix per clip; carry landmarks (B, F, 68, 2) along."""
    num_frames = frames.shape[1]
    per_frame = matrices.repeat_interleave(num_frames, dim=0)
    warped = warp_affine(frames.flatten(0, 1), per_frame, fill=-1.0).view_as(frames)
    if landmarks is None:
        return warped, None
    m = matrices.to(device=landmarks.device, dtype=landmarks.dtype)
    moved = torch.einsum("bfnk,bjk->bfnj", landmarks, m[:, :, :2]) + m[:, None, None, :, 2]
    return warped, moved


class WarpReenactor:
    """The default cross-reenactment stand-in: one random affine warp (rotation, translation) per clip.

    Args:
        max_rotation (`float`, defaults to 10.0): Largest rotation in degrees (uniform in ``±max_rotation``).
        max_translation (`float`, defaults to 0.05): Largest translation as a fraction of the frame side.
    """

    def __init__(self, max_rotation: float = 10.0, max_translation: float = 0.05) -> None:
        if max_rotation < 0 or max_translation < 0:
            raise ValueError(f"max_rotation and max_translation must be >= 0, got {max_rotation}, {max_translation}")
        self.max_rotation = max_rotation
        self.max_translation = max_translation

    def __call__(
        self, frames: torch.Tensor, landmarks: torch.Tensor | None, draw: UniformDraw | torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Warp each clip (B, F, 3, H, W) with its own random rotation and translation (one (B, 3) uniform draw)."""
        batch, _, _, height, width = frames.shape
        draws = _as_draw(draw)((batch, 3)) * 2 - 1
        angle = draws[:, 0] * math.radians(self.max_rotation)
        shift = draws[:, 1:] * self.max_translation * torch.tensor([width, height], dtype=torch.float64)
        matrices = _matrices((height, width), angle, torch.ones(batch, dtype=torch.float64), shift)
        return _apply(frames, landmarks, matrices)

    def __repr__(self) -> str:
        return f"WarpReenactor(max_rotation={self.max_rotation}, max_translation={self.max_translation})"


class IdentityReenactor:
    """No cross-identity transfer: the control image is the target itself (self-reenactment training)."""

    def __call__(
        self, frames: torch.Tensor, landmarks: torch.Tensor | None, draw: UniformDraw | torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return frames, landmarks


def random_scale(
    frames: torch.Tensor,
    landmarks: torch.Tensor | None,
    scale_range: tuple[float, float],
    draw: UniformDraw | torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale each clip about the frame centre by a factor drawn uniformly from ``scale_range`` (one per clip).

    Args:
        frames (`torch.Tensor` of shape `(B, F, 3, H, W)`): Control clips in [-1, 1]; uncovered pixels become -1.
        landmarks (`torch.Tensor` of shape `(B, F, 68, 2)`, *optional*): Their landmarks, transformed alike.
        scale_range (`tuple[float, float]`): (low, high).
        draw (`UniformDraw` or `torch.Generator`): Source of the (B,) uniform draw.
    """
    batch, _, _, height, width = frames.shape
    low, high = scale_range
    if low == high == 1.0:
        return frames, landmarks
    scale = low + (high - low) * _as_draw(draw)((batch,))
    zeros = torch.zeros(batch, dtype=torch.float64)
    matrices = _matrices((height, width), zeros, scale, torch.zeros(batch, 2, dtype=torch.float64))
    return _apply(frames, landmarks, matrices)


class XPortraitTrainingModule(ReferenceVideoTrainingModule):
    """Lightning module for both X-Portrait training stages.

    Batch (after collation; images in [-1, 1]):

    - ``"source"``: (B, 3, H, W) the appearance image;
    - ``"target"``: (B, 3, H, W) the frame to reconstruct (stage ``"image"``), or ``"frames"``: (B, F, 3, H, W) a clip
      (stage ``"temporal"``; clips longer than ``num_frames`` are cut at a random start, one per clip);
    - ``"landmarks"`` (optional): (B, 68, 2) or (B, F, 68, 2) 68-point landmarks of the target(s) at H x W.

    Before each loss (:meth:`prepare_batch`) the control clip ``"driving"`` = ``random_scale(reenactor(target))``
    and its patch image ``"local"`` are added; condition dropout may then zero ``"source"`` (null reference),
    ``"driving"`` or ``"local"`` per sample. The UNet, VAE and (in stage ``"temporal"``) the reference UNet and
    ControlNets are frozen; only the stage's parts have ``requires_grad``.

    Args:
        components (`XPortraitComponents`): The models (shared, trained in place). ``motion_modules`` is required for
            stage ``"temporal"`` and left out of stage ``"image"``.
        stage (`str`, defaults to `"image"`): ``"image"`` or ``"temporal"``.
        patch_size (`int`, defaults to 128): Local patch side at the training resolution.
        landmark_scale (`int`, defaults to 2): See ``x_portrait.preprocessing.local_patch_centers``.
        fusion_blocks (`str`, defaults to `"full"`): Blocks reading the reference bank.
        num_frames (`int`, defaults to 16): Clip length in stage ``"temporal"``.
        reenactor (`Reenactor`, *optional*): Cross-identity source of the control image; defaults to
            :class:`WarpReenactor`.
        aug_scale (`tuple[float, float]`, defaults to `(0.8, 1.2)`): Scale range of the control image [unverified].
        cond_drop_ref (`float`, defaults to 0.1): Null-reference probability [unverified].
        cond_drop_motion (`float`, defaults to 0.1): Motion-hint dropout probability [unverified].
        cond_drop_local (`float`, defaults to 0.1): Local-hint dropout probability [unverified].
        optimizer (`OptimizerConfig`, *optional*): Defaults to AdamW at lr 1e-5 [unverified].
        ema_decay (`float`, *optional*): EMA decay of the trained weights.
        gradient_checkpointing (`bool`, defaults to `False`): Checkpoint UNet and ControlNet activations.
        seed (`int`, defaults to 0): Seed of timesteps, noise, dropout and augmentation.
    """

    def __init__(
        self,
        components: XPortraitComponents,
        stage: Literal["image", "temporal"] = "image",
        patch_size: int = 128,
        landmark_scale: int = 2,
        fusion_blocks: FusionBlocks = "full",
        num_frames: int = 16,
        reenactor: Reenactor | None = None,
        aug_scale: tuple[float, float] = (0.8, 1.2),
        cond_drop_ref: float = 0.1,
        cond_drop_motion: float = 0.1,
        cond_drop_local: float = 0.1,
        optimizer: OptimizerConfig | None = None,
        ema_decay: float | None = None,
        gradient_checkpointing: bool = False,
        seed: int = 0,
    ) -> None:
        if stage not in ("image", "temporal"):
            raise ValueError(f"stage must be 'image' or 'temporal', got {stage!r}")
        if stage == "temporal" and components.motion_modules is None:
            raise ValueError("stage 'temporal' trains the temporal modules: components.motion_modules is None")
        for part in (components.unet, components.vae, components.text_encoder, components.reference_unet):
            part.requires_grad_(False)
        for net in (components.motion_controlnet, components.local_controlnet):
            net.requires_grad_(stage == "image")
        components.reference_unet.requires_grad_(stage == "image")
        if components.motion_modules is not None:
            components.motion_modules.requires_grad_(stage == "temporal")
        model = XPortraitModel(
            components.unet,
            components.reference_unet,
            components.motion_controlnet,
            components.local_controlnet,
            components.motion_modules if stage == "temporal" else None,
            fusion_blocks=fusion_blocks,
        )
        with torch.no_grad():
            text = encode_clip_prompt(components.tokenizer, components.text_encoder)
        super().__init__(
            unet=model,
            vae=components.vae,
            text_context=text,
            prediction_type="epsilon",
            optimizer=optimizer if optimizer is not None else OptimizerConfig(lr=1e-5),
            condition_dropout={"source": cond_drop_ref, "driving": cond_drop_motion, "local": cond_drop_local},
            ema_decay=ema_decay,
            gradient_checkpointing=gradient_checkpointing,
            seed=seed,
        )
        self.hparams.update(
            {"stage": stage, "patch_size": patch_size, "landmark_scale": landmark_scale, "num_frames": num_frames,
             "aug_scale": list(aug_scale), "fusion_blocks": fusion_blocks}
        )  # fmt: skip
        self.model = model
        self.stage = stage
        self.patch_size = patch_size
        self.landmark_scale = landmark_scale
        self.num_frames = num_frames
        self.reenactor: Reenactor = reenactor if reenactor is not None else WarpReenactor()
        self.aug_scale = aug_scale

    # ------------------------------------------------------------------------------------------------ batch building
    def _clips(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        landmarks = batch.get("landmarks")
        if self.stage == "image":
            if "target" not in batch:
                raise ValueError(f"stage 'image' batches need a 'target' image; got keys {sorted(batch)}")
            clips = batch["target"].unsqueeze(1)
            return clips, landmarks.unsqueeze(1) if landmarks is not None else None
        if "frames" not in batch:
            raise ValueError(f"stage 'temporal' batches need 'frames' (B, F, 3, H, W); got keys {sorted(batch)}")
        clips = batch["frames"]
        if clips.shape[1] < self.num_frames:
            raise ValueError(
                f"'frames' hold {clips.shape[1]} frames per clip, fewer than num_frames={self.num_frames}"
            )
        span = clips.shape[1] - self.num_frames + 1
        starts = self.draw_global(lambda rows: torch.randint(span, (rows,), generator=self.generator), len(clips))
        index = (starts[:, None] + torch.arange(self.num_frames)).to(
            clips.device
        )  # (B, num_frames), one start per clip
        rows = torch.arange(len(clips), device=clips.device)[:, None]
        return clips[rows, index], landmarks[rows, index.to(landmarks.device)] if landmarks is not None else None

    def prepare_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Add the target clips ``"clips"``, the control clip ``"driving"`` (reenacted, scale-augmented target) and its
        patch image ``"local"``; a batch that has them is returned as is."""
        if "clips" in batch:
            return batch
        if "source" not in batch:
            raise ValueError(f"batches need a 'source' image (B, 3, H, W); got keys {sorted(batch)}")
        clips, landmarks = self._clips(batch)
        driving, driving_landmarks = self.reenactor(clips, landmarks, self.uniform)
        driving, driving_landmarks = random_scale(driving, driving_landmarks, self.aug_scale, self.uniform)
        flat_landmarks = None
        if driving_landmarks is not None:
            flat_landmarks = driving_landmarks.flatten(0, 1).detach().cpu().double().numpy()
        local = local_patch_images(driving.flatten(0, 1), flat_landmarks, self.patch_size, self.landmark_scale)
        return {**batch, "clips": clips, "driving": driving, "local": local.view_as(driving)}

    def uniform(self, shape: tuple[int, ...]) -> torch.Tensor:
        """The module's :data:`UniformDraw`: float64 uniforms of ``shape`` (dim 0 this rank's batch), drawn for the
        global batch from the module's generator and sliced to this rank (``draw_global``)."""
        rest = tuple(shape[1:])
        return self.draw_global(
            lambda rows: torch.rand((rows, *rest), generator=self.generator, dtype=torch.float64), int(shape[0])
        )

    def compute_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """:meth:`prepare_batch` (global-batch draws from the module's generator), then the parent's loss: condition
        dropout, VAE encoding, one timestep and noise per clip, epsilon MSE."""
        return super().compute_loss(self.prepare_batch(batch))

    # ------------------------------------------------------------------------------------------------ hooks
    def encode_batch(self, batch: dict[str, Any]) -> torch.Tensor:
        """Clean latents of the target clips, (B, 4, F, h, w) so one timestep is drawn per clip."""
        return self.encode_clips(self.prepare_batch(batch)["clips"])

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Epsilon for noisy clips (B, 4, F, h, w) at timesteps (B,): bank from the clean source latent at the same t,
        both ControlNets, temporal modules (stage ``"temporal"``)."""
        frames = self.frame_batch(noisy_latents, timesteps)
        self.model.write_reference(self.encode_images(batch["source"]), timesteps, frames.clip_context)
        eps = self.model(
            frames.sample,
            frames.timesteps,
            frames.context,
            num_frames=frames.num_frames,
            motion_image=batch["driving"].flatten(0, 1).to(frames.sample.dtype),
            local_image=batch["local"].flatten(0, 1).to(frames.sample.dtype),
        )
        return self.fold_frames(eps, frames)


def write_synthetic_manifest(
    folder: str | Path, stage: str, resolution: int, rows: int = 4, num_frames: int = 2, seed: int = 0
) -> Path:
    """A tiny synthetic training set (smoke runs of ``--config tiny`` with no data, tests): smooth random colour
    fields as ``source`` / ``target`` images (stage ``image``) or ``frames`` clips (stage ``temporal``), no landmarks.

    Args:
        folder: Where the images and ``manifest.jsonl`` go (created).
        stage: ``"image"`` or ``"temporal"``.
        resolution: Image side in pixels.
        rows: Manifest rows.
        num_frames: Frames per clip (stage ``temporal``).
        seed: Seed of the images.

    Returns:
        The manifest path.
    """
    import json

    import numpy as np
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def image(name: str) -> str:
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((resolution, resolution), Image.Resampling.BICUBIC).save(folder / name)
        return name

    lines = []
    for row in range(rows):
        entry: dict[str, Any] = {"source": image(f"source_{row}.png")}
        if stage == "image":
            entry["target"] = image(f"target_{row}.png")
        else:
            entry["frames"] = [image(f"frame_{row}_{f}.png") for f in range(num_frames)]
        lines.append(json.dumps(entry))
    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def build_datamodule(config: XPortraitConfig, run_dir: str | Path | None = None) -> ManifestDataModule:
    """The manifest data module of ``config.train`` (columns ``source``, ``target`` or ``frames``, ``landmarks``);
    without a manifest, a synthetic one is written into ``run_dir/data``."""
    train = config.train
    manifest = train.manifest
    if manifest is None:
        if run_dir is None:
            raise ValueError(
                "train.manifest must name a CSV or JSONL manifest (columns: source, target|frames, landmarks)"
            )
        manifest = str(
            write_synthetic_manifest(
                Path(run_dir) / "data",
                train.stage,
                config.model.resolution,
                rows=train.synthetic_rows,
                num_frames=train.num_frames,
                seed=train.seed,
            )
        )
    target = ColumnSpec("target", "image") if train.stage == "image" else ColumnSpec("frames", "frames")
    columns = [ColumnSpec("source", "image"), target, ColumnSpec("landmarks", "keypoints", optional=True)]
    return ManifestDataModule(
        manifest,
        columns,
        resolution=config.model.resolution,
        batch_size=train.batch_size,
        val_fraction=train.val_fraction,
        seed=train.seed,
        num_workers=train.num_workers,
    )


def build_training_module(config: XPortraitConfig, components: XPortraitComponents) -> XPortraitTrainingModule:
    """The training module of one stage of ``config.train`` around ``components`` (trained in place)."""
    settings = config.train
    reenactor: Reenactor = (
        WarpReenactor(settings.warp_rotation, settings.warp_translation)
        if settings.reenactor == "warp"
        else IdentityReenactor()
    )
    return XPortraitTrainingModule(
        components,
        stage=settings.stage,
        patch_size=config.model.patch_size,
        landmark_scale=config.model.landmark_scale,
        fusion_blocks=config.model.fusion_blocks,
        num_frames=settings.num_frames,
        reenactor=reenactor,
        aug_scale=settings.aug_scale,
        cond_drop_ref=settings.cond_drop_ref,
        cond_drop_motion=settings.cond_drop_motion,
        cond_drop_local=settings.cond_drop_local,
        optimizer=settings.optimizer,
        ema_decay=settings.ema_decay,
        gradient_checkpointing=settings.gradient_checkpointing,
        seed=settings.seed,
    )


def save_trained_pipeline(
    module: XPortraitTrainingModule, components: XPortraitComponents, config: XPortraitConfig, folder: str | Path
) -> Path:
    """Write the trained ``components`` (EMA weights when the EMA is on) as an ``XPortraitPipeline`` folder."""
    if module.ema is not None:
        module.ema.copy_to(module.trainable_parameters())
    pipeline = XPortraitPipeline(
        **components.as_dict(),
        patch_size=config.model.patch_size,
        landmark_scale=config.model.landmark_scale,
        fusion_blocks=config.model.fusion_blocks,
    )
    pipeline.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def train(
    config: XPortraitConfig,
    components: XPortraitComponents,
    out_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    datamodule: L.LightningDataModule | None = None,
) -> Path:
    """Run one training stage through :func:`genblocks.training.fit` in the run folder ``out_dir``.

    Args:
        config (`XPortraitConfig`): ``train`` holds the stage and optimisation settings, ``model`` the patch geometry.
        components (`XPortraitComponents`): The models to train (in place).
        out_dir: The run folder (``config.yaml``, ``checkpoints/``, ``metrics.csv``, ``loss.png``, ``trained/``).
        resume: Continue from ``out_dir/checkpoints/last.ckpt``.
        overwrite: Start again in a used folder.
        datamodule (`L.LightningDataModule`, *optional*): Defaults to :func:`build_datamodule` (a synthetic manifest
            in ``out_dir/data`` when ``train.manifest`` is unset).

    Returns:
        `Path`: ``out_dir/trained``, loadable with ``XPortraitPipeline.from_pretrained``.
    """
    from genblocks.training import RunFolder, fit

    run = RunFolder.open(out_dir, resume=resume, overwrite=overwrite)
    module = build_training_module(config, components)
    data = datamodule if datamodule is not None else build_datamodule(config, run.root)
    result = fit(
        module,
        data,
        config.train,
        run,
        resume,
        config=config,
        save_trained=lambda trained, folder: save_trained_pipeline(trained, components, config, folder),
    )
    logger.info(
        "trained %s stage for %d steps; pipeline in %s", config.train.stage, result.global_step, result.trained
    )
    return run.trained
