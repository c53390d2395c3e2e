"""omniavatar: geometry-guided controllable 3D head synthesis (Xu et al., OmniAvatar, CVPR 2023, arXiv 2303.15539) on
EG3D with a FLAME-driven semantic SDF prior.

Public names are imported lazily (``omniavatar.OmniAvatarPipeline``) so ``import omniavatar`` and ``omniavatar --help``
stay light.
"""

from __future__ import annotations

from genblocks.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "ControlEstimator": "omniavatar.training",
    "ConversionReport": "omniavatar.convert_omniavatar_original",
    "FlameHead": "omniavatar.head_model",
    "FlameLayout": "omniavatar.config",
    "HeadModel": "omniavatar.head_model",
    "IGRNetwork": "omniavatar.semantic_sdf",
    "MaskDualDiscriminator": "omniavatar.training",
    "OmniAvatarConfig": "omniavatar.config",
    "OmniAvatarDecoder": "omniavatar.modeling_omniavatar",
    "OmniAvatarGANModule": "omniavatar.training",
    "OmniAvatarGenerator": "omniavatar.modeling_omniavatar",
    "OmniAvatarOutput": "omniavatar.pipeline_omniavatar",
    "OmniAvatarPipeline": "omniavatar.pipeline_omniavatar",
    "ProceduralHead": "omniavatar.head_model",
    "SemanticSDF": "omniavatar.semantic_sdf",
    "SemanticSDFModule": "omniavatar.training",
    "convert_omniavatar": "omniavatar.convert_omniavatar_original",
    "load_flame": "omniavatar.head_model",
    "read_labels": "omniavatar.convert_omniavatar_original",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

__getattr__ = lazy_exports(__name__, _EXPORTS)
