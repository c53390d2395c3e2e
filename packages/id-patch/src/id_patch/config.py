"""The generation configuration (shipped ``configs/generate/tiny.yaml`` and ``sdxl.yaml``) and what it builds.

Load with ``genblocks.cli.load_command_config(GenerateConfig, "id_patch", "generate", "sdxl", ["sampling.seed=7"])``; then
`build_pipeline`, `build_face_encoder` and `generate` do the rest, so a command line stays thin. The spec's
[unverified] values are fields here with the paper's defaults (spec id-patch §5, §8): Euler from the base model, 50
steps, CFG 5.0 (5.5 in upstream's demo), ControlNet scale 0.8, ID-injection ratio 0.8, seed 1234;
``model.id_patch.{proj_type, num_tokens, patch_size, cond_clamp, face_anchor}`` and ``face.channel_order``.
Heavy modules are imported inside the builders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from id_patch.modeling_id_patch import IDPatchConfig

if TYPE_CHECKING:
    from id_patch.condition import ImageLike
    from id_patch.pipeline_id_patch import IDPatchPipeline, IDPatchPipelineOutput
    from id_patch.preprocessing import FaceEncoder

__all__ = [
    "FaceSection",
    "GenerateConfig",
    "PipelineSection",
    "SamplingSection",
    "build_face_encoder",
    "build_pipeline",
    "generate",
]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
FACE_BACKENDS = ("dlib", "arcface", "tiny")
UPSTREAM_NEGATIVE_PROMPT = (
    "nude, worst quality, low quality, normal quality, nsfw, abstract, glitch, deformed, mutated, ugly, disfigured, "
    "text, watermark, bad hands, error, jpeg artifacts, blurry, missing fingers"
)
"""The negative prompt of upstream's ``demo.py``."""


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


@dataclass
class GenerateConfig:
    """``id-patch generate --config ...``.

    Args:
        model (`PipelineSection`): the pipeline's parts.
        face (`FaceSection`): the face encoder.
        sampling (`SamplingSection`): the call's settings.
        prompt (`str`): the text.
        negative_prompt (`str`): the negative text (upstream demo's by default; ``""`` for none).
        out_dir (`str`): where a command line writes its outputs.
    """

    model: PipelineSection = field(default_factory=PipelineSection)
    face: FaceSection = field(default_factory=FaceSection)
    sampling: SamplingSection = field(default_factory=SamplingSection)
    prompt: str = "a group photo of friends smiling at the camera"
    negative_prompt: str = UPSTREAM_NEGATIVE_PROMPT
    out_dir: str = "outputs/id-patch/generate"


def _dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, got {name!r}.")
    return DTYPES[name]


def build_pipeline(model: PipelineSection) -> IDPatchPipeline:
    """Assemble the pipeline a `PipelineSection` describes, on its device and dtype.

    Args:
        model (`PipelineSection`): the section.

    Returns:
        `IDPatchPipeline`: progress bar disabled.
    """
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
        negative_prompt=config.negative_prompt or None,
        controlnet_conditioning_scale=sampling.controlnet_conditioning_scale,
        generator=generator,
        output_type="pil",
    )
