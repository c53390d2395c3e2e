"""Diffusion blocks around diffusers: reference attention, temporal attention, ControlNet sums, sampling, checkpoints.

Blocks only, never a paper's logic. Import from here (``from genblocks.diffusion import ReferenceBank``) or from the
module that defines a name.
"""

from genblocks.diffusion.checkpoints import (
    ConversionReport,
    LdmCheckpointReport,
    convert_reference_ldm_state_dict,
    load_ldm_checkpoint,
    load_ldm_component,
    load_ldm_motion_modules,
    load_ldm_reference_unet,
    read_ldm_checkpoint,
    save_components,
    split_ldm_motion_keys,
    write_converted_pipeline,
)
from genblocks.diffusion.controlnets import ControlNetResiduals, ControlNetStack
from genblocks.diffusion.reference_attention import (
    ReferenceAttnProcessor,
    ReferenceBank,
    attach_reference_attention,
    attach_reference_pair,
    detach_reference_attention,
    reference_mode,
    set_reference_mode,
    write_reference_bank,
)
from genblocks.diffusion.reference_models import (
    ReferenceDenoiser,
    controlnet_from_unet,
    copy_unet,
    load_sd15_folder,
    sd15_folder,
)
from genblocks.diffusion.sampling import (
    GuidanceBranch,
    LdmDdimConfig,
    denoise_windows,
    encode_clip_prompt,
    ldm_ddim_scheduler,
    nested_cfg,
    plain_cfg,
    q_sample_start,
    sliding_windows,
    vae_decode_chunked,
    vae_encode,
)
from genblocks.diffusion.temporal import (
    MotionPlacement,
    PlacedTemporalModules,
    TemporalModuleConfig,
    TemporalModules,
    TemporalModuleSet,
    TemporalTransformer,
    insert_temporal_modules,
)
from genblocks.diffusion.widening import widen_conv, widen_conv_in

__all__ = [
    "ControlNetResiduals",
    "ControlNetStack",
    "ConversionReport",
    "GuidanceBranch",
    "LdmCheckpointReport",
    "LdmDdimConfig",
    "MotionPlacement",
    "PlacedTemporalModules",
    "ReferenceAttnProcessor",
    "ReferenceBank",
    "ReferenceDenoiser",
    "TemporalModuleConfig",
    "TemporalModuleSet",
    "TemporalModules",
    "TemporalTransformer",
    "attach_reference_attention",
    "attach_reference_pair",
    "controlnet_from_unet",
    "convert_reference_ldm_state_dict",
    "copy_unet",
    "denoise_windows",
    "detach_reference_attention",
    "encode_clip_prompt",
    "insert_temporal_modules",
    "ldm_ddim_scheduler",
    "load_ldm_checkpoint",
    "load_ldm_component",
    "load_ldm_motion_modules",
    "load_ldm_reference_unet",
    "load_sd15_folder",
    "nested_cfg",
    "plain_cfg",
    "q_sample_start",
    "read_ldm_checkpoint",
    "reference_mode",
    "save_components",
    "sd15_folder",
    "set_reference_mode",
    "sliding_windows",
    "split_ldm_motion_keys",
    "vae_decode_chunked",
    "vae_encode",
    "widen_conv",
    "widen_conv_in",
    "write_converted_pipeline",
    "write_reference_bank",
]
