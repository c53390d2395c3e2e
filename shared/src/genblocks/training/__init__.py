"""Lightning training base: one ``fit()`` with its run folder and exact resume, the shared ``TrainConfig``, the diffusion
(plain and reference-UNet video) and GAN training modules, the optimizer factory and the manifest data module.

Names are imported lazily (a module-level ``__getattr__``): ``from genblocks.training import TrainConfig`` imports
neither lightning nor diffusers, so packages' config schemas stay cheap to load.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "OPTIMIZER_NAMES": "genblocks.training.config",
    "OptimizerConfig": "genblocks.training.config",
    "TrainConfig": "genblocks.training.config",
    "ColumnSpec": "genblocks.training.data",
    "ManifestDataModule": "genblocks.training.data",
    "ManifestDataset": "genblocks.training.data",
    "ManifestError": "genblocks.training.data",
    "DiffusionTrainingModule": "genblocks.training.diffusion_module",
    "weighted_mse": "genblocks.training.diffusion_module",
    "FrameBatch": "genblocks.training.reference_video",
    "ReferenceVideoTrainingModule": "genblocks.training.reference_video",
    "loss_on_fixed_draws": "genblocks.training.reference_video",
    "GANBatch": "genblocks.training.gan_module",
    "GANPhase": "genblocks.training.gan_module",
    "GANTrainingModule": "genblocks.training.gan_module",
    "GeneratorOutput": "genblocks.training.gan_module",
    "build_optimizer": "genblocks.training.optim",
    "FitResult": "genblocks.training.fitting",
    "RunFolder": "genblocks.training.run_folder",
    "fit": "genblocks.training.fitting",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'genblocks.training' has no attribute {name!r}")
