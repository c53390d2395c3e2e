"""The configuration schemas of id-patch and the generation builders.

- `GenerateConfig` (sections `PipelineSection`, `FaceSection`, `SamplingSection`): ``generate``, ``eval`` and ``demo``,
  shipped as ``configs/tiny.yaml`` and ``paper.yaml`` (SDXL);
- `TrainConfig` (sections `ModelSection`, `DataSection`, `TrainSection`): ``train``, shipped as
  ``configs/train/tiny.yaml`` and ``paper.yaml`` (SDXL);
- `IDPatchConfig`: the sizes and [unverified] choices of the ID projector (a section of both).

Load with ``genblocks.cli.load_command_config(GenerateConfig, "id_patch", "generate", "paper", ["sampling.seed=7"])``; then
`build_pipeline`, `build_face_encoder` and `generate` do the rest, so a command line stays thin. The spec's
[unverified] values are fields here with the paper's defaults (spec id-patch §5, §8): Euler from the base model, 50
steps, CFG 5.0 (5.5 in upstream's demo), ControlNet scale 0.8, ID-injection ratio 0.8, seed 1234;
``model.id_patch.{proj_type, num_tokens, patch_size, cond_clamp, face_anchor}`` and ``face.channel_order``.
This module imports only the standard library and genblocks' training config at load time (no torch, diffusers or
lightning), so loading and printing a config is cheap; the builders import their heavy modules when called.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from genblocks.notices import EMPTY_FP32_MODULES, ignore_log_records
from genblocks.training.config import OptimizerConfig
from genblocks.training.config import TrainConfig as SharedTrainConfig

if TYPE_CHECKING:
    import numpy as np
    import torch

    from id_patch.condition import ImageLike
    from id_patch.pipeline_id_patch import IDPatchPipeline, IDPatchPipelineOutput
    from id_patch.preprocessing import FaceEncoder

__all__ = [
    "FACE_ANCHORS",
    "PROJ_TYPES",
    "DataSection",
    "FaceSection",
    "GenerateConfig",
    "IDPatchConfig",
    "ModelSection",
    "PipelineSection",
    "SamplingSection",
    "TrainConfig",
    "TrainSection",
    "build_face_encoder",
    "build_pipeline",
    "generate",
]

PROJ_TYPES = ("faceid_mlp", "resampler")
"""The two projection architectures of spec §3: IP-Adapter FaceID MLP and IP-Adapter Plus Perceiver resampler."""
FACE_ANCHORS = ("nose", "bbox_center")
"""Where a subject's patch is centred: the nose keypoint (upstream) or the centre of the face box."""
DTYPE_NAMES = ("float32", "float16", "bfloat16")
"""The values of ``model.dtype`` (torch dtype names)."""
FACE_BACKENDS = ("dlib", "arcface", "tiny")
UPSTREAM_NEGATIVE_PROMPT = (
    "nude, worst quality, low quality, normal quality, nsfw, abstract, glitch, deformed, mutated, ugly, disfigured, "
    "text, watermark, bad hands, error, jpeg artifacts, blurry, missing fingers"
)
"""The negative prompt of upstream's ``demo.py``."""


@dataclass
class IDPatchConfig:
    """Sizes and the [unverified] choices of ID-Patch (spec §3, §8); the defaults are the paper's SDXL setting.

    A plain (non-frozen) dataclass so that `genblocks.config.load_config` can use it as a schema section.

    Args:
        face_dim (`int`, defaults to 512): width of the face embedding (ArcFace IR-SE-50: 512).
        num_tokens (`int`, defaults to 16): ID tokens per face from ``prompt_proj`` [unverified: ``proj.num_tokens``].
        token_dim (`int`, defaults to 2048): width of an ID token, the UNet's cross-attention width (SDXL: 2048).
        patch_size (`int`, defaults to 64): side in pixels of the square ID patch at generation resolution
            [unverified]; even, so the patch centres on a pixel as upstream (``round(loc ∓ patch_size // 2)``).
        proj_type (`str`, defaults to `"faceid_mlp"`): ``"faceid_mlp"`` or ``"resampler"`` [unverified:
            ``proj.type``; auto-detected by the converter].
        mlp_mult (`int`, defaults to 1): hidden width of the FaceID MLP is ``face_dim * mlp_mult``.
        resampler_hidden_dim (`int`, defaults to 1280): width of the resampler's latent queries.
        resampler_depth (`int`, defaults to 4): resampler blocks (diffusers' converter assumes 4).
        resampler_heads (`int`, defaults to 20): attention heads of the resampler.
        resampler_dim_head (`int`, defaults to 64): width per head (diffusers' converter assumes 64).
        resampler_ff_mult (`int`, defaults to 4): feed-forward expansion of the resampler blocks.
        cond_clamp (`bool`, defaults to `False`): clamp the condition image (pose + patches) to [0, 1]; upstream does
            not [unverified: ``cond.clamp``].
        face_anchor (`str`, defaults to `"nose"`): ``"nose"`` (COCO keypoint 0, upstream) or ``"bbox_center"``
            [unverified: ``face_anchor``].
    """

    face_dim: int = 512
    num_tokens: int = 16
    token_dim: int = 2048
    patch_size: int = 64
    proj_type: str = "faceid_mlp"
    mlp_mult: int = 1
    resampler_hidden_dim: int = 1280
    resampler_depth: int = 4
    resampler_heads: int = 20
    resampler_dim_head: int = 64
    resampler_ff_mult: int = 4
    cond_clamp: bool = False
    face_anchor: str = "nose"

    def __post_init__(self) -> None:
        if self.proj_type not in PROJ_TYPES:
            raise ValueError(f"IDPatchConfig.proj_type must be one of {PROJ_TYPES}, got {self.proj_type!r}.")
        if self.face_anchor not in FACE_ANCHORS:
            raise ValueError(f"IDPatchConfig.face_anchor must be one of {FACE_ANCHORS}, got {self.face_anchor!r}.")
        positive = (
            "face_dim",
            "num_tokens",
            "token_dim",
            "patch_size",
            "mlp_mult",
            "resampler_hidden_dim",
            "resampler_depth",
            "resampler_heads",
            "resampler_dim_head",
            "resampler_ff_mult",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"IDPatchConfig.{name} must be a positive int, got {value!r}.")
        if self.patch_size % 2:
            raise ValueError(
                f"IDPatchConfig.patch_size must be even (patches centre on a pixel), got {self.patch_size}."
            )

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-friendly dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IDPatchConfig:
        """Build from a mapping; keys starting with ``_`` (diffusers' ``_class_name``, ...) are ignored.

        Args:
            data (`Mapping[str, Any]`): field name -> value.

        Returns:
            `IDPatchConfig`: the config.

        Raises:
            `ValueError`: for a key that is not a field, naming it and the known fields.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in data if k not in known and not str(k).startswith("_"))
        if unknown:
            raise ValueError(f"Unknown IDPatchConfig key(s) {unknown}; known keys are {sorted(known)}.")
        return cls(**{k: v for k, v in data.items() if k in known})


# --------------------------------------------------------------------------- generation (configs/*.yaml)
@dataclass
class PipelineSection:
    """Where the pipeline's parts come from (later fields override earlier ones).

    Args:
        base (`str`, defaults to `"tiny"`): ``"tiny"`` (seeded tiny SDXL parts, `id_patch.testing`) or a local SDXL
            folder in diffusers layout (its scheduler is used, upstream: ``EulerDiscreteScheduler``).
        pipeline (`str`, *optional*): a folder written by ``IDPatchPipeline.save_pretrained``; replaces ``base``.
        official_release (`str`, *optional*): the official release folder (``id-patch.bin`` + ``ControlNetModel/``),
            converted on load.
        controlnet (`str`, *optional*): a diffusers ControlNet folder (e.g. a trained one).
        id_projector (`str`, *optional*): an `IDPatchProjector` folder (e.g. a trained one).
        id_patch (`IDPatchConfig`): sizes of a new random projector for a non-tiny ``base`` without weights
            (``base="tiny"`` uses spec §9's sizes and only ``proj_type``); ``cond_clamp`` and ``face_anchor`` always
            apply.
        dim_head (`int`, defaults to 64): resampler width per head when converting ``official_release``.
        dtype (`str`, defaults to `"float32"`): ``float32``, ``float16`` or ``bfloat16`` (upstream: bf16 on GPU).
        device (`str`, defaults to `"cpu"`): where to run.
        seed (`int`, defaults to 0): seed of random components.
    """

    base: str = "tiny"
    pipeline: str | None = None
    official_release: str | None = None
    controlnet: str | None = None
    id_projector: str | None = None
    id_patch: IDPatchConfig = field(default_factory=IDPatchConfig)
    dim_head: int = 64
    dtype: str = "float32"
    device: str = "cpu"
    seed: int = 0


@dataclass
class FaceSection:
    """How subject images become embeddings (`id_patch.preprocessing`).

    Args:
        backend (`str`, defaults to `"dlib"`): ``"dlib"`` (offline: dlib 128-d mapped to ``face_dim``), ``"arcface"``
            (the paper's IR-SE-50; needs ``arcface_weights``) or ``"tiny"`` (random test encoder, no detection).
        arcface_weights (`str`, *optional*): local IR-SE-50 checkpoint (facexlib ``arcface`` / ``model_ir_se50.pth``).
        channel_order (`str`, defaults to `"bgr"`): what the ArcFace weights expect (upstream feeds BGR crops).
        threshold (`float`, defaults to 0.5): dlib detector threshold.
        upsample (`int`, defaults to 1): dlib detector upsampling.
        seed (`int`, defaults to 0): seed of the dlib map / the tiny encoder.
    """

    backend: str = "dlib"
    arcface_weights: str | None = None
    channel_order: str = "bgr"
    threshold: float = 0.5
    upsample: int = 1
    seed: int = 0


@dataclass
class SamplingSection:
    """One generation call (spec §5).

    Args:
        num_inference_steps (`int`, defaults to 50): denoising steps.
        guidance_scale (`float`, defaults to 5.0): CFG (upstream ``generate``: 5.0; its demo: 5.5).
        controlnet_conditioning_scale (`float`, defaults to 0.8): ControlNet residual scale.
        id_injection_ratio (`float`, defaults to 0.8): last fraction of the steps that see the ID tokens.
        seed (`int`, defaults to 1234): generator seed (upstream demo: 1234).
        height (`int`, *optional*): image height; defaults to the pose image's or the model's.
        width (`int`, *optional*): image width.
    """

    num_inference_steps: int = 50
    guidance_scale: float = 5.0
    controlnet_conditioning_scale: float = 0.8
    id_injection_ratio: float = 0.8
    seed: int = 1234
    height: int | None = None
    width: int | None = None

    def __post_init__(self) -> None:
        from genblocks.errors import InputError

        if self.num_inference_steps < 1:
            raise InputError(
                f"sampling.num_inference_steps: expected a positive number of steps, got {self.num_inference_steps}"
            )
        if self.guidance_scale < 0 or self.controlnet_conditioning_scale < 0:
            raise InputError(
                "sampling.guidance_scale and sampling.controlnet_conditioning_scale: expected non-negative scales, got "
                f"{self.guidance_scale} and {self.controlnet_conditioning_scale}"
            )
        if not 0.0 <= self.id_injection_ratio <= 1.0:
            raise InputError(
                f"sampling.id_injection_ratio: expected a fraction in [0, 1], got {self.id_injection_ratio}"
            )
        for name in ("height", "width"):
            value = getattr(self, name)
            if value is not None and (value <= 0 or value % 8):
                raise InputError(f"sampling.{name}: expected a positive multiple of 8 (the VAE's factor), got {value}")


@dataclass
class GenerateConfig:
    """``id-patch generate --config ...`` (and ``eval``, ``demo``): ``configs/<name>.yaml``.

    Args:
        model (`PipelineSection`): the pipeline's parts.
        face (`FaceSection`): the face encoder.
        sampling (`SamplingSection`): the call's settings.
        prompt (`str`): the text.
        negative_prompt (`str`): the negative text (upstream demo's by default; ``""`` for none).
    """

    model: PipelineSection = field(default_factory=PipelineSection)
    face: FaceSection = field(default_factory=FaceSection)
    sampling: SamplingSection = field(default_factory=SamplingSection)
    prompt: str = "a group photo of friends smiling at the camera"
    negative_prompt: str = UPSTREAM_NEGATIVE_PROMPT


# --------------------------------------------------------------------------- training (configs/train/*.yaml)
@dataclass
class ModelSection:
    """Where the components come from.

    Args:
        base: ``"tiny"`` (seeded tiny SDXL parts, :mod:`id_patch.testing`) or a local diffusers SDXL folder
            (``unet/``, ``vae/``, ``text_encoder(_2)/``, ``tokenizer(_2)/``, ``scheduler/``).
        controlnet: A diffusers ControlNet folder to start from (e.g. the official ``ControlNetModel/``); ``None``:
            ``ControlNetModel.from_unet(unet, conditioning_channels=3)``.
        id_projector: An :class:`IDPatchProjector` folder to start from; ``None``: a random one from ``id_patch``.
        id_patch: Sizes of a new ID projector (``token_dim`` must be the UNet's context width: 2048 for SDXL). With
            ``base="tiny"`` the sizes are spec §9's (``id_patch.testing``) and only ``proj_type`` applies;
            ``cond_clamp`` and ``face_anchor`` always apply (also to a loaded projector).
        frozen_dtype: dtype of the frozen UNet, VAE and text encoders: ``float32``, ``float16`` or ``bfloat16``.
        seed: Seed of new (random) components.
    """

    base: str = "tiny"
    controlnet: str | None = None
    id_projector: str | None = None
    id_patch: IDPatchConfig = field(default_factory=IDPatchConfig)
    frozen_dtype: str = "float32"
    seed: int = 0


@dataclass
class DataSection:
    """The training manifest (:mod:`id_patch.data`).

    Args:
        manifest: ``.jsonl`` / ``.csv`` manifest; empty with ``synthetic`` to write a synthetic one.
        synthetic: Write a tiny synthetic manifest under ``<out_dir>/data`` (tests, demo, smoke runs).
        synthetic_images: Rows of the synthetic manifest.
        resolution: Training image size (spec §4: 1024 buckets [unverified]; one square size here).
        batch_size: Samples per batch (spec §4: 8 [unverified]).
        val_fraction: Rows held out for validation.
        num_workers: DataLoader workers.
        max_faces: Most faces per photo (spec §4: 1-4).
    """

    manifest: str = ""
    synthetic: bool = False
    synthetic_images: int = 4
    resolution: int = 1024
    batch_size: int = 8
    val_fraction: float = 0.0
    num_workers: int = 0
    max_faces: int = 4


@dataclass
class TrainSection(SharedTrainConfig):
    """The training recipe (spec §4, all [unverified]): genblocks' shared ``train.`` keys (``max_steps``, ``precision``,
    ``devices``, ``strategy``, ``optimizer``, ``checkpoint_every_n_steps``, ... see
    :class:`genblocks.training.TrainConfig`) plus ID-Patch's own.

    Args:
        optimizer: ``genblocks.training.OptimizerConfig``: ``name`` ``adamw`` (default) or ``coap_adamw`` / ...;
            lr 1e-5.
        id_drop_prob: ID-token dropout probability.
        text_drop_prob: Caption dropout probability.
        conditioning_scale: ControlNet residual scale during training.
        gradient_checkpointing: Checkpoint activations in the UNet and the ControlNet.
        ema_decay: EMA of the trained weights (``None``: off).
    """

    optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(lr=1e-5, weight_decay=0.0))
    max_steps: int = 10000
    gradient_clip_val: float | None = 1.0
    id_drop_prob: float = 0.1
    text_drop_prob: float = 0.05
    conditioning_scale: float = 1.0
    gradient_checkpointing: bool = False
    ema_decay: float | None = None


@dataclass
class TrainConfig:
    """``id-patch train --config ...``: model, data and recipe.

    Args:
        model: Components.
        data: Manifest and loader.
        train: Recipe and trainer settings.
    """

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)


def _dtype(name: str) -> torch.dtype:
    import torch

    if name not in DTYPE_NAMES:
        raise ValueError(f"model.dtype must be one of {sorted(DTYPE_NAMES)}, got {name!r}.")
    return getattr(torch, name)


def build_pipeline(model: PipelineSection) -> IDPatchPipeline:
    """Assemble the pipeline a `PipelineSection` describes, on its device and dtype.

    Args:
        model (`PipelineSection`): the section.

    Returns:
        `IDPatchPipeline`: progress bar disabled.
    """
    import torch
    from diffusers import ControlNetModel, EulerDiscreteScheduler, UNet2DConditionModel

    from id_patch.convert_id_patch_original import convert_official, load_official_controlnet
    from id_patch.modeling_id_patch import IDPatchProjector
    from id_patch.pipeline_id_patch import IDPatchPipeline
    from id_patch.testing import tiny_id_patch_pipeline

    dtype = _dtype(model.dtype)
    controlnet = projector = None
    if model.official_release is not None:
        controlnet = load_official_controlnet(model.official_release)
        projector = convert_official(model.official_release, dim_head=model.dim_head).projector
    if model.controlnet is not None:
        controlnet = ControlNetModel.from_pretrained(model.controlnet)
    if model.id_projector is not None:
        projector = IDPatchProjector.from_pretrained(model.id_projector)
    if model.pipeline is not None or model.base == "tiny":
        if model.pipeline is not None:
            pipe = IDPatchPipeline.from_pretrained(model.pipeline)
        else:
            pipe = tiny_id_patch_pipeline(seed=model.seed, proj_type=model.id_patch.proj_type)
        if controlnet is not None:
            pipe.controlnet = controlnet
        if projector is not None:
            pipe.id_projector = projector
    else:
        torch.manual_seed(model.seed)
        if projector is None:
            projector = IDPatchProjector.from_id_patch_config(model.id_patch)
        if controlnet is None:
            unet = UNet2DConditionModel.from_pretrained(model.base, subfolder="unet")
            controlnet = ControlNetModel.from_unet(unet, conditioning_channels=3)
        scheduler = EulerDiscreteScheduler.from_pretrained(model.base, subfolder="scheduler")
        pipe = IDPatchPipeline.from_pretrained(
            model.base, controlnet=controlnet, id_projector=projector, scheduler=scheduler
        )
    pipe.id_projector.register_to_config(cond_clamp=model.id_patch.cond_clamp, face_anchor=model.id_patch.face_anchor)
    pipe.set_progress_bar_config(disable=True)
    with ignore_log_records(*EMPTY_FP32_MODULES):  # diffusers notes "kept in float32: []" on every cast
        return pipe.to(device=model.device, dtype=dtype)


def build_face_encoder(face: FaceSection, face_dim: int, device: str | torch.device = "cpu") -> FaceEncoder:
    """The face encoder a `FaceSection` describes, giving ``face_dim``-wide embeddings.

    Args:
        face (`FaceSection`): the section.
        face_dim (`int`): the ID projector's ``face_dim``.
        device (`str` or `torch.device`, defaults to `"cpu"`): where ArcFace runs.

    Returns:
        `FaceEncoder`: a `DlibFaceEncoder`, an `ArcFaceEncoder` or a `TinyFaceEncoder`.
    """
    if face.backend not in FACE_BACKENDS:
        raise ValueError(f"face.backend must be one of {FACE_BACKENDS}, got {face.backend!r}.")
    if face.backend == "tiny":
        from id_patch.testing import tiny_face_encoder

        return tiny_face_encoder(seed=face.seed, face_dim=face_dim)
    from id_patch.preprocessing import ArcFaceEncoder, DlibFaceEncoder

    if face.backend == "dlib":
        return DlibFaceEncoder(face_dim=face_dim, seed=face.seed, threshold=face.threshold, upsample=face.upsample)
    if face.arcface_weights is None:
        raise ValueError("face.backend='arcface' needs face.arcface_weights (a local IR-SE-50 checkpoint).")
    encoder = ArcFaceEncoder(weights=face.arcface_weights, channel_order=face.channel_order, device=device)
    if encoder.embedding_dim != face_dim:
        raise ValueError(f"ArcFace gives {encoder.embedding_dim}-d embeddings; the ID projector expects {face_dim}.")
    return encoder


def generate(
    pipe: IDPatchPipeline,
    config: GenerateConfig,
    face_images: Sequence[ImageLike] | None = None,
    face_embeds: torch.Tensor | np.ndarray | None = None,
    face_locations: torch.Tensor | np.ndarray | Sequence[Sequence[float]] | None = None,
    keypoints: torch.Tensor | np.ndarray | None = None,
    pose_image: ImageLike | None = None,
    face_encoder: FaceEncoder | None = None,
) -> IDPatchPipelineOutput:
    """Run ``pipe`` with the prompt and sampling settings of ``config`` (PIL outputs).

    The generator lives on the pipeline's device, as upstream (``torch.Generator(device).manual_seed(seed)``).

    Args:
        pipe (`IDPatchPipeline`): from `build_pipeline`.
        config (`GenerateConfig`): prompt and sampling settings.
        face_images, face_embeds, face_locations, keypoints, pose_image, face_encoder: as in
            ``IDPatchPipeline.__call__``.

    Returns:
        `IDPatchPipelineOutput`: PIL images and condition images.
    """
    import torch

    sampling = config.sampling
    generator = torch.Generator(device=pipe._execution_device).manual_seed(sampling.seed)
    return pipe(
        config.prompt,
        face_embeds=face_embeds,
        face_images=face_images,
        face_locations=face_locations,
        keypoints=keypoints,
        pose_image=pose_image,
        face_encoder=face_encoder,
        id_injection_ratio=sampling.id_injection_ratio,
        height=sampling.height,
        width=sampling.width,
        num_inference_steps=sampling.num_inference_steps,
        guidance_scale=sampling.guidance_scale,
        negative_prompt=config.negative_prompt,  # "" is encoded as the empty string, as the authors do (not zeros)
        controlnet_conditioning_scale=sampling.controlnet_conditioning_scale,
        generator=generator,
        output_type="pil",
    )
