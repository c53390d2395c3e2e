"""id-patch: group-photo personalisation with ID patches (Zhang et al., CVPR 2025, arXiv 2411.13632).

Each face embedding becomes an ID patch drawn into the ControlNet condition image at that person's position and ID
tokens appended to the text context of an SDXL + ControlNet pipeline. Upstream bytedance/ID-Patch ships inference only;
this package runs it on diffusers without TensorFlow and adds training and evaluation.
"""

from id_patch.modeling_id_patch import IDPatchConfig, IDPatchProjector
from id_patch.pipeline_id_patch import IDPatchPipeline, IDPatchPipelineOutput

__version__ = "0.1.0"

__all__ = ["IDPatchConfig", "IDPatchPipeline", "IDPatchPipelineOutput", "IDPatchProjector", "__version__"]
