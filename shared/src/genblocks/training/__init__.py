"""Lightning training base: the diffusion and GAN training modules, the optimizer factory and the manifest data module."""

from genblocks.training.data import ColumnSpec, ManifestDataModule, ManifestDataset, ManifestError
from genblocks.training.diffusion_module import DiffusionTrainingModule, weighted_mse
from genblocks.training.gan_module import GANPhase, GANTrainingModule, GeneratorOutput
from genblocks.training.optim import OPTIMIZER_NAMES, OptimizerConfig, build_optimizer

__all__ = [
    "OPTIMIZER_NAMES",
    "ColumnSpec",
    "DiffusionTrainingModule",
    "GANPhase",
    "GANTrainingModule",
    "GeneratorOutput",
    "ManifestDataModule",
    "ManifestDataset",
    "ManifestError",
    "OptimizerConfig",
    "build_optimizer",
    "weighted_mse",
]
