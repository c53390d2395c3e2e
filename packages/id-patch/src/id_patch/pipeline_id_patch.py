"""`IDPatchPipeline`: SDXL + ControlNet with ID patches in the condition image and ID tokens in the context.

Zhang et al., "ID-Patch: Robust ID Association for Group Photo Personalization", CVPR 2025, arXiv 2411.13632.
Upstream: bytedance/ID-Patch, commit 38096c9. ``modules/inferencer.py`` (``IDPatchInferencer.generate``) builds the
context ``[text 77 ; ID 16·F] × 2048``, the negative context from ``prompt_proj(zeros(F, 1, 512))`` and the condition
image; ``modules/pipeline_idpatch_sd_xl.py`` copies diffusers 0.30.3's ``StableDiffusionXLControlNetPipeline.__call__``
to change one thing: at step ``i < len(timesteps) * (1 - id_injection_ratio)`` the ControlNet and the UNet see only
the first 77 tokens (``encoder_hidden_states[:, :77]``).

Here the stock ``__call__`` runs unchanged; the truncation is a forward pre-hook on the UNet and the ControlNet that
lives only for the duration of one call (`context_schedule` gives the rule), so every other stock feature
(schedulers, ``guess_mode``, callbacks, ``denoising_end``, LoRA scale) keeps working.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import PIL.Image
import torch

from genblocks.notices import NUMPY_ARRAY_COPY, ignore_warnings, quiet_library_imports

with quiet_library_imports():  # diffusers' SDXL pipeline imports transformers' image processors
    from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.controlnets.controlnet import ControlNetModel
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from diffusers.pipelines.controlnet.pipeline_controlnet_sd_xl import StableDiffusionXLControlNetPipeline
    from diffusers.schedulers import KarrasDiffusionSchedulers
    from diffusers.utils import BaseOutput
    from transformers import (
        CLIPImageProcessor,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        CLIPVisionModelWithProjection,
    )

from id_patch.condition import (
    ImageLike,
    draw_pose,
    face_anchors,
    order_subjects,
    render_condition,
    to_condition_tensor,
)
from id_patch.modeling_id_patch import IDPatchProjector

if TYPE_CHECKING:
    from id_patch.preprocessing import FaceEncoder

__all__ = ["IDCondition", "IDPatchPipeline", "IDPatchPipelineOutput", "context_schedule"]

logger = logging.getLogger(__name__)


def context_schedule(num_steps: int, id_injection_ratio: float) -> list[bool]:
    """Which denoising steps see the ID tokens: step ``i`` does unless ``i < num_steps * (1 - id_injection_ratio)``.

    The rule and its floating-point arithmetic are upstream's (``pipeline_idpatch_sd_xl.py``), so with 50 steps and
    0.8 the first 10 steps see the text only.

    Args:
        num_steps (`int`): denoising steps of the call.
        id_injection_ratio (`float`): fraction of the steps, at the end, that see the ID tokens (1.0: all).

    Returns:
        `list[bool]`: one flag per step; `True` = text + ID tokens, `False` = text tokens only.
    """
    if not 0.0 <= id_injection_ratio <= 1.0:
        raise ValueError(f"`id_injection_ratio` must be in [0, 1], got {id_injection_ratio}.")
    return [not (i < num_steps * (1 - id_injection_ratio)) for i in range(num_steps)]


class IDCondition(NamedTuple):
    """What the ID inputs become (`IDPatchPipeline.prepare_id_condition`), in left-to-right subject order.

    Attributes:
        condition_image (`torch.Tensor`): float32 (1, 3, H, W), pose + ID patches (not clamped unless configured).
        id_tokens (`torch.Tensor`): (1, F * num_tokens, token_dim).
        face_embeds (`torch.Tensor`): (F, D), reordered left to right.
        face_locations (`torch.Tensor`): float32 (F, 2) ``(x, y)``, reordered left to right.
        order (`torch.Tensor`): int64 (F,), the permutation applied to the inputs.
    """

    condition_image: torch.Tensor
    id_tokens: torch.Tensor
    face_embeds: torch.Tensor
    face_locations: torch.Tensor
    order: torch.Tensor


@dataclass
class IDPatchPipelineOutput(BaseOutput):
    """Output of `IDPatchPipeline`.

    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`): the generated images, as ``output_type``.
        condition_images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`): the one condition image (pose +
            ID patches) shared by the batch; clamped to [0, 1] for ``"pil"`` and ``"np"``, raw (1, 3, H, W) for
            ``"pt"`` and ``"latent"``.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    condition_images: list[PIL.Image.Image] | np.ndarray | torch.Tensor


def _as_float_tensor(value: torch.Tensor | np.ndarray | Sequence, name: str) -> torch.Tensor:
    tensor = (
        value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value, dtype=np.float32))
    )
    if not torch.isfinite(tensor.float()).all():
        raise ValueError(f"`{name}` contains non-finite values.")
    return tensor.float()


class IDPatchPipeline(StableDiffusionXLControlNetPipeline):
    """ID-Patch generation: several given identities at given positions in one SDXL image (spec id-patch §5).

    Each face embedding is projected twice by ``id_projector``: to an RGB patch added to the pose image at that
    subject's position (the ControlNet's condition) and to ``num_tokens`` tokens appended to the text context. Faces
    are ordered left to right; the negative context's ID part is ``prompt_proj(zeros)``. Everything else is diffusers'
    ``StableDiffusionXLControlNetPipeline``.

    Args:
        vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, unet, scheduler, force_zeros_for_empty_prompt,
        add_watermarker, feature_extractor, image_encoder: as in ``StableDiffusionXLControlNetPipeline`` (upstream
            uses ``EulerDiscreteScheduler`` from the base model).
        controlnet (`ControlNetModel`): one ControlNet with 3 conditioning channels (upstream ``ControlNetModel/``).
        id_projector (`IDPatchProjector`): R_patch and R_token; ``token_dim`` must equal the UNet's
            ``cross_attention_dim``.
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->image_encoder->id_projector->unet->vae"

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        text_encoder_2: CLIPTextModelWithProjection,
        tokenizer: CLIPTokenizer,
        tokenizer_2: CLIPTokenizer,
        unet: UNet2DConditionModel,
        controlnet: ControlNetModel,
        scheduler: KarrasDiffusionSchedulers,
        id_projector: IDPatchProjector,
        force_zeros_for_empty_prompt: bool = True,
        add_watermarker: bool | None = None,
        feature_extractor: CLIPImageProcessor | None = None,
        image_encoder: CLIPVisionModelWithProjection | None = None,
    ) -> None:
        if not isinstance(controlnet, ControlNetModel):
            raise ValueError(f"`controlnet` must be one ControlNetModel, got {type(controlnet).__name__}.")
        if controlnet.config.conditioning_channels != 3:
            raise ValueError(
                f"the ControlNet must read 3-channel conditions (pose + RGB patches), got "
                f"{controlnet.config.conditioning_channels}."
            )
        if id_projector.config.token_dim != unet.config.cross_attention_dim:
            raise ValueError(
                f"id_projector.token_dim ({id_projector.config.token_dim}) must equal the UNet's cross_attention_dim "
                f"({unet.config.cross_attention_dim})."
            )
        super().__init__(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            unet=unet,
            controlnet=controlnet,
            scheduler=scheduler,
            force_zeros_for_empty_prompt=force_zeros_for_empty_prompt,
            add_watermarker=add_watermarker,
            feature_extractor=feature_extractor,
            image_encoder=image_encoder,
        )
        self.register_modules(id_projector=id_projector)

    # -- inputs ---------------------------------------------------------------------------------------------------

    def _image_size(
        self, pose_image: ImageLike | None, height: int | None, width: int | None
    ) -> tuple[torch.Tensor | None, int, int]:
        """The pose image as (3, H, W) in [0, 1] (or `None`) and the generation size."""
        pose = None if pose_image is None else to_condition_tensor(pose_image, "pose_image")
        if pose is not None:
            pose_h, pose_w = pose.shape[1:]
            if (height is not None and height != pose_h) or (width is not None and width != pose_w):
                raise ValueError(
                    f"`pose_image` is {pose_h}x{pose_w} (HxW) but height x width = {height} x {width}; the condition "
                    "image is drawn at the generation size."
                )
            return pose, pose_h, pose_w
        default = self.unet.config.sample_size * self.vae_scale_factor
        return None, height or default, width or default

    def _subject_locations(
        self,
        num_faces: int,
        face_locations: torch.Tensor | np.ndarray | Sequence[Sequence[float]] | None,
        keypoints: torch.Tensor | np.ndarray | None,
    ) -> tuple[torch.Tensor, str]:
        """(F, 2) positions in subject order, and how the error messages name them."""
        if face_locations is not None:
            locations = _as_float_tensor(face_locations, "face_locations")
            if locations.ndim != 2 or locations.shape[1] != 2:
                raise ValueError(f"`face_locations` must be (F, 2) (x, y) pixels, got {tuple(locations.shape)}.")
            name = "face_locations"
        else:
            anchors = face_anchors(keypoints, anchor=self.id_projector.config.face_anchor)
            # upstream demo.py: the people in the pose are assigned to the subjects from left to right
            locations = anchors[order_subjects(anchors)]
            name = "keypoints (persons sorted left to right)"
        if len(locations) != num_faces:
            raise ValueError(
                f"got {len(locations)} face positions ({name}) for {num_faces} faces; expected exactly one position "
                "per subject."
            )
        return locations, name

    def check_id_inputs(
        self,
        face_embeds: torch.Tensor | np.ndarray | None,
        face_images: Sequence[ImageLike] | None,
        face_encoder: FaceEncoder | None,
        face_locations: torch.Tensor | np.ndarray | Sequence[Sequence[float]] | None,
        keypoints: torch.Tensor | np.ndarray | None,
        pose_image: ImageLike | None,
        height: int | None,
        width: int | None,
        id_injection_ratio: float,
    ) -> None:
        """Validate the ID inputs; every error names the subject or input and what was expected.

        The stock ``check_inputs`` keeps its signature (the stock ``__call__`` calls it with the text and ControlNet
        arguments); this method checks what ID-Patch adds. A position the user gives outside the image is an error
        here, while `id_patch.condition.render_condition` (renderer level) only skips such a patch with a warning.

        Args:
            see `__call__`.
        """
        if (face_embeds is None) == (face_images is None):
            raise ValueError("pass exactly one of `face_embeds` (F, D) and `face_images` (one image per subject).")
        if face_images is not None:
            if face_encoder is None:
                raise ValueError("`face_images` need a `face_encoder` (see id_patch.preprocessing).")
            num_faces = len(face_images)
        else:
            embeds = _as_float_tensor(face_embeds, "face_embeds")
            face_dim = self.id_projector.config.face_dim
            if embeds.ndim != 2 or embeds.shape[1] != face_dim:
                raise ValueError(f"`face_embeds` must be (F, {face_dim}), got {tuple(embeds.shape)}.")
            num_faces = embeds.shape[0]
        if num_faces < 1:
            raise ValueError("at least one subject is needed (got 0 faces).")
        if (face_locations is None) == (keypoints is None):
            raise ValueError("pass exactly one of `face_locations` (F, 2) and `keypoints` (F, 17, 2|3).")
        locations, name = self._subject_locations(num_faces, face_locations, keypoints)
        _, height, width = self._image_size(pose_image, height, width)
        for subject, (x, y) in enumerate(locations.tolist()):
            if not (0 <= x < width and 0 <= y < height):
                raise ValueError(
                    f"subject {subject}: position ({x:.1f}, {y:.1f}) from {name} is outside the {width}x{height} "
                    "(WxH) image; expected 0 <= x < width and 0 <= y < height."
                )
        if not 0.0 <= id_injection_ratio <= 1.0:
            raise ValueError(f"`id_injection_ratio` must be in [0, 1], got {id_injection_ratio}.")

    def prepare_id_condition(
        self,
        face_embeds: torch.Tensor,
        face_locations: torch.Tensor,
        pose_image: torch.Tensor | None,
        height: int,
        width: int,
    ) -> IDCondition:
        """Order the subjects left to right, project their faces, and render the condition image.

        Not wrapped in ``no_grad``: training uses it to back-propagate into ``id_projector``.

        Args:
            face_embeds (`torch.Tensor`): (F, D), subject order.
            face_locations (`torch.Tensor`): (F, 2) ``(x, y)`` pixels, subject order.
            pose_image (`torch.Tensor`, *optional*): (3, H, W) in [0, 1]; black when `None`.
            height (`int`): H.
            width (`int`): W.

        Returns:
            `IDCondition`: condition image (1, 3, H, W), ID tokens (1, F * num_tokens, token_dim) and the reordered
            inputs.
        """
        order = order_subjects(face_locations)
        embeds = face_embeds[order.to(face_embeds.device)]
        locations = face_locations[order.to(face_locations.device)].float()
        patches = self.id_projector.patches(embeds).float()
        condition = render_condition(
            None if pose_image is None else pose_image.to(patches.device),
            patches,
            locations,
            height=height,
            width=width,
            clamp=self.id_projector.config.cond_clamp,
        )
        id_tokens = self.id_projector.id_tokens(embeds[None])
        return IDCondition(condition[None], id_tokens, embeds, locations, order)

    # -- the ID-token schedule ------------------------------------------------------------------------------------

    def _num_denoising_steps(self) -> int:
        """``len(timesteps)`` of the running stock loop (after its ``denoising_end`` cut, as upstream)."""
        steps = self._num_timesteps
        end = self.denoising_end
        if isinstance(end, float) and 0 < end < 1:
            train_steps = self.scheduler.config.num_train_timesteps
            cutoff = round(train_steps - end * train_steps)
            steps = int((self.scheduler.timesteps >= cutoff).sum())
        return steps

    @contextlib.contextmanager
    def _id_token_schedule(self, text_length: int, id_injection_ratio: float) -> Iterator[None]:
        """Hide the ID tokens (``encoder_hidden_states[:, text_length:]``) from the ControlNet and the UNet during the
        steps `context_schedule` marks `False`. The step counter advances after each UNet call (one per step)."""
        step = [0]
        schedule: list[bool] = []

        def truncate(
            module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[tuple[Any, ...], dict[str, Any]]:
            if not schedule:
                schedule.extend(context_schedule(self._num_denoising_steps(), id_injection_ratio))
            hidden = kwargs.get("encoder_hidden_states")
            if hidden is not None and step[0] < len(schedule) and not schedule[step[0]]:
                kwargs["encoder_hidden_states"] = hidden[:, :text_length]
            return args, kwargs

        def advance(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
            step[0] += 1

        handles = [
            self.controlnet.register_forward_pre_hook(truncate, with_kwargs=True),
            self.unet.register_forward_pre_hook(truncate, with_kwargs=True),
            self.unet.register_forward_hook(advance),
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    # -- generation -----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        face_embeds: torch.Tensor | np.ndarray | None = None,
        face_images: Sequence[ImageLike] | None = None,
        face_locations: torch.Tensor | np.ndarray | Sequence[Sequence[float]] | None = None,
        keypoints: torch.Tensor | np.ndarray | None = None,
        pose_image: ImageLike | None = None,
        face_encoder: FaceEncoder | None = None,
        id_injection_ratio: float = 0.8,
        prompt_2: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        timesteps: list[int] | None = None,
        sigmas: list[float] | None = None,
        denoising_end: float | None = None,
        guidance_scale: float = 5.0,
        negative_prompt: str | list[str] | None = None,
        negative_prompt_2: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: dict[str, Any] | None = None,
        controlnet_conditioning_scale: float = 0.8,
        guess_mode: bool = False,
        control_guidance_start: float = 0.0,
        control_guidance_end: float = 1.0,
        original_size: tuple[int, int] | None = None,
        crops_coords_top_left: tuple[int, int] = (0, 0),
        target_size: tuple[int, int] | None = None,
        negative_original_size: tuple[int, int] | None = None,
        negative_crops_coords_top_left: tuple[int, int] = (0, 0),
        negative_target_size: tuple[int, int] | None = None,
        clip_skip: int | None = None,
        callback_on_step_end: Callable[..., dict[str, Any]] | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> IDPatchPipelineOutput | tuple:
        r"""Generate an image of the given subjects at the given positions.

        Args:
            prompt (`str` or `list[str]`, *optional*): the text; or pass ``prompt_embeds``.
            face_embeds (`torch.Tensor` or `np.ndarray`, *optional*): (F, D) face embeddings, one per subject (D =
                ``id_projector.config.face_dim``; ArcFace: 512, L2-normalised).
            face_images (`list`, *optional*): one image per subject instead of ``face_embeds``; encoded by
                ``face_encoder`` (each must show a detectable face).
            face_locations (`torch.Tensor`, `np.ndarray` or nested list, *optional*): (F, 2) ``(x, y)`` pixels at
                generation size; row ``i`` is subject ``i``'s face centre (its nose, upstream).
            keypoints (`torch.Tensor` or `np.ndarray`, *optional*): (F, 17, 2|3) COCO-17 keypoints instead of
                ``face_locations``: face anchors per ``id_projector.config.face_anchor``, persons assigned to the
                subjects from left to right (upstream ``demo.py``); also drawn as the pose when ``pose_image`` is
                `None`.
            pose_image (`ImageLike`, *optional*): the skeleton image (see `id_patch.condition.draw_pose`) at the
                generation size; black (or drawn from ``keypoints``) when `None`.
            face_encoder (`FaceEncoder`, *optional*): turns ``face_images`` into embeddings (see
                `id_patch.preprocessing`).
            id_injection_ratio (`float`, defaults to 0.8): the last fraction of the steps that see the ID tokens;
                the first ``1 - ratio`` see the text tokens only (UNet and ControlNet).
            controlnet_conditioning_scale (`float`, defaults to 0.8): the paper's value.
            guidance_scale (`float`, defaults to 5.0): CFG scale (5.0 in upstream ``generate``, 5.5 in its demo).
            prompt_embeds, negative_prompt_embeds (`torch.Tensor`, *optional*): text-only (B, 77, 2048) contexts; the
                ID tokens are appended here.
            prompt_2, height, width, num_inference_steps, timesteps, sigmas, denoising_end, negative_prompt,
            negative_prompt_2, num_images_per_prompt, eta, generator, latents, pooled_prompt_embeds,
            negative_pooled_prompt_embeds, output_type, return_dict, cross_attention_kwargs, guess_mode,
            control_guidance_start, control_guidance_end, original_size, crops_coords_top_left, target_size,
            negative_original_size, negative_crops_coords_top_left, negative_target_size, clip_skip,
            callback_on_step_end, callback_on_step_end_tensor_inputs:
                as in ``StableDiffusionXLControlNetPipeline.__call__``. ``height``/``width`` default to the pose
                image's size, else the UNet's sample size times the VAE factor.

        Returns:
            `IDPatchPipelineOutput` (or ``(images, condition_images)`` when ``return_dict`` is `False`).
        """
        # 1. Check inputs
        self.check_id_inputs(
            face_embeds,
            face_images,
            face_encoder,
            face_locations,
            keypoints,
            pose_image,
            height,
            width,
            id_injection_ratio,
        )
        device = self._execution_device

        # 2. Encode the faces
        if face_images is not None:
            face_embeds = face_encoder.encode_subjects(face_images).embeds
            face_dim = self.id_projector.config.face_dim
            if face_embeds.ndim != 2 or face_embeds.shape[1] != face_dim:
                raise ValueError(
                    f"the face encoder gives {tuple(face_embeds.shape)} embeddings; the ID projector expects (F, "
                    f"{face_dim})."
                )
        embeds = _as_float_tensor(face_embeds, "face_embeds").to(device)

        # 3. Subject positions, pose image and size
        locations, _ = self._subject_locations(len(embeds), face_locations, keypoints)
        pose, height, width = self._image_size(pose_image, height, width)
        if pose is None and keypoints is not None:
            pose = draw_pose(keypoints, height, width)

        # 4. ID patches in the condition image and ID tokens, subjects left to right
        id_condition = self.prepare_id_condition(embeds, locations.to(device), pose, height, width)

        # 5. Text context with the ID tokens appended; the negative ID part is prompt_proj(zeros)
        do_cfg = guidance_scale > 1 and self.unet.config.time_cond_proj_dim is None
        lora_scale = None if cross_attention_kwargs is None else cross_attention_kwargs.get("scale")
        text, negative_text, pooled, negative_pooled = self.encode_prompt(
            prompt,
            prompt_2,
            device,
            1,
            do_cfg,
            negative_prompt,
            negative_prompt_2,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds,
            negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
            lora_scale=lora_scale,
            clip_skip=clip_skip,
        )
        batch, text_length = text.shape[:2]
        id_tokens = id_condition.id_tokens.to(device=device, dtype=text.dtype).expand(batch, -1, -1)
        context = torch.cat([text, id_tokens], dim=1)
        negative_context = None
        if do_cfg:
            negative_ids = self.id_projector.negative_id_tokens(len(embeds), batch).to(device=device, dtype=text.dtype)
            negative_context = torch.cat([negative_text, negative_ids], dim=1)
        else:
            negative_pooled = None

        # 6. The stock SDXL-ControlNet loop; the ID tokens are hidden during the first steps
        with (
            self._id_token_schedule(text_length, id_injection_ratio),
            ignore_warnings(NUMPY_ARRAY_COPY, DeprecationWarning),  # the Euler scheduler's np.array(tensor)
        ):
            output = super().__call__(
                image=id_condition.condition_image,
                height=height,
                width=width,
                num_inference_steps=num_inference_steps,
                timesteps=timesteps,
                sigmas=sigmas,
                denoising_end=denoising_end,
                guidance_scale=guidance_scale,
                num_images_per_prompt=num_images_per_prompt,
                eta=eta,
                generator=generator,
                latents=latents,
                prompt_embeds=context,
                negative_prompt_embeds=negative_context,
                pooled_prompt_embeds=pooled,
                negative_pooled_prompt_embeds=negative_pooled,
                output_type=output_type,
                return_dict=True,
                cross_attention_kwargs=cross_attention_kwargs,
                controlnet_conditioning_scale=float(controlnet_conditioning_scale),
                guess_mode=guess_mode,
                control_guidance_start=control_guidance_start,
                control_guidance_end=control_guidance_end,
                original_size=original_size,
                crops_coords_top_left=crops_coords_top_left,
                target_size=target_size,
                negative_original_size=negative_original_size,
                negative_crops_coords_top_left=negative_crops_coords_top_left,
                negative_target_size=negative_target_size,
                clip_skip=clip_skip,
                callback_on_step_end=callback_on_step_end,
                callback_on_step_end_tensor_inputs=list(callback_on_step_end_tensor_inputs),
            )

        # 7. Output: the images and the condition image
        condition = id_condition.condition_image
        if output_type in ("pil", "np"):
            condition = self.control_image_processor.postprocess(
                condition.clamp(0.0, 1.0).cpu(), output_type=output_type, do_denormalize=[False]
            )
        if not return_dict:
            return output.images, condition
        return IDPatchPipelineOutput(images=output.images, condition_images=condition)
