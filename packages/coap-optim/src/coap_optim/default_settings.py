"""The defaults coap-optim owns, in one place: what :func:`~coap_optim.param_groups` and the optimizers use when a
caller leaves a setting out, and what other libraries (genblocks' optimizer-by-name factory) read instead of copying.

**Default rank rule.** When neither ``rank`` nor ``rank_ratio`` is given, :func:`~coap_optim.param_groups` projects
every eligible 2-D weight to ``r = max(min(m, n) // 4, 1)`` (``DEFAULT_RANK_RATIO = 4``): the ratio of the paper's
LLaMA runs (rank 512 at hidden size 2048 for LLaMA-1B, rank 1024 at 4096 for LLaMA-7B). The official code has no
default and crashes on the first 2-D parameter (spec coap-optim, known issue 4).

The optimizer hyper-parameters are the official code's defaults (``coap_torch`` at commit ``deabc3a``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_RANK_RATIO", "CoapDefaults", "defaults"]

DEFAULT_RANK_RATIO = 4.0


@dataclass(frozen=True)
class CoapDefaults:
    """The values coap-optim uses for settings a caller leaves out.

    Args:
        lr: Learning rate.
        betas: Adam moment coefficients.
        eps: Adam denominator epsilon.
        weight_decay: Decoupled weight decay.
        rank_ratio: :func:`~coap_optim.param_groups`' rank rule when no rank is given (``r = min(m, n) // ratio``).
        update_interval: Steps between projection refreshes.
        reproject_factor: Every ``update_interval * reproject_factor`` steps the projection is re-computed.
        scale: Scale of the back-projected update.
        min_conv_numel: 4-D weights with at most this many elements stay plain.
    """

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-6
    weight_decay: float = 0.0
    rank_ratio: float = DEFAULT_RANK_RATIO
    update_interval: int = 32
    reproject_factor: int = 5
    scale: float = 1.0
    min_conv_numel: int = 9216


defaults = CoapDefaults()
