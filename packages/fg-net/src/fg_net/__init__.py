"""fg-net: generalizable facial action unit detection from StyleGAN2 pyramid features (Yin et al., WACV 2024).

arXiv 2308.12380; upstream ihp-lab/FG-Net. The top level exports the model, its configuration, the heatmap targets,
inference, metrics and checkpoint loading, none of which imports Lightning; training lives in `fg_net.training`
(`FGNetTrainingModule`, `train_fg_net`) and data in `fg_net.data` (`AUDataModule`, `AUFoldDataset`).

Public names are imported lazily (a module-level ``__getattr__``), so ``fg-net --help`` imports no model code.
"""

from __future__ import annotations

from genblocks.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "DataConfig": "fg_net.config",
    "FGNetConfig": "fg_net.config",
    "FGNetRunConfig": "fg_net.config",
    "LandmarkConfig": "fg_net.config",
    "TrainingConfig": "fg_net.config",
    "paper_config": "fg_net.config",
    "tiny_config": "fg_net.config",
    "convert_original_checkpoint": "fg_net.convert_fg_net_original",
    "load_fg_net": "fg_net.convert_fg_net_original",
    "load_original_fg_net": "fg_net.convert_fg_net_original",
    "AUScores": "fg_net.evaluation",
    "au_f1_scores": "fg_net.evaluation",
    "evaluate_model": "fg_net.evaluation",
    "BP4D_AUS": "fg_net.heatmaps",
    "CROSS_CORPUS_AUS": "fg_net.heatmaps",
    "DISFA_AUS": "fg_net.heatmaps",
    "au_heatmaps": "fg_net.heatmaps",
    "decode_heatmaps": "fg_net.heatmaps",
    "FGNet": "fg_net.modeling_fg_net",
    "PyramidInterpreter": "fg_net.modeling_fg_net",
    "second_conv_feature_indices": "fg_net.modeling_fg_net",
    "stylegan2_feature_index": "fg_net.modeling_fg_net",
    "FGNetOutput": "fg_net.pipeline_fg_net",
    "FGNetPipeline": "fg_net.pipeline_fg_net",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

__getattr__ = lazy_exports(__name__, _EXPORTS)
