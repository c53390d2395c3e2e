"""diffportrait3d: zero-shot portrait view synthesis with controllable diffusion (Gu et al., CVPR 2024,
arXiv 2312.13016).

Public names are imported lazily (``diffportrait3d.DiffPortrait3DPipeline``) so ``import diffportrait3d`` stays light.
"""

from __future__ import annotations

from genblocks.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "DiffPortrait3DConfig": "diffportrait3d.config",
    "DiffPortrait3DModel": "diffportrait3d.modeling_diffportrait3d",
    "DiffPortrait3DViewModules": "diffportrait3d.modeling_diffportrait3d",
    "DiffPortrait3DPipeline": "diffportrait3d.pipeline_diffportrait3d",
    "DiffPortrait3DPipelineOutput": "diffportrait3d.pipeline_diffportrait3d",
    "EG3DConditionRenderer": "diffportrait3d.noise3d",
    "EG3DNoisePrior": "diffportrait3d.noise3d",
    "invert_portrait": "diffportrait3d.noise3d",
    "orbit_cameras": "diffportrait3d.cameras",
    "yaw_sweep_cameras": "diffportrait3d.cameras",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

__getattr__ = lazy_exports(__name__, _EXPORTS)
