"""Convert an optimizer state saved by the official COAP code (``coap_torch``) into a ``coap_optim`` state dict.

The official optimizers (`bytedance/coap` at commit ``deabc3a671f63f9a8b49066c925d9df6b260089e``) keep, per
parameter: ``step`` (int), ``projector`` (a Python object whose ``ortho_matrix`` is ``P``, or the list of Tucker
factors), and the low-rank ``exp_avg`` / ``exp_avg_sq`` (8-bit: ``(codes, QuantState)`` pairs from bitsandbytes;
Adafactor: ``exp_avg_sq_row`` / ``exp_avg_sq_col`` and a float ``RMS``). Those objects make the file a pickle that
``torch.load(weights_only=True)`` refuses, so loading it needs an explicit ``trust_pickle=True``. The classes of
``coap_torch`` and ``bitsandbytes`` are replaced by inert stand-ins while unpickling, so neither package is needed.

Parameter order: the official constructor regroups the parameters it is given (``setup_params``: 1-D tensors, then
the others, then projected 2-D, then projected 4-D). :func:`official_param_order` reproduces that order for the
common case of a single parameter list; otherwise pass the parameters in the official order yourself.
"""

from __future__ import annotations

import os
import pickle
import types
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any

import torch
from torch import Tensor

from coap_optim.optimizers.base import CoapOptimizer

__all__ = [
    "OfficialObject",
    "convert_official_param_state",
    "convert_official_state",
    "load_official_state",
    "official_param_order",
]

_STAND_IN_PACKAGES = ("coap_torch", "bitsandbytes")
# `MIN_CNN_PARAMS` of coap_torch/utils/params.py.
_OFFICIAL_MIN_CONV_NUMEL = 32 * 32 * 3 * 3


class OfficialObject:
    """Inert stand-in for a ``coap_torch`` / ``bitsandbytes`` object found in an official checkpoint.

    It only stores the pickled attributes (e.g. ``ortho_matrix`` of a projector, ``absmax`` of a ``QuantState``).
    """

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["state"] = state


class _StandInUnpickler(pickle.Unpickler):
    """Unpickler mapping every class of ``coap_torch`` / ``bitsandbytes`` to a subclass of :class:`OfficialObject`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stand_ins: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] in _STAND_IN_PACKAGES:
            key = (module, name)
            if key not in self._stand_ins:
                self._stand_ins[key] = type(name, (OfficialObject,), {"__module__": module})
            return self._stand_ins[key]
        return super().find_class(module, name)


def load_official_state(path: str | os.PathLike[str], *, trust_pickle: bool = False) -> dict[str, Any]:
    """Load an official COAP optimizer state dict (a pickle) from ``path``.

    Args:
        path (`str` or `os.PathLike`): File written by ``torch.save(official_optimizer.state_dict(), path)`` (or a
            checkpoint holding only that dict).
        trust_pickle (`bool`, *optional*, defaults to `False`): Must be `True`: unpickling can run arbitrary code, so
            only do it for files you trust.

    Returns:
        `dict[str, Any]`: The official state dict, tensors on the CPU, official objects as :class:`OfficialObject`.

    Raises:
        `ValueError`: if ``trust_pickle`` is not `True`.
    """
    if trust_pickle is not True:
        raise ValueError(
            f"Loading the official COAP state {os.fspath(path)!r} needs pickle (it stores Python projector objects), "
            "which can execute arbitrary code; pass trust_pickle=True only for a file you trust"
        )
    pickle_module = types.ModuleType("coap_optim_official_pickle")
    vars(pickle_module).update(Unpickler=_StandInUnpickler, load=pickle.load)
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=pickle_module)


def _dequantize_official(value: Any, shape_hint: Sequence[int] | None = None) -> Tensor:
    """fp32 tensor from an official moment: a tensor, or a bitsandbytes ``(codes, QuantState)`` pair."""
    if isinstance(value, Tensor):
        return value.float()
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], Tensor)):
        raise ValueError(f"Unrecognised official moment of type {type(value).__name__}")
    codes, quant_state = value
    if isinstance(quant_state, (tuple, list)):
        absmax, code = quant_state
        block_size = 4096
    else:
        if getattr(quant_state, "nested", False) or getattr(quant_state, "state2", None) is not None:
            raise ValueError("Nested (double) bitsandbytes quantisation is not supported by the converter")
        absmax, code, block_size = quant_state.absmax, quant_state.code, int(quant_state.blocksize)
    numel = codes.numel()
    scales = absmax.float().reshape(-1).repeat_interleave(block_size)[:numel]
    values = code.float()[codes.reshape(-1).long()] * scales
    return values.reshape(codes.shape if shape_hint is None else tuple(shape_hint))


def convert_official_param_state(official: Mapping[str, Any]) -> dict[str, Tensor]:
    """Convert the state of one parameter to tensors (fp32, 8-bit moments dequantised).

    Args:
        official (`Mapping[str, Any]`): ``{"step": int, "projector": obj, "exp_avg": ..., "exp_avg_sq": ...}`` (and
            ``exp_avg_sq_row`` / ``exp_avg_sq_col`` / ``RMS`` for Adafactor). ``projector.ortho_matrix`` is a tensor
            (matrix ``P``), a list of tensors (Tucker factors) or missing (dummy projector of a plain tensor).

    Returns:
        `dict[str, torch.Tensor]`: ``step`` (int64, 0-d), ``P`` or ``P0``/``P1`` when projected, and every moment
        present, as fp32 tensors.
    """
    out: dict[str, Tensor] = {"step": torch.tensor(int(official.get("step", 0)), dtype=torch.int64)}
    projector = official.get("projector")
    ortho = getattr(projector, "ortho_matrix", None) if projector is not None else None
    if isinstance(ortho, Tensor):
        out["P"] = ortho.detach().float().contiguous()
    elif isinstance(ortho, (list, tuple)):
        for i, factor in enumerate(ortho):
            out[f"P{i}"] = factor.detach().float().contiguous()
    for key in ("exp_avg", "exp_avg_sq", "exp_avg_sq_row", "exp_avg_sq_col"):
        if key in official:
            out[key] = _dequantize_official(official[key]).contiguous()
    return out


def official_param_order(official_state_dict: Mapping[str, Any], params: Sequence[Tensor]) -> list[Tensor]:
    """The parameters in the order of the official optimizer's state indices.

    For an official optimizer built from one parameter list (``CoapAdamW(params=model.parameters(), ...)``), its
    ``setup_params`` created four groups: 1-D tensors, other tensors, projected 2-D tensors and projected 4-D tensors
    (more than 9216 elements), each in the original order; a 2-D tensor with ``rank >= min(shape)`` counts as
    "other". If the official state has any other group layout, the order is assumed to be ``params`` itself.

    Args:
        official_state_dict (`Mapping[str, Any]`): The official optimizer state dict (``param_groups`` is read).
        params (`Sequence[torch.Tensor]`): The parameters in the order given to the official constructor
            (trainable ones only are kept, as the official code does).

    Returns:
        `list[torch.Tensor]`: ``params`` reordered.

    Raises:
        `ValueError`: if the group sizes of the official state do not match.
    """
    groups = official_state_dict["param_groups"]
    sizes = [len(g["params"]) for g in groups]
    params = [p for p in params if p.requires_grad]
    is_setup_layout = len(groups) == 4 and "proj_method" in groups[2] and groups[3].get("dim") == 4
    if not is_setup_layout:
        if sum(sizes) != len(params):
            raise ValueError(f"The official state has {sum(sizes)} parameters, got {len(params)}")
        return list(params)
    rank = groups[2].get("rank")
    dim_1: list[Tensor] = []
    other: list[Tensor] = []
    dim_2: list[Tensor] = []
    dim_4: list[Tensor] = []
    for p in params:
        if p.dim() == 2:
            (dim_2 if rank is None or rank < min(p.shape) else other).append(p)
        elif p.dim() == 4:
            (dim_4 if p.numel() > _OFFICIAL_MIN_CONV_NUMEL else other).append(p)
        elif p.dim() == 1:
            dim_1.append(p)
        else:
            other.append(p)
    ordered = [dim_1, other, dim_2, dim_4]
    if [len(g) for g in ordered] != sizes:
        raise ValueError(
            f"Cannot reproduce the official parameter order: its groups hold {sizes} parameters, the given parameters "
            f"split into {[len(g) for g in ordered]}; pass official_params in the official order"
        )
    return list(chain.from_iterable(ordered))


def convert_official_state(
    source: str | os.PathLike[str] | Mapping[str, Any],
    optimizer: CoapOptimizer,
    *,
    official_params: Sequence[Tensor] | None = None,
    trust_pickle: bool = False,
) -> dict[str, Any]:
    """Convert an official COAP optimizer state into a state dict for ``optimizer.load_state_dict``.

    The moments and projections are converted per parameter (8-bit moments are dequantised and, for
    :class:`~coap_optim.CoapAdamW8bit`, re-quantised with our maps); the param groups (hyperparameters) are the
    target optimizer's own. The target must route every parameter the way the official run did (same rank): a
    shape mismatch raises.

    Example:
    ```python
    >>> optimizer = CoapAdamW(model.parameters(), rank=512, update_interval=40, scale=0.25)
    >>> optimizer.load_state_dict(convert_official_state("official_optim.pt", optimizer, trust_pickle=True))
    ```

    Args:
        source (`str`, `os.PathLike` or `Mapping`): A file saved from the official optimizer's ``state_dict()``
            (loaded with :func:`load_official_state`, which needs ``trust_pickle=True``), or the already-loaded dict.
        optimizer (`CoapOptimizer`): The target optimizer, built over the same parameters.
        official_params (`Sequence[torch.Tensor]`, *optional*): The parameters in the official state's index order;
            default: :func:`official_param_order` applied to the target optimizer's parameters.
        trust_pickle (`bool`, *optional*, defaults to `False`): Required (`True`) when ``source`` is a path.

    Returns:
        `dict[str, Any]`: ``{"state": ..., "param_groups": ...}`` in this package's format (tensors only).

    Raises:
        `ValueError`: for an untrusted path, a parameter count or order that cannot be matched, or a state whose
            shapes do not fit the target optimizer's routing.
    """
    official = source if isinstance(source, Mapping) else load_official_state(source, trust_pickle=trust_pickle)
    ours = optimizer.state_dict()
    if official_params is None:
        official_params = official_param_order(official, [p for g in optimizer.param_groups for p in g["params"]])
    official_ids = list(chain.from_iterable(g["params"] for g in official["param_groups"]))
    if len(official_ids) != len(official_params):
        raise ValueError(f"The official state indexes {len(official_ids)} parameters, got {len(official_params)}")
    official_param_of = dict(zip(official_ids, official_params))
    our_ids = iter(chain.from_iterable(g["params"] for g in ours["param_groups"]))
    slot_of = {
        id(param): (next(our_ids), group_index, position)
        for group_index, group in enumerate(optimizer.param_groups)
        for position, param in enumerate(group["params"])
    }

    state: dict[int, dict[str, Tensor]] = {}
    for official_id, official_param_state in official["state"].items():
        param = official_param_of.get(official_id)
        if param is None:
            continue
        if id(param) not in slot_of:
            raise ValueError(f"Official parameter {official_id} (shape {tuple(param.shape)}) is not in the optimizer")
        our_id, group_index, position = slot_of[id(param)]
        canonical = convert_official_param_state(official_param_state)
        state[our_id] = optimizer.import_state(
            param, optimizer.param_groups[group_index], canonical, group_index=group_index, position=position
        )
    return {"state": state, "param_groups": ours["param_groups"]}
