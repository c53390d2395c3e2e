"""portrait-edit: feature-preserving portrait editing learned from generated pairs (arXiv 2407.20455).

An SD1.5-class UNet whose ``conv_in`` is widened to take the source portrait's latents next to the noisy latents,
conditioned on the source through CLIP vision tokens and pooled VAE tokens, sampled with 4-way nested
classifier-free guidance. Public names are imported lazily, so ``portrait-edit --help`` imports no model code.
"""

from __future__ import annotations

from genblocks.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "ClipScorer": "portrait_edit.metrics",
    "DiffusersEditor": "portrait_edit.pairs",
    "EditMetrics": "portrait_edit.metrics",
    "EditorPairGenerator": "portrait_edit.pairs",
    "PairFilters": "portrait_edit.pairs",
    "PairGenerator": "portrait_edit.pairs",
    "PhotoEdit": "portrait_edit.photo",
    "check_pair": "portrait_edit.pairs",
    "edit_photo": "portrait_edit.photo",
    "evaluate_edit": "portrait_edit.metrics",
    "make_pairs": "portrait_edit.pairs",
    "EmbeddingAdapter": "portrait_edit.modeling_portrait_edit",
    "PortraitEditComponents": "portrait_edit.modeling_portrait_edit",
    "PortraitEditConfig": "portrait_edit.config",
    "PortraitEditPipeline": "portrait_edit.pipeline_portrait_edit",
    "PortraitEditPipelineOutput": "portrait_edit.pipeline_portrait_edit",
    "PortraitEditTrainingModule": "portrait_edit.training",
    "train_from_config": "portrait_edit.training",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

__getattr__ = lazy_exports(__name__, _EXPORTS)
