"""The COAP optimizers: :class:`CoapAdamW`, :class:`CoapAdamW8bit` and :class:`CoapAdafactor` over one base class."""

from coap_optim.optimizers.adafactor import CoapAdafactor
from coap_optim.optimizers.adamw import CoapAdamW
from coap_optim.optimizers.adamw_8bit import CoapAdamW8bit
from coap_optim.optimizers.base import CoapOptimizer

__all__ = ["CoapAdafactor", "CoapAdamW", "CoapAdamW8bit", "CoapOptimizer"]
