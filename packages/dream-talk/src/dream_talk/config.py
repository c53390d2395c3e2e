"""The configuration schema of dream-talk: dataclasses that ``genblocks.config.load_config`` fills from the YAML files
shipped in ``dream_talk/configs/`` (``tiny``, ``paper``) plus dotted command-line overrides (``--set cfg.scale=1``).

Every value the DREAM-Talk spec marks [unverified] (spec §8) is a field here with its documented default:

=====================================  =====================================================
spec item                              field
=====================================  =====================================================
dimensions                             ``motion.num_blendshapes=52``, ``motion.pose_dim=6``
frame rate and window                  ``motion.fps=25`` (the input's rate wins), ``emodiff.window=64``
audio front-end                        ``audio.kind`` in ``{mfcc, mel, wav2vec2}``
denoiser size                          ``emodiff.{d_model=256, layers=8, heads=8}``
schedule and steps                     ``diffusion.{schedule="cosine", steps=1000}``
sampler                                ``diffusion.sampler``, ``diffusion.sample_steps=50``
CFG dropout and scale                  ``cfg.{p_drop_audio=0.1, p_drop_style=0.1, scale=2.0}``
"mouth" channels                       ``lip.channels="arkit_jaw_mouth"``
lip losses                             ``lip.{w_vel=1.0, w_sync=0.0, sync_model=null}``
window chaining                        ``inference.long_audio`` in ``{chain, sliding}``
=====================================  =====================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from genblocks.errors import FieldError
from genblocks.training.config import TrainConfig as SharedTrainConfig

__all__ = [
    "AudioConfig",
    "CFGConfig",
    "DiffusionConfig",
    "DreamTalkConfig",
    "EmoDiffConfig",
    "InferenceConfig",
    "LipConfig",
    "MotionConfig",
    "TrainConfig",
    "load_shipped_config",
]

AudioKind = Literal["mfcc", "mel", "wav2vec2"]
Schedule = Literal["cosine", "linear"]
Sampler = Literal["ddpm_ancestral", "ddim"]
LongAudio = Literal["chain", "sliding"]
Stage = Literal["emodiff", "lip"]
RenderKind = Literal["preview", "warp", "learned"]
Interpolation = Literal["bicubic", "bilinear"]


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or value <= 0:
        raise FieldError(name, f"expected a positive number, got {value!r}")


def _probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise FieldError(name, f"expected a probability in [0, 1], got {value!r}")


@dataclass(frozen=True)
class MotionConfig:
    """Per-frame motion layout: ARKit blendshapes followed by the head pose.

    Args:
        num_blendshapes: ARKit blendshape channels (52, the standard order of :data:`dream_talk.motion.ARKIT_BLENDSHAPES`)
            [unverified].
        pose_dim: Head-pose channels after them: 3 rotations (pitch, yaw, roll, radians) + 3 translations [unverified].
        fps: Frame rate used when the input gives none (a style video's own rate wins) [unverified: 25].
    """

    num_blendshapes: int = 52
    pose_dim: int = 6
    fps: float = 25.0

    def __post_init__(self) -> None:
        if self.num_blendshapes != 52:
            raise FieldError("num_blendshapes", f"only the ARKit 52 rig is supported, got {self.num_blendshapes}")
        if self.pose_dim not in (0, 3, 6):
            raise FieldError(
                "pose_dim", f"expected 0, 3 (rotations) or 6 (rotations + translations), got {self.pose_dim}"
            )
        _positive("fps", self.fps)

    @property
    def dim(self) -> int:
        """Values per frame: ``num_blendshapes + pose_dim`` (58 by default)."""
        return self.num_blendshapes + self.pose_dim


@dataclass(frozen=True)
class AudioConfig:
    """The audio front-end: features resampled to the video frame rate (one row per frame).

    Args:
        kind: ``"mfcc"`` (``n_mfcc`` coefficients, + their time derivative when ``deltas``), ``"mel"`` (``n_mels`` log-mel
            energies) or ``"wav2vec2"`` (a transformers ``Wav2Vec2Model``/``HubertModel`` last hidden state)
            [unverified; spec default wav2vec2].
        sample_rate: Rate the audio is resampled to before feature extraction (16 kHz for wav2vec2).
        min_sample_rate: Inputs recorded below this rate are refused (too little bandwidth for speech features).
        n_fft: FFT size of the mel / MFCC front-ends.
        win_length: Analysis window (samples; 400 = 25 ms at 16 kHz).
        hop_length: Hop between analysis frames (160 = 10 ms, 100 feature rows per second).
        n_mels: Mel bands.
        n_mfcc: Cepstral coefficients.
        deltas: Append the first time derivative to the MFCCs ("13 + delta", 26 values).
        pretrained: ``from_pretrained`` path or hub name of the wav2vec2/HuBERT encoder; ``None`` builds a random one
            of ``wav2vec2_hidden`` width (tests, the tiny config).
        wav2vec2_hidden: Width of the encoder's hidden states (768 in the spec; checked against a loaded model).
        silence_db: Audio whose peak is below this level (dBFS) counts as silent and is refused at inference.
    """

    kind: AudioKind = "wav2vec2"
    sample_rate: int = 16000
    min_sample_rate: int = 8000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 80
    n_mfcc: int = 13
    deltas: bool = True
    pretrained: str | None = None
    wav2vec2_hidden: int = 768
    silence_db: float = -60.0

    def __post_init__(self) -> None:
        for name in ("sample_rate", "min_sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "n_mfcc"):
            _positive(name, getattr(self, name))
        _positive("wav2vec2_hidden", self.wav2vec2_hidden)
        if self.win_length > self.n_fft:
            raise FieldError("win_length", f"must not exceed n_fft={self.n_fft}, got {self.win_length}")
        if self.n_mfcc > self.n_mels:
            raise FieldError("n_mfcc", f"must not exceed n_mels={self.n_mels}, got {self.n_mfcc}")

    @property
    def feature_dim(self) -> int:
        """Values per frame of the chosen front-end."""
        if self.kind == "mel":
            return self.n_mels
        if self.kind == "mfcc":
            return self.n_mfcc * (2 if self.deltas else 1)
        return self.wav2vec2_hidden


@dataclass(frozen=True)
class EmoDiffConfig:
    """Sizes of the EmoDiff denoiser, its style encoder and the lip refiner (spec §3, all [unverified]).

    Args:
        d_model: Token width of the denoiser.
        layers: Transformer encoder layers of the denoiser.
        heads: Attention heads (``d_model`` must be divisible by it).
        ff_mult: Feed-forward width as a multiple of ``d_model``.
        dropout: Dropout inside the transformer layers.
        window: Frames per denoised window (64); longer audio is chained or slid (``inference.long_audio``).
        style_d_model: Width of the style encoder (2-layer transformer, mean-pooled).
        style_layers: Layers of the style encoder.
        style_frames: Frames of the style clip fed to the encoder (clips are cropped or looped to it).
        lip_d_model: Width of the lip refiner.
        lip_layers: Layers of the lip refiner (4 in the spec).
        seed: Seed of the random initialisation (tiny config, tests).
    """

    d_model: int = 256
    layers: int = 8
    heads: int = 8
    ff_mult: int = 4
    dropout: float = 0.0
    window: int = 64
    style_d_model: int = 256
    style_layers: int = 2
    style_frames: int = 64
    lip_d_model: int = 256
    lip_layers: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("d_model", "layers", "heads", "ff_mult", "window", "style_d_model", "style_layers"):
            _positive(name, getattr(self, name))
        for name in ("style_frames", "lip_d_model", "lip_layers"):
            _positive(name, getattr(self, name))
        if self.window < 2:
            raise FieldError("window", f"expected at least 2 frames (chained windows share one), got {self.window}")
        for name, width in (("d_model", self.d_model), ("style_d_model", self.style_d_model)):
            if width % self.heads:
                raise FieldError(name, f"{width} is not divisible by heads={self.heads}")
        if self.lip_d_model % self.heads:
            raise FieldError("lip_d_model", f"{self.lip_d_model} is not divisible by heads={self.heads}")
        _probability("dropout", self.dropout)


@dataclass(frozen=True)
class DiffusionConfig:
    """The noise schedule and the sampler.

    Args:
        schedule: ``"cosine"`` (diffusers ``squaredcos_cap_v2``) or ``"linear"`` betas [unverified: cosine].
        steps: Training timesteps (1000).
        sampler: ``"ddpm_ancestral"`` (sigma_t^2 = beta_t, the spec's reverse step) or ``"ddim"`` (eta 0).
        sample_steps: Denoising steps at inference (strided over the training timesteps; 50 for DDIM).
        beta_start: First beta of the linear schedule.
        beta_end: Last beta of the linear schedule.
        clip_sample: Clamp the predicted clean motion x0_hat to [-clip_sample, clip_sample] at every step (the noise
            prediction is re-derived from the clamped x0_hat); ``None`` disables it [unverified: 1.5, blendshapes live
            in [0, 1] and head rotations within about +-1 rad].
    """

    schedule: Schedule = "cosine"
    steps: int = 1000
    sampler: Sampler = "ddpm_ancestral"
    sample_steps: int = 50
    beta_start: float = 1e-4
    beta_end: float = 0.02
    clip_sample: float | None = 1.5

    def __post_init__(self) -> None:
        _positive("steps", self.steps)
        if self.clip_sample is not None:
            _positive("clip_sample", self.clip_sample)
        _positive("sample_steps", self.sample_steps)
        if self.sample_steps > self.steps:
            raise FieldError("sample_steps", f"must not exceed steps={self.steps}, got {self.sample_steps}")


@dataclass(frozen=True)
class CFGConfig:
    """Classifier-free guidance on audio and style (nested: null -> +audio -> +style).

    Args:
        p_drop_audio: Training probability that a window's audio is replaced by the learned null token.
        p_drop_style: Training probability that a window's style is replaced by the learned null token (independent).
        scale: Guidance scale of the audio condition (1 = plain conditional prediction) [unverified: 2.0].
        style_scale: Guidance scale of the style condition; ``None`` uses ``scale``.
    """

    p_drop_audio: float = 0.1
    p_drop_style: float = 0.1
    scale: float = 2.0
    style_scale: float | None = None

    def __post_init__(self) -> None:
        _probability("p_drop_audio", self.p_drop_audio)
        _probability("p_drop_style", self.p_drop_style)

    @property
    def scales(self) -> tuple[float, float]:
        """``(audio scale, style scale)``."""
        return self.scale, self.scale if self.style_scale is None else self.style_scale


@dataclass(frozen=True)
class LipConfig:
    """The lip-refinement stage.

    Args:
        channels: Which channels it re-predicts: ``"arkit_jaw_mouth"`` (the 4 ``jaw*`` + 23 ``mouth*`` blendshapes).
        w_vel: Weight of the velocity (first-difference) L2 loss [unverified: 1.0].
        w_sync: Weight of the lip-sync expert loss hook (off by default; needs a user-given expert: ``sync_model``
            or the ``sync_loss`` argument of :func:`dream_talk.training.build_training`).
        sync_model: Path of a TorchScript lip-sync expert for ``train --stage lip``, called as
            ``expert(motion (B, T, 52 + P), audio (B, T, A)) -> scalar loss`` (lower = better in sync); its weights are
            frozen, gradients flow through it to the refiner. None: no expert (``w_sync`` must then be 0).
        enabled: Run the refiner at inference.
        stride: Frames between the starts of the overlapping ``emodiff.window``-frame windows the refiner runs on at
            inference; each frame's mouth channels are the mean over the windows that contain it (genblocks
            ``sliding_windows`` / ``denoise_windows``). 1 [unverified default] leaves no seam (the set of windows
            changes by one at every frame) for ``window`` times the refiner calls; ``emodiff.window`` gives
            non-overlapping tiles, which jump where the refiner's context changes.
    """

    channels: Literal["arkit_jaw_mouth"] = "arkit_jaw_mouth"
    w_vel: float = 1.0
    w_sync: float = 0.0
    sync_model: str | None = None
    enabled: bool = True
    stride: int = 1

    def __post_init__(self) -> None:
        _positive("stride", self.stride)
        if self.w_vel < 0 or self.w_sync < 0:
            raise FieldError("w_vel", f"loss weights must be >= 0, got w_vel={self.w_vel}, w_sync={self.w_sync}")
        if self.sync_model is not None and self.w_sync == 0:
            raise FieldError("sync_model", "a lip-sync expert is given but w_sync is 0: set lip.w_sync > 0 to use it")


@dataclass(frozen=True)
class InferenceConfig:
    """One generation.

    Args:
        long_audio: ``"chain"`` (each window's last frame is the next window's initial state) or ``"sliding"``
            (overlapping windows denoised together, predictions averaged; genblocks ``sliding_windows``).
        overlap: Frames shared by neighbouring windows in ``"sliding"`` mode.
        head_motion_scale: Multiplies the head pose's motion around the initial pose (0 freezes the head).
        clamp_blendshapes: Clamp the final blendshape weights to ARKit's [0, 1] (``raw_motion`` stays unclamped).
        seed: Seed of the sampling noise.
        device: Torch device (``"auto"``: CUDA when available).
        check_face: Refuse a portrait in which genblocks' dlib analyser finds no face (needs the ``face`` extra);
            ``false`` skips the check (the proxy preview renders any picture).
        initial_state: ``"portrait"``: EmoDiff starts from the portrait's own expression, fitted to its dlib landmarks
            as ``track`` fits a frame (:func:`dream_talk.tracking.portrait_state`), and the warp renderer moves the
            portrait relative to it; ``"neutral"``: zeros (also the fallback when no landmarks can be found) [ours;
            spec §5 allows either]. A model trained on clips tracked from a neutral frame (``prepare
            --neutral-frame``) takes the portrait as its own neutral face: use ``"neutral"`` with it.
        style_neutral_frame: A style *video* is tracked from this frame's face (``track --neutral-frame``) instead of
            the proxy's template; ``null``: the template. Track style clips as the training clips were.
    """

    long_audio: LongAudio = "chain"
    overlap: int = 16
    head_motion_scale: float = 1.0
    clamp_blendshapes: bool = True
    seed: int = 0
    device: str = "cpu"
    check_face: bool = True
    initial_state: Literal["portrait", "neutral"] = "portrait"
    style_neutral_frame: int | None = None

    def __post_init__(self) -> None:
        if self.overlap < 0:
            raise FieldError("overlap", f"expected >= 0, got {self.overlap}")
        if self.head_motion_scale < 0:
            raise FieldError("head_motion_scale", f"expected >= 0, got {self.head_motion_scale}")


@dataclass(frozen=True)
class RenderConfig:
    """How the motion becomes video.

    Args:
        kind: ``"warp"``: :class:`~dream_talk.warp_render.PortraitWarpRenderer` animates the portrait itself (a
            thin-plate-spline warp of a face crop driven by its 68 dlib landmarks, the ``face`` extra, a synthesised
            mouth interior and a feathered paste-back). When the analyser is missing or finds no face, ``speak``
            falls back to the preview and says so in its notes. ``"preview"``:
            :class:`~dream_talk.render.KeypointPreviewRenderer`, the still portrait beside the proxy avatar.
            ``"learned"``: the renderer ``renderer`` names, built from ``weights``
            (:func:`~dream_talk.render.load_renderer`).
        preview_size: Height in pixels of the preview's panels.
        crop_margin: Warp: the face crop is the box around the landmarks (portrait's and moved) widened by this
            fraction of its longer side on each side; ``null`` warps the whole photo [default 0.5].
        feather: Warp: width of the paste-back ramp as a fraction of the crop's shorter side (0: a hard paste)
            [default 0.1].
        interpolation: Warp: ``"bicubic"`` (sharper) or ``"bilinear"`` sampling of the portrait.
        mouth_fill: Warp: paint a mouth interior where the lips open beyond the portrait's own gap.
        cavity_darkness: Warp: the oral cavity's colour is the portrait's mean lip colour times this [default 0.3].
        teeth_height: Warp: height of the upper-teeth band as a fraction of the mouth opening [default 0.3],
        teeth_max: capped at this fraction of the inner mouth width [default 0.2].
        mouth_feather: Warp: blur sigma of the mouth masks as a fraction of the inner mouth width [default 0.04].
        renderer: Learned: ``"package.module:Factory"``; ``Factory(weights, config)`` (weights a ``Path`` or
            ``None``, config the whole :class:`DreamTalkConfig`) returns a ``Renderer``: ``renderer(portrait uint8
            (H, W, 3), motion (T, 52 + P)) -> uint8 frames (T, H', W', 3)``.
        weights: Learned: a file or folder handed to the factory, or ``null``.
    """

    kind: RenderKind = "warp"
    preview_size: int = 256
    crop_margin: float | None = 0.5
    feather: float = 0.1
    interpolation: Interpolation = "bicubic"
    mouth_fill: bool = True
    cavity_darkness: float = 0.3
    teeth_height: float = 0.3
    teeth_max: float = 0.2
    mouth_feather: float = 0.04
    renderer: str | None = None
    weights: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("preview", "warp", "learned"):
            raise FieldError("kind", f"expected preview, warp or learned, got {self.kind!r}")
        if self.interpolation not in ("bicubic", "bilinear"):
            raise FieldError("interpolation", f"expected bicubic or bilinear, got {self.interpolation!r}")
        _positive("preview_size", self.preview_size)
        if self.crop_margin is not None and self.crop_margin < 0:
            raise FieldError("crop_margin", f"expected >= 0 or null (the whole photo), got {self.crop_margin!r}")
        if not 0.0 <= self.feather <= 0.5:
            raise FieldError("feather", f"expected a fraction of the crop side in [0, 0.5], got {self.feather!r}")
        for name in ("cavity_darkness", "teeth_height", "teeth_max"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise FieldError(name, f"expected a fraction in [0, 1], got {getattr(self, name)!r}")
        if self.mouth_feather < 0:
            raise FieldError("mouth_feather", f"expected >= 0, got {self.mouth_feather!r}")
        if self.kind == "learned":
            module, _, factory = (self.renderer or "").partition(":")
            if not module or not factory:
                raise FieldError(
                    "renderer",
                    f"render.kind=learned needs 'package.module:Factory' (Factory(weights, config) -> Renderer), "
                    f"got {self.renderer!r}",
                )


@dataclass
class TrainConfig(SharedTrainConfig):
    """genblocks' shared training keys plus the stage and the data.

    Args:
        stage: ``"emodiff"`` (diffusion over motion windows) or ``"lip"`` (the lip refiner on EmoDiff-like inputs).
        manifest: A JSONL manifest (``dream-talk prepare``-style rows: audio features, motion, style) or ``None`` for
            synthetic data (the tiny config).
        synthetic_windows: Synthetic training windows when ``manifest`` is ``None``.
        batch_size: Windows per batch.
    """

    stage: Stage = "emodiff"
    manifest: str | None = None
    synthetic_windows: int = 64
    batch_size: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("synthetic_windows", self.synthetic_windows)
        _positive("batch_size", self.batch_size)


@dataclass
class DreamTalkConfig:
    """The whole configuration (``configs/tiny.yaml`` and ``configs/paper.yaml``)."""

    motion: MotionConfig = field(default_factory=MotionConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    emodiff: EmoDiffConfig = field(default_factory=EmoDiffConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    cfg: CFGConfig = field(default_factory=CFGConfig)
    lip: LipConfig = field(default_factory=LipConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def load_shipped_config(name: str = "tiny", overrides: list[str] | None = None) -> DreamTalkConfig:
    """The config ``dream_talk/configs/<name>.yaml`` shipped in the package, with ``key=value`` overrides.

    Args:
        name: ``"tiny"`` (random CPU sizes of spec §9) or ``"paper"`` (spec defaults).
        overrides: Dotted overrides, e.g. ``["cfg.scale=1.0"]``.
    """
    from genblocks.cli import resolve_config
    from genblocks.config import load_config

    return load_config(DreamTalkConfig, resolve_config("dream_talk", "speak", name), list(overrides or []))
