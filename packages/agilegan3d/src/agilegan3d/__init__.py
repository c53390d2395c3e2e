"""agilegan3d: few-shot 3-D portrait stylisation by augmented transfer learning (AgileGAN3D, Song et al., arXiv
2303.14297) on EG3D: a 2-D style prior from ~20 exemplars, pose-exact stylised pairs rendered from a pretrained EG3D,
guided transfer of EG3D on them, and a multi-view-consistent inversion encoder.

Public names are imported lazily (``agilegan3d.AgileGAN3DPipeline``) so ``import agilegan3d`` stays light.
"""

from __future__ import annotations

from genblocks.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "AgileGAN3DConfig": "agilegan3d.config",
    "AgileGAN3DOutput": "agilegan3d.pipeline_agilegan3d",
    "AgileGAN3DPipeline": "agilegan3d.pipeline_agilegan3d",
    "EncoderModule": "agilegan3d.training",
    "PairDataset": "agilegan3d.pairs",
    "PriorModule": "agilegan3d.training",
    "StylePrior": "agilegan3d.modeling_agilegan3d",
    "TransferModule": "agilegan3d.training",
    "convert_eg3d": "agilegan3d.convert_agilegan3d_original",
    "diff_augment": "agilegan3d.augment",
    "load_preset": "agilegan3d.config",
    "multiview_consistency_loss": "agilegan3d.modeling_agilegan3d",
    "orbit_cameras": "agilegan3d.pipeline_agilegan3d",
    "paired_guidance_loss": "agilegan3d.modeling_agilegan3d",
    "prepare_photo": "agilegan3d.preprocessing",
    "synthesize_pairs": "agilegan3d.pairs",
    "toon_filter": "agilegan3d.modeling_agilegan3d",
    "train_style": "agilegan3d.training",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

__getattr__ = lazy_exports(__name__, _EXPORTS)
