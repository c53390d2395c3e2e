"""Lightning training base: the diffusion training module, the optimizer factory and the manifest data module."""

from genblocks.training.data import ColumnSpec, ManifestDataModule, ManifestDataset, ManifestError
from genblocks.training.diffusion_module import DiffusionTrainingModule, weighted_mse
from genblocks.training.optim import OPTIMIZER_NAMES, OptimizerConfig, build_optimizer

__all__ = [
    "OPTIMIZER_NAMES",
    "ColumnSpec",
    "DiffusionTrainingModule",
    "ManifestDataModule",
    "ManifestDataset",
    "ManifestError",
    "OptimizerConfig",
    "build_optimizer",
    "weighted_mse",
]
