"""x-portrait: expressive portrait animation with hierarchical motion attention (Xie et al., SIGGRAPH 2024).

arXiv 2403.15931; upstream bytedance/X-Portrait (inference only). This package runs it on diffusers and adds training.

Public names are imported lazily (a module-level ``__getattr__``), so ``x-portrait --help`` imports no model code.
"""

from __future__ import annotations

from genblocks.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "XPortraitConfig": "x_portrait.config",
    "XPortraitComponents": "x_portrait.modeling_x_portrait",
    "XPortraitModel": "x_portrait.modeling_x_portrait",
    "XPortraitMotionModules": "x_portrait.modeling_x_portrait",
    "XPortraitPipeline": "x_portrait.pipeline_x_portrait",
    "XPortraitPipelineOutput": "x_portrait.pipeline_x_portrait",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

__getattr__ = lazy_exports(__name__, _EXPORTS)
