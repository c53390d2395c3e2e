"""``XPortraitPipeline``: one source portrait + driving frames -> an animated video (X-Portrait spec §5).

Paper: arXiv 2403.15931 (Xie et al., SIGGRAPH 2024). Upstream: bytedance/X-Portrait@59f002f45a07ddffdbbea6b3d421abf9db292dbd
``core/test_xportrait.py`` (``visualize_mm``: start latents ``q_sample(encode(source), t=999)``, DDIM with
``unconditional_guidance_scale=5`` in ``controlnet_important`` mode or, with ``--control_mode balance``, an
unconditional dict that keeps ``image_control`` and zero hints, read by ``DDIMSampler.p_sample_ddim`` of
``model_lib/ControlNet/ldm/models/diffusion/ddim.py`` as one doubled batch without ``uc=True``), windows with ``num_overlap=num_mix=4``, VAE in
chunks of ``vae_bs=16``, fp16 autocast) and ``x_portrait_data_prep`` (square resize to 512, affine alignment to the
source, local patches from the aligned frames).

The anatomy follows diffusers' ``StableDiffusionControlNetPipeline``: typed components, ``check_inputs``, numbered
steps in ``__call__``, ``generator`` / ``output_type`` / ``return_dict`` and a dataclass output. The blocks are
genblocks': ``ldm_ddim_scheduler`` / ``set_ldm_timesteps``, ``q_sample_start``, ``sliding_windows`` +
``denoise_windows``, ``plain_cfg``, ``vae_decode_chunked``. The source is encoded once and its VAE posterior sampled
once per frame, like upstream's ``get_first_stage_encoding`` on one copy of the source per frame (``vae_sample``; one
shared sample is the cheaper option). Memory: with one shared sample the reference bank is written once per step and
shared by every window (per frame, it is written per window, as upstream), each window runs its conditional and
unconditional passes one after the other (not as a doubled batch), the VAE works in chunks, attention is PyTorch SDPA (diffusers' default processors) or sliced
(:meth:`XPortraitPipeline.enable_attention_slicing`), and the pipeline runs in fp16/bf16 with ``.to(dtype)``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers.image_processor import VaeImageProcessor
from diffusers.models.attention_processor import Attention, AttnProcessor2_0, SlicedAttnProcessor
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.models.controlnets.controlnet import ControlNetModel
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextModel, CLIPTokenizer

from genblocks.devices import resolve_device, torch_dtype
from genblocks.diffusion import (
    ReferenceAttnProcessor,
    denoise_windows,
    encode_clip_prompt,
    plain_cfg,
    q_sample_start,
    sliding_windows,
    vae_decode_chunked,
)
from genblocks.diffusion.reference_attention import FusionBlocks
from genblocks.diffusion.sampling import set_ldm_timesteps
from genblocks.faces import FaceAnalyzer
from x_portrait.config import XPortraitConfig
from x_portrait.modeling_x_portrait import (
    XPortraitComponents,
    XPortraitModel,
    XPortraitMotionModules,
    build_base_components,
    build_random_components,
)
from x_portrait.preprocessing import (
    ImageLike,
    alignment_matrix,
    best_frame_index,
    detect_landmarks,
    frames_to_tensor,
    load_face_analyzer,
    local_patch_images,
    resize_landmarks,
    transform_landmarks,
    warp_affine,
)

__all__ = [
    "PreparedInputs",
    "XPortraitPipeline",
    "XPortraitPipelineOutput",
    "load_components",
    "load_pipeline",
    "resolve_device",
    "sampling_options",
]

logger = logging.getLogger(__name__)

OutputType = Literal["pil", "np", "pt", "latent"]
_OUTPUT_TYPES = ("pil", "np", "pt", "latent")
GuidanceMode = Literal["controlnet_important", "balance"]
_GUIDANCE_MODES = ("controlnet_important", "balance")
VaeSample = Literal["per_frame", "shared"]
_VAE_SAMPLES = ("per_frame", "shared")


@dataclass
class XPortraitPipelineOutput(BaseOutput):
    """Output of :class:`XPortraitPipeline`.

    Args:
        frames (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`): The animation: F PIL images, an array of
            shape (F, H, W, 3) in [0, 1] (``"np"``), a tensor of shape (F, 3, H, W) in [0, 1] (``"pt"``) or the
            latents (F, 4, h, w) (``"latent"``).
        driving_frames (`torch.Tensor` of shape `(F, 3, H, W)`): The (aligned) driving frames the motion ControlNet
            read, in [0, 1].
        local_images (`torch.Tensor` of shape `(F, 3, H, W)`): The local ControlNet's patch images, in [0, 1].
        best_frame (`int`, *optional*): The driving frame used for the alignment (`None` without alignment).
        alignment (`np.ndarray` of shape `(2, 3)`, *optional*): The affine map from driving to source pixels.
    """

    frames: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    driving_frames: torch.Tensor
    local_images: torch.Tensor
    best_frame: int | None = None
    alignment: np.ndarray | None = None


@dataclass
class PreparedInputs:
    """The tensors one X-Portrait run reads, built by :meth:`XPortraitPipeline.prepare_inputs`.

    Args:
        source (`torch.Tensor` of shape `(1, 3, S, S)`): The source portrait in [-1, 1].
        driving (`torch.Tensor` of shape `(F, 3, S, S)`): The aligned driving frames in [-1, 1].
        local (`torch.Tensor` of shape `(F, 3, S, S)`): The eye/eye/mouth patch images in [-1, 1].
        source_landmarks (`np.ndarray` of shape `(68, 2)`, *optional*): Source landmarks at S.
        driving_landmarks (`np.ndarray` of shape `(F, 68, 2)`, *optional*): Driving landmarks at S, after the
            alignment (NaN for frames without a face).
        best_frame (`int`, *optional*): The alignment's reference frame.
        alignment (`np.ndarray` of shape `(2, 3)`, *optional*): Driving -> source affine map at S.
    """

    source: torch.Tensor
    driving: torch.Tensor
    local: torch.Tensor
    source_landmarks: np.ndarray | None = None
    driving_landmarks: np.ndarray | None = None
    best_frame: int | None = None
    alignment: np.ndarray | None = None


class _SlicedAttnProcessor(SlicedAttnProcessor):
    """diffusers' ``SlicedAttnProcessor`` accepting (and ignoring) ``temb``, so a reference processor can wrap it."""

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask)


def _resize(frames: torch.Tensor, size: int) -> torch.Tensor:
    if frames.shape[-2:] == (size, size):
        return frames
    return F.interpolate(frames, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


class XPortraitPipeline(DiffusionPipeline):
    """X-Portrait portrait animation: a frozen SD1.5 UNet reads the source's appearance from a reference UNet's bank,
    motion from a ControlNet on the raw (aligned) driving frame plus a local ControlNet on eye/eye/mouth patches, and
    keeps frames coherent with temporal modules run over overlapping windows.

    Building the pipeline wires the components (see :class:`~x_portrait.modeling_x_portrait.XPortraitModel`): bank
    processors on ``reference_unet`` and ``unet``, temporal hooks on ``unet``. Components are shared, not copied.

    Args:
        vae (`AutoencoderKL`): SD KL autoencoder (scale 0.18215).
        text_encoder (`CLIPTextModel`): CLIP text encoder; X-Portrait's prompt is empty.
        tokenizer (`CLIPTokenizer`): Its tokenizer.
        unet (`UNet2DConditionModel`): The frozen denoising UNet.
        reference_unet (`UNet2DConditionModel`): The appearance reference UNet (same architecture).
        motion_controlnet (`ControlNetModel`): ControlNet on the raw driving frame.
        local_controlnet (`ControlNetModel`): ControlNet on the local patch image.
        scheduler (`DDIMScheduler`): DDIM with the LDM preset (``genblocks.diffusion.ldm_ddim_scheduler``).
        motion_modules (`XPortraitMotionModules`, *optional*): Temporal modules; without them frames are denoised
            independently (a stage-1 model).
        patch_size (`int`, defaults to 128): Local patch side at the working resolution (``resolution / 4``).
        landmark_scale (`int`, defaults to 2): Patch centres are rounded at ``resolution / landmark_scale``.
        fusion_blocks (`str`, defaults to `"full"`): Transformer blocks that read the reference bank.
    """

    model_cpu_offload_seq = "text_encoder->reference_unet->motion_controlnet->local_controlnet->unet->vae"
    # The motion modules run inside the UNet through hooks, never through their own forward, so an offload hook on
    # them would not fire: they stay on the execution device.
    _exclude_from_cpu_offload: ClassVar[list[str]] = ["motion_modules"]
    _optional_components: ClassVar[list[str]] = ["motion_modules"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        reference_unet: UNet2DConditionModel,
        motion_controlnet: ControlNetModel,
        local_controlnet: ControlNetModel,
        scheduler: DDIMScheduler,
        motion_modules: XPortraitMotionModules | None = None,
        patch_size: int = 128,
        landmark_scale: int = 2,
        fusion_blocks: FusionBlocks = "full",
    ) -> None:
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            reference_unet=reference_unet,
            motion_controlnet=motion_controlnet,
            local_controlnet=local_controlnet,
            scheduler=scheduler,
            motion_modules=motion_modules,
        )
        self.register_to_config(patch_size=patch_size, landmark_scale=landmark_scale, fusion_blocks=fusion_blocks)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        for name, net in (("motion_controlnet", motion_controlnet), ("local_controlnet", local_controlnet)):
            factor = 2 ** (len(net.config.conditioning_embedding_out_channels) - 1)
            if factor != self.vae_scale_factor:
                raise ValueError(
                    f"{name} reads hints {factor}x the latent size but the VAE downsamples by {self.vae_scale_factor};"
                    " build the ControlNets with as many hint-encoder widths as the VAE has levels"
                )
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        self.model = XPortraitModel(
            unet, reference_unet, motion_controlnet, local_controlnet, motion_modules, fusion_blocks=fusion_blocks
        )

    # ----------------------------------------------------------------------------------------------------- memory
    def enable_attention_slicing(self, slice_size: int | Literal["auto", "max"] | None = "auto") -> None:
        """Compute attention in slices of ``slice_size`` (batch x head) rows, in all UNets and ControlNets.

        Reference-bank processors keep working: they wrap the sliced processor. ``"auto"`` uses half the heads of each
        layer, ``"max"`` one row at a time.
        """
        if slice_size is None:
            self.disable_attention_slicing()
            return
        for module in self._attention_modules():
            self._set_attention_base(module, slice_size)

    def disable_attention_slicing(self) -> None:
        """Back to PyTorch scaled-dot-product attention (``AttnProcessor2_0``)."""
        for module in self._attention_modules():
            self._set_attention_base(module, None)

    def _attention_modules(self) -> list[torch.nn.Module]:
        return [self.unet, self.reference_unet, self.motion_controlnet, self.local_controlnet]

    @staticmethod
    def _set_attention_base(module: torch.nn.Module, slice_size: int | str | None) -> None:
        processors = dict(module.attn_processors)
        for name, processor in processors.items():
            if slice_size is None:
                base: Any = AttnProcessor2_0()
            else:
                attention = module.get_submodule(name.removesuffix(".processor"))
                size = (
                    max(attention.heads // 2, 1) if slice_size == "auto" else 1 if slice_size == "max" else slice_size
                )
                base = _SlicedAttnProcessor(int(size))
            if isinstance(processor, ReferenceAttnProcessor):
                processor.base = base
            else:
                processors[name] = base
        module.set_attn_processor(processors)

    # ----------------------------------------------------------------------------------------------------- inputs
    @property
    def default_resolution(self) -> int:
        """The UNet's native image side: ``unet.config.sample_size * vae_scale_factor``."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    def check_inputs(
        self,
        num_frames: int,
        source_landmarks: np.ndarray | None,
        driving_landmarks: np.ndarray | None,
        best_frame: int | None,
        num_inference_steps: int,
        guidance_scale: float,
        guidance_mode: str,
        vae_sample: str,
        window_size: int,
        window_overlap: int,
        start_timestep: int,
        vae_chunk_size: int,
        resolution: int,
        output_type: str,
        latents: torch.Tensor | None,
    ) -> None:
        """Validate the call's arguments; every error names the argument and what was expected."""
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        if guidance_mode not in _GUIDANCE_MODES:
            raise ValueError(f"guidance_mode must be one of {_GUIDANCE_MODES}, got {guidance_mode!r}")
        if vae_sample not in _VAE_SAMPLES:
            raise ValueError(f"vae_sample must be one of {_VAE_SAMPLES}, got {vae_sample!r}")
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        if not 0 <= window_overlap < window_size:
            raise ValueError(f"window_overlap must be in [0, window_size={window_size}), got {window_overlap}")
        if self.motion_modules is not None and min(window_size, num_frames) > self.motion_modules.max_frames:
            raise ValueError(
                f"window_size {window_size} exceeds the temporal modules' max_len {self.motion_modules.max_frames}"
            )
        train_steps = self.scheduler.config.num_train_timesteps
        if not 0 <= start_timestep < train_steps:
            raise ValueError(f"start_timestep must be in [0, {train_steps}), got {start_timestep}")
        if vae_chunk_size < 1:
            raise ValueError(f"vae_chunk_size must be >= 1, got {vae_chunk_size}")
        multiple = self.vae_scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)
        if resolution < multiple or resolution % multiple:
            raise ValueError(f"resolution must be a positive multiple of {multiple}, got {resolution}")
        if resolution <= self.config.patch_size:
            raise ValueError(f"resolution {resolution} must exceed the local patch size {self.config.patch_size}")
        if output_type not in _OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {_OUTPUT_TYPES}, got {output_type!r}")
        if source_landmarks is not None and np.shape(source_landmarks) != (68, 2):
            raise ValueError(f"source_landmarks must have shape (68, 2), got {np.shape(source_landmarks)}")
        if driving_landmarks is not None and np.shape(driving_landmarks) != (num_frames, 68, 2):
            raise ValueError(
                f"driving_landmarks must have shape ({num_frames}, 68, 2) for {num_frames} driving frames, "
                f"got {np.shape(driving_landmarks)}"
            )
        if best_frame is not None and not 0 <= best_frame < num_frames:
            raise ValueError(f"best_frame must index a driving frame in [0, {num_frames}), got {best_frame}")
        side = resolution // self.vae_scale_factor
        latent_shape = (num_frames, self.unet.config.in_channels, side, side)
        if latents is not None and tuple(latents.shape) != latent_shape:
            raise ValueError(f"latents must have shape {latent_shape}, got {tuple(latents.shape)}")

    def prepare_inputs(
        self,
        source_image: ImageLike,
        driving_frames: ImageLike | Sequence[ImageLike],
        resolution: int,
        source_landmarks: np.ndarray | None = None,
        driving_landmarks: np.ndarray | None = None,
        face_analyzer: FaceAnalyzer | None = None,
        align_driving: bool = True,
        best_frame: int | None = None,
        local_patches: bool = True,
    ) -> PreparedInputs:
        """Resize to ``resolution``, find landmarks, align the driving frames to the source, build the patch images.

        Landmarks not given are detected with ``face_analyzer`` (the dlib default when `None`) on the frames as given;
        given landmarks are in the pixel coordinates of the frames as given. See :meth:`__call__` for the arguments.
        """
        source = frames_to_tensor(source_image, "source_image")
        if source.shape[0] != 1:
            raise ValueError(f"source_image must be one image, got {source.shape[0]} frames")
        driving = frames_to_tensor(driving_frames, "driving_frames")
        size = (resolution, resolution)
        analyzer = face_analyzer
        src_lm = drv_lm = None
        if align_driving:
            if source_landmarks is None:
                analyzer = analyzer if analyzer is not None else load_face_analyzer()
                source_landmarks = detect_landmarks(source, analyzer, "source_image", require=True)[0]
            src_lm = resize_landmarks(source_landmarks, tuple(source.shape[-2:]), size)
        if align_driving or local_patches:
            if driving_landmarks is None:
                analyzer = analyzer if analyzer is not None else load_face_analyzer()
                driving_landmarks = detect_landmarks(driving, analyzer, "driving_frames")
            drv_lm = resize_landmarks(driving_landmarks, tuple(driving.shape[-2:]), size)
        source = _resize(source, resolution) * 2 - 1
        driving = _resize(driving, resolution) * 2 - 1
        matrix = None
        if align_driving and src_lm is not None and drv_lm is not None:
            best_frame = best_frame_index(src_lm, drv_lm) if best_frame is None else best_frame
            if not np.isfinite(drv_lm[best_frame]).all():
                raise ValueError(f"driving_frames[{best_frame}] (best_frame) has no detected face to align with")
            matrix = alignment_matrix(src_lm, drv_lm[best_frame])
            driving = warp_affine(driving, matrix, fill=-1.0)
            drv_lm = transform_landmarks(drv_lm, matrix)
            logger.info("aligned %d driving frames to the source with best frame %d", len(driving), best_frame)
        else:
            best_frame = None
        local = local_patch_images(
            driving, drv_lm if local_patches else None, self.config.patch_size, self.config.landmark_scale
        )
        return PreparedInputs(source, driving, local, src_lm, drv_lm, best_frame, matrix)

    def encode_prompt(self, prompt: str, device: torch.device) -> torch.Tensor:
        """CLIP context of ``prompt``: (1, T, D)."""
        return encode_clip_prompt(self.tokenizer, self.text_encoder, prompt, device)

    @torch.no_grad()
    def encode_source(
        self, source: torch.Tensor, num_samples: int = 1, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Scaled VAE latents of the source: one encoder pass, ``num_samples`` independent posterior samples.

        Upstream (``get_cond_control`` and ``visualize_mm``) encodes one copy of the source per frame and calls
        ``get_first_stage_encoding``, i.e. ``DiagonalGaussianDistribution.sample()``: identical images, a different
        sample per frame. Sampling ``num_samples`` times from the posterior of one pass gives the same draws as
        encoding ``num_samples`` copies with the same generator, at the cost of one encoder pass.

        Args:
            source (`torch.Tensor` of shape `(1, 3, H, W)`): The source in [-1, 1].
            num_samples (`int`, defaults to 1): Posterior samples to draw.
            generator (`torch.Generator`, *optional*): Seeds the samples.

        Returns:
            `torch.Tensor` of shape `(num_samples, 4, h, w)`: ``(sample - shift_factor) * scaling_factor``.
        """
        if source.ndim != 4 or source.shape[0] != 1:
            raise ValueError(f"source must be one image (1, 3, H, W), got {tuple(source.shape)}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        vae: Any = self.vae  # a registered module: diffusers sets the attribute in register_modules
        posterior = vae.encode(source.to(dtype=vae.dtype)).latent_dist
        repeated = DiagonalGaussianDistribution(posterior.parameters.expand(num_samples, -1, -1, -1))
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return (repeated.sample(generator) - shift) * vae.config.scaling_factor

    def prepare_latents(
        self,
        source_latents: torch.Tensor,
        num_frames: int,
        start_timestep: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Start latents ``q_sample(encode(source), start_timestep)`` with independent noise per frame: (F, 4, h, w).

        ``source_latents`` is (1, 4, h, w) (one sample, shared) or (F, 4, h, w) (one sample per frame)."""
        clean = source_latents.expand(num_frames, -1, -1, -1)
        noise = randn_tensor(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
        return q_sample_start(clean, self.scheduler, timestep=start_timestep, noise=noise)

    # ----------------------------------------------------------------------------------------------------- call
    @torch.no_grad()
    def __call__(
        self,
        source_image: ImageLike,
        driving_frames: ImageLike | Sequence[ImageLike],
        source_landmarks: np.ndarray | None = None,
        driving_landmarks: np.ndarray | None = None,
        face_analyzer: FaceAnalyzer | None = None,
        align_driving: bool = True,
        best_frame: int | None = None,
        local_patches: bool = True,
        num_inference_steps: int = 30,
        guidance_scale: float = 5.0,
        guidance_mode: GuidanceMode = "controlnet_important",
        vae_sample: VaeSample = "per_frame",
        eta: float = 0.0,
        ldm_timesteps: bool = True,
        start_timestep: int = 999,
        window_size: int = 16,
        window_overlap: int = 4,
        random_window_offset: bool = True,
        vae_chunk_size: int = 16,
        controlnet_scales: tuple[float, float] = (1.0, 1.0),
        use_reference: bool = True,
        prompt: str = "",
        resolution: int | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: OutputType = "pil",
        return_dict: bool = True,
    ) -> XPortraitPipelineOutput | tuple[Any, ...]:
        """Animate ``source_image`` with the motion of ``driving_frames``.

        Args:
            source_image: The portrait: a PIL image, a uint8 array (H, W, 3) or a float tensor (3, H, W) in [0, 1].
                Resized (not cropped) to ``resolution``.
            driving_frames: F >= 1 frames of one size: PIL images, a uint8 array (F, H, W, 3) or a float tensor
                (F, 3, H, W) in [0, 1]. One frame drives a single image.
            source_landmarks (`np.ndarray` of shape `(68, 2)`, *optional*): Source landmarks in ``source_image``'s
                pixels; detected with ``face_analyzer`` when needed and not given.
            driving_landmarks (`np.ndarray` of shape `(F, 68, 2)`, *optional*): Driving landmarks in the driving
                frames' pixels, NaN rows for frames without a face.
            face_analyzer (`FaceAnalyzer`, *optional*): 68-point landmark source; defaults to dlib
                (``pip install x-portrait[face]``) when landmarks are needed and missing.
            align_driving (`bool`, defaults to `True`): Apply the 3-point affine alignment (spec §5.3).
            best_frame (`int`, *optional*): Alignment frame; `None` picks the closest one to the source (L1).
            local_patches (`bool`, defaults to `True`): Build the local hint from landmarks (else it is all -1).
            num_inference_steps (`int`, defaults to 30): DDIM steps.
            guidance_scale (`float`, defaults to 5.0): CFG scale, ``eps_u + scale * (eps_c - eps_u)``; 1 skips the
                unconditional pass.
            guidance_mode (`str`, defaults to `"controlnet_important"`): What the unconditional pass ``eps_u`` keeps,
                upstream's ``--control_mode``. ``"controlnet_important"``: the bare UNet (empty text, no bank, no
                ControlNets). ``"balance"``: the full model with empty text, the reference bank and both ControlNets
                fed all-zero hints (mid-grey in [-1, 1]), so guidance pushes along the motion only, not the
                appearance. Temporal modules run in both passes either way. Both passes read the bank written with
                ``prompt``'s context (upstream writes the unconditional half's with the empty text: the same bank for
                X-Portrait's empty prompt).
            vae_sample (`str`, defaults to `"per_frame"`): How the source's VAE posterior is sampled. ``"per_frame"``
                (upstream): every frame gets its own sample, both for the reference UNet's clean input and,
                independently, for the start latents, so the reference UNet runs per window on the window's frames.
                ``"shared"``: one sample serves every frame and both uses, and the reference UNet runs once per step.
            eta (`float`, defaults to 0.0): DDIM eta.
            ldm_timesteps (`bool`, defaults to `True`): LDM's DDIM timesteps (31 calls for 30 steps).
            start_timestep (`int`, defaults to 999): t of the start latents ``q_sample(encode(source), t)``.
            window_size (`int`, defaults to 16): Frames per temporal window.
            window_overlap (`int`, defaults to 4): Frames shared by consecutive windows (averaged).
            random_window_offset (`bool`, defaults to `True`): New random window offset (with wrap-around) each step.
            vae_chunk_size (`int`, defaults to 16): Frames per VAE call.
            controlnet_scales (`tuple[float, float]`, defaults to `(1.0, 1.0)`): Motion and local ControlNet scales.
            use_reference (`bool`, defaults to `True`): Read the source's reference bank.
            prompt (`str`, defaults to `""`): Text of the conditional pass (X-Portrait uses the empty prompt).
            resolution (`int`, *optional*): Frame side; defaults to the UNet's native size (512 for SD1.5).
            generator (`torch.Generator`, *optional*): Seeds the source encoding, start noise and window offsets.
            latents (`torch.Tensor` of shape `(F, 4, h, w)`, *optional*): Start latents replacing the q-sample.
            output_type (`str`, defaults to `"pil"`): ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"``.
            return_dict (`bool`, defaults to `True`): Return an :class:`XPortraitPipelineOutput` (else a tuple).

        Returns:
            `XPortraitPipelineOutput` (or a tuple in its field order).
        """
        # 1. Check inputs
        resolution = resolution if resolution is not None else self.default_resolution
        driving_frames = frames_to_tensor(driving_frames, "driving_frames")
        self.check_inputs(
            len(driving_frames), source_landmarks, driving_landmarks, best_frame, num_inference_steps, guidance_scale,
            guidance_mode, vae_sample, window_size, window_overlap, start_timestep, vae_chunk_size, resolution,
            output_type, latents,
        )  # fmt: skip
        device = self._execution_device
        dtype = self.unet.dtype

        # 2. Preprocess: resize, landmarks, alignment, local patches
        inputs = self.prepare_inputs(
            source_image, driving_frames, resolution, source_landmarks, driving_landmarks, face_analyzer,
            align_driving, best_frame, local_patches,
        )  # fmt: skip
        motion = inputs.driving.to(device=device, dtype=dtype)
        local = inputs.local.to(device=device, dtype=dtype)
        num_frames = motion.shape[0]

        # 3. Encode the prompts: conditional (``prompt``) and unconditional (empty)
        text = self.encode_prompt(prompt, device).to(dtype)
        uncond_text = text if prompt == "" else self.encode_prompt("", device).to(dtype)

        # 4. Timesteps (LDM's DDIM preset)
        if ldm_timesteps:
            timesteps = set_ldm_timesteps(self.scheduler, num_inference_steps, device=device)
        else:
            self.scheduler.set_timesteps(num_inference_steps, device=device)
            timesteps = self.scheduler.timesteps

        # 5. Source latents (the reference UNet's clean input) and start latents; per frame, upstream encodes the
        # source twice (start latents, then the reference), one posterior sample per frame each time
        source = inputs.source.to(device=device)
        per_frame = vae_sample == "per_frame"
        reference_latents = self.encode_source(source, num_frames if per_frame else 1, generator).to(dtype)
        if latents is None:
            start_latents = self.encode_source(source, num_frames, generator).to(dtype) if per_frame else None
            clean = start_latents if start_latents is not None else reference_latents
            latents = self.prepare_latents(clean, num_frames, start_timestep, generator)
        latents = latents.to(device=device, dtype=dtype)

        # 6. Denoising loop: bank once per step (per window with per-frame samples), windows with overlap, CFG per
        # window (``guidance_mode``)
        for step, t in enumerate(self.progress_bar(timesteps)):
            if use_reference and not per_frame:
                self.model.write_reference(reference_latents, t, text)
            windows = [list(range(num_frames))]
            if num_frames > window_size:
                offset = 0
                if random_window_offset:
                    device_of_generator = generator.device if generator is not None else torch.device("cpu")
                    offset = int(torch.randint(num_frames, (1,), generator=generator, device=device_of_generator))
                windows = sliding_windows(num_frames, window_size, window_overlap, offset=offset, wrap=True)

            def predict(chunk: torch.Tensor, frames: list[int], t: torch.Tensor = t) -> torch.Tensor:
                count = len(frames)
                if use_reference and per_frame:  # the bank holds one entry per frame of this window
                    self.model.write_reference(reference_latents[frames], t, text.expand(count, -1, -1))
                eps = self.model(
                    chunk, t, text.expand(count, -1, -1), num_frames=count, motion_image=motion[frames],
                    local_image=local[frames], use_reference=use_reference, controlnet_scales=controlnet_scales,
                )  # fmt: skip
                if guidance_scale == 1.0:
                    return eps
                if guidance_mode == "balance":
                    # upstream's uc dict keeps ``image_control`` and sets both hints to ``zeros_like``
                    eps_uncond = self.model(
                        chunk, t, uncond_text.expand(count, -1, -1), num_frames=count,
                        motion_image=torch.zeros_like(motion[frames]), local_image=torch.zeros_like(local[frames]),
                        use_reference=use_reference, controlnet_scales=controlnet_scales,
                    )  # fmt: skip
                else:
                    eps_uncond = self.model.unconditional(
                        chunk, t, uncond_text.expand(count, -1, -1), num_frames=count
                    )
                return plain_cfg(eps_uncond, eps, guidance_scale)

            noise_pred = denoise_windows(predict, latents, windows, frame_dim=0)
            latents = self.scheduler.step(noise_pred, t, latents, eta=eta, generator=generator).prev_sample
            logger.debug("step %d (t=%d): %d windows", step, int(t), len(windows))
        self.model.clear_reference()

        # 7. Decode in chunks and post-process
        if output_type == "latent":
            frames: Any = latents
        else:
            images = vae_decode_chunked(self.vae, latents, chunk_size=vae_chunk_size)
            frames = self.image_processor.postprocess(images.float(), output_type=output_type)
        self.maybe_free_model_hooks()
        driving_out = ((inputs.driving + 1) / 2).clamp(0, 1)
        local_out = ((inputs.local + 1) / 2).clamp(0, 1)
        if not return_dict:
            return frames, driving_out, local_out, inputs.best_frame, inputs.alignment
        return XPortraitPipelineOutput(frames, driving_out, local_out, inputs.best_frame, inputs.alignment)


def _pipeline_folder(folder: str | None) -> Path:
    path = Path(folder or "")
    if not (path / "model_index.json").is_file():
        raise ValueError(
            f"components.pretrained={folder!r} is not an XPortraitPipeline folder (no model_index.json); write one "
            "with `x-portrait convert` or XPortraitPipeline.save_pretrained"
        )
    return path


def load_components(config: XPortraitConfig, pretrained: str | None = None) -> XPortraitComponents:
    """Components as ``config.components`` (or the ``pretrained`` folder, when given) describes them, in float32.

    Args:
        config (`XPortraitConfig`): ``components.source`` picks random, base SD1.5 or a pipeline folder.
        pretrained (`str`, *optional*): An ``XPortraitPipeline`` folder that overrides ``config.components``.
    """
    source = "pretrained" if pretrained is not None else config.components.source
    if source == "random":
        return build_random_components(config.model, config.random, seed=config.components.seed)
    if source == "base":
        return build_base_components(config.components.base_model, config.model, seed=config.components.seed)
    folder = _pipeline_folder(pretrained if pretrained is not None else config.components.pretrained)
    pipeline = XPortraitPipeline.from_pretrained(folder)
    parts = {name: getattr(pipeline, name) for name in XPortraitComponents.__dataclass_fields__}
    return XPortraitComponents(**parts)


def load_pipeline(config: XPortraitConfig) -> XPortraitPipeline:
    """An ``XPortraitPipeline`` from ``config.components``, on ``components.device`` in ``components.dtype``.

    ``source="random"`` gives an untrained pipeline (for smoke runs and benchmarks): its frames show the plumbing, not
    a portrait.
    """
    device = resolve_device(config.components.device)
    dtype = torch_dtype(config.components.dtype)
    if config.components.source == "pretrained":
        pipeline = XPortraitPipeline.from_pretrained(_pipeline_folder(config.components.pretrained), torch_dtype=dtype)
    else:
        components = load_components(config)
        pipeline = XPortraitPipeline(
            **components.as_dict(),
            patch_size=config.model.patch_size,
            landmark_scale=config.model.landmark_scale,
            fusion_blocks=config.model.fusion_blocks,
        )
        if dtype != torch.float32:
            pipeline.to(dtype=dtype)
    pipeline.to(device)
    if config.inference.attention_slicing is not None:
        pipeline.enable_attention_slicing(config.inference.attention_slicing)
    return pipeline


def sampling_options(config: XPortraitConfig) -> dict[str, Any]:
    """The :meth:`XPortraitPipeline.__call__` keyword arguments that ``config.inference`` and the ControlNet scales of
    ``config.model`` set (``animate`` and ``demo`` pass them; inputs, landmarks and the generator are the caller's)."""
    inference = config.inference
    return {
        "align_driving": inference.align_driving,
        "best_frame": inference.best_frame,
        "local_patches": inference.local_patches,
        "num_inference_steps": inference.num_inference_steps,
        "guidance_scale": inference.guidance_scale,
        "guidance_mode": inference.guidance_mode,
        "vae_sample": inference.vae_sample,
        "eta": inference.eta,
        "ldm_timesteps": inference.ldm_timesteps,
        "start_timestep": inference.start_timestep,
        "window_size": inference.window_size,
        "window_overlap": inference.window_overlap,
        "random_window_offset": inference.random_window_offset,
        "vae_chunk_size": inference.vae_chunk_size,
        "controlnet_scales": (config.model.motion_scale, config.model.local_scale),
        "resolution": config.model.resolution,
    }
