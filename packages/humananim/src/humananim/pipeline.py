"""``HumanAnimPipeline``: one reference image + a pose (and hand-blur) hint sequence -> an animated video (humananim
spec §5).

Paper: arXiv 2409.19580 (no official code). The inference tricks the spec names are [unverified] and each is an argument
with the documented default: initial reference noise (start latents ``q_sample(VAE(reference), 999)``), animation CFG
(the unconditional branch drops the reference bank and the pose ControlNet, MagicAnimate's ``controlnet_important``
style, scale 7.5), overlapping sliding windows of 16 with overlap 4 whose epsilon is averaged per frame (the weights of
each frame sum to 1), the sharpness hint channel set to "sharp" on every hand region, DDIM 25 steps on MagicAnimate's
``linear`` schedule, VAE decoding in chunks. Frames may be non-square (any size that is a multiple of 8 times the UNet's
downsampling, e.g. 512 x 896).

The anatomy follows diffusers' ``StableDiffusionControlNetPipeline``: typed components, ``check_inputs``, numbered
steps in ``__call__``, ``generator`` / ``output_type`` / ``return_dict`` and a dataclass output. The blocks are
genblocks': ``q_sample_start``, ``sliding_windows`` + ``denoise_windows``, ``plain_cfg``, ``vae_encode``,
``vae_decode_chunked``. Memory is bounded by the window: the bank is written once per step, each window runs its
conditional and unconditional passes one after the other, and the VAE works in chunks of ``vae_chunk_size`` frames.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import PIL.Image
import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.controlnets.controlnet import ControlNetModel
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextModel, CLIPTokenizer

from genblocks.devices import resolve_device, torch_dtype
from genblocks.diffusion import (
    denoise_windows,
    encode_clip_prompt,
    plain_cfg,
    q_sample_start,
    sliding_windows,
    vae_decode_chunked,
    vae_encode,
)
from genblocks.diffusion.reference_attention import FusionBlocks
from genblocks.errors import InputError
from humananim.config import POSE_CHANNELS, HumanAnimConfig
from humananim.keypoints import Keypoints, pose_hint
from humananim.modeling import (
    HumanAnimComponents,
    HumanAnimModel,
    HumanAnimMotionModules,
    build_base_components,
    build_random_components,
)

__all__ = [
    "HumanAnimPipeline",
    "HumanAnimPipelineOutput",
    "animation_windows",
    "driving_hints",
    "load_pipeline",
    "sampling_options",
    "set_sharp_hands",
]

logger = logging.getLogger(__name__)

OutputType = Literal["pil", "np", "pt", "latent"]
ImageLike = PIL.Image.Image | np.ndarray | torch.Tensor


@dataclass
class HumanAnimPipelineOutput(BaseOutput):
    """Output of :class:`HumanAnimPipeline`.

    Attributes:
        frames: The animation: F PIL images, a float array (F, H, W, 3), a tensor (F, 3, H, W) in [0, 1] or latents
            (F, 4, h, w), by ``output_type``.
        hints: The hints the ControlNet read, (F, 3 + blur_channels, H, W) (pose in [0, 1], blur channels as given,
            the sharpness channel after ``sharp_hands``).
    """

    frames: Any
    hints: torch.Tensor


def _image_tensor(image: ImageLike, name: str) -> torch.Tensor:
    """A PIL image, a uint8 array (H, W, 3) or a float tensor (3, H, W) in [0, 1] as a float tensor (3, H, W)."""
    if isinstance(image, PIL.Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"{name}: expected an RGB array (H, W, 3), got shape {image.shape}")
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
    if isinstance(image, torch.Tensor):
        if image.ndim == 4 and image.shape[0] == 1:
            image = image[0]
        if image.ndim != 3 or image.shape[0] != 3:
            raise InputError(f"{name}: expected a tensor (3, H, W) in [0, 1], got shape {tuple(image.shape)}")
        return image.float()
    raise InputError(f"{name}: expected a PIL image, an array or a tensor, got {type(image).__name__}")


def animation_windows(num_frames: int, window_size: int, window_overlap: int) -> list[list[int]]:
    """The overlapping windows that cover ``num_frames`` frames: stride ``window_size - window_overlap`` from frame 0,
    the last window aligned to the end (no wrap-around), one window when the sequence fits.

    :func:`genblocks.diffusion.denoise_windows` averages the predictions of the windows holding a frame, so each frame's
    weights sum to 1.
    """
    return sliding_windows(num_frames, window_size, window_overlap, wrap=False)


def set_sharp_hands(hints: torch.Tensor, value: float = 1.0) -> torch.Tensor:
    """Set the sharpness channel (the last of the 3 blur channels) to ``value`` on every hand region (where it is > 0).

    Args:
        hints (`torch.Tensor` of shape `(F, 6, H, W)`): Pose + blur hints (``humananim.config``'s layout).
        value (`float`, defaults to 1.0): The sharpness asked for (1 = sharp).

    Returns:
        `torch.Tensor`: A copy of ``hints`` with channel 5 replaced; hints without blur channels are returned as is.
    """
    if hints.shape[1] == POSE_CHANNELS:
        return hints
    out = hints.clone()
    sharpness = out[:, -1]
    out[:, -1] = torch.where(sharpness > 0, torch.full_like(sharpness, value), sharpness)
    return out


class HumanAnimPipeline(DiffusionPipeline):
    """Human image animation: an SD1.5 UNet reads the reference's appearance from a reference UNet's bank and the
    motion from a pose ControlNet whose hint also carries each hand's motion blur, keeping frames coherent with temporal
    modules run over overlapping windows.

    Building the pipeline wires the components (see :class:`~humananim.modeling.HumanAnimModel`): bank processors on
    ``reference_unet`` and ``unet``, temporal hooks on ``unet``. Components are shared, not copied.

    Args:
        vae (`AutoencoderKL`): SD KL autoencoder (MagicAnimate: ``sd-vae-ft-mse``).
        text_encoder (`CLIPTextModel`): CLIP text encoder; the prompt is empty by default.
        tokenizer (`CLIPTokenizer`): Its tokenizer.
        unet (`UNet2DConditionModel`): The denoising UNet.
        reference_unet (`UNet2DConditionModel`): The appearance reference UNet (same architecture).
        controlnet (`ControlNetModel`): The pose ControlNet (``3 + blur_channels`` hint channels).
        scheduler (`DDIMScheduler`): DDIM on the model's beta schedule (``humananim.modeling.humananim_scheduler``).
        motion_modules (`HumanAnimMotionModules`, *optional*): Temporal modules; without them frames are denoised
            independently (an image-stage model).
        fusion_blocks (`str`, defaults to `"midup"`): Transformer blocks that read the reference bank.
    """

    # DiffusionPipeline declares these as untyped instance attributes set to None / []; subclasses set them on the class.
    model_cpu_offload_seq = "text_encoder->reference_unet->controlnet->unet->vae"  # type: ignore[assignment]
    # The motion modules run inside the UNet through hooks, never through their own forward: an offload hook on them
    # would not fire, so they stay on the execution device.
    _exclude_from_cpu_offload: ClassVar[list[str]] = ["motion_modules"]  # type: ignore[misc]
    _optional_components: ClassVar[list[str]] = ["motion_modules"]  # type: ignore[misc]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        reference_unet: UNet2DConditionModel,
        controlnet: ControlNetModel,
        scheduler: DDIMScheduler,
        motion_modules: HumanAnimMotionModules | None = None,
        fusion_blocks: FusionBlocks = "midup",
    ) -> None:
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            reference_unet=reference_unet,
            controlnet=controlnet,
            scheduler=scheduler,
            motion_modules=motion_modules,
        )
        self.register_to_config(fusion_blocks=fusion_blocks)
        self.vae_scale_factor = 2 ** (len(vae.config["block_out_channels"]) - 1)
        factor = 2 ** (len(controlnet.config["conditioning_embedding_out_channels"]) - 1)
        if factor != self.vae_scale_factor:
            raise InputError(
                f"controlnet: reads hints {factor}x the latent size but the VAE downsamples by {self.vae_scale_factor};"
                " build it with as many hint-encoder widths as the VAE has levels"
            )
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        self.model = HumanAnimModel(unet, reference_unet, controlnet, motion_modules, fusion_blocks=fusion_blocks)

    @property
    def size_multiple(self) -> int:
        """Frame sides must be multiples of this: the VAE factor times the UNet's downsampling."""
        levels = len(self.unet.config["block_out_channels"])
        return self.vae_scale_factor * 2 ** (levels - 1)

    @property
    def max_window(self) -> int | None:
        """The most frames one window may hold (the temporal modules' position table), or `None` without them."""
        return None if self.motion_modules is None else self.motion_modules.max_frames

    def check_inputs(
        self,
        reference: torch.Tensor,
        pose_images: torch.Tensor,
        blur_maps: torch.Tensor | None,
        num_inference_steps: int,
        guidance_scale: float,
        uncond_drops: Sequence[str],
        window_size: int,
        window_overlap: int,
        start_timestep: int,
        vae_chunk_size: int,
        output_type: str,
        latents: torch.Tensor | None,
    ) -> None:
        """Raise :class:`~genblocks.errors.InputError` naming the first argument that does not fit."""
        if pose_images.ndim != 4 or pose_images.shape[1] != POSE_CHANNELS or pose_images.shape[0] < 1:
            raise InputError(
                f"pose_images: expected rendered poses (F >= 1, 3, H, W) in [0, 1], got {tuple(pose_images.shape)}"
            )
        num_frames, _, height, width = pose_images.shape
        multiple = self.size_multiple
        if height % multiple or width % multiple:
            raise InputError(
                f"pose_images: frame size {height}x{width} must be a multiple of {multiple} on both sides"
            )
        blur_channels = int(self.controlnet.config["conditioning_channels"]) - POSE_CHANNELS
        if blur_maps is not None:
            expected = (num_frames, blur_channels, height, width)
            if blur_channels == 0 or tuple(blur_maps.shape) != expected:
                raise InputError(f"blur_maps: expected {expected} (dx, dy, sharpness), got {tuple(blur_maps.shape)}")
        if num_inference_steps < 1:
            raise InputError(f"num_inference_steps: expected >= 1, got {num_inference_steps}")
        if guidance_scale < 0:
            raise InputError(f"guidance_scale: expected >= 0, got {guidance_scale}")
        if not uncond_drops or not set(uncond_drops) <= {"ref", "pose"}:
            raise InputError(f"uncond_drops: expected a non-empty subset of ['ref', 'pose'], got {list(uncond_drops)}")
        if window_size < 1 or not 0 <= window_overlap < window_size:
            raise InputError(
                f"window_size / window_overlap: expected window_size >= 1 and 0 <= overlap < window_size, got "
                f"{window_size} / {window_overlap}"
            )
        if self.max_window is not None and min(window_size, num_frames) > self.max_window:
            raise InputError(
                f"window_size: {window_size} frames exceed the temporal modules' position table ({self.max_window})"
            )
        if not 0 <= start_timestep < self.scheduler.config["num_train_timesteps"]:
            raise InputError(f"start_timestep: expected a training timestep, got {start_timestep}")
        if vae_chunk_size < 1:
            raise InputError(f"vae_chunk_size: expected >= 1, got {vae_chunk_size}")
        if output_type not in ("pil", "np", "pt", "latent"):
            raise InputError(f"output_type: expected pil, np, pt or latent, got {output_type!r}")
        latent_shape = (num_frames, 4, height // self.vae_scale_factor, width // self.vae_scale_factor)
        if latents is not None and tuple(latents.shape) != latent_shape:
            raise InputError(f"latents: expected {latent_shape}, got {tuple(latents.shape)}")
        if reference.ndim != 3 or reference.shape[0] != 3:
            raise InputError(f"reference_image: expected an RGB image, got shape {tuple(reference.shape)}")

    def prepare_hints(
        self, pose_images: torch.Tensor, blur_maps: torch.Tensor | None, sharp_hands: bool
    ) -> torch.Tensor:
        """The ControlNet hints (F, 3 + blur_channels, H, W): poses, then the blur maps (zeros when not given), the
        sharpness channel set to 1 on the hand regions when ``sharp_hands``."""
        blur_channels = int(self.controlnet.config["conditioning_channels"]) - POSE_CHANNELS
        if blur_channels == 0:
            return pose_images
        if blur_maps is None:
            blur_maps = pose_images.new_zeros(pose_images.shape[0], blur_channels, *pose_images.shape[2:])
        hints = torch.cat([pose_images, blur_maps.to(pose_images)], dim=1)
        return set_sharp_hands(hints) if sharp_hands else hints

    def encode_prompt(self, prompt: str, device: torch.device) -> torch.Tensor:
        """CLIP context (1, T, D) of ``prompt``."""
        return encode_clip_prompt(self.tokenizer, self.text_encoder, prompt, device=device)

    def prepare_latents(
        self,
        reference_latents: torch.Tensor,
        num_frames: int,
        reference_noise_init: bool,
        start_timestep: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Start latents (F, 4, h, w): ``q_sample(reference_latents, start_timestep)`` with independent noise per frame
        (initial reference noise), or pure noise scaled by the scheduler's ``init_noise_sigma``."""
        clean = reference_latents.expand(num_frames, -1, -1, -1)
        noise = randn_tensor(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
        if reference_noise_init:
            return q_sample_start(clean, self.scheduler, timestep=start_timestep, noise=noise)
        return noise * self.scheduler.init_noise_sigma

    @torch.no_grad()
    def __call__(
        self,
        reference_image: ImageLike,
        pose_images: torch.Tensor,
        blur_maps: torch.Tensor | None = None,
        num_inference_steps: int = 25,
        guidance_scale: float = 7.5,
        uncond_drops: Sequence[str] = ("ref", "pose"),
        eta: float = 0.0,
        reference_noise_init: bool = True,
        start_timestep: int = 999,
        window_size: int = 16,
        window_overlap: int = 4,
        sharp_hands: bool = True,
        vae_chunk_size: int = 16,
        controlnet_scale: float = 1.0,
        prompt: str = "",
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: OutputType = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, torch.Tensor, dict[str, Any]], dict[str, Any]] | None = None,
    ) -> HumanAnimPipelineOutput | tuple[Any, ...]:
        """Animate ``reference_image`` with the poses ``pose_images`` (and the hands' ``blur_maps``).

        Args:
            reference_image: The person: a PIL image, a uint8 array (H', W', 3) or a float tensor (3, H', W') in
                [0, 1]; resized (not cropped) to the pose frames' size H x W.
            pose_images (`torch.Tensor` of shape `(F, 3, H, W)`): Rendered poses in [0, 1] (skeleton or DensePose,
                as the ControlNet was trained); H and W set the output size (non-square allowed).
            blur_maps (`torch.Tensor` of shape `(F, 3, H, W)`, *optional*): Hand motion-blur channels (dx, dy,
                sharpness; ``humananim.config``'s layout); `None` gives zeros (no hand information).
            num_inference_steps (`int`, defaults to 25): DDIM steps.
            guidance_scale (`float`, defaults to 7.5): Animation-CFG scale ``eps_u + s (eps_c - eps_u)``; 1 skips the
                unconditional pass.
            uncond_drops (`Sequence[str]`, defaults to `("ref", "pose")`): What the unconditional pass leaves out.
            eta (`float`, defaults to 0.0): DDIM eta.
            reference_noise_init (`bool`, defaults to `True`): Start from the noised reference latent.
            start_timestep (`int`, defaults to 999): t of that start.
            window_size (`int`, defaults to 16): Frames per temporal window.
            window_overlap (`int`, defaults to 4): Frames shared by consecutive windows (their epsilon is averaged).
            sharp_hands (`bool`, defaults to `True`): Ask for sharp hands (sharpness channel 1 on hand regions).
            vae_chunk_size (`int`, defaults to 16): Frames per VAE decoder call.
            controlnet_scale (`float`, defaults to 1.0): Pose ControlNet scale.
            prompt (`str`, defaults to `""`): Text of both passes (the model is trained with the empty prompt).
            generator (`torch.Generator`, *optional*): Seeds the reference encoding and the start noise.
            latents (`torch.Tensor` of shape `(F, 4, H/8, W/8)`, *optional*): Start latents replacing the q-sample.
            output_type (`str`, defaults to `"pil"`): ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"``.
            return_dict (`bool`, defaults to `True`): Return a :class:`HumanAnimPipelineOutput` (else a tuple).
            callback_on_step_end (`Callable`, *optional*): Called as ``callback(pipeline, step, t, {"latents": ...})``
                after every step; a returned ``"latents"`` replaces the latents.

        Returns:
            `HumanAnimPipelineOutput` (or a tuple in its field order).
        """
        # 1. Check inputs
        reference = _image_tensor(reference_image, "reference_image")
        self.check_inputs(
            reference, pose_images, blur_maps, num_inference_steps, guidance_scale, uncond_drops, window_size,
            window_overlap, start_timestep, vae_chunk_size, output_type, latents,
        )  # fmt: skip
        device = self._execution_device
        dtype = self.unet.dtype
        num_frames, _, height, width = pose_images.shape

        # 2. Hints: pose + blur channels, the sharpness channel set to sharp
        hints = self.prepare_hints(pose_images.float(), blur_maps, sharp_hands)
        hint_input = hints.to(device=device, dtype=dtype)

        # 3. Text context (the same empty prompt in both passes by default)
        text = self.encode_prompt(prompt, device).to(dtype)

        # 4. Reference latent (the reference UNet's clean input) and start latents
        resized = torch.nn.functional.interpolate(
            reference[None], size=(height, width), mode="bilinear", antialias=True
        )
        reference_latents = vae_encode(self.vae, resized.to(device) * 2 - 1, generator=generator).to(dtype)
        if latents is None:
            latents = self.prepare_latents(
                reference_latents, num_frames, reference_noise_init, start_timestep, generator
            )
        latents = latents.to(device=device, dtype=dtype)

        # 5. Timesteps and windows
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        windows = animation_windows(num_frames, window_size, window_overlap)
        drop_ref, drop_pose = "ref" in uncond_drops, "pose" in uncond_drops

        # 6. Denoising loop: the bank once per step, windows with averaged overlaps, animation CFG per window
        for step, t in enumerate(self.progress_bar(timesteps)):
            self.model.write_reference(reference_latents, t, text)

            def predict(chunk: torch.Tensor, frames: list[int], t: torch.Tensor = t) -> torch.Tensor:
                count = len(frames)
                context = text.expand(count, -1, -1)
                hint = hint_input[frames]
                eps = self.model(chunk, t, context, num_frames=count, hint=hint, controlnet_scale=controlnet_scale)
                if guidance_scale == 1.0:
                    return eps
                eps_uncond = self.model(
                    chunk, t, context, num_frames=count, hint=None if drop_pose else hint,
                    use_reference=not drop_ref, controlnet_scale=controlnet_scale,
                )  # fmt: skip
                return plain_cfg(eps_uncond, eps, guidance_scale)

            noise_pred = denoise_windows(predict, latents, windows, frame_dim=0)
            latents = self.scheduler.step(noise_pred, t, latents, eta=eta, generator=generator).prev_sample
            if callback_on_step_end is not None:
                returned = callback_on_step_end(self, step, t, {"latents": latents})
                latents = returned.get("latents", latents)
        self.model.clear_reference()

        # 7. Decode in chunks and post-process
        if output_type == "latent":
            frames: Any = latents
        else:
            images = vae_decode_chunked(self.vae, latents, chunk_size=vae_chunk_size)
            frames = self.image_processor.postprocess(images.float(), output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return frames, hints
        return HumanAnimPipelineOutput(frames=frames, hints=hints)


def load_components(config: HumanAnimConfig) -> HumanAnimComponents:
    """Components as ``config.components`` describes them (random or base SD1.5; a pipeline folder loads whole with
    :func:`load_pipeline`), in float32."""
    if config.components.source == "random":
        return build_random_components(config.model, config.random, seed=config.components.seed)
    if config.components.source == "base":
        return build_base_components(str(config.components.base_model), config.model, seed=config.components.seed)
    pipeline = load_pipeline(config)
    return HumanAnimComponents(**{name: getattr(pipeline, name) for name in HumanAnimComponents.__dataclass_fields__})


def load_pipeline(config: HumanAnimConfig) -> HumanAnimPipeline:
    """A ``HumanAnimPipeline`` from ``config.components``, on ``components.device`` in ``components.dtype``.

    ``source="random"`` gives an untrained pipeline (smoke runs, demo, benchmarks): its frames show the plumbing.
    """
    device = resolve_device(config.components.device)
    dtype = torch_dtype(config.components.dtype)
    if config.components.source == "pretrained":
        folder = Path(str(config.components.pretrained))
        if not (folder / "model_index.json").is_file():
            raise InputError(
                f"components.pretrained: {folder} is not a HumanAnimPipeline folder (no model_index.json); write one "
                "with `humananim convert`, `humananim train` or HumanAnimPipeline.save_pretrained"
            )
        pipeline = HumanAnimPipeline.from_pretrained(folder, torch_dtype=dtype)
    else:
        components = load_components(config)
        pipeline = HumanAnimPipeline(**components.as_dict(), fusion_blocks=config.model.fusion_blocks)
        if dtype != torch.float32:
            pipeline.to(dtype=dtype)
    return pipeline.to(device)


def sampling_options(config: HumanAnimConfig) -> dict[str, Any]:
    """The :meth:`HumanAnimPipeline.__call__` keyword arguments ``config.sampling`` and ``config.model`` set (the
    inputs and the generator are the caller's)."""
    sampling = config.sampling
    return {
        "num_inference_steps": sampling.num_inference_steps,
        "guidance_scale": sampling.guidance_scale,
        "uncond_drops": tuple(sampling.uncond_drops),
        "eta": sampling.eta,
        "reference_noise_init": sampling.reference_noise_init,
        "start_timestep": sampling.start_timestep,
        "window_size": sampling.window_size,
        "window_overlap": sampling.window_overlap,
        "sharp_hands": sampling.sharp_hands,
        "vae_chunk_size": sampling.vae_chunk_size,
        "controlnet_scale": config.model.controlnet_scale,
    }


def driving_hints(keypoints: Keypoints, config: HumanAnimConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The pipeline's ``pose_images`` and ``blur_maps`` for a prepared driving sequence (gaps filled, smoothed,
    retargeted, at the frame size): the rendered skeleton, and with ``model.blur_channels == 3`` the blur channels with
    the displacements scaled by ``keypoints.motion_gain`` (the value training used) and the sharpness set to sharp.

    Returns:
        `(torch.Tensor, torch.Tensor | None)`: (F, 3, H, W) pose images in [0, 1] and (F, 3, H, W) blur maps (``None``
        without blur channels).
    """
    settings = config.keypoints
    hint = torch.from_numpy(
        pose_hint(
            keypoints,
            sharpness=1.0,
            blur=config.model.blur_channels == 3,
            min_confidence=settings.min_confidence,
            motion_gain=settings.motion_gain,
        )
    )
    return hint[:, :POSE_CHANNELS], (hint[:, POSE_CHANNELS:] if hint.shape[1] > POSE_CHANNELS else None)
