"""Fused COAP kernels (arXiv 2412.00071): Triton with pure-torch twins, chosen by ``impl="auto"|"triton"|"torch"``.

Importing this package never imports Triton; see :mod:`coap_optim.kernels.dispatch`. Each op is also registered as
a `torch.library` custom op (``torch.ops.coap_optim.<name>``, with a fake implementation), which is what
`torch.compile` traces; eager calls skip the dispatcher and run the chosen twin directly.
"""

from .back_project import back_project_and_apply
from .dispatch import has_triton
from .project_update import project_and_update_moments
from .quant8 import adam_update_8bit, create_dynamic_map, dequantize_blockwise, quantize_blockwise

__all__ = [
    "adam_update_8bit",
    "back_project_and_apply",
    "create_dynamic_map",
    "dequantize_blockwise",
    "has_triton",
    "project_and_update_moments",
    "quantize_blockwise",
]
