"""The configuration schema of diffportrait3d: frozen dataclasses that ``genblocks.config.load_config`` fills from
the YAML files shipped in ``diffportrait3d/configs/`` (``tiny``, ``paper``: the one source of truth) plus
dotted overrides (``inference.num_inference_steps=2``).

Values the DiffPortrait3D spec marks [unverified] (§8) are fields with documented defaults: the training stage
(``train.stage``), the learning rate (``train.optimizer.lr``), condition dropout (``train.cond_drop``), whether the middle
cross-view module runs only in the unconditional pass (``model.mid_module_in_uncond_only``) and the noise prior
(``inference.noise_prior``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from genblocks.tiny import RandomComponentsConfig
from genblocks.training.config import OptimizerConfig
from genblocks.training.config import TrainConfig as SharedTrainConfig

__all__ = [
    "DiffPortrait3DConfig",
    "InferenceConfig",
    "ModelConfig",
    "RandomComponentsConfig",
    "TrainConfig",
    "paper_config",
    "tiny_config",
]

NoisePrior = Literal["none", "source", "eg3d"]


@dataclass(frozen=True)
class ModelConfig:
    """Architecture around the frozen SD1.5 UNet (spec §3).

    Args:
        resolution: Side of the square views (512 in the paper).
        views_per_batch: Views denoised together as one "video" through the cross-view modules (8 upstream).
        fusion_blocks: Transformer blocks whose self-attention reads the reference bank (``"full"``: all 16).
        controlnet_embedding_channels: Hint-encoder widths of the view ControlNet; the hint is ``2 ** (len - 1)``
            times the latent size and must match the VAE factor (SD1.5: 16, 32, 96, 256 -> 8).
        view_heads: Heads of every cross-view attention (8 upstream).
        view_layers: Transformer blocks per cross-view module (1 upstream).
        view_max_len: Position-table length, the most views per batch (32 in the upstream yaml).
        view_norm_groups: GroupNorm groups of the cross-view modules.
        mid_module_in_uncond_only: Run the middle cross-view module only in the unconditional pass (upstream quirk,
            [unverified] whether intended).
    """

    resolution: int = 512
    views_per_batch: int = 8
    fusion_blocks: Literal["full", "midup"] = "full"
    controlnet_embedding_channels: tuple[int, ...] = (16, 32, 96, 256)
    view_heads: int = 8
    view_layers: int = 1
    view_max_len: int = 32
    view_norm_groups: int = 32
    mid_module_in_uncond_only: bool = True

    def __post_init__(self) -> None:
        if self.views_per_batch < 1 or self.views_per_batch > self.view_max_len:
            raise ValueError(
                f"views_per_batch must be in [1, view_max_len={self.view_max_len}], got {self.views_per_batch}"
            )


@dataclass(frozen=True)
class InferenceConfig:
    """Sampling settings (spec §5): DDIM 50 steps, eta 0.5, CFG 3, start at t = 999.

    Args:
        num_inference_steps: DDIM steps.
        eta: DDIM eta.
        guidance_scale: CFG scale; the unconditional pass is the bare UNet (no bank, no ControlNet).
        start_timestep: t of the ``q_sample`` start latents for the ``source`` and ``eg3d`` priors.
        noise_prior: ``none`` (pure Gaussian), ``source`` (``q_sample`` of the portrait latent) or ``eg3d``
            (render of an EG3D inversion, :mod:`diffportrait3d.noise3d`).
        camera_from: Where the EG3D inversion's camera comes from: ``landmarks`` (EG3D's crop of the photo and the
            camera from its 68 landmarks, through the face analyzer of ``diffportrait3d[face]``), ``grid`` (the photo
            as given, the camera searched on a grid of renders) or ``auto`` (landmarks when a face is found, else
            the grid).
        inversion_steps: Optimisation steps of the EG3D inversion.
        inversion_lr: Adam learning rate of the inversion.
        fps: Frame rate of written orbit GIF/MP4s.
    """

    num_inference_steps: int = 50
    eta: float = 0.5
    guidance_scale: float = 3.0
    start_timestep: int = 999
    noise_prior: NoisePrior = "none"
    camera_from: Literal["auto", "landmarks", "grid"] = "auto"
    inversion_steps: int = 200
    inversion_lr: float = 0.01
    fps: float = 8.0


@dataclass
class TrainConfig(SharedTrainConfig):
    """Training settings (beyond the authors; all [unverified], spec §4): genblocks' shared ``train.`` keys
    (``max_steps``, ``precision``, ``devices``, ``strategy``, ``optimizer.{name,lr,...}``, ``checkpoint_every_n_steps``,
    ``seed``, ... see :class:`genblocks.training.TrainConfig`) plus DiffPortrait3D's own.

    Args:
        stage: 1 trains the reference UNet and view ControlNet on pairs; 2 trains the cross-view modules only
            (``train --stage``).
        optimizer: The optimizer by name (AdamW, lr 1e-5 by default).
        cond_drop: Probability of dropping each condition (reference, view hint) in a training sample.
        batch_size: Samples (stage 1) or view sequences (stage 2) per step.
        synthetic_samples: Subjects rendered by tiny EG3D generators when no manifest is given (a smoke run).
    """

    stage: int = 1
    optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(lr=1e-5))
    cond_drop: float = 0.1
    batch_size: int = 1
    synthetic_samples: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stage not in (1, 2):
            raise ValueError(f"train.stage must be 1 or 2, got {self.stage}")
        if not 0.0 <= self.cond_drop <= 1.0:
            raise ValueError(f"train.cond_drop must be a probability in [0, 1], got {self.cond_drop}")


@dataclass(frozen=True)
class DiffPortrait3DConfig:
    """Whole configuration: ``model``, ``random``, ``inference``, ``train`` plus where components come from.

    Args:
        source: ``random`` (seeded tiny components) or ``pretrained`` (``pretrained`` folder of a saved pipeline).
        pretrained: Folder of a saved ``DiffPortrait3DPipeline`` (``save_pretrained``) when ``source=pretrained``.
        seed: Seed of random components and sampling.
        device: ``cpu``, ``cuda`` or ``auto``.
        dtype: Weight dtype of the pipeline's components (``float16`` / ``bfloat16`` on a GPU halve memory); the EG3D
            inversion stays in float32.
    """

    source: Literal["random", "pretrained"] = "random"
    pretrained: str = ""
    seed: int = 0
    device: str = "cpu"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    model: ModelConfig = field(default_factory=ModelConfig)
    random: RandomComponentsConfig = field(default_factory=RandomComponentsConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _shipped(name: str) -> DiffPortrait3DConfig:
    """The config ``configs/<name>.yaml`` shipped inside the package (the one source of truth)."""
    from genblocks.config import load_shipped_config

    return load_shipped_config(DiffPortrait3DConfig, "diffportrait3d", name)


def tiny_config() -> DiffPortrait3DConfig:
    """The shipped tiny CPU configuration ``configs/tiny.yaml`` (64-px views, 4 views per batch, 2 DDIM steps)."""
    return _shipped("tiny")


def paper_config() -> DiffPortrait3DConfig:
    """The shipped paper configuration ``configs/paper.yaml`` (SD1.5 at 512 px, components from a saved pipeline
    folder, EG3D 3D-aware noise)."""
    return _shipped("paper")
