"""Convert the official DiffPortrait3D checkpoint (``model_state-540000-001.th``, LDM layout) to a
``DiffPortrait3DPipeline`` folder (spec §7).

=============================== ======================================================== ==============================
checkpoint prefix               contents                                                 component
=============================== ======================================================== ==============================
``model.diffusion_model.``      SD1.5 UNet, plus ``input_blocks_motion_module.*``,        ``unet``, ``view_modules``
                                ``output_blocks_motion_module.*``,
                                ``middle_block_motion_module.*`` (cross-view modules)
``control_model.``              appearance reference UNet (``ControlNetReferenceOnly``)  ``reference_unet``
``pose_control_model.``         view ControlNet                                          ``view_controlnet``
``first_stage_model.``          VAE, if present [unverified]                             ``vae``
``cond_stage_model.``           CLIP text encoder, if present [unverified]               ``text_encoder``
=============================== ======================================================== ==============================

Key maps are genblocks' (``genblocks.diffusion.checkpoints``; ``convert_ldm_motion_state_dict`` with the
``MotionPlacement.diffportrait3d`` placement for the cross-view modules: ``input_blocks_motion_module.{k}`` is input
block k + 1, ``output_blocks_motion_module.{j}.1`` the second module after an upsampler). The file is read with
``torch.load(weights_only=True)`` unless the caller passes ``trust_pickle=True``. Every key not loaded is reported.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from diffportrait3d.config import ModelConfig
from diffportrait3d.modeling_diffportrait3d import DiffPortrait3DComponents, build_base_components
from diffportrait3d.pipeline_diffportrait3d import DiffPortrait3DPipeline
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

__all__ = [
    "DIFFPORTRAIT3D_PREFIXES",
    "DiffPortrait3DConversionReport",
    "convert_checkpoint",
    "convert_diffportrait3d_checkpoint",
    "convert_diffportrait3d_state_dict",
    "save_converted_pipeline",
]

logger = logging.getLogger(__name__)

DIFFPORTRAIT3D_PREFIXES: dict[str, str] = {
    "unet": LDM_UNET_PREFIX,
    "reference_unet": "control_model.",
    "view_controlnet": "pose_control_model.",
    "vae": LDM_VAE_PREFIX,
    "text_encoder": LDM_TEXT_ENCODER_PREFIX,
}
"""Component name -> top-level prefix in the official checkpoint."""


class DiffPortrait3DConversionReport(PipelineConversionReport):
    """What did and did not load (genblocks' :class:`~genblocks.diffusion.checkpoints.PipelineConversionReport`).

    The temporal modules are the cross-view modules (:attr:`view_modules`). Ignored keys: the reference UNet's
    ``input_hint_block`` (and its ``conv_norm_out`` / ``conv_out`` when the checkpoint lacks them) and the DDPM schedule
    buffers of a complete checkpoint.
    """

    temporal_name = "view_modules"

    @property
    def view_modules(self) -> ConversionReport:
        """The cross-view modules' report."""
        return self.temporal


def convert_diffportrait3d_state_dict(
    checkpoint: Mapping[str, torch.Tensor], components: DiffPortrait3DComponents
) -> DiffPortrait3DConversionReport:
    """Load an official-layout state dict into prebuilt components, in place, and report what did not match.

    Args:
        checkpoint (`Mapping[str, torch.Tensor]`): The official state dict (``state_dict`` wrapper removed).
        components (`DiffPortrait3DComponents`): Models with the checkpoint's architecture; ``vae`` and
            ``text_encoder`` are overwritten only when the checkpoint has their prefixes.

    Returns:
        `DiffPortrait3DConversionReport`.
    """
    modules = components.view_modules.view_modules if components.view_modules is not None else None
    models = {name: getattr(components, name) for name in DIFFPORTRAIT3D_PREFIXES}
    return convert_reference_ldm_state_dict(
        checkpoint, DIFFPORTRAIT3D_PREFIXES, models, modules, DiffPortrait3DConversionReport
    )


def convert_diffportrait3d_checkpoint(
    path: str | os.PathLike, components: DiffPortrait3DComponents, trust_pickle: bool = False
) -> DiffPortrait3DConversionReport:
    """Read ``model_state-*.th`` (``torch.load(weights_only=True)``, or full unpickling only with
    ``trust_pickle=True``; ``.safetensors`` also works) and load it into ``components``."""
    return convert_diffportrait3d_state_dict(read_ldm_checkpoint(path, trust_pickle=trust_pickle), components)


def save_converted_pipeline(
    components: DiffPortrait3DComponents,
    report: DiffPortrait3DConversionReport,
    output_dir: str | os.PathLike,
    views_per_batch: int = 8,
) -> Path:
    """Write the converted components as a ``DiffPortrait3DPipeline`` folder plus ``conversion_report.json``."""
    pipeline = DiffPortrait3DPipeline(**components.as_dict(), views_per_batch=views_per_batch)
    return write_converted_pipeline(pipeline, report, output_dir)


def convert_checkpoint(
    checkpoint: str | os.PathLike,
    base_model: str | os.PathLike,
    output_dir: str | os.PathLike,
    config: ModelConfig | None = None,
    trust_pickle: bool = False,
) -> dict[str, object]:
    """``diffportrait3d convert``: build SD1.5 components from ``base_model``, load the official checkpoint and save
    the pipeline folder. Returns the report as a dict.

    Raises:
        InputError: the checkpoint filled no model key (nothing is written).
    """
    config = config if config is not None else ModelConfig()
    components = build_base_components(base_model, config)
    report = convert_diffportrait3d_checkpoint(checkpoint, components, trust_pickle=trust_pickle)
    report.check_matches(checkpoint)  # a random or foreign file: nothing is written
    save_converted_pipeline(components, report, output_dir, views_per_batch=config.views_per_batch)
    return report.to_dict()
