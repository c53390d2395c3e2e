"""id-patch: group-photo personalisation with ID patches (Zhang et al., CVPR 2025, arXiv 2411.13632).

Each face embedding becomes an ID patch drawn into the ControlNet condition image at that person's position and ID
tokens appended to the text context of an SDXL + ControlNet pipeline. Upstream bytedance/ID-Patch ships inference only;
this package runs it on diffusers without TensorFlow and adds training and evaluation.

Public names are imported lazily (a module-level ``__getattr__``), so ``id-patch --help`` imports no model code.
"""

from __future__ import annotations

from genblocks.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "IDPatchConfig": "id_patch.config",
    "IDPatchProjector": "id_patch.modeling_id_patch",
    "IDPatchPipeline": "id_patch.pipeline_id_patch",
    "IDPatchPipelineOutput": "id_patch.pipeline_id_patch",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

__getattr__ = lazy_exports(__name__, _EXPORTS)
