"""COAP AdamW (arXiv 2412.00071): Adam on low-rank projected gradients with correlation-aware projection updates.

Follows ``AdamW.step`` of ``coap_torch/optimizer/adamw.py`` in `bytedance/coap` at commit
``deabc3a671f63f9a8b49066c925d9df6b260089e``
(https://github.com/bytedance/coap/blob/deabc3a671f63f9a8b49066c925d9df6b260089e/coap_torch/optimizer/adamw.py),
itself HuggingFace's ``transformers.AdamW``. Two arithmetic conventions share one code path:

* ``convention="official"`` (default): ``N = M / (sqrt(V) + eps)``,
  ``W <- W - lr * scale * sqrt(1 - b2^t) / (1 - b1^t) * back(N)`` then ``W <- W * (1 - lr * wd)``;
* ``convention="torch"``: ``torch.optim.AdamW``'s arithmetic, ``N = M / (sqrt(V) / sqrt(1 - b2^t) + eps)`` and
  ``W <- W * (1 - lr * wd) - lr * scale / (1 - b1^t) * back(N)``.

The per-parameter math is fp32 whatever the parameter dtype. Projected matrices use the fused kernels of
:mod:`coap_optim.kernels` (``project_and_update_moments`` then ``back_project_and_apply``); Tucker-projected and plain
tensors use torch ops.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from coap_optim.kernels import back_project_and_apply, project_and_update_moments
from coap_optim.optimizers.base import (
    CoapOptimizer,
    apply_update,
    check_bool,
    check_choice,
    check_real,
    projection_defaults,
)
from coap_optim.optimizers.routing import Route
from coap_optim.sharding import RowShard

__all__ = ["AdamCoefficients", "CoapAdamW", "adam_coefficients", "adam_plain_update"]

CONVENTIONS = ("official", "torch")


@dataclass(frozen=True)
class AdamCoefficients:
    """Scalars of one Adam step (see the module docstring).

    Args:
        denom_scale (`float`): Multiplies ``sqrt(V)`` in the denominator.
        step_size (`float`): Multiplies the (back-projected) normalised update; includes ``scale`` when projected.
        decay (`float`): ``lr * weight_decay``.
        decay_before (`bool`): Decay before (torch) or after (official) the update.
    """

    denom_scale: float
    step_size: float
    decay: float
    decay_before: bool


def adam_coefficients(group: Mapping[str, Any], step: int, *, projected: bool) -> AdamCoefficients:
    """The step's Adam scalars for a param group.

    Args:
        group (`Mapping[str, Any]`): The param group (``lr``, ``betas``, ``weight_decay``, ``correct_bias``,
            ``convention``, ``scale``).
        step (`int`): Step count after the increment (1 on the first step).
        projected (`bool`): Whether ``scale`` applies (projected tensors only, as in the official code).

    Returns:
        `AdamCoefficients`: The scalars.
    """
    lr = group["lr"]
    beta1, beta2 = group["betas"]
    scale = group["scale"] if projected else 1.0
    decay = lr * group["weight_decay"]
    if not group["correct_bias"]:
        return AdamCoefficients(1.0, lr * scale, decay, group["convention"] == "torch")
    bias_correction1 = 1.0 - beta1**step
    bias_correction2 = 1.0 - beta2**step
    if group["convention"] == "torch":
        return AdamCoefficients(1.0 / math.sqrt(bias_correction2), lr * scale / bias_correction1, decay, True)
    return AdamCoefficients(1.0, lr * scale * math.sqrt(bias_correction2) / bias_correction1, decay, False)


def adam_plain_update(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    *,
    beta1: float,
    beta2: float,
    eps: float,
    coefficients: AdamCoefficients,
) -> None:
    """One full-size Adam step in fp32 (``_single_param_update`` of the plain route).

    Args:
        param (`torch.Tensor`): The weight, any shape and float dtype, updated in place.
        grad (`torch.Tensor`): Its gradient, same shape.
        exp_avg (`torch.Tensor`): First moment (fp32, same shape), updated in place.
        exp_avg_sq (`torch.Tensor`): Second moment (fp32, same shape), updated in place.
        beta1 (`float`): First-moment decay.
        beta2 (`float`): Second-moment decay.
        eps (`float`): Denominator epsilon.
        coefficients (`AdamCoefficients`): From :func:`adam_coefficients`.
    """
    g = grad.float()
    exp_avg.lerp_(g, 1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
    denom = exp_avg_sq.sqrt().mul_(coefficients.denom_scale).add_(eps)
    apply_update(
        param,
        exp_avg / denom,
        step_size=coefficients.step_size,
        decay=coefficients.decay,
        decay_before=coefficients.decay_before,
    )


class CoapAdamW(CoapOptimizer):
    """AdamW with COAP low-rank gradient projection (Xiao et al., CVPR 2025, arXiv 2412.00071).

    Example:
    ```python
    >>> from coap_optim import CoapAdamW, param_groups
    >>> optimizer = CoapAdamW(param_groups(model, rank_ratio=4), lr=1e-3, update_interval=40, scale=0.25)
    ```

    State per projected matrix: ``step`` (int64, 0-d, CPU), ``P`` (fp32, `(r, n)` right / `(m, r)` left),
    ``exp_avg`` and ``exp_avg_sq`` (fp32, low-rank shape); Tucker: ``P0`` (and ``P1``) of shape `(s_k, r_k)` and
    moments of the core shape; plain tensors: ``step``, ``exp_avg``, ``exp_avg_sq`` of the parameter's shape (fp32).

    Args:
        params (`Iterable`): Parameters, ``(name, parameter)`` pairs, or param group dicts (e.g. from
            :func:`coap_optim.param_groups`); any option below can be overridden per group.
        lr (`float`, *optional*, defaults to 1e-3): Learning rate.
        betas (`tuple[float, float]`, *optional*, defaults to `(0.9, 0.999)`): Adam betas, each in ``[0, 1)``.
        eps (`float`, *optional*, defaults to 1e-6): Denominator epsilon (the official default; torch uses 1e-8).
        weight_decay (`float`, *optional*, defaults to 0.0): Decoupled weight decay.
        rank (`int`, *optional*): Rank of 2-D projections. `None` (and no ``rank_ratio``) leaves 2-D tensors plain.
        rank_ratio (`float`, *optional*): ``r = max(min(m, n) // rank_ratio, 1)``; must be ``> 1``. Exclusive with
            ``rank`` here (inside a group dict ``rank_ratio`` wins).
        update_interval (`int`, *optional*, defaults to 32): ``T_u``, steps between projection updates.
        reproject_factor (`int`, *optional*, defaults to 5): Every ``reproject_factor``-th update re-computes ``P``
            with the range finder; the others are correlation-aware refreshes.
        scale (`float`, *optional*, defaults to 1.0): Multiplies the update of projected tensors (0.25 for LLaMA).
        restore_state (`bool`, *optional*, defaults to `False`): Rotate the moments when ``P`` changes.
        projection (`str`, *optional*, defaults to `"coap"`): ``"coap"``, ``"svd"`` (GaLore) or ``"random"`` (Flora).
        correct_bias (`bool`, *optional*, defaults to `True`): Adam bias correction.
        convention (`str`, *optional*, defaults to `"official"`): ``"official"`` (decay after the update, ``eps``
            before the bias correction, as the authors' code) or ``"torch"`` (``torch.optim.AdamW``'s arithmetic).
        proj_lr (`float`, *optional*, defaults to 0.1): SGD step size of the refresh.
        proj_clip (`float`, *optional*, defaults to 1.0): Gradient-norm clip of the refresh.
        proj_sgd_steps (`int`, *optional*, defaults to 1): SGD steps per refresh.
        reorthonormalize (`bool`, *optional*, defaults to `False`): QR-orthonormalise ``P`` after a refresh.
        seed (`int`, *optional*, defaults to 3407): Seed of the initial range finder (and of ``"random"``).
        per_layer_seed (`bool`, *optional*, defaults to `False`): Derive the range-finder seed per parameter index.
        rank_ratio_conv (`float`, *optional*): Tucker compression ratio for 4-D tensors (``> 1``); `None` keeps them
            plain.
        min_conv_numel (`int`, *optional*, defaults to 9216): 4-D tensors with at most this many elements stay plain.
        impl (`str`, *optional*, defaults to `"auto"`): Kernel backend (``"auto"``, ``"triton"``, ``"torch"``).
        nonfinite_grad (`str`, *optional*, defaults to `"skip"`): A projected parameter with an inf/NaN gradient
            skips its step with a warning (``"skip"``) or raises ``FloatingPointError`` (``"raise"``).
        side (`str`, *optional*, defaults to `"auto"`): Side of matrix projections: ``"auto"`` (the official rule,
            right when ``m >= n``), ``"right"`` or ``"left"``. Under FSDP2, ``"right"`` makes a plain step free of
            collectives.

    Raises:
        `ValueError`: for an invalid option (the message names it) or a complex parameter;
            `coap_optim.sharding.UnsupportedShardingError` (a `ValueError`) for a sharded set-up not supported
            (FSDP1 with a projection, tensor-parallel placements, Tucker or ``restore_state`` on FSDP2 shards).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        *,
        rank: int | None = None,
        rank_ratio: float | None = None,
        update_interval: int = 32,
        reproject_factor: int = 5,
        scale: float = 1.0,
        restore_state: bool = False,
        projection: Literal["coap", "svd", "random"] = "coap",
        correct_bias: bool = True,
        convention: Literal["official", "torch"] = "official",
        proj_lr: float = 0.1,
        proj_clip: float = 1.0,
        proj_sgd_steps: int = 1,
        reorthonormalize: bool = False,
        seed: int = 3407,
        per_layer_seed: bool = False,
        rank_ratio_conv: float | None = None,
        min_conv_numel: int = 9216,
        impl: Literal["auto", "triton", "torch"] = "auto",
        nonfinite_grad: Literal["skip", "raise"] = "skip",
        side: Literal["auto", "right", "left"] = "auto",
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "correct_bias": correct_bias,
            "convention": convention,
            **projection_defaults(
                rank=rank,
                rank_ratio=rank_ratio,
                update_interval=update_interval,
                reproject_factor=reproject_factor,
                scale=scale,
                restore_state=restore_state,
                projection=projection,
                proj_lr=proj_lr,
                proj_clip=proj_clip,
                proj_sgd_steps=proj_sgd_steps,
                reorthonormalize=reorthonormalize,
                seed=seed,
                per_layer_seed=per_layer_seed,
                rank_ratio_conv=rank_ratio_conv,
                min_conv_numel=min_conv_numel,
                impl=impl,
                nonfinite_grad=nonfinite_grad,
                side=side,
            ),
        }
        super().__init__(params, {**defaults, **self._extra_defaults()})

    def _extra_defaults(self) -> dict[str, Any]:
        """Options that subclasses add to the defaults (none for fp32 moments)."""
        return {}

    def _validate_algorithm_options(self, options: Mapping[str, Any], where: str) -> None:
        validate_adam_options(options, where)

    # plain route -------------------------------------------------------------------------------

    def _init_plain_state(self, param: Tensor, state: dict[str, Tensor], group: Mapping[str, Any]) -> None:
        state["exp_avg"] = torch.zeros_like(param, dtype=torch.float32, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, dtype=torch.float32, memory_format=torch.preserve_format)

    def _plain_update(
        self, param: Tensor, grad: Tensor, state: dict[str, Tensor], group: Mapping[str, Any], step: int
    ) -> None:
        beta1, beta2 = group["betas"]
        adam_plain_update(
            param,
            grad,
            state["exp_avg"],
            state["exp_avg_sq"],
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            coefficients=adam_coefficients(group, step, projected=False),
        )

    def _plain_update_many(
        self, items: Sequence[tuple[Tensor, Tensor, dict[str, Tensor]]], group: Mapping[str, Any]
    ) -> None:
        """Plain Adam for a group's full-size fp32 tensors with ``torch._foreach_*`` ops (one kernel launch per op
        and bucket instead of per tensor), bucketed by step count and device; other dtypes (and subclasses' quantised
        states) go one by one through :meth:`_plain_update`."""
        buckets: dict[tuple[int, torch.device], list[tuple[Tensor, Tensor, dict[str, Tensor]]]] = {}
        for param, grad, state in items:
            if "exp_avg" not in state or param.dtype != torch.float32 or grad.dtype != torch.float32:
                self._plain_update(param, grad, state, group, int(state["step"]))
                continue
            buckets.setdefault((int(state["step"]), param.device), []).append((param, grad, state))
        beta1, beta2 = group["betas"]
        for (step, _), bucket in buckets.items():
            coefficients = adam_coefficients(group, step, projected=False)
            params = [param for param, _, _ in bucket]
            grads = [grad for _, grad, _ in bucket]
            exp_avgs = [state["exp_avg"] for _, _, state in bucket]
            exp_avg_sqs = [state["exp_avg_sq"] for _, _, state in bucket]
            torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
            torch._foreach_mul_(exp_avg_sqs, beta2)
            torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
            denoms = torch._foreach_sqrt(exp_avg_sqs)
            if coefficients.denom_scale != 1.0:
                torch._foreach_mul_(denoms, coefficients.denom_scale)
            torch._foreach_add_(denoms, group["eps"])
            if coefficients.decay_before and coefficients.decay != 0.0:
                torch._foreach_mul_(params, 1.0 - coefficients.decay)
            torch._foreach_addcdiv_(params, exp_avgs, denoms, value=-coefficients.step_size)
            if not coefficients.decay_before and coefficients.decay != 0.0:
                torch._foreach_mul_(params, 1.0 - coefficients.decay)

    def _import_moments(
        self,
        param: Tensor,
        group: Mapping[str, Any],
        canonical: Mapping[str, Tensor],
        shape: tuple[int, ...],
        projected: bool,
        label: str,
    ) -> dict[str, Tensor]:
        return {key: self._moment(canonical, key, shape, param, label) for key in ("exp_avg", "exp_avg_sq")}

    # projected routes --------------------------------------------------------------------------

    def _init_low_rank_state(
        self, state: dict[str, Tensor], group: Mapping[str, Any], shape: tuple[int, ...], device: torch.device
    ) -> None:
        state["exp_avg"] = torch.zeros(shape, dtype=torch.float32, device=device)
        state["exp_avg_sq"] = torch.zeros(shape, dtype=torch.float32, device=device)

    def _first_moment(self, state: dict[str, Tensor], group: Mapping[str, Any], shape: tuple[int, ...]) -> Tensor:
        return state["exp_avg"]

    def _rotate_moments(
        self,
        state: dict[str, Tensor],
        group: Mapping[str, Any],
        shape: tuple[int, ...],
        restore: Callable[[Tensor], Tensor],
        project_new: Callable[[Tensor], Tensor],
    ) -> None:
        full_avg = restore(state["exp_avg"])
        full_std = restore(state["exp_avg_sq"].sqrt())
        state["exp_avg"] = project_new(full_avg).contiguous()
        state["exp_avg_sq"] = project_new(full_std).square_().contiguous()

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
        beta1, beta2 = group["betas"]
        coefficients = adam_coefficients(group, step, projected=True)
        if route.kind == "matrix":
            update = project_and_update_moments(
                grad,
                factors[0],
                state["exp_avg"],
                state["exp_avg_sq"],
                side=route.matrix_side,
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                denom_scale=coefficients.denom_scale,
                impl=group["impl"],
            )
            back_project_and_apply(
                param,
                update,
                factors[0],
                side=route.matrix_side,
                step_size=coefficients.step_size,
                decay=coefficients.decay,
                decay_before=coefficients.decay_before,
                impl=group["impl"],
            )
            return
        low_rank = self.project_with(grad.float(), factors, route)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(low_rank, 1.0 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(low_rank, low_rank, value=1.0 - beta2)
        update = exp_avg / exp_avg_sq.sqrt().mul_(coefficients.denom_scale).add_(group["eps"])
        apply_update(
            param,
            self.back_project_with(update, factors, route),
            step_size=coefficients.step_size,
            decay=coefficients.decay,
            decay_before=coefficients.decay_before,
        )

    # FSDP2 row shards ---------------------------------------------------------------------------

    def _init_low_rank_state_sharded(
        self,
        state: dict[str, Tensor],
        group: Mapping[str, Any],
        route: Route,
        shard: RowShard,
        shape: tuple[int, int],
        device: torch.device,
    ) -> None:
        for key in ("exp_avg", "exp_avg_sq"):
            if route.side == "right":
                zeros = torch.zeros((shard.local_rows, route.rank), dtype=torch.float32, device=device)
                state[key] = shard.sharded(zeros, (shape[0], route.rank))
            else:
                state[key] = shard.replicated(torch.zeros((route.rank, shape[1]), dtype=torch.float32, device=device))

    def _first_moment_sharded(
        self, state: dict[str, Tensor], group: Mapping[str, Any], route: Route, shard: RowShard
    ) -> Tensor:
        return state["exp_avg"].to_local()  # type: ignore[attr-defined]

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
        beta1, beta2 = group["betas"]
        coefficients = adam_coefficients(group, step, projected=True)
        exp_avg = state["exp_avg"].to_local()  # type: ignore[attr-defined]
        exp_avg_sq = state["exp_avg_sq"].to_local()  # type: ignore[attr-defined]
        side = route.matrix_side
        if side == "right":
            if shard.local_rows == 0:
                return
            update = project_and_update_moments(
                grad,
                proj,
                exp_avg,
                exp_avg_sq,
                side=side,
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                denom_scale=coefficients.denom_scale,
                impl=group["impl"],
            )
        else:
            # P^T G is a sum over rows: one all-reduce of r x n values; the moments are then the same on every rank.
            low_rank = shard.all_reduce_(proj.float().T @ grad.float())
            exp_avg.mul_(beta1).add_(low_rank, alpha=1.0 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(low_rank, low_rank, value=1.0 - beta2)
            denom = exp_avg_sq.sqrt()
            if coefficients.denom_scale != 1.0:
                denom.mul_(coefficients.denom_scale)
            update = exp_avg / denom.add_(group["eps"])
            if shard.local_rows == 0:
                return
        back_project_and_apply(
            param,
            update,
            proj,
            side=side,
            step_size=coefficients.step_size,
            decay=coefficients.decay,
            decay_before=coefficients.decay_before,
            impl=group["impl"],
        )


def validate_adam_options(options: Mapping[str, Any], where: str) -> None:
    """Validate ``betas``, ``eps``, ``correct_bias`` and ``convention``; raise `ValueError` naming the key."""
    betas = options["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"Invalid betas={betas!r}{where}: must be a pair (beta1, beta2)")
    for i, name in enumerate(("betas[0]", "betas[1]")):
        check_real({name: betas[i]}, name, where, low=0.0, high=1.0, high_open=True)
    check_real(options, "eps", where, low=0.0)
    check_bool(options, "correct_bias", where)
    check_choice(options, "convention", where, CONVENTIONS)
