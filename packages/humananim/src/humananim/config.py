"""The configuration schema of humananim: frozen dataclasses that ``genblocks.config.load_config`` fills from the YAML
files shipped in ``humananim/configs/`` (``tiny``, ``paper``: the one source of truth) plus dotted command-line
overrides (``sampling.num_inference_steps=2``).

Sections: ``model`` (architecture), ``components`` (where the weights come from), ``random`` (sizes of random
components), ``sampling`` (inference), ``train`` (genblocks' shared training keys + the stages), ``data``
(``humananim prepare`` and the training manifest), ``loss`` (regional and identity terms), ``keypoints`` (extraction,
smoothing, retargeting, hint rendering).

Every choice the spec marks [unverified] (humananim spec §8) is a field here with its documented default: the pose
representation (``model.pose_type``), the blur encoding (``model.blur_channels``, ``keypoints.blur_sharpness``,
``sampling.sharp_hands``), the loss weights and the space of the regional loss (``loss.*``), the SNR shift
(``train.snr_shift``), the stage split (``train.stage``), the reference fusion (``model.fusion_blocks``), the
animation-CFG branches (``sampling.uncond_drops``), the optimiser (``train.optimizer.lr``) and the weighting of the
blur channels (``keypoints.sharpness_ref``, ``keypoints.motion_gain``).

**The hint** the pose ControlNet reads is ``model.conditioning_channels = 3 + model.blur_channels`` channels per frame,
(F, 3 + 3, H, W) at the frame size:

- channels 0-2: the rasterised pose (skeleton body + both hands + face, or a DensePose render), RGB in [0, 1];
- channel 3, 4 (the motion-blur condition): each hand's displacement to the previous frame,
  ``keypoints.motion_gain * dx / W`` and ``keypoints.motion_gain * dy / H`` clipped to [-1, 1] (signed), written on
  that hand's region and 0 elsewhere;
- channel 5: each hand's sharpness in (0, 1] (``v / (v + keypoints.sharpness_ref)`` for ``v`` the variance of the
  Laplacian of the hand crop; 1 = sharp; never exactly 0 on a hand, so the channel also marks the regions) written
  on that hand's region, 0 elsewhere. At inference ``sampling.sharp_hands`` sets it to 1 on every
  region (``> 0``), asking for crisp hands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from genblocks.errors import FieldError
from genblocks.tiny import RandomComponentsConfig
from genblocks.training.config import OptimizerConfig
from genblocks.training.config import TrainConfig as SharedTrainConfig

__all__ = [
    "ComponentsConfig",
    "DataConfig",
    "HumanAnimConfig",
    "KeypointsConfig",
    "LossConfig",
    "ModelConfig",
    "RandomComponentsConfig",
    "SamplingConfig",
    "TrainConfig",
    "paper_config",
    "tiny_config",
]

POSE_CHANNELS = 3
"""Channels of the pose part of the hint (an RGB skeleton or DensePose render)."""


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise FieldError(name, f"expected a positive value, got {value}")


def _probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise FieldError(name, f"expected a probability in [0, 1], got {value}")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture around the SD1.5 UNet (humananim spec §3).

    Args:
        height: Frame height in pixels (512; 896 for a 9:16 portrait video at 512 wide). A multiple of the VAE factor
            times the UNet's downsampling (64 on SD1.5).
        width: Frame width in pixels (512).
        pose_type: Pose hint: ``"skeleton"`` (DWPose-style body + both hands + face, the default: the regional losses
            need hand and face keypoints) or ``"densepose"`` (MagicAnimate's, for its warm start) [unverified].
        fusion_blocks: Transformer blocks whose self-attention reads the reference bank: ``"midup"`` (MagicAnimate's
            ``animation.yaml``, the default) or ``"full"``.
        blur_channels: Motion-blur channels appended to the pose hint: 3 (dx, dy, sharpness per hand region,
            [unverified] encoding) or 0 (no blur condition).
        controlnet_embedding_channels: Hint-encoder widths of the pose ControlNet; ``len - 1`` stride-2 convolutions,
            so the hint is ``2 ** (len - 1)`` times the latent size and must equal the VAE's factor (SD1.5: 8).
        controlnet_scale: Conditioning scale of the pose ControlNet.
        temporal_heads: Heads of every temporal attention (8, MagicAnimate ``inference.yaml``).
        temporal_layers: Temporal transformer blocks per motion module (1).
        temporal_max_len: Length of the sinusoidal frame-position table, the most frames one window may hold (24).
        temporal_norm_groups: GroupNorm groups of the motion modules (32; must divide every channel count).
        temporal_norm_per_frame: GroupNorm statistics per frame (AnimateDiff / MagicAnimate code) instead of per clip
            (diffusers' ``AnimateDiffTransformer3D``).
        temporal_mid_block: A motion module in the middle block (``motion_module_mid_block``: false in MagicAnimate,
            true in AnimateDiff v2's ``mm_sd_v15_v2``).
        beta_schedule: Noise schedule of training and sampling: ``"linear"`` (MagicAnimate's ``inference.yaml``, β
            0.00085 -> 0.012 linear in β) or ``"scaled_linear"`` (SD1.5's).
    """

    height: int = 512
    width: int = 512
    pose_type: Literal["skeleton", "densepose"] = "skeleton"
    fusion_blocks: Literal["midup", "full"] = "midup"
    blur_channels: int = 3
    controlnet_embedding_channels: tuple[int, ...] = (16, 32, 96, 256)
    controlnet_scale: float = 1.0
    temporal_heads: int = 8
    temporal_layers: int = 1
    temporal_max_len: int = 24
    temporal_norm_groups: int = 32
    temporal_norm_per_frame: bool = True
    temporal_mid_block: bool = False
    beta_schedule: Literal["linear", "scaled_linear"] = "linear"

    def __post_init__(self) -> None:
        _positive("height", self.height)
        _positive("width", self.width)
        if self.blur_channels not in (0, 3):
            raise FieldError(
                "blur_channels", f"expected 0 (no blur condition) or 3 (dx, dy, sharpness), got {self.blur_channels}"
            )
        if not self.controlnet_embedding_channels:
            raise FieldError("controlnet_embedding_channels", "expected at least one width")
        factor = 2 ** (len(self.controlnet_embedding_channels) - 1)
        for name, side in (("height", self.height), ("width", self.width)):
            if side % factor:
                raise FieldError(name, f"expected a multiple of the hint encoder's factor {factor}, got {side}")
        _positive("temporal_heads", self.temporal_heads)
        _positive("temporal_max_len", self.temporal_max_len)

    @property
    def conditioning_channels(self) -> int:
        """Channels of the pose ControlNet's hint: 3 pose + ``blur_channels``."""
        return POSE_CHANNELS + self.blur_channels


@dataclass(frozen=True)
class ComponentsConfig:
    """Where the weights come from.

    Args:
        source: ``"random"`` builds seeded random components from ``random`` (no download); ``"pretrained"`` loads a
            ``HumanAnimPipeline`` folder (``save_pretrained``, ``humananim train`` or ``humananim convert`` output)
            from ``pretrained``; ``"base"`` loads SD1.5 (``vae``, ``text_encoder``, ``tokenizer``, ``unet``) from
            ``base_model`` and initialises the reference UNet and the ControlNet from its UNet (training from scratch).
        pretrained: Folder of a ``HumanAnimPipeline``.
        base_model: Folder of a diffusers SD1.5 pipeline (MagicAnimate pairs it with ``sd-vae-ft-mse`` in ``vae/``).
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
            raise FieldError("pretrained", 'expected a folder when components.source is "pretrained"')
        if self.source == "base" and not self.base_model:
            raise FieldError("base_model", 'expected a folder when components.source is "base"')


@dataclass(frozen=True)
class SamplingConfig:
    """Inference settings (humananim spec §5; MagicAnimate's ``inference.yaml`` where it has one).

    Args:
        num_inference_steps: DDIM steps (25, MagicAnimate).
        guidance_scale: Animation-CFG scale (7.5, MagicAnimate); 1 skips the unconditional pass.
        uncond_drops: What the unconditional branch of animation CFG leaves out [unverified]: ``["ref", "pose"]``
            (no reference bank and no pose ControlNet: the "controlnet-important" mode, the default), ``["ref"]``
            (the ControlNet stays, so guidance amplifies the appearance only) or ``["pose"]``.
        eta: DDIM eta (0).
        reference_noise_init: Start from ``q_sample(VAE(reference), start_timestep)`` instead of pure noise
            ("initial reference noise" [unverified]).
        start_timestep: Training timestep of the start latents (999).
        window_size: Frames per temporal window (16, at most ``model.temporal_max_len``).
        window_overlap: Frames shared by consecutive windows (4); every frame's prediction is the mean over the
            windows holding it ("prompt traveling" [unverified]).
        sharp_hands: Set the sharpness hint channel to 1 on every hand region (``blur.infer_sharp`` [unverified]).
        vae_chunk_size: Frames per VAE encoder/decoder call (bounds memory).
        seed: Seed of the start noise.
        fps: Frame rate of the written video; ``None`` keeps the driving video's (8 for keypoint folders).
        max_frames: Use at most this many driving frames (``None``: all).
    """

    num_inference_steps: int = 25
    guidance_scale: float = 7.5
    uncond_drops: tuple[str, ...] = ("ref", "pose")
    eta: float = 0.0
    reference_noise_init: bool = True
    start_timestep: int = 999
    window_size: int = 16
    window_overlap: int = 4
    sharp_hands: bool = True
    vae_chunk_size: int = 16
    seed: int = 0
    fps: float | None = None
    max_frames: int | None = None

    def __post_init__(self) -> None:
        _positive("num_inference_steps", self.num_inference_steps)
        _positive("window_size", self.window_size)
        _positive("vae_chunk_size", self.vae_chunk_size)
        if not 0 <= self.window_overlap < self.window_size:
            raise FieldError(
                "window_overlap", f"expected a value in [0, window_size={self.window_size}), got {self.window_overlap}"
            )
        if self.guidance_scale < 0:
            raise FieldError("guidance_scale", f"expected a value >= 0, got {self.guidance_scale}")
        unknown = sorted(set(self.uncond_drops) - {"ref", "pose"})
        if unknown or not self.uncond_drops:
            raise FieldError(
                "uncond_drops", f"expected a non-empty subset of ['ref', 'pose'], got {list(self.uncond_drops)}"
            )
        if self.max_frames is not None:
            _positive("max_frames", self.max_frames)


@dataclass
class TrainConfig(SharedTrainConfig):
    """Progressive training (humananim spec §4; the stage split and every value here is [unverified]): genblocks' shared
    ``train.`` keys (``max_steps``, ``precision``, ``devices``, ``strategy``, ``accumulate_grad_batches``,
    ``optimizer.{name,lr,...}`` with ``coap_adamw`` selectable, ``checkpoint_every_n_steps``, ``seed``, ... see
    :class:`genblocks.training.TrainConfig`) plus humananim's own.

    Args:
        stage: ``"image"``: the reference UNet and the pose ControlNet learn on frame pairs; ``"video"``: only the
            temporal modules learn, on clips of ``num_frames``; ``"hires"``: everything but the VAE and text encoder
            fine-tunes at ``resolution`` with the shifted-SNR schedule.
        manifest: Training manifest (CSV or JSONL, written by ``humananim prepare``); ``None``: synthetic data in the
            run folder (a smoke run, not training).
        init_from: ``HumanAnimPipeline`` folder to start from (the previous stage's ``trained/``).
        batch_size: Samples (pairs or clips) per step (1 clip of 16 frames).
        num_frames: Frames per clip in stages ``video`` and ``hires`` (16).
        optimizer: The optimizer by name (AdamW lr 1e-5 [unverified]).
        cond_drop_ref: Probability of dropping a sample's reference image (null reference) [unverified].
        cond_drop_pose: Probability of zeroing a sample's hint (pose + blur) [unverified].
        snr_shift: ``"simple_diffusion"``: in stage ``hires`` the schedule's log-SNR moves by
            ``-2 log(resolution / base_resolution)`` (arXiv 2301.11093) [unverified as the paper's form]; ``"none"``.
        base_resolution: The resolution the base schedule belongs to (512).
        resolution: Training resolution of the ``hires`` stage, longer side (1024); the other stages train at
            ``model.height`` x ``model.width``.
        ema_decay: EMA decay of the trained weights (``None``: no EMA).
        gradient_checkpointing: Checkpoint the UNets' activations.
        num_workers: Data-loader workers.
    """

    stage: Literal["image", "video", "hires"] = "image"
    manifest: str | None = None
    init_from: str | None = None
    batch_size: int = 1
    num_frames: int = 16
    optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(lr=1e-5))
    cond_drop_ref: float = 0.1
    cond_drop_pose: float = 0.1
    snr_shift: Literal["simple_diffusion", "none"] = "simple_diffusion"
    base_resolution: int = 512
    resolution: int = 1024
    ema_decay: float | None = None
    gradient_checkpointing: bool = False
    num_workers: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("batch_size", self.batch_size)
        _positive("num_frames", self.num_frames)
        _positive("base_resolution", self.base_resolution)
        _positive("resolution", self.resolution)
        _probability("cond_drop_ref", self.cond_drop_ref)
        _probability("cond_drop_pose", self.cond_drop_pose)

    @property
    def snr_scale(self) -> float:
        """The factor the SNR is divided by (squared) in this stage: ``resolution / base_resolution`` in stage
        ``hires`` with ``snr_shift="simple_diffusion"``, else 1 (no shift)."""
        if self.stage == "hires" and self.snr_shift == "simple_diffusion":
            return self.resolution / self.base_resolution
        return 1.0


@dataclass(frozen=True)
class DataConfig:
    """``humananim prepare`` (a TikTok / HumanDance-style folder of videos -> frames, keypoints, manifest) and the
    training data.

    Args:
        fps: Frame rate frames are extracted at (``None``: the video's own).
        max_frames: Frames kept per video (``None``: all).
        frame_stride: Keep every n-th frame of a training clip (1).
    """

    fps: float | None = None
    max_frames: int | None = None
    frame_stride: int = 1

    def __post_init__(self) -> None:
        _positive("frame_stride", self.frame_stride)
        if self.max_frames is not None:
            _positive("max_frames", self.max_frames)


@dataclass(frozen=True)
class LossConfig:
    """The training loss (humananim spec §4): epsilon MSE + face and hand region-weighted MSE + identity cosine loss.

    Args:
        lambda_face: Weight of the face-region MSE (1.0 [unverified]).
        lambda_hand: Weight of the hand-region MSE (1.0 [unverified]).
        lambda_id: Weight of the identity cosine loss (0.1 [unverified]).
        id_loss_max_t: The identity term applies only to samples with timestep t below this (500 [unverified]).
        region_space: Space of the regional MSE: ``"eps"`` (the default), ``"x0_latent"`` (predicted clean latent)
            or ``"pixel"`` (decoded predicted frame) [unverified].
        face_embedder: Weights of the ArcFace face embedder of the identity loss (``None``: the term is off unless a
            test passes a random one).
    """

    lambda_face: float = 1.0
    lambda_hand: float = 1.0
    lambda_id: float = 0.1
    id_loss_max_t: int = 500
    region_space: Literal["eps", "x0_latent", "pixel"] = "eps"
    face_embedder: str | None = None

    def __post_init__(self) -> None:
        for name in ("lambda_face", "lambda_hand", "lambda_id"):
            if getattr(self, name) < 0:
                raise FieldError(name, f"expected a weight >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class KeypointsConfig:
    """Whole-body keypoints from videos: backend, gap filling, smoothing, retargeting, hint rendering.

    Args:
        backend: ``"json"`` (DWPose / OpenPose JSON files), ``"dwpose"`` (rtmlib-style onnxruntime models),
            ``"mediapipe"`` (Holistic, offline; mediapipe 0.10.21 installed separately) or ``"dlib"`` (offline with
            ``humananim[face]``: the face detected, the body and hands a template placed from it, so only face and head
            motion is followed).
        min_confidence: Keypoints below this confidence count as missing.
        max_gap: Gap filling of missed detections: frames where nobody is found are always interpolated from their
            neighbours (and counted); in frames where the person is found, a single keypoint (say a hand) missing for
            at most ``max_gap`` consecutive frames is interpolated too, while a longer absence (a hand out of view)
            stays absent (8; 0 fills only the empty frames).
        smooth_window: Frames of the temporal smoothing window (1: none).
        retarget: Rescale the driving skeleton to the reference person's bone lengths and placement.
        blur_sharpness: How a hand's sharpness is measured on the ground-truth frames: ``"laplacian_var"`` (variance
            of the Laplacian in the hand crop) [unverified].
        sharpness_ref: The Laplacian variance (grey levels 0..255) that maps to sharpness 0.5 in the hint's sharpness
            channel, ``v / (v + sharpness_ref)`` (100 [unverified]; for scale, a 64-px crop of the face in scikit-image's
            astronaut measures 927, and 107 after a 9-px horizontal box blur). Training only: at inference the channel
            is set to sharp.
        motion_gain: Scale of the hint's displacement channels, ``clip(motion_gain * dx / W, -1, 1)`` (and ``dy / H``)
            (1 [unverified]; a larger gain spreads slow hand motion over more of the channel's range). Training and
            inference must use the same value: it is part of the hint the ControlNet learned.
    """

    backend: Literal["json", "dwpose", "mediapipe", "dlib"] = "json"
    min_confidence: float = 0.3
    max_gap: int = 8
    smooth_window: int = 5
    retarget: bool = True
    blur_sharpness: Literal["laplacian_var"] = "laplacian_var"
    sharpness_ref: float = 100.0
    motion_gain: float = 1.0

    def __post_init__(self) -> None:
        _probability("min_confidence", self.min_confidence)
        _positive("smooth_window", self.smooth_window)
        if self.max_gap < 0:
            raise FieldError("max_gap", f"expected a frame count >= 0, got {self.max_gap}")
        _positive("sharpness_ref", self.sharpness_ref)
        _positive("motion_gain", self.motion_gain)


@dataclass(frozen=True)
class HumanAnimConfig:
    """Everything one ``humananim`` command reads: ``configs/tiny.yaml`` and ``configs/paper.yaml`` fill it."""

    model: ModelConfig = field(default_factory=ModelConfig)
    components: ComponentsConfig = field(default_factory=ComponentsConfig)
    random: RandomComponentsConfig = field(default_factory=RandomComponentsConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    keypoints: KeypointsConfig = field(default_factory=KeypointsConfig)


def _shipped(name: str) -> HumanAnimConfig:
    """The config ``configs/<name>.yaml`` shipped inside the package (the one source of truth)."""
    from genblocks.config import load_shipped_config

    return load_shipped_config(HumanAnimConfig, "humananim", name)


def tiny_config() -> HumanAnimConfig:
    """The shipped tiny CPU configuration ``configs/tiny.yaml``: random (32, 64) UNet, 64 x 48 frames (non-square),
    2 DDIM steps, windows of 3 with overlap 1. The demo, smoke check and tests use it."""
    return _shipped("tiny")


def paper_config() -> HumanAnimConfig:
    """The shipped paper settings ``configs/paper.yaml`` (``--config paper``): 512 x 512 frames, DDIM 25 steps, animation CFG 7.5,
    windows of 16 with overlap 4; weights from a pipeline folder (e.g. ``humananim convert --from magicanimate``)."""
    return _shipped("paper")
