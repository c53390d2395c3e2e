"""The configuration schema of x-portrait: frozen dataclasses that ``genblocks.config.load_config`` fills from
the YAML files shipped in ``x_portrait/configs/`` (``tiny``, ``paper``: the one source of truth) plus
dotted command-line overrides (``inference.num_inference_steps=2``).

Values the spec marks [unverified] (X-Portrait spec §8) are fields with documented defaults: the stage split
(``train.stage``), optimiser and learning rate (``train.optimizer.lr``), condition dropout (``train.cond_drop_*``), the
scale-augmentation range (``train.aug_scale``) and the cross-identity source (``train.reenactor``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from genblocks.tiny import RandomComponentsConfig
from genblocks.training.config import OptimizerConfig
from genblocks.training.config import TrainConfig as SharedTrainConfig

__all__ = [
    "ComponentsConfig",
    "InferenceConfig",
    "ModelConfig",
    "RandomComponentsConfig",
    "TrainConfig",
    "XPortraitConfig",
    "paper_config",
    "tiny_config",
]


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture around the base SD1.5 UNet (X-Portrait spec §3).

    Args:
        resolution: Side of the square frames the model renders (512 in the paper); source and driving frames are
            resized to it.
        patch_size: Side of the three local patches (left eye, right eye, mouth) of the local ControlNet's hint,
            in pixels at ``resolution`` (128 at 512: upstream ``target_res // 8`` half-size).
        landmark_scale: Landmarks are rounded and clipped at ``resolution / landmark_scale`` before being scaled
            back (upstream detects on a 256-px copy of the 512-px frame: 2).
        fusion_blocks: Transformer blocks whose self-attention reads the reference bank: ``"full"`` (all 16 of SD1.5,
            X-Portrait) or ``"midup"``.
        controlnet_embedding_channels: Hint-encoder widths of both ControlNets; ``len - 1`` stride-2 convolutions, so
            the hint is ``2 ** (len - 1)`` times the latent size and must equal the VAE's factor (SD1.5: 16, 32, 96,
            256 -> 8).
        motion_scale: Conditioning scale of the motion ControlNet (raw driving frame).
        local_scale: Conditioning scale of the local ControlNet (eye/eye/mouth patches).
        temporal_heads: Heads of every temporal attention.
        temporal_layers: Temporal transformer blocks per motion module.
        temporal_max_len: Length of the sinusoidal frame-position table, the most frames one window may hold (24).
        temporal_norm_groups: GroupNorm groups of the motion modules (must divide every channel count).
        temporal_norm_per_frame: GroupNorm statistics per frame (AnimateDiff / X-Portrait code) instead of per clip.
        temporal_before_upsampler: Run the module of an upsampling output block before the upsampler (diffusers'
            ``UNetMotionModel``) instead of after it (X-Portrait's LDM block end).
    """

    resolution: int = 512
    patch_size: int = 128
    landmark_scale: int = 2
    fusion_blocks: Literal["full", "midup"] = "full"
    controlnet_embedding_channels: tuple[int, ...] = (16, 32, 96, 256)
    motion_scale: float = 1.0
    local_scale: float = 1.0
    temporal_heads: int = 8
    temporal_layers: int = 1
    temporal_max_len: int = 24
    temporal_norm_groups: int = 32
    temporal_norm_per_frame: bool = True
    temporal_before_upsampler: bool = False

    def __post_init__(self) -> None:
        _positive("model.resolution", self.resolution)
        _positive("model.patch_size", self.patch_size)
        _positive("model.landmark_scale", self.landmark_scale)
        if self.patch_size % (2 * self.landmark_scale):
            raise ValueError(
                f"model.patch_size ({self.patch_size}) must be a multiple of 2 * model.landmark_scale "
                f"({2 * self.landmark_scale}) so the patch half-size is whole at the landmark resolution"
            )
        if self.patch_size >= self.resolution:
            raise ValueError(
                f"model.patch_size ({self.patch_size}) must be below model.resolution ({self.resolution})"
            )
        if not self.controlnet_embedding_channels:
            raise ValueError("model.controlnet_embedding_channels must hold at least one width")


@dataclass(frozen=True)
class ComponentsConfig:
    """Where the weights come from.

    Args:
        source: ``"random"`` builds seeded random components from ``random`` (no download); ``"pretrained"`` loads an
            ``XPortraitPipeline`` folder (``save_pretrained`` or ``x-portrait convert`` output) from ``pretrained``;
            ``"base"`` loads SD1.5 (``vae``, ``text_encoder``, ``tokenizer``, ``unet`` sub-folders) from
            ``base_model`` and initialises the reference UNet and ControlNets from its UNet (training from scratch).
        pretrained: Folder of an ``XPortraitPipeline``.
        base_model: Folder of a diffusers SD1.5 pipeline.
        seed: Seed of random components.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        dtype: Weight dtype for inference (``"float16"`` on GPU halves memory).
    """

    source: Literal["random", "pretrained", "base"] = "random"
    pretrained: str | None = None
    base_model: str | None = None
    seed: int = 0
    device: str = "auto"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"

    def __post_init__(self) -> None:
        if self.source == "pretrained" and not self.pretrained:
            raise ValueError('components.pretrained must name a folder when components.source is "pretrained"')
        if self.source == "base" and not self.base_model:
            raise ValueError('components.base_model must name a folder when components.source is "base"')


@dataclass(frozen=True)
class InferenceConfig:
    """Sampling settings (X-Portrait spec §5).

    Args:
        num_inference_steps: DDIM steps (30 upstream).
        guidance_scale: Classifier-free guidance scale (5 upstream); 1 skips the unconditional pass.
        guidance_mode: What the unconditional pass keeps (upstream's ``--control_mode``): ``"controlnet_important"``
            (the default upstream: the bare UNet, no reference bank, no ControlNets) or ``"balance"`` (the reference
            bank stays and both ControlNets read all-zero hints, so guidance amplifies the motion, not the appearance).
        vae_sample: How the source's VAE posterior is sampled: ``"per_frame"`` (upstream: one sample per frame, for the
            reference UNet's input and, independently, for the start latents; the reference UNet then runs per window)
            or ``"shared"`` (one sample for every frame and both uses; the reference UNet runs once per step, cheaper).
        eta: DDIM eta (0 upstream).
        ldm_timesteps: Visit LDM's DDIM timesteps (``range(0, 1000, 1000 // S)[::-1] + 1``: 31 calls for 30 steps)
            instead of diffusers' "leading" ones (identical when S divides 1000).
        start_timestep: Training timestep t of the start latents ``q_sample(encode(source), t)`` (999).
        window_size: Frames per temporal window (16 upstream, at most ``model.temporal_max_len``).
        window_overlap: Frames shared by consecutive windows (``num_mix=4`` upstream); predictions are averaged there.
        random_window_offset: Draw a new window offset each step, so seams move (upstream); else windows start at 0.
        vae_chunk_size: Frames per VAE encoder/decoder call (``vae_bs=16`` upstream).
        align_driving: Align every driving frame to the source with the 3-point affine transform from the landmark
            boxes of the source and the best driving frame.
        best_frame: Driving frame used for the alignment; ``None`` picks the frame whose landmarks are closest (L1) to
            the source's.
        local_patches: Build the local ControlNet's eye/eye/mouth hint from driving landmarks (else it gets -1).
        attention_slicing: Slice size of sliced attention (``None``: PyTorch SDPA, the default processors).
        seed: Seed of the start noise and window offsets (999 upstream).
        fps: Frame rate of the written video; ``None`` keeps the driving video's, read from the file (8 for frame
            folders and single images). A rate other than the driving video's leaves its audio track out.
        max_frames: Use at most this many driving frames (``None``: all).
    """

    num_inference_steps: int = 30
    guidance_scale: float = 5.0
    guidance_mode: Literal["controlnet_important", "balance"] = "controlnet_important"
    vae_sample: Literal["per_frame", "shared"] = "per_frame"
    eta: float = 0.0
    ldm_timesteps: bool = True
    start_timestep: int = 999
    window_size: int = 16
    window_overlap: int = 4
    random_window_offset: bool = True
    vae_chunk_size: int = 16
    align_driving: bool = True
    best_frame: int | None = None
    local_patches: bool = True
    attention_slicing: int | None = None
    seed: int = 999
    fps: float | None = None
    max_frames: int | None = None

    def __post_init__(self) -> None:
        _positive("inference.num_inference_steps", self.num_inference_steps)
        _positive("inference.window_size", self.window_size)
        _positive("inference.vae_chunk_size", self.vae_chunk_size)
        if not 0 <= self.window_overlap < self.window_size:
            raise ValueError(
                f"inference.window_overlap must be in [0, window_size={self.window_size}), got {self.window_overlap}"
            )
        if self.guidance_scale < 0:
            raise ValueError(f"inference.guidance_scale must be >= 0, got {self.guidance_scale}")


@dataclass
class TrainConfig(SharedTrainConfig):
    """Two-stage training (X-Portrait spec §4; everything here beyond the loss and schedule is [unverified]): genblocks'
    shared ``train.`` keys (``max_steps``, ``precision``, ``devices``, ``strategy``, ``accumulate_grad_batches``,
    ``optimizer.{name,lr,weight_decay,...}``, ``checkpoint_every_n_steps``, ``seed``, ... see
    :class:`genblocks.training.TrainConfig`) plus X-Portrait's own.

    Args:
        stage: ``"image"``: train the reference UNet and both ControlNets on image pairs; ``"temporal"``: train only
            the zero-initialised temporal modules on clips, everything else frozen (``train --stage``).
        manifest: Training manifest (CSV or JSONL). Columns: ``source`` (image), ``target`` (image, stage
            ``image``) or ``frames`` (list of images, stage ``temporal``), optional ``landmarks`` (68-point
            landmarks of the target(s), JSON or ``.npy``, in the pixel coordinates of the images after their resize
            and centre crop to ``model.resolution``: store square images at that resolution to keep them simple).
            Clips longer than ``num_frames`` are cut at a random start; all rows must have landmarks or none.
            ``None``: a synthetic manifest is written into the run folder's ``data/`` (a smoke run, not training).
        synthetic_rows: Rows of that synthetic manifest.
        val_fraction: Fraction of the manifest's rows held out for validation (0: none).
        init_from: ``XPortraitPipeline`` folder to start from (a stage-1 output for stage 2); ``None`` uses
            ``components``.
        batch_size: Samples (pairs or clips) per step.
        num_frames: Frames per clip in stage ``temporal`` (16 upstream).
        optimizer: The optimizer by name (AdamW lr 1e-5 [unverified] by default).
        cond_drop_ref: Probability of replacing a sample's source image by zeros (null reference) [unverified].
        cond_drop_motion: Probability of zeroing a sample's motion hint [unverified].
        cond_drop_local: Probability of zeroing a sample's local hint [unverified].
        aug_scale: Range of the random scaling of the control image (breaks shape leakage) [unverified].
        reenactor: Cross-identity source of the control image: ``"warp"`` (a random affine warp of the target, the
            default stand-in for a face-vid2vid network) or ``"none"`` (the target itself). A custom callable can be
            passed to ``XPortraitTrainingModule`` directly.
        warp_rotation: Largest rotation of the ``"warp"`` reenactor, in degrees.
        warp_translation: Largest translation of the ``"warp"`` reenactor, as a fraction of the frame side.
        ema_decay: EMA decay of the trained weights (``None``: no EMA).
        gradient_checkpointing: Checkpoint the UNets' activations.
        num_workers: Data-loader workers.
    """

    stage: Literal["image", "temporal"] = "image"
    manifest: str | None = None
    synthetic_rows: int = 4
    val_fraction: float = 0.0
    init_from: str | None = None
    batch_size: int = 1
    num_frames: int = 16
    optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(lr=1e-5))
    cond_drop_ref: float = 0.1
    cond_drop_motion: float = 0.1
    cond_drop_local: float = 0.1
    aug_scale: tuple[float, float] = (0.8, 1.2)
    reenactor: Literal["warp", "none"] = "warp"
    warp_rotation: float = 10.0
    warp_translation: float = 0.05
    ema_decay: float | None = None
    gradient_checkpointing: bool = False
    num_workers: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("train.batch_size", self.batch_size)
        _positive("train.num_frames", self.num_frames)
        _positive("train.synthetic_rows", self.synthetic_rows)
        for name in ("cond_drop_ref", "cond_drop_motion", "cond_drop_local"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"train.{name} must be a probability in [0, 1], got {value}")
        low, high = self.aug_scale
        if not 0 < low <= high:
            raise ValueError(f"train.aug_scale must be (low, high) with 0 < low <= high, got {self.aug_scale}")


@dataclass(frozen=True)
class XPortraitConfig:
    """Everything one ``x-portrait`` command reads: ``configs/tiny.yaml`` and ``configs/paper.yaml`` fill it."""

    model: ModelConfig = field(default_factory=ModelConfig)
    components: ComponentsConfig = field(default_factory=ComponentsConfig)
    random: RandomComponentsConfig = field(default_factory=RandomComponentsConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _shipped(name: str) -> XPortraitConfig:
    """The config ``configs/<name>.yaml`` shipped inside the package (the one source of truth)."""
    from genblocks.config import load_shipped_config

    return load_shipped_config(XPortraitConfig, "x_portrait", name)


def tiny_config() -> XPortraitConfig:
    """The shipped tiny CPU configuration ``configs/tiny.yaml``: 64-px frames, 16-px patches, random (32, 64)
    UNet, 2 DDIM steps, windows of 4 with overlap 2. The demo, smoke check and tests use it."""
    return _shipped("tiny")


def paper_config() -> XPortraitConfig:
    """The shipped paper settings ``configs/paper.yaml``: 512-px frames, 128-px patches, 30 DDIM steps, CFG 5,
    windows of 16 with overlap 4, VAE chunks of 16, seed 999; weights from a converted pipeline folder."""
    return _shipped("paper")
