"""coap-optim: COAP, memory-efficient training with correlation-aware gradient projection (arXiv 2412.00071).

A production implementation of the optimizers of Xiao et al., CVPR 2025 (official code: `bytedance/coap`, commit
``deabc3a671f63f9a8b49066c925d9df6b260089e``): low-rank Adam / 8-bit Adam / Adafactor whose projection is refreshed by
one SGD step on a correlation-aware loss and re-computed occasionally with a randomized range finder, with
tensors-only (``weights_only``-loadable) state, Triton kernels with pure-torch twins, and a layer-wise mode that
honours gradient accumulation.
"""

from importlib.metadata import PackageNotFoundError, version

from coap_optim.convert_official_state import convert_official_state
from coap_optim.default_settings import DEFAULT_RANK_RATIO, CoapDefaults, defaults
from coap_optim.layerwise import enable_layerwise
from coap_optim.memory import state_nbytes
from coap_optim.optimizers import CoapAdafactor, CoapAdamW, CoapAdamW8bit
from coap_optim.param_groups import param_groups
from coap_optim.sharding import UnsupportedShardingError

try:
    __version__ = version("coap-optim")
except PackageNotFoundError:
    __version__ = "0.0.0"

__all__ = [
    "DEFAULT_RANK_RATIO",
    "CoapAdafactor",
    "CoapAdamW",
    "CoapAdamW8bit",
    "CoapDefaults",
    "UnsupportedShardingError",
    "__version__",
    "convert_official_state",
    "defaults",
    "enable_layerwise",
    "param_groups",
    "state_nbytes",
]
