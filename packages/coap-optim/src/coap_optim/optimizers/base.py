"""Shared machinery of the COAP optimizers: option validation, routing and the projection schedule.

COAP (Xiao et al., CVPR 2025, arXiv 2412.00071) runs Adam / Adafactor on a low-rank projection of each weight
gradient and keeps the projection ``P`` between steps, refreshing it with one SGD step on a correlation-aware loss and
re-computing it only occasionally with a randomized range finder.

The schedule reproduces ``COAPAdamProjector.project`` in ``coap_torch/optimizer/adamw.py`` and
``TuckerCOAP.project`` in ``coap_torch/projection/coap_high_order_tensor.py`` of `bytedance/coap` at commit
``deabc3a671f63f9a8b49066c925d9df6b260089e``
(https://github.com/bytedance/coap/blob/deabc3a671f63f9a8b49066c925d9df6b260089e/coap_torch/optimizer/adamw.py).
With ``t`` the number of completed steps of the parameter, read *before* it is incremented::

    P missing               -> P = range_finder(G, Omega = seeded Gaussian)           (initial projection)
    t % T_u == 0:
        restore_state       -> Mf = back(M), Sf = back(sqrt(V)) with the old P
        t % (T_u * k) == 0  -> P = range_finder(G, Omega = P)                         (re-projection, warm start)
        otherwise           -> P = P - proj_lr * clip(dL/dP)                          (correlation-aware refresh)
        restore_state       -> M = proj(Mf), V = proj(Sf) ** 2 with the new P

Differences from the official code, on purpose:

* the optimizer state holds tensors only (``step``, ``P`` or ``P0``/``P1``, the moments), so a state dict loads with
  ``torch.load(weights_only=True)``; the projection configuration lives as scalars in ``param_groups``;
* moments and ``P`` are fp32 whatever the parameter dtype (the official code keeps them in the gradient dtype);
* a projected parameter whose gradient holds inf or NaN skips its step with a warning (weights, moments and ``P``
  unchanged; group option ``nonfinite_grad="raise"`` raises instead): one bad element would otherwise turn a whole
  row of the weight into NaN for good through the projection. Plain-route tensors follow ``torch.optim.AdamW`` and
  propagate non-finite values; a non-finite first moment never reaches ``P`` (refresh / re-projection keep it);
* FSDP2 (DTensor) parameters are optimized shard by shard: every shape-dependent decision (route, side, rank,
  8-bit or fp32 moments) uses the global shape, the projection is computed from the row shards with small
  collectives (:mod:`coap_optim.sharded_projection`), and the state tensors are DTensors, so
  ``torch.distributed.checkpoint`` saves and re-shards them. Set-ups still unsupported raise
  :class:`coap_optim.sharding.UnsupportedShardingError` at construction, naming the set-up.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain
from typing import Any

import torch
from torch import Tensor

from coap_optim.optimizers.routing import Route, low_rank_shape, route_for_shape
from coap_optim.projection import (
    back_project,
    initial_projection,
    project,
    random_projection,
    refresh_projection,
    reproject,
    svd_projection,
)
from coap_optim.sharded_projection import (
    sharded_initial_projection,
    sharded_random_projection,
    sharded_refresh,
    sharded_reproject,
    sharded_svd_projection,
)
from coap_optim.sharding import RowShard, UnsupportedShardingError, is_dtensor, row_shard
from coap_optim.tucker import hooi, tucker_back_project, tucker_project, tucker_refresh

__all__ = ["PROJECTIONS", "CoapOptimizer", "apply_update", "derive_seed", "is_dtensor", "projection_defaults"]

logger = logging.getLogger(__name__)

PROJECTIONS = ("coap", "svd", "random")
SIDES = ("auto", "right", "left")
IMPLS = ("auto", "triton", "torch")

# Keys of the official code (and of GaLore) that mean something else here; a group using them gets a hint.
_FOREIGN_KEYS = {
    "rank_ratio_matrix": "rank_ratio",
    "rank_ratio_cnn": "rank_ratio_conv",
    "proj_method": "projection",
    "proj_type": "projection",
    "update_proj_gap": "update_interval",
}


def projection_defaults(
    *,
    rank: int | None,
    rank_ratio: float | None,
    update_interval: int,
    reproject_factor: int,
    scale: float,
    restore_state: bool,
    projection: str,
    proj_lr: float,
    proj_clip: float,
    proj_sgd_steps: int,
    reorthonormalize: bool,
    seed: int,
    per_layer_seed: bool,
    rank_ratio_conv: float | None,
    min_conv_numel: int,
    impl: str,
    nonfinite_grad: str = "skip",
    side: str = "auto",
) -> dict[str, Any]:
    """The per-group projection options shared by every COAP optimizer, as a defaults dict.

    ``rank`` and ``rank_ratio`` are mutually exclusive at the constructor (a group may still override either; inside
    a group ``rank_ratio`` has priority, as in the official code).

    Returns:
        `dict[str, Any]`: The options plus ``project=True``.

    Raises:
        `ValueError`: if both ``rank`` and ``rank_ratio`` are given.
    """
    if rank is not None and rank_ratio is not None:
        raise ValueError(
            f"Give either rank={rank!r} or rank_ratio={rank_ratio!r}, not both (rank_ratio would silently win)"
        )
    return {
        "project": True,
        "rank": rank,
        "rank_ratio": rank_ratio,
        "update_interval": update_interval,
        "reproject_factor": reproject_factor,
        "scale": scale,
        "restore_state": restore_state,
        "projection": projection,
        "proj_lr": proj_lr,
        "proj_clip": proj_clip,
        "proj_sgd_steps": proj_sgd_steps,
        "reorthonormalize": reorthonormalize,
        "seed": seed,
        "per_layer_seed": per_layer_seed,
        "rank_ratio_conv": rank_ratio_conv,
        "min_conv_numel": min_conv_numel,
        "impl": impl,
        "nonfinite_grad": nonfinite_grad,
        "side": side,
    }


def derive_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (stable across processes, platforms and Python versions).

    Args:
        *parts (`int`): E.g. ``(seed, param_index, step)``.

    Returns:
        `int`: A seed in ``[0, 2**63)``.
    """
    digest = hashlib.blake2b(":".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def apply_update(param: Tensor, update: Tensor, *, step_size: float, decay: float, decay_before: bool) -> None:
    """Apply a full-size update with decoupled weight decay, computing in fp32.

    ``decay_before=True`` (``torch.optim.AdamW``): ``W <- W * (1 - decay) - step_size * U``;
    ``decay_before=False`` (official COAP): ``W <- (W - step_size * U) * (1 - decay)``.

    Args:
        param (`torch.Tensor`): The weight ``W``, updated in place (any float dtype; fp32 math).
        update (`torch.Tensor`): ``U``, same shape as ``param``.
        step_size (`float`): Multiplies ``U``.
        decay (`float`): ``lr * weight_decay``.
        decay_before (`bool`): Decay before or after subtracting the update.
    """
    weight = param if param.dtype == torch.float32 else param.float()
    if decay_before and decay != 0.0:
        weight.mul_(1.0 - decay)
    weight.add_(update, alpha=-step_size)
    if not decay_before and decay != 0.0:
        weight.mul_(1.0 - decay)
    if weight is not param:
        param.copy_(weight)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _invalid(key: str, value: object, where: str, must: str) -> ValueError:
    return ValueError(f"Invalid {key}={value!r}{where}: {must}")


def check_int(options: Mapping[str, Any], key: str, where: str, *, minimum: int) -> None:
    """Raise `ValueError` unless ``options[key]`` is an int ``>= minimum`` (bools are not ints here)."""
    value = options[key]
    if not _is_int(value) or value < minimum:
        raise _invalid(key, value, where, f"must be an int >= {minimum}")


def check_real(
    options: Mapping[str, Any],
    key: str,
    where: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> None:
    """Raise `ValueError` unless ``options[key]`` is a finite real number in the given interval (or `None`)."""
    value = options[key]
    if optional and value is None:
        return
    bad = not _is_real(value)
    if not bad and low is not None:
        bad = value <= low if low_open else value < low
    if not bad and high is not None:
        bad = value >= high if high_open else value > high
    if bad:
        lo = "" if low is None else f"{'(' if low_open else '['}{low}, "
        hi = "inf)" if high is None else f"{high}{')' if high_open else ']'}"
        interval = f"in {lo}{hi}" if low is not None else f"<{'' if high_open else '='} {high}"
        raise _invalid(key, value, where, f"must be a finite number {interval}{' or None' if optional else ''}")


def check_bool(options: Mapping[str, Any], key: str, where: str) -> None:
    """Raise `ValueError` unless ``options[key]`` is a bool."""
    if not isinstance(options[key], bool):
        raise _invalid(key, options[key], where, "must be True or False")


def check_choice(options: Mapping[str, Any], key: str, where: str, choices: Sequence[str]) -> None:
    """Raise `ValueError` unless ``options[key]`` is one of ``choices``."""
    if options[key] not in choices:
        raise _invalid(key, options[key], where, f"must be one of {tuple(choices)}")


def _is_flat_param(param: Tensor) -> bool:
    return bool(getattr(param, "_is_flat_param", False) or getattr(param, "_fsdp_flattened", False))


def _local(tensor: Tensor) -> Tensor:
    """The local shard of a DTensor (a view sharing its storage), or the tensor itself."""
    return tensor.to_local() if is_dtensor(tensor) else tensor  # type: ignore[attr-defined]


NONFINITE_GRAD = ("skip", "raise")
"""What a projected parameter does with a gradient holding inf or NaN: skip its step (warn) or raise."""


def _all_finite(*tensors: Tensor | None) -> bool:
    """Whether every entry is finite, judged by the sum: any inf or NaN entry makes it non-finite.

    One reduction pass without a boolean copy (about 16x faster than ``isfinite(t).all()`` on CPU). A sum that
    overflows from finite entries of magnitude ~1e38 also reads as non-finite, which only keeps ``P`` unchanged.
    """
    return all(t is None or bool(torch.isfinite(t.sum())) for t in tensors)


@functools.lru_cache(maxsize=4096)
def _cached_route(
    shape: tuple[int, ...],
    *,
    project: bool,
    rank: int | None,
    rank_ratio: float | None,
    rank_ratio_conv: float | None,
    min_conv_numel: int,
    side: str,
) -> Route:
    """:func:`route_for_shape`, memoised: the step routes every parameter on every call."""
    return route_for_shape(
        shape,
        side=side,
        project=project,
        rank=rank,
        rank_ratio=rank_ratio,
        rank_ratio_conv=rank_ratio_conv,
        min_conv_numel=min_conv_numel,
    )


def _orthonormalize_columns(factor: Tensor) -> Tensor:
    """QR-orthonormalise the columns of an `(s, r)` factor, keeping each column's sign."""
    q, r = torch.linalg.qr(factor, mode="reduced")
    return (q * torch.where(torch.diagonal(r) < 0, -1.0, 1.0).to(q.dtype)).contiguous()


class CoapOptimizer(torch.optim.Optimizer):
    """Base class of the COAP optimizers (not used directly).

    Subclasses supply the per-parameter arithmetic through a handful of hooks (``_init_plain_state``,
    ``_plain_update``, ``_init_low_rank_state``, ``_low_rank_update``, ``_first_moment``, ``_rotate_moments``); this
    class validates options, routes each parameter (plain, matrix or Tucker projection), runs the projection schedule
    and keeps the state loadable with ``torch.load(weights_only=True)``.

    Per-group options (any of them can be overridden in a param group dict):

    - ``project`` (`bool`, default `True`): `False` optimizes every tensor of the group with plain (full-size)
      moments.
    - ``rank`` (`int`) / ``rank_ratio`` (`float`, ``> 1``): rank of 2-D projections, ``r = rank`` or
      ``r = max(min(m, n) // rank_ratio, 1)`` (``rank_ratio`` wins inside a group). A matrix with
      ``r >= min(m, n)`` gets plain moments (logged once at construction). With neither, 2-D tensors are plain.
    - ``rank_ratio_conv`` (`float`, ``> 1``) and ``min_conv_numel`` (`int`, 9216): 4-D tensors with more than
      ``min_conv_numel`` elements get a Tucker projection (modes 0 and 1, or mode 0 for ``kw == 1``).
    - ``update_interval`` (`int`, 32) ``T_u`` and ``reproject_factor`` (`int`, 5): the schedule above.
    - ``scale`` (`float`, 1.0): multiplies the back-projected update of projected tensors.
    - ``restore_state`` (`bool`, `False`): rotate the moments into the new subspace when ``P`` changes.
    - ``projection`` (`str`, ``"coap"``): ``"coap"``; ``"svd"`` (GaLore: top-r singular vectors of ``G`` by a full
      SVD every ``T_u`` steps; HOOI for 4-D); ``"random"`` (Flora: seeded Gaussian ``P`` with variance ``1 / r``,
      re-drawn every ``T_u`` steps from a seed derived from ``(seed, parameter index, step)``; 2-D only).
    - ``proj_lr`` (0.1), ``proj_clip`` (1.0), ``proj_sgd_steps`` (1), ``reorthonormalize`` (`False`): the refresh.
    - ``seed`` (`int`, 3407) and ``per_layer_seed`` (`bool`, `False`): seed of the initial range finder, the same for
      every tensor as in the official code unless ``per_layer_seed`` derives one per parameter index.
    - ``impl`` (`str`, ``"auto"``): kernel backend, ``"auto"``, ``"triton"`` or ``"torch"``.
    - ``side`` (`str`, ``"auto"``): side of matrix projections: ``"auto"`` (the official rule: right when ``m >= n``),
      ``"right"`` or ``"left"``. Under FSDP2's row sharding ``"right"`` needs no collective in a plain step (a left
      projection all-reduces ``P^T G``, ``r x n`` values, every step); see :mod:`coap_optim.sharded_projection`.

    The projection configuration of a parameter must not change after its first step.
    """

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self._fallbacks: list[str] = []
        self._shards: dict[int, RowShard | None] = {}
        self._warned: set[str] = set()
        self._constructing = True
        self._validate_options(defaults, "")
        super().__init__(params, defaults)
        self._constructing = False
        self._log_fallbacks()

    # ------------------------------------------------------------------ validation and routing

    def _validate_algorithm_options(self, options: Mapping[str, Any], where: str) -> None:
        """Validate the subclass's own options (betas, eps, ...); raise `ValueError` naming the key."""
        raise NotImplementedError

    def _validate_options(self, options: Mapping[str, Any], where: str) -> None:
        for key, hint in _FOREIGN_KEYS.items():
            if key in options:
                raise ValueError(f"Unknown option {key!r}{where}: coap_optim calls it {hint!r}")
        check_real(options, "lr", where, low=0.0)
        check_real(options, "weight_decay", where, low=0.0)
        check_bool(options, "project", where)
        if options["rank"] is not None:
            check_int(options, "rank", where, minimum=1)
        check_real(options, "rank_ratio", where, low=1.0, low_open=True, optional=True)
        check_real(options, "rank_ratio_conv", where, low=1.0, low_open=True, optional=True)
        check_int(options, "update_interval", where, minimum=1)
        check_int(options, "reproject_factor", where, minimum=1)
        check_real(options, "scale", where, low=0.0, low_open=True)
        check_bool(options, "restore_state", where)
        check_choice(options, "projection", where, PROJECTIONS)
        check_real(options, "proj_lr", where, low=0.0)
        check_real(options, "proj_clip", where, low=0.0, low_open=True)
        check_int(options, "proj_sgd_steps", where, minimum=1)
        check_bool(options, "reorthonormalize", where)
        check_int(options, "seed", where, minimum=0)
        if options["seed"] >= 2**63:
            raise _invalid("seed", options["seed"], where, "must be < 2**63")
        check_bool(options, "per_layer_seed", where)
        check_int(options, "min_conv_numel", where, minimum=0)
        check_choice(options, "impl", where, IMPLS)
        check_choice(options, "nonfinite_grad", where, NONFINITE_GRAD)
        check_choice({"side": options.get("side", "auto")}, "side", where, SIDES)
        if options["projection"] == "random" and options["rank_ratio_conv"] is not None:
            raise ValueError(
                f"Invalid projection='random' with rank_ratio_conv={options['rank_ratio_conv']!r}{where}: the Flora "
                "projection is defined for 2-D tensors only; use projection='coap' or 'svd' for convolutions"
            )
        self._validate_algorithm_options(options, where)

    def _unsupported_sharded(self, param: Tensor, group: Mapping[str, Any], route: Route) -> str | None:
        """`None` if this optimizer handles the FSDP2-sharded ``param`` with ``route``, else why not."""
        if route.kind == "tucker":
            return (
                "its 4-D Tucker projection (HOOI over modes 0 and 1) is not implemented for row shards; set "
                "rank_ratio_conv=None (plain Adam for convolutions) or keep that module out of fully_shard"
            )
        if route.kind == "matrix" and group["restore_state"]:
            return "restore_state=True (moment rotation) is not implemented for row shards; use restore_state=False"
        return None

    def _row_shard(self, param: Tensor) -> RowShard | None:
        """The (cached) row layout of a DTensor parameter, `None` for an ordinary tensor."""
        key = id(param)
        if key not in self._shards:
            self._shards[key] = row_shard(param, f"parameter of shape {tuple(param.shape)}")
        return self._shards[key]

    @staticmethod
    def _param_label(group: Mapping[str, Any], position: int, group_index: int) -> str:
        names = group.get("param_names")
        shape = tuple(group["params"][position].shape)
        if names is not None:
            return f"parameter {names[position]!r} (shape {shape})"
        return f"parameter {position} of param group {group_index} (shape {shape})"

    def _route(self, group: Mapping[str, Any], param: Tensor) -> Route:
        return _cached_route(
            tuple(param.shape),
            project=group["project"],
            rank=group["rank"],
            rank_ratio=group["rank_ratio"],
            rank_ratio_conv=group["rank_ratio_conv"],
            min_conv_numel=group["min_conv_numel"],
            side=group.get("side", "auto"),
        )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group (see `torch.optim.Optimizer.add_param_group`), validating its options and tensors.

        Raises:
            `ValueError`: for an invalid option (the message names the key and the group), a complex or
                non-floating parameter, or an FSDP-sharded parameter with a projection configured.
        """
        group_index = len(self.param_groups)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            self._validate_options(group, f" in param group {group_index}")
            wants_projection = group["project"] and (
                group["rank"] is not None or group["rank_ratio"] is not None or group["rank_ratio_conv"] is not None
            )
            for position, param in enumerate(group["params"]):
                label = self._param_label(group, position, group_index)
                if param.is_complex():
                    raise ValueError(f"{type(self).__name__} does not support complex tensors: {label}")
                if not param.is_floating_point():
                    raise ValueError(f"{type(self).__name__} optimizes floating-point tensors only: {label}")
                route = self._route(group, param)
                if _is_flat_param(param) and wants_projection:
                    raise UnsupportedShardingError(
                        f"{label} is a sharded FSDP1 FlatParameter (flattened, concatenated weights), and a projection "
                        f"is configured for it. {type(self).__name__} supports FSDP2 (fully_shard, DTensor "
                        "parameters), DDP and single devices; under FSDP1 only with projection off (rank=None, "
                        "rank_ratio=None, rank_ratio_conv=None, or project=False for that group)."
                    )
                if is_dtensor(param):
                    row_shard(param, label)
                    reason = self._unsupported_sharded(param, group, route)
                    if reason is not None:
                        raise UnsupportedShardingError(
                            f"{label} is a sharded DTensor (FSDP2), and {reason}. {type(self).__name__} supports "
                            "FSDP2's dim-0 sharding for plain and 2-D projected tensors."
                        )
                if route.reason:
                    self._fallbacks.append(f"{label}: {route.reason}")
        except ValueError:
            self.param_groups.pop()
            raise
        if not self._constructing:
            self._log_fallbacks()

    def _log_fallbacks(self) -> None:
        if self._fallbacks:
            logger.info(
                "%s: %d tensor(s) use full-size (unprojected) moments because a projection would not shrink them: %s",
                type(self).__name__,
                len(self._fallbacks),
                "; ".join(self._fallbacks),
            )
            self._fallbacks = []

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message)

    # ------------------------------------------------------------------ state dict

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a state dict produced by :meth:`state_dict`, keeping every state tensor's dtype.

        `torch.optim.Optimizer.load_state_dict` casts floating state to the parameter dtype (which would turn uint8
        codes into floats and fp32 moments of bf16 parameters into bf16); here tensors are only moved to the
        parameter's device, and ``step`` stays on the CPU.

        Args:
            state_dict (`Mapping[str, Any]`): ``{"state": {index: {key: tensor}}, "param_groups": [...]}``.
        """
        saved_state = state_dict["state"]
        super().load_state_dict({**state_dict, "state": {}})
        saved_ids = chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        params = chain.from_iterable(g["params"] for g in self.param_groups)
        id_map = dict(zip(saved_ids, params, strict=True))
        for key, value in saved_state.items():
            param = id_map.get(key)
            if param is None:
                continue
            self.state[param] = {
                name: tensor.clone() if name == "step" else tensor.to(device=param.device, copy=True)
                for name, tensor in value.items()
            }

    def import_state(
        self,
        param: Tensor,
        group: Mapping[str, Any],
        canonical: Mapping[str, Tensor],
        *,
        group_index: int,
        position: int,
    ) -> dict[str, Tensor]:
        """Build this optimizer's state for ``param`` from fp32 tensors (used by the official-state converter).

        Args:
            param (`torch.Tensor`): The parameter.
            group (`Mapping[str, Any]`): Its param group.
            canonical (`Mapping[str, torch.Tensor]`): ``step``, ``P`` or ``P0``/``P1`` when projected, and the moments
                in fp32 (``exp_avg``, ``exp_avg_sq``; Adafactor: ``exp_avg_sq_row`` / ``exp_avg_sq_col``).
            group_index (`int`): Index of ``group`` (for error messages).
            position (`int`): Position of ``param`` in its group (for error messages).

        Returns:
            `dict[str, torch.Tensor]`: The state, as :meth:`step` would have created it.

        Raises:
            `ValueError`: if the projection or moment shapes do not fit this optimizer's routing of ``param``.
        """
        label = self._param_label(group, position, group_index)
        route = self._route(group, param)
        found = [k for k in ("P", "P0", "P1") if k in canonical]
        state: dict[str, Tensor] = {"step": canonical["step"].to(torch.int64).clone()}
        if route.kind == "plain":
            if found:
                raise ValueError(
                    f"{label}: the source state projects it ({found}) but this optimizer uses plain moments for it; "
                    "use the same rank / rank_ratio / rank_ratio_conv as the source run"
                )
            shape = tuple(param.shape)
        else:
            if route.kind == "matrix":
                keys = ["P"]
                m, n = param.shape
                expected = [(route.rank, n) if route.side == "right" else (m, route.rank)]
            else:
                keys = [f"P{i}" for i in range(len(route.modes))]
                expected = [(param.shape[mode], r) for mode, r in zip(route.modes, route.ranks)]
            got = [tuple(canonical[k].shape) for k in found]
            if found != keys or got != expected:
                raise ValueError(
                    f"{label}: the source projection {dict(zip(found, got))} does not match this optimizer's "
                    f"{dict(zip(keys, expected))}; use the same rank / rank_ratio / rank_ratio_conv as the source run"
                )
            for key in keys:
                state[key] = canonical[key].to(device=param.device, dtype=torch.float32).contiguous()
            shape = low_rank_shape(param.shape, route)
        state.update(self._import_moments(param, group, canonical, shape, route.kind != "plain", label))
        return state

    def _import_moments(
        self,
        param: Tensor,
        group: Mapping[str, Any],
        canonical: Mapping[str, Tensor],
        shape: tuple[int, ...],
        projected: bool,
        label: str,
    ) -> dict[str, Tensor]:
        raise NotImplementedError

    @staticmethod
    def _moment(
        canonical: Mapping[str, Tensor], key: str, shape: tuple[int, ...], param: Tensor, label: str
    ) -> Tensor:
        if key not in canonical:
            raise ValueError(f"{label}: the source state has no {key!r}")
        value = canonical[key]
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"{label}: source {key!r} has shape {tuple(value.shape)}, expected {tuple(shape)}")
        return value.to(device=param.device, dtype=torch.float32).contiguous()

    # ------------------------------------------------------------------ hooks of the subclasses

    def _init_plain_state(self, param: Tensor, state: dict[str, Tensor], group: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def _plain_update(
        self, param: Tensor, grad: Tensor, state: dict[str, Tensor], group: Mapping[str, Any], step: int
    ) -> None:
        raise NotImplementedError

    def _init_low_rank_state(
        self, state: dict[str, Tensor], group: Mapping[str, Any], shape: tuple[int, ...], device: torch.device
    ) -> None:
        raise NotImplementedError

    def _low_rank_update(
        self,
        param: Tensor,
        grad: Tensor,
        state: dict[str, Tensor],
        group: Mapping[str, Any],
        route: Route,
        factors: list[Tensor],
        step: int,
    ) -> None:
        raise NotImplementedError

    def _first_moment(self, state: dict[str, Tensor], group: Mapping[str, Any], shape: tuple[int, ...]) -> Tensor:
        """The low-rank first moment ``M`` in fp32 (used by the refresh; zeros if the algorithm keeps none)."""
        raise NotImplementedError

    def _rotate_moments(
        self,
        state: dict[str, Tensor],
        group: Mapping[str, Any],
        shape: tuple[int, ...],
        restore: Callable[[Tensor], Tensor],
        project_new: Callable[[Tensor], Tensor],
    ) -> None:
        """``restore_state``: map the moments through the old projection (``restore``) and the new one."""
        raise NotImplementedError

    # ------------------------------------------------------------------ projections

    @staticmethod
    def factors_of(state: Mapping[str, Tensor], route: Route) -> list[Tensor]:
        """The projection tensors of a parameter: ``[P]`` (matrix), ``[P0]`` / ``[P0, P1]`` (Tucker), or ``[]``."""
        if route.kind == "matrix":
            return [state["P"]] if "P" in state else []
        return [state[f"P{i}"] for i in range(len(route.modes)) if f"P{i}" in state]

    @staticmethod
    def _store_factors(state: dict[str, Tensor], route: Route, factors: Sequence[Tensor]) -> None:
        if route.kind == "matrix":
            state["P"] = factors[0].to(torch.float32).contiguous()
        else:
            for i, factor in enumerate(factors):
                state[f"P{i}"] = factor.to(torch.float32).contiguous()

    @staticmethod
    def project_with(x: Tensor, factors: Sequence[Tensor], route: Route) -> Tensor:
        """Project a full-size tensor with the route's factors (fp32 result for fp32 factors)."""
        if route.kind == "matrix":
            return project(x, factors[0], route.matrix_side)
        return tucker_project(x, factors, route.modes)

    @staticmethod
    def back_project_with(y: Tensor, factors: Sequence[Tensor], route: Route) -> Tensor:
        """Map a low-rank tensor back to the full size with the route's factors."""
        if route.kind == "matrix":
            return back_project(y, factors[0], route.matrix_side)
        return tucker_back_project(y, factors, route.modes)

    def _new_factors(
        self,
        grad: Tensor,
        factors: list[Tensor],
        first_moment: Tensor | None,
        group: Mapping[str, Any],
        route: Route,
        param_index: int,
        step: int,
        reproject_now: bool,
    ) -> list[Tensor]:
        method = group["projection"]
        if route.kind == "matrix":
            shape = (grad.shape[0], grad.shape[1])
            if method == "random":
                seed = derive_seed(group["seed"], param_index, step)
                return [random_projection(shape, route.rank, route.matrix_side, seed=seed, device=grad.device)]
            if method == "svd":
                return [svd_projection(grad, route.rank, route.matrix_side)]
            if not factors:
                seed = derive_seed(group["seed"], param_index) if group["per_layer_seed"] else group["seed"]
                return [initial_projection(grad, route.rank, route.matrix_side, seed=seed)]
            if reproject_now:
                return [reproject(grad, factors[0], route.matrix_side)]
            assert first_moment is not None  # computed whenever reproject_now is False
            new = refresh_projection(
                factors[0],
                first_moment,
                grad,
                route.matrix_side,
                lr=group["proj_lr"],
                max_norm=group["proj_clip"],
                steps=group["proj_sgd_steps"],
                reorthonormalize=group["reorthonormalize"],
            )
            return [new]
        if not factors or method == "svd" or reproject_now:
            return hooi(grad, route.ranks, route.modes)
        assert first_moment is not None  # computed whenever reproject_now is False
        new_factors = factors
        for _ in range(group["proj_sgd_steps"]):
            new_factors = tucker_refresh(
                new_factors, first_moment, grad, route.modes, lr=group["proj_lr"], max_norm=group["proj_clip"]
            )
        if group["reorthonormalize"]:
            new_factors = [_orthonormalize_columns(f) for f in new_factors]
        return new_factors

    def _schedule_projection(
        self,
        grad: Tensor,
        state: dict[str, Tensor],
        group: Mapping[str, Any],
        route: Route,
        param_index: int,
        label: Callable[[], str],
    ) -> list[Tensor]:
        """Create, refresh or re-compute the projection of one parameter; returns the factors to use this step.

        ``label`` returns the parameter's name for warnings (built only when one is logged).
        """
        step = int(state["step"])
        factors = self.factors_of(state, route)
        shape = low_rank_shape(grad.shape, route)
        method = group["projection"]
        if not factors:
            source = grad if method == "random" or _all_finite(grad) else torch.nan_to_num(grad, 0.0, 0.0, 0.0)
            if source is not grad:
                self._warn_once(
                    "init",
                    f"{type(self).__name__}: non-finite gradient at the initial projection of "
                    f"{label()}; its non-finite entries are treated as zeros for P.",
                )
            factors = self._new_factors(source.float(), [], None, group, route, param_index, step, True)
            self._store_factors(state, route, factors)
            self._init_low_rank_state(state, group, shape, grad.device)
            return self.factors_of(state, route)
        interval = group["update_interval"]
        if step % interval != 0:
            return factors
        reproject_now = method != "coap" or step % (interval * group["reproject_factor"]) == 0
        first_moment = None if reproject_now else self._first_moment(state, group, shape)
        if method != "random" and not _all_finite(grad, first_moment):
            self._warn_once(
                "update",
                f"{type(self).__name__}: non-finite gradient or first moment at step {step} of {label()}; the projection "
                "is kept unchanged (warned once per optimizer).",
            )
            return factors
        new_factors = self._new_factors(
            grad.float(), factors, first_moment, group, route, param_index, step, reproject_now
        )
        new_factors = [f.to(torch.float32) for f in new_factors]
        if group["restore_state"]:
            self._rotate_moments(
                state,
                group,
                shape,
                lambda x: self.back_project_with(x, factors, route),
                lambda x: self.project_with(x, new_factors, route),
            )
        self._store_factors(state, route, new_factors)
        return self.factors_of(state, route)

    # ------------------------------------------------------------------ the step

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step.

        Args:
            closure (`Callable`, *optional*): Re-evaluates the model and returns the loss.

        Returns:
            The closure's loss, or `None`.

        Raises:
            `ValueError`: for a sparse gradient (the message names the parameter).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        finite = self._sharded_finite()
        param_index = -1
        for group_index, group in enumerate(self.param_groups):
            plain: list[tuple[Tensor, Tensor, dict[str, Tensor]]] = []
            for position, param in enumerate(group["params"]):
                param_index += 1
                grad = param.grad
                if grad is None:
                    continue
                if grad.is_sparse:
                    raise ValueError(
                        f"{type(self).__name__} does not support sparse gradients: "
                        f"{self._param_label(group, position, group_index)}; use torch.optim.SparseAdam"
                    )
                route = self._route(group, param)
                state = self.state[param]
                if route.kind == "plain":
                    if "step" not in state:
                        state["step"] = torch.zeros((), dtype=torch.int64)
                        self._init_plain_state(param, state, group)
                    state["step"] += 1
                    plain.append((param, grad, state))
                    continue
                shard = self._row_shard(param) if is_dtensor(param) else None
                if shard is not None:
                    self._step_projected_sharded(
                        param, grad, state, group, route, shard, finite[id(param)], group_index, position, param_index
                    )
                    continue
                self._step_projected(param, grad, state, group, route, group_index, position, param_index)
            if plain:
                self._plain_update_many(plain, group)
        return loss

    def _plain_update_many(
        self, items: Sequence[tuple[Tensor, Tensor, dict[str, Tensor]]], group: Mapping[str, Any]
    ) -> None:
        """Update the plain-route tensors of one group (their ``step`` already incremented).

        The default calls :meth:`_plain_update` per tensor; a subclass may batch them (``torch._foreach_*``).

        Args:
            items (`Sequence[tuple[Tensor, Tensor, dict[str, Tensor]]]`): ``(param, grad, state)`` triples.
            group (`Mapping[str, Any]`): Their param group.
        """
        for param, grad, state in items:
            self._plain_update(param, grad, state, group, int(state["step"]))

    def _step_projected(
        self,
        param: Tensor,
        grad: Tensor,
        state: dict[str, Tensor],
        group: Mapping[str, Any],
        route: Route,
        group_index: int,
        position: int,
        param_index: int,
    ) -> None:
        if not _all_finite(grad):
            label = self._param_label(group, position, group_index)
            if group.get("nonfinite_grad", "skip") == "raise":
                raise FloatingPointError(f"{type(self).__name__}: non-finite gradient for {label}")
            logger.warning(
                "%s: non-finite gradient for %s; its step is skipped (weights, moments and P unchanged; "
                "nonfinite_grad='raise' raises instead)",
                type(self).__name__,
                label,
            )
            return
        if "step" not in state:
            state["step"] = torch.zeros((), dtype=torch.int64)
        factors = self._schedule_projection(
            grad, state, group, route, param_index, lambda: self._param_label(group, position, group_index)
        )
        state["step"] += 1
        self._low_rank_update(param, grad, state, group, route, factors, int(state["step"]))

    # ------------------------------------------------------------------ FSDP2 (row-sharded DTensor) parameters

    def _sharded_finite(self) -> dict[int, bool]:
        """Whether each sharded projected parameter's *global* gradient is finite (one all-reduce per group).

        Every rank must take the same skip / refresh decisions, so the local sums are added over the shard group.
        """
        pending: dict[int, tuple[RowShard, list[tuple[int, Tensor]]]] = {}
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None or not is_dtensor(param) or self._route(group, param).kind == "plain":
                    continue
                shard = self._row_shard(param)
                assert shard is not None
                entry = pending.setdefault(id(shard.group), (shard, []))
                entry[1].append((id(param), _local(param.grad).float().sum()))
        finite: dict[int, bool] = {}
        for shard, items in pending.values():
            sums = shard.all_reduce_(torch.stack([value for _, value in items]))
            flags = torch.isfinite(sums).tolist()
            finite.update((key, bool(flag)) for (key, _), flag in zip(items, flags))
        return finite

    def _step_projected_sharded(
        self,
        param: Tensor,
        grad: Tensor,
        state: dict[str, Tensor],
        group: Mapping[str, Any],
        route: Route,
        shard: RowShard,
        finite: bool,
        group_index: int,
        position: int,
        param_index: int,
    ) -> None:
        """:meth:`_step_projected` for a row-sharded 2-D parameter: the same schedule, on this rank's rows."""
        if not finite:
            label = self._param_label(group, position, group_index)
            if group.get("nonfinite_grad", "skip") == "raise":
                raise FloatingPointError(f"{type(self).__name__}: non-finite gradient for {label}")
            logger.warning(
                "%s: non-finite gradient for %s; its step is skipped on every rank (weights, moments and P "
                "unchanged; nonfinite_grad='raise' raises instead)",
                type(self).__name__,
                label,
            )
            return
        local_grad = _local(grad)
        if "step" not in state:
            state["step"] = torch.zeros((), dtype=torch.int64)
        step = int(state["step"])
        side = route.matrix_side
        method = group["projection"]
        proj = state.get("P")
        new_proj: Tensor | None = None
        if proj is None:
            shape = (int(param.shape[0]), int(param.shape[1]))
            if method == "random":
                seed = derive_seed(group["seed"], param_index, step)
                new_proj = sharded_random_projection(shape, route.rank, side, shard, seed=seed, device=grad.device)
            elif method == "svd":
                new_proj = sharded_svd_projection(local_grad.float(), route.rank, side, shard)
            else:
                seed = derive_seed(group["seed"], param_index) if group["per_layer_seed"] else group["seed"]
                new_proj = sharded_initial_projection(local_grad.float(), route.rank, side, shard, seed=seed)
            self._init_low_rank_state_sharded(state, group, route, shard, shape, grad.device)
        elif step % group["update_interval"] == 0:
            local_proj = _local(proj)
            if method == "random":
                seed = derive_seed(group["seed"], param_index, step)
                shape = (int(param.shape[0]), int(param.shape[1]))
                new_proj = sharded_random_projection(shape, route.rank, side, shard, seed=seed, device=grad.device)
            elif method == "svd":
                new_proj = sharded_svd_projection(local_grad.float(), route.rank, side, shard)
            elif step % (group["update_interval"] * group["reproject_factor"]) == 0:
                new_proj = sharded_reproject(local_grad.float(), local_proj, side, shard)
            else:
                first_moment = self._first_moment_sharded(state, group, route, shard)
                moment_sum = first_moment.sum()
                if side == "right":
                    shard.all_reduce_(moment_sum)
                if torch.isfinite(moment_sum):
                    new_proj = sharded_refresh(
                        local_proj,
                        first_moment,
                        local_grad.float(),
                        side,
                        shard,
                        lr=group["proj_lr"],
                        max_norm=group["proj_clip"],
                        steps=group["proj_sgd_steps"],
                        reorthonormalize=group["reorthonormalize"],
                    )
                else:
                    self._warn_once(
                        "update",
                        f"{type(self).__name__}: non-finite first moment at step {step} of "
                        f"{self._param_label(group, position, group_index)}; the projection is kept unchanged.",
                    )
        if new_proj is not None:
            new_proj = new_proj.to(torch.float32).contiguous()
            if side == "right":
                state["P"] = shard.replicated(new_proj)
            else:
                state["P"] = shard.sharded(new_proj, (int(param.shape[0]), route.rank))
        state["step"] += 1
        self._low_rank_update_sharded(
            _local(param), local_grad, state, group, route, _local(state["P"]), shard, int(state["step"])
        )

    def _init_low_rank_state_sharded(
        self,
        state: dict[str, Tensor],
        group: Mapping[str, Any],
        route: Route,
        shard: RowShard,
        shape: tuple[int, int],
        device: torch.device,
    ) -> None:
        """Zero moments of a row-sharded matrix: right `(m, r)` row-sharded, left `(r, n)` replicated (DTensors)."""
        raise NotImplementedError

    def _first_moment_sharded(
        self, state: dict[str, Tensor], group: Mapping[str, Any], route: Route, shard: RowShard
    ) -> Tensor:
        """This rank's part of ``M`` in fp32: right `(local_rows, r)`, left `(r, n)`."""
        raise NotImplementedError

    def _low_rank_update_sharded(
        self,
        param: Tensor,
        grad: Tensor,
        state: dict[str, Tensor],
        group: Mapping[str, Any],
        route: Route,
        proj: Tensor,
        shard: RowShard,
        step: int,
    ) -> None:
        """Moment update and weight update of this rank's rows (``param``, ``grad``, ``proj``: local tensors)."""
        raise NotImplementedError
