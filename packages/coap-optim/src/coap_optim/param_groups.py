"""Build COAP parameter groups from a model: which weights are projected, which get plain Adam.

The default follows ``setup_params`` of ``coap_torch/utils/params.py`` in `bytedance/coap` at commit
``deabc3a671f63f9a8b49066c925d9df6b260089e`` (every 2-D weight whose rank would shrink, Tucker for 4-D weights above
the size threshold). ``target_modules`` reproduces the LLaMA example (``examples/llama/torchrun_main.py``), which
projects only the Linear layers whose qualified name contains ``"attn"`` or ``"mlp"``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from torch import nn

from coap_optim.default_settings import defaults
from coap_optim.optimizers.base import check_int, check_real
from coap_optim.optimizers.routing import route_for_shape

__all__ = ["param_groups"]

logger = logging.getLogger(__name__)


def param_groups(
    model: nn.Module,
    *,
    rank: int | None = None,
    rank_ratio: float | None = None,
    target_modules: Sequence[str] | str | None = None,
    rank_ratio_conv: float | None = None,
    min_conv_numel: int = 9216,
    weight_decay: float | None = None,
) -> list[dict[str, Any]]:
    """Split a model's trainable parameters into a projected group and a plain group.

    A parameter goes to the projected group when the optimizer would actually project it: a 2-D weight whose rank
    shrinks (``rank < min(m, n)``), or a 4-D weight with more than ``min_conv_numel`` elements when
    ``rank_ratio_conv`` is given. With ``target_modules``, only parameters of modules whose qualified name contains
    one of the strings are candidates. Everything else (biases, norms, small convolutions, 1-D and 3-D tensors)
    goes to the plain group (``project=False``). Frozen parameters (``requires_grad=False``) are left out; empty groups
    are omitted.

    Example:
    ```python
    >>> groups = param_groups(llama, rank=512, target_modules=("attn", "mlp"))
    >>> optimizer = CoapAdamW(groups, lr=1e-2, update_interval=40, scale=0.25)
    ```

    Args:
        model (`torch.nn.Module`): The model.
        rank (`int`, *optional*): Rank of the 2-D projections.
        rank_ratio (`float`, *optional*): ``r = max(min(m, n) // rank_ratio, 1)`` (``> 1``); exclusive with ``rank``.
            With neither (and no ``rank_ratio_conv``), the default rank rule applies:
            ``rank_ratio = coap_optim.defaults.rank_ratio`` (4).
        target_modules (`Sequence[str]` or `str`, *optional*): Substrings of the qualified module names to project,
            e.g. ``("attn", "mlp")``. `None` considers every module.
        rank_ratio_conv (`float`, *optional*): Tucker ratio for 4-D weights (``> 1``); `None` keeps them plain.
        min_conv_numel (`int`, *optional*, defaults to 9216): 4-D weights with at most this many elements stay plain.
        weight_decay (`float`, *optional*): Put in both groups when given; left out otherwise, so the optimizer's own
            ``weight_decay`` applies (``CoapAdamW(groups, weight_decay=0.05)``).

    Returns:
        `list[dict]`: Up to two groups, each with ``params``, ``param_names`` (the qualified parameter names),
        ``project`` (and ``weight_decay`` when given); the projected group also carries ``rank``, ``rank_ratio``,
        ``rank_ratio_conv`` and ``min_conv_numel``.

    Raises:
        `ValueError`: for invalid ranks or ratios, both ``rank`` and ``rank_ratio``, nothing to project with, or
            ``target_modules`` matching no module of the model.
    """
    options = {
        "rank": rank,
        "rank_ratio": rank_ratio,
        "rank_ratio_conv": rank_ratio_conv,
        "min_conv_numel": min_conv_numel,
        "weight_decay": weight_decay,
    }
    if rank is not None:
        check_int(options, "rank", "", minimum=1)
    check_real(options, "rank_ratio", "", low=1.0, low_open=True, optional=True)
    check_real(options, "rank_ratio_conv", "", low=1.0, low_open=True, optional=True)
    check_int(options, "min_conv_numel", "", minimum=0)
    check_real(options, "weight_decay", "", low=0.0, optional=True)
    if rank is not None and rank_ratio is not None:
        raise ValueError(f"Give either rank={rank!r} or rank_ratio={rank_ratio!r}, not both")
    if rank is None and rank_ratio is None and rank_ratio_conv is None:
        rank_ratio = defaults.rank_ratio
    if isinstance(target_modules, str):
        target_modules = (target_modules,)
    if target_modules is not None:
        target_modules = tuple(target_modules)
        if not target_modules or not all(isinstance(t, str) and t for t in target_modules):
            raise ValueError(f"Invalid target_modules={target_modules!r}: must be non-empty strings")

    projected: list[tuple[str, nn.Parameter]] = []
    plain: list[tuple[str, nn.Parameter]] = []
    matched: set[str] = set()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        module_name = name.rpartition(".")[0]
        if target_modules is not None:
            hits = {t for t in target_modules if t in module_name}
            matched |= hits
            if not hits:
                plain.append((name, param))
                continue
        route = route_for_shape(
            param.shape,
            project=True,
            rank=rank,
            rank_ratio=rank_ratio,
            rank_ratio_conv=rank_ratio_conv,
            min_conv_numel=min_conv_numel,
        )
        (plain if route.kind == "plain" else projected).append((name, param))

    if target_modules is not None:
        if not matched:
            modules = [n for n, _ in model.named_modules() if n][:12]
            raise ValueError(
                f"target_modules={target_modules!r} matches no module of {type(model).__name__}; "
                f"module names look like {modules}"
            )
        unmatched = [t for t in target_modules if t not in matched]
        if unmatched:
            logger.warning("param_groups: target_modules entries %s match no module", unmatched)

    decay = {} if weight_decay is None else {"weight_decay": weight_decay}
    groups: list[dict[str, Any]] = []
    if projected:
        groups.append(
            {
                "params": [p for _, p in projected],
                "param_names": [n for n, _ in projected],
                "project": True,
                "rank": rank,
                "rank_ratio": rank_ratio,
                "rank_ratio_conv": rank_ratio_conv,
                "min_conv_numel": min_conv_numel,
                **decay,
            }
        )
    if plain:
        groups.append(
            {
                "params": [p for _, p in plain],
                "param_names": [n for n, _ in plain],
                "project": False,
                **decay,
            }
        )
    if not projected:
        logger.warning("param_groups: no parameter of %s would be projected", type(model).__name__)
    return groups
