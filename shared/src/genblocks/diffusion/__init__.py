"""Diffusion blocks around diffusers: reference attention, temporal attention, ControlNet sums, sampling, checkpoints.

Blocks only, never a paper's logic. Import from here (``from genblocks.diffusion import ReferenceBank``) or from the
module that defines a name.
"""

from genblocks.diffusion.checkpoints import (
    ConversionReport,
    LdmCheckpointReport,
    load_ldm_checkpoint,
    load_ldm_component,
    read_ldm_checkpoint,
    save_components,
)
from genblocks.diffusion.controlnets import ControlNetResiduals, ControlNetStack
from genblocks.diffusion.reference_attention import (
    ReferenceAttnProcessor,
    ReferenceBank,
    attach_reference_attention,
    detach_reference_attention,
    reference_mode,
    set_reference_mode,
)
from genblocks.diffusion.sampling import (
    GuidanceBranch,
    LdmDdimConfig,
    denoise_windows,
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
    TemporalModuleConfig,
    TemporalModuleSet,
    TemporalTransformer,
    insert_temporal_modules,
)

__all__ = [
    "ControlNetResiduals",
    "ControlNetStack",
    "ConversionReport",
    "GuidanceBranch",
    "LdmCheckpointReport",
    "LdmDdimConfig",
    "MotionPlacement",
    "ReferenceAttnProcessor",
    "ReferenceBank",
    "TemporalModuleConfig",
    "TemporalModuleSet",
    "TemporalTransformer",
    "attach_reference_attention",
    "denoise_windows",
    "detach_reference_attention",
    "insert_temporal_modules",
    "ldm_ddim_scheduler",
    "load_ldm_checkpoint",
    "load_ldm_component",
    "nested_cfg",
    "plain_cfg",
    "q_sample_start",
    "read_ldm_checkpoint",
    "reference_mode",
    "save_components",
    "set_reference_mode",
    "sliding_windows",
    "vae_decode_chunked",
    "vae_encode",
]
