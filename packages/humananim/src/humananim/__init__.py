"""humananim: human image animation with regional supervision and a motion-blur condition (arXiv 2409.19580).

A reference image is animated by a driving pose sequence: an SD1.5 UNet with a reference UNet and bank, a pose
ControlNet whose hint carries per-hand motion-blur channels, and AnimateDiff-style temporal modules, trained with
face and hand region supervision. Public names are imported lazily, so ``humananim --help`` imports no model code.
"""

from __future__ import annotations

from genblocks.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "HumanAnimComponents": "humananim.modeling",
    "HumanAnimConfig": "humananim.config",
    "HumanAnimModel": "humananim.modeling",
    "HumanAnimMotionModules": "humananim.modeling",
    "HumanAnimPipeline": "humananim.pipeline",
    "HumanAnimPipelineOutput": "humananim.pipeline",
    "HumanAnimTrainingModule": "humananim.training",
    "Keypoints": "humananim.keypoints",
    "MagicAnimateReport": "humananim.convert",
    "RegionalLoss": "humananim.losses",
    "convert_magicanimate": "humananim.convert",
    "evaluate": "humananim.metrics",
    "export_magicanimate": "humananim.convert",
    "load_keypoints": "humananim.keypoints",
    "paper_config": "humananim.config",
    "pose_hint": "humananim.keypoints",
    "retarget": "humananim.keypoints",
    "save_keypoints": "humananim.keypoints",
    "tiny_config": "humananim.config",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

__getattr__ = lazy_exports(__name__, _EXPORTS)
