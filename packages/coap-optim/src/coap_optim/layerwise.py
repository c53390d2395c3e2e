"""Layer-wise optimizer steps: each parameter is updated (and its gradient freed) during the backward pass.

GaLore's layer-wise mode (jiaweizzhao/GaLore, ``torchrun_main.py``) registers ``register_post_accumulate_grad_hook``
on every parameter, steps a per-parameter optimizer and zeroes the gradient in the hook, so at most one full-size
gradient is alive at a time. It steps on *every* backward pass, which silently breaks gradient accumulation
(jiaweizzhao/GaLore#78). Here the hook counts backward passes per parameter and steps (then frees the gradient) only
on every ``accumulation_steps``-th one, so ``k`` accumulated backward passes equal one step of the normal optimizer
on the summed gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["LayerwiseHandle", "enable_layerwise"]


class LayerwiseHandle:
    """The per-parameter optimizers and hooks installed by :func:`enable_layerwise`.

    Attributes:
        optimizers (`dict[str, torch.optim.Optimizer]`): One optimizer per parameter, keyed by parameter name.
        accumulation_steps (`int`): Backward passes per optimizer step.
    """

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer], accumulation_steps: int) -> None:
        self.optimizers = optimizers
        self.accumulation_steps = accumulation_steps
        self._counts: dict[str, int] = dict.fromkeys(optimizers, 0)
        self._hooks: list[RemovableHandle] = []

    def _hook(self, name: str) -> Callable[[torch.Tensor], None]:
        def hook(param: torch.Tensor) -> None:
            self._counts[name] += 1
            if self._counts[name] == self.accumulation_steps:
                self._counts[name] = 0
                optimizer = self.optimizers[name]
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

        return hook

    def remove(self) -> None:
        """Remove the hooks (the optimizers and their state are kept)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()

    def state_dict(self) -> dict[str, Any]:
        """State of every per-parameter optimizer plus the pending backward counts (``weights_only``-loadable).

        Returns:
            `dict[str, Any]`: ``{"optimizers": {name: state_dict}, "counts": {name: int}}``.
        """
        return {
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "counts": dict(self._counts),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a :meth:`state_dict` (the same parameter names are required).

        Args:
            state_dict (`Mapping[str, Any]`): From :meth:`state_dict`.

        Raises:
            `ValueError`: if the parameter names differ.
        """
        saved = state_dict["optimizers"]
        if set(saved) != set(self.optimizers):
            missing = sorted(set(self.optimizers) - set(saved))[:5]
            extra = sorted(set(saved) - set(self.optimizers))[:5]
            raise ValueError(f"layer-wise state does not match: missing {missing}, unexpected {extra}")
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(saved[name])
        self._counts = {name: int(state_dict["counts"][name]) for name in self.optimizers}


def enable_layerwise(
    model_or_params: nn.Module | Iterable[torch.Tensor | tuple[str, torch.Tensor]],
    optimizer_factory: Callable[[str, torch.Tensor], torch.optim.Optimizer],
    *,
    accumulation_steps: int = 1,
) -> LayerwiseHandle:
    """Step one optimizer per parameter inside the backward pass, honouring gradient accumulation.

    After each backward pass that accumulates a gradient into a parameter, a hook counts it; on every
    ``accumulation_steps``-th pass the hook steps that parameter's optimizer and sets its ``.grad`` to `None`. Do not
    call ``zero_grad`` between the accumulated backward passes (the hooks free the gradients), and scale the loss by
    ``1 / accumulation_steps`` as usual. Passes are counted per parameter: a parameter that receives no gradient in
    a backward pass does not count it.

    Example:
    ```python
    >>> handle = enable_layerwise(model, lambda name, p: CoapAdamW([p], lr=1e-3, rank=64), accumulation_steps=4)
    >>> for i, batch in enumerate(loader):
    ...     (model(batch).loss / 4).backward()  # every 4th backward also updates the weights
    ```

    Args:
        model_or_params (`torch.nn.Module` or `Iterable`): A model (its trainable ``named_parameters()``), or
            parameters, or ``(name, parameter)`` pairs. Parameters with ``requires_grad=False`` are skipped.
        optimizer_factory (`Callable[[str, torch.Tensor], torch.optim.Optimizer]`): Builds the optimizer of one
            parameter from its name and the parameter. (With ``per_layer_seed=True`` every optimizer sees its
            parameter at index 0; pass a per-name ``seed`` instead.)
        accumulation_steps (`int`, *optional*, defaults to 1): Backward passes per optimizer step.

    Returns:
        `LayerwiseHandle`: Holds the optimizers (``handle.optimizers``), ``state_dict``/``load_state_dict`` and
        ``remove()``.

    Raises:
        `ValueError`: for ``accumulation_steps < 1``, no trainable parameter, or a factory result that is not an
            optimizer over exactly that parameter.
    """
    if isinstance(accumulation_steps, bool) or not isinstance(accumulation_steps, int) or accumulation_steps < 1:
        raise ValueError(f"Invalid accumulation_steps={accumulation_steps!r}: must be an int >= 1")
    named: list[tuple[str, torch.Tensor]]
    if isinstance(model_or_params, nn.Module):
        named = list(model_or_params.named_parameters())
    else:
        named = []
        for i, item in enumerate(model_or_params):
            named.append(item if isinstance(item, tuple) else (str(i), item))
    seen: set[int] = set()
    params: list[tuple[str, torch.Tensor]] = []
    for name, param in named:
        if param.requires_grad and id(param) not in seen:
            seen.add(id(param))
            params.append((name, param))
    if not params:
        raise ValueError("enable_layerwise got no trainable parameter")

    optimizers: dict[str, torch.optim.Optimizer] = {}
    for name, param in params:
        optimizer = optimizer_factory(name, param)
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"optimizer_factory returned {type(optimizer).__name__} for {name!r}, not an Optimizer")
        owned = [p for group in optimizer.param_groups for p in group["params"]]
        if len(owned) != 1 or owned[0] is not param:
            raise ValueError(f"optimizer_factory must return an optimizer over exactly the parameter {name!r}")
        optimizers[name] = optimizer

    handle = LayerwiseHandle(optimizers, accumulation_steps)
    for name, param in params:
        handle._hooks.append(param.register_post_accumulate_grad_hook(handle._hook(name)))
    return handle
