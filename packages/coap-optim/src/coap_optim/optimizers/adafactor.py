"""COAP Adafactor (arXiv 2412.00071): HuggingFace Adafactor run on low-rank projected gradients.

Follows ``Adafactor.step`` of ``coap_torch/optimizer/adafactor.py`` in `bytedance/coap` at commit
``deabc3a671f63f9a8b49066c925d9df6b260089e``
(https://github.com/bytedance/coap/blob/deabc3a671f63f9a8b49066c925d9df6b260089e/coap_torch/optimizer/adafactor.py),
which is ``transformers.Adafactor`` with ``relative_step=False``: a factored second moment (row and column means of
``G^2 + eps1`` over the last two axes of the low-rank gradient; unfactored for 1-D tensors), RMS clipping of the
update at ``clip_threshold``, an optional first moment on the *clipped, lr-scaled* update (``beta1``), and weight
decay ``W <- W - lr * wd * W`` applied before the update.

The first moment ``M`` that the correlation-aware refresh needs is that EMA of the low-rank update (the refresh loss
only uses its direction, so the lr factor does not matter). With ``beta1=None`` there is no ``M``: the official code
then fails with a ``KeyError`` at the first refresh; here the refresh uses ``M = 0``, i.e. the cosine factor is 1 and
``P`` follows the reconstruction loss ``mse(back(proj(G)), G)`` alone. With ``restore_state=True`` only ``M`` is
rotated, as in the official code (the factored second moment cannot be rotated).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from coap_optim.optimizers.base import (
    CoapOptimizer,
    apply_update,
    check_bool,
    check_real,
    projection_defaults,
)
from coap_optim.optimizers.routing import Route

__all__ = ["CoapAdafactor", "adafactor_direction"]


def _rms(tensor: Tensor) -> Tensor:
    return tensor.norm(2) / (tensor.numel() ** 0.5)


def _approx_sq_grad(exp_avg_sq_row: Tensor, exp_avg_sq_col: Tensor) -> Tensor:
    r_factor = (exp_avg_sq_row / exp_avg_sq_row.mean(dim=-1, keepdim=True)).rsqrt_().unsqueeze(-1)
    c_factor = exp_avg_sq_col.unsqueeze(-2).rsqrt()
    return torch.mul(r_factor, c_factor)


def adafactor_direction(
    grad: Tensor, state: dict[str, Tensor], *, step: int, lr: float, group: Mapping[str, Any]
) -> Tensor:
    """One Adafactor moment update in fp32; returns the update to subtract (already multiplied by ``lr``).

    Args:
        grad (`torch.Tensor`): The (low-rank or full) gradient in fp32; factored when it has ``>= 2`` dimensions.
        state (`dict[str, torch.Tensor]`): ``exp_avg_sq_row`` (``grad.shape[:-1]``) and ``exp_avg_sq_col``
            (``grad.shape[:-2] + grad.shape[-1:]``), or ``exp_avg_sq`` (``grad.shape``); ``exp_avg`` (``grad.shape``)
            when ``beta1`` is set. Updated in place.
        step (`int`): Step count after the increment.
        lr (`float`): The step's learning rate (including the parameter scale if ``scale_parameter``).
        group (`Mapping[str, Any]`): ``eps``, ``decay_rate``, ``clip_threshold``, ``beta1``.

    Returns:
        `torch.Tensor`: The update, shape of ``grad``.
    """
    beta2t = 1.0 - math.pow(step, group["decay_rate"])
    update = grad**2 + group["eps"][0]
    if grad.dim() >= 2:
        exp_avg_sq_row, exp_avg_sq_col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
        exp_avg_sq_row.mul_(beta2t).add_(update.mean(dim=-1), alpha=1.0 - beta2t)
        exp_avg_sq_col.mul_(beta2t).add_(update.mean(dim=-2), alpha=1.0 - beta2t)
        update = _approx_sq_grad(exp_avg_sq_row, exp_avg_sq_col)
        update.mul_(grad)
    else:
        exp_avg_sq = state["exp_avg_sq"]
        exp_avg_sq.mul_(beta2t).add_(update, alpha=1.0 - beta2t)
        update = exp_avg_sq.rsqrt().mul_(grad)
    update.div_((_rms(update) / group["clip_threshold"]).clamp_(min=1.0))
    update.mul_(lr)
    if group["beta1"] is not None:
        exp_avg = state["exp_avg"]
        exp_avg.mul_(group["beta1"]).add_(update, alpha=1.0 - group["beta1"])
        update = exp_avg
    return update


class CoapAdafactor(CoapOptimizer):
    """Adafactor with COAP low-rank gradient projection (Xiao et al., CVPR 2025, arXiv 2412.00071).

    Adafactor's arithmetic is HuggingFace's with ``relative_step=False`` and ``warmup_init=False`` (the settings of
    the COAP ControlNet-SDXL run); the learning rate is external.

    State per projected tensor: ``step``, ``P`` (or ``P0``/``P1``) in fp32, ``exp_avg_sq_row`` and
    ``exp_avg_sq_col`` (fp32, factored over the last two axes of the low-rank shape) and, with ``beta1``, ``exp_avg``
    (fp32, low-rank shape). Plain tensors: the same on the full shape (``exp_avg_sq`` for 1-D tensors).

    Args:
        params (`Iterable`): Parameters, ``(name, parameter)`` pairs, or param group dicts.
        lr (`float`, *optional*, defaults to 1e-3): External learning rate.
        eps (`tuple[float, float]`, *optional*, defaults to `(1e-30, 1e-3)`): Regularisation of the squared gradient
            and lower bound of the parameter scale.
        clip_threshold (`float`, *optional*, defaults to 1.0): RMS threshold of the update.
        decay_rate (`float`, *optional*, defaults to -0.8): ``beta2_t = 1 - t ** decay_rate``; must be negative.
        beta1 (`float`, *optional*): First-moment decay in ``[0, 1)``; `None` keeps no first moment.
        weight_decay (`float`, *optional*, defaults to 0.0): Weight decay ``W <- W - lr * wd * W`` (before the update).
        scale_parameter (`bool`, *optional*, defaults to `False`): Multiply ``lr`` by ``max(eps[1], RMS(W))``.
        rank, rank_ratio, update_interval, reproject_factor, scale, restore_state, projection, proj_lr, proj_clip,
        proj_sgd_steps, reorthonormalize, seed, per_layer_seed, rank_ratio_conv, min_conv_numel, impl, nonfinite_grad:
            Projection options as in :class:`coap_optim.CoapAdamW` (``impl`` is accepted for symmetry; Adafactor uses
            torch ops only).

    Raises:
        `ValueError`: for an invalid option (the message names it), a complex parameter, or any FSDP-sharded parameter
            (the factored moments and the RMS clip need the whole tensor).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        *,
        eps: tuple[float, float] = (1e-30, 1e-3),
        clip_threshold: float = 1.0,
        decay_rate: float = -0.8,
        beta1: float | None = None,
        weight_decay: float = 0.0,
        scale_parameter: bool = False,
        rank: int | None = None,
        rank_ratio: float | None = None,
        update_interval: int = 32,
        reproject_factor: int = 5,
        scale: float = 1.0,
        restore_state: bool = False,
        projection: Literal["coap", "svd", "random"] = "coap",
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
    ) -> None:
        defaults = {
            "lr": lr,
            "eps": eps,
            "clip_threshold": clip_threshold,
            "decay_rate": decay_rate,
            "beta1": beta1,
            "weight_decay": weight_decay,
            "scale_parameter": scale_parameter,
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
            ),
        }
        super().__init__(params, defaults)

    def _validate_algorithm_options(self, options: Mapping[str, Any], where: str) -> None:
        eps = options["eps"]
        if not isinstance(eps, (tuple, list)) or len(eps) != 2:
            raise ValueError(f"Invalid eps={eps!r}{where}: must be a pair (eps_sq, eps_scale)")
        for i, name in enumerate(("eps[0]", "eps[1]")):
            check_real({name: eps[i]}, name, where, low=0.0)
        check_real(options, "clip_threshold", where, low=0.0, low_open=True)
        check_real(options, "decay_rate", where, high=0.0, high_open=True)
        check_real(options, "beta1", where, low=0.0, high=1.0, high_open=True, optional=True)
        check_bool(options, "scale_parameter", where)

    def _unsupported_sharded(self, param: Tensor, group: Mapping[str, Any], route: Route) -> str | None:
        return "Adafactor's factored moments and RMS clipping need the whole tensor (not implemented for row shards)"

    # helpers -------------------------------------------------------------------------------------

    @staticmethod
    def _init_moments(
        state: dict[str, Tensor], group: Mapping[str, Any], shape: tuple[int, ...], device: torch.device
    ) -> None:
        if group["beta1"] is not None:
            state["exp_avg"] = torch.zeros(shape, dtype=torch.float32, device=device)
        if len(shape) >= 2:
            state["exp_avg_sq_row"] = torch.zeros(shape[:-1], dtype=torch.float32, device=device)
            state["exp_avg_sq_col"] = torch.zeros(shape[:-2] + shape[-1:], dtype=torch.float32, device=device)
        else:
            state["exp_avg_sq"] = torch.zeros(shape, dtype=torch.float32, device=device)

    @staticmethod
    def _lr(param: Tensor, group: Mapping[str, Any]) -> float:
        if not group["scale_parameter"]:
            return group["lr"]
        return group["lr"] * max(group["eps"][1], float(_rms(param.float())))

    # plain route ---------------------------------------------------------------------------------

    def _init_plain_state(self, param: Tensor, state: dict[str, Tensor], group: Mapping[str, Any]) -> None:
        self._init_moments(state, group, tuple(param.shape), param.device)

    def _plain_update(
        self, param: Tensor, grad: Tensor, state: dict[str, Tensor], group: Mapping[str, Any], step: int
    ) -> None:
        lr = self._lr(param, group)
        update = adafactor_direction(grad.float(), state, step=step, lr=lr, group=group)
        apply_update(param, update, step_size=1.0, decay=lr * group["weight_decay"], decay_before=True)

    def _import_moments(
        self,
        param: Tensor,
        group: Mapping[str, Any],
        canonical: Mapping[str, Tensor],
        shape: tuple[int, ...],
        projected: bool,
        label: str,
    ) -> dict[str, Tensor]:
        state: dict[str, Tensor] = {}
        if group["beta1"] is not None:
            state["exp_avg"] = self._moment(canonical, "exp_avg", shape, param, label)
        if len(shape) >= 2:
            state["exp_avg_sq_row"] = self._moment(canonical, "exp_avg_sq_row", shape[:-1], param, label)
            state["exp_avg_sq_col"] = self._moment(canonical, "exp_avg_sq_col", shape[:-2] + shape[-1:], param, label)
        else:
            state["exp_avg_sq"] = self._moment(canonical, "exp_avg_sq", shape, param, label)
        return state

    # projected routes ----------------------------------------------------------------------------

    def _init_low_rank_state(
        self, state: dict[str, Tensor], group: Mapping[str, Any], shape: tuple[int, ...], device: torch.device
    ) -> None:
        self._init_moments(state, group, shape, device)

    def _first_moment(self, state: dict[str, Tensor], group: Mapping[str, Any], shape: tuple[int, ...]) -> Tensor:
        if "exp_avg" in state:
            return state["exp_avg"]
        return torch.zeros(shape, dtype=torch.float32, device=state["P" if "P" in state else "P0"].device)

    def _rotate_moments(
        self,
        state: dict[str, Tensor],
        group: Mapping[str, Any],
        shape: tuple[int, ...],
        restore: Callable[[Tensor], Tensor],
        project_new: Callable[[Tensor], Tensor],
    ) -> None:
        if "exp_avg" in state:
            state["exp_avg"] = project_new(restore(state["exp_avg"])).contiguous()

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
        lr = self._lr(param, group)
        low_rank = self.project_with(grad.float(), factors, route)
        update = adafactor_direction(low_rank, state, step=step, lr=lr, group=group)
        apply_update(
            param,
            self.back_project_with(update, factors, route),
            step_size=group["scale"],
            decay=lr * group["weight_decay"],
            decay_before=True,
        )
