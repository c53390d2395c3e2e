"""Convert the official X-Portrait checkpoint (``model_state-415001.th``, one LDM-layout state dict) into an
``XPortraitPipeline`` folder (X-Portrait spec §7).

Layout of the official file (``ControlLDMReferenceOnly_Temporal_Pose_Local``, loaded upstream with ``strict=False``),
optionally wrapped in ``state_dict`` and with ``module.`` prefixes:

=============================== ========================================================== ==============================
prefix                          contents                                                   target
=============================== ========================================================== ==============================
``model.diffusion_model.``      SD1.5 UNet (``input_blocks``, ``middle_block``,            ``unet`` (UNet2DConditionModel)
                                ``output_blocks``, ``out``) + ``input_blocks_motion_module.
                                {0..7}.0.temporal_transformer.*`` and
                                ``output_blocks_motion_module.{0..11}.0.*``                ``motion_modules``
``appearance_control_model.``   reference UNet without ``out`` (its ``input_hint_block``   ``reference_unet``
                                is unused)
``pose_control_model.``         ControlNet (``input_hint_block``, ``zero_convs``,          ``motion_controlnet``
                                ``middle_block_out``)
``local_pose_control_model.``   the second ControlNet                                      ``local_controlnet``
``first_stage_model.``          VAE, if present [unverified]                               ``vae``
``cond_stage_model.``           CLIP text encoder, if present [unverified]                 ``text_encoder``
=============================== ========================================================== ==============================

Key maps are genblocks' (``genblocks.diffusion.checkpoints`` around diffusers' single-file converters, and
``genblocks.diffusion.temporal.convert_ldm_motion_state_dict`` for the motion modules, whose list index ``k`` is the
k-th placed block). The file is read with ``torch.load(weights_only=True)`` (or safetensors); nothing is unpickled.
Every key that is not loaded is reported: unmatched checkpoint keys, model keys the checkpoint lacks, shape
mismatches, and keys known to be unused (the reference UNet's ``input_hint_block``; its missing ``out`` layers).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from genblocks.diffusion.checkpoints import (
    LDM_TEXT_ENCODER_PREFIX,
    LDM_UNET_PREFIX,
    LDM_VAE_PREFIX,
    ConversionReport,
    PipelineConversionReport,
    convert_reference_ldm_state_dict,
    read_ldm_checkpoint,
    write_converted_pipeline,
)
from x_portrait.modeling_x_portrait import XPortraitComponents
from x_portrait.pipeline_x_portrait import XPortraitPipeline

__all__ = [
    "X_PORTRAIT_PREFIXES",
    "XPortraitConversionReport",
    "convert_x_portrait_checkpoint",
    "convert_x_portrait_state_dict",
    "save_converted_pipeline",
]

logger = logging.getLogger(__name__)

X_PORTRAIT_PREFIXES: dict[str, str] = {
    "unet": LDM_UNET_PREFIX,
    "reference_unet": "appearance_control_model.",
    "motion_controlnet": "pose_control_model.",
    "local_controlnet": "local_pose_control_model.",
    "vae": LDM_VAE_PREFIX,
    "text_encoder": LDM_TEXT_ENCODER_PREFIX,
}
"""Component name -> top-level prefix in the official checkpoint."""


class XPortraitConversionReport(PipelineConversionReport):
    """What did and did not load (genblocks' :class:`~genblocks.diffusion.checkpoints.PipelineConversionReport`).

    Components: ``unet``, ``reference_unet``, ``motion_controlnet``, ``local_controlnet``, and ``vae`` /
    ``text_encoder`` when the checkpoint has them; the temporal modules are :attr:`motion_modules`. Ignored keys: the
    appearance UNet's ``input_hint_block`` (checkpoint), the reference UNet's ``conv_norm_out`` / ``conv_out`` (model;
    upstream's appearance UNet has no ``out``) and the DDPM schedule buffers of a complete checkpoint.
    """

    temporal_name = "motion_modules"

    @property
    def motion_modules(self) -> ConversionReport:
        """The temporal modules' report."""
        return self.temporal


def convert_x_portrait_state_dict(
    checkpoint: Mapping[str, torch.Tensor], components: XPortraitComponents
) -> XPortraitConversionReport:
    """Load an official-layout state dict into prebuilt components, in place, and report what did not match.

    Args:
        checkpoint (`Mapping[str, torch.Tensor]`): The official state dict (``state_dict`` wrapper and ``module.``
            prefixes are removed).
        components (`XPortraitComponents`): Models with the checkpoint's architecture (e.g. SD1.5 from
            :func:`~x_portrait.modeling_x_portrait.build_base_components`); ``vae`` and ``text_encoder`` are
            overwritten only when the checkpoint has their prefixes.

    Returns:
        `XPortraitConversionReport`.
    """
    modules = components.motion_modules.motion_modules if components.motion_modules is not None else None
    models = {name: getattr(components, name) for name in X_PORTRAIT_PREFIXES}
    return convert_reference_ldm_state_dict(
        checkpoint, X_PORTRAIT_PREFIXES, models, modules, XPortraitConversionReport
    )


def convert_x_portrait_checkpoint(
    path: str | os.PathLike, components: XPortraitComponents
) -> XPortraitConversionReport:
    """Read ``model_state-*.th`` (``torch.load(weights_only=True)``; ``.safetensors`` also works) and load it into
    ``components``; see :func:`convert_x_portrait_state_dict`."""
    return convert_x_portrait_state_dict(read_ldm_checkpoint(path), components)


def save_converted_pipeline(
    components: XPortraitComponents,
    report: XPortraitConversionReport,
    output_dir: str | os.PathLike,
    patch_size: int = 128,
    landmark_scale: int = 2,
) -> Path:
    """Write the converted components as an ``XPortraitPipeline`` folder (one safetensors folder per component:
    ``reference_unet``, ``motion_controlnet``, ``local_controlnet``, ``motion_modules``, ...) plus
    ``conversion_report.json``.

    Returns:
        `Path`: ``output_dir``.
    """
    pipeline = XPortraitPipeline(**components.as_dict(), patch_size=patch_size, landmark_scale=landmark_scale)
    return write_converted_pipeline(pipeline, report, output_dir)
