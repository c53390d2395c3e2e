"""fg-net: generalizable facial action unit detection from StyleGAN2 pyramid features (Yin et al., WACV 2024).

arXiv 2308.12380; upstream ihp-lab/FG-Net. The top level exports the model, its configuration, the heatmap targets,
inference, metrics and checkpoint loading, none of which imports Lightning; training lives in `fg_net.training`
(`FGNetTrainingModule`, `train_fg_net`) and data in `fg_net.data` (`AUDataModule`, `AUFoldDataset`).
"""

from fg_net.config import (
    DataConfig,
    FGNetConfig,
    FGNetRunConfig,
    LandmarkConfig,
    TrainingConfig,
    paper_config,
    tiny_config,
)
from fg_net.convert_fg_net_original import convert_original_checkpoint, load_fg_net, load_original_fg_net
from fg_net.evaluation import AUScores, au_f1_scores, evaluate_model
from fg_net.heatmaps import BP4D_AUS, CROSS_CORPUS_AUS, DISFA_AUS, au_heatmaps, decode_heatmaps
from fg_net.modeling_fg_net import FGNet, PyramidInterpreter, second_conv_feature_indices, stylegan2_feature_index
from fg_net.pipeline_fg_net import FGNetOutput, FGNetPipeline

__version__ = "0.1.0"

__all__ = [
    "BP4D_AUS",
    "CROSS_CORPUS_AUS",
    "DISFA_AUS",
    "AUScores",
    "DataConfig",
    "FGNet",
    "FGNetConfig",
    "FGNetOutput",
    "FGNetPipeline",
    "FGNetRunConfig",
    "LandmarkConfig",
    "PyramidInterpreter",
    "TrainingConfig",
    "__version__",
    "au_f1_scores",
    "au_heatmaps",
    "convert_original_checkpoint",
    "decode_heatmaps",
    "evaluate_model",
    "load_fg_net",
    "load_original_fg_net",
    "paper_config",
    "second_conv_feature_indices",
    "stylegan2_feature_index",
    "tiny_config",
]
