"""x-portrait: expressive portrait animation with hierarchical motion attention (Xie et al., SIGGRAPH 2024).

arXiv 2403.15931; upstream bytedance/X-Portrait (inference only). This package runs it on diffusers and adds training.
"""

from x_portrait.config import XPortraitConfig
from x_portrait.modeling_x_portrait import XPortraitComponents, XPortraitModel, XPortraitMotionModules
from x_portrait.pipeline_x_portrait import XPortraitPipeline, XPortraitPipelineOutput

__version__ = "0.1.0"

__all__ = [
    "XPortraitComponents",
    "XPortraitConfig",
    "XPortraitModel",
    "XPortraitMotionModules",
    "XPortraitPipeline",
    "XPortraitPipelineOutput",
    "__version__",
]
