"""COAP AdamW with blockwise 8-bit moments (arXiv 2412.00071).

Follows ``AdamW8bit.step`` of ``coap_torch/optimizer/adamw_8bit.py`` in `bytedance/coap` at commit
``deabc3a671f63f9a8b49066c925d9df6b260089e``
(https://github.com/bytedance/coap/blob/deabc3a671f63f9a8b49066c925d9df6b260089e/coap_torch/optimizer/adamw_8bit.py):
the moments are stored blockwise-quantised (one fp32 ``absmax`` per block of ``block_size`` values), dequantised,
updated and re-quantised every step, and ``P`` stays fp32. Differences from the official code:

* ``V`` uses an *unsigned* dynamic map (bitsandbytes' choice for state 2); the official code quantises it with the
  signed map and wastes half of the codes (defect 7 of the spec);
* plain tensors with fewer than ``min_8bit_size`` elements keep fp32 moments (bitsandbytes' ``min_8bit_size``); the
  official code quantises every tensor;
* Tucker-projected tensors work with ``restore_state=False`` (the official code passes a quantised tuple to the
  refresh and crashes, defect 6) because the refresh reads the dequantised ``M``.

The quantisation kernels are :func:`coap_optim.kernels.adam_update_8bit` and friends (no bitsandbytes dependency).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from coap_optim.kernels import (
    adam_update_8bit,
    back_project_and_apply,
    create_dynamic_map,
    dequantize_blockwise,
    quantize_blockwise,
)
from coap_optim.optimizers.adamw import CoapAdamW, adam_coefficients
from coap_optim.optimizers.base import apply_update, check_int
from coap_optim.optimizers.routing import Route, low_rank_shape
from coap_optim.sharded_quant8 import ShardedBlocks, sharded_adam_update_8bit, sharded_dequantize, sharded_quantize
from coap_optim.sharding import RowShard, is_dtensor

__all__ = ["CoapAdamW8bit"]

_MOMENTS = ("exp_avg", "exp_avg_sq")


class CoapAdamW8bit(CoapAdamW):
    """:class:`CoapAdamW` with blockwise 8-bit first and second moments.

    State per projected tensor: ``step``, ``P`` (or ``P0``/``P1``) in fp32, and for each moment ``exp_avg`` /
    ``exp_avg_sq``: ``<moment>_codes`` (uint8, one per element of the low-rank shape, flattened) and
    ``<moment>_absmax`` (fp32, one per block); the codes keep the moment's shape (flat codes of older checkpoints are
    reshaped on load), so that an FSDP2 checkpoint can be re-sharded by rows. Plain tensors with at least ``min_8bit_size`` elements are quantised the
    same way; smaller ones keep fp32 ``exp_avg`` / ``exp_avg_sq`` (projected moments are always quantised, as in the
    official code).

    Args:
        params, lr, betas, eps, weight_decay, rank, rank_ratio, update_interval, reproject_factor, scale,
        restore_state, projection, correct_bias, convention, proj_lr, proj_clip, proj_sgd_steps, reorthonormalize,
        seed, per_layer_seed, rank_ratio_conv, min_conv_numel, impl, nonfinite_grad, side: As in :class:`CoapAdamW`.
        block_size (`int`, *optional*, defaults to 4096): Values per quantisation block (the official code uses
            bitsandbytes' default, 4096).
        min_8bit_size (`int`, *optional*, defaults to 4096): Plain tensors with fewer elements keep fp32 moments.
            ``block_size`` and ``min_8bit_size`` may also be set per param group.

    Raises:
        `ValueError`: as :class:`CoapAdamW`, and for a bad ``block_size`` / ``min_8bit_size``.

    Under FSDP2 the quantisation blocks are those of the unsharded tensor (:mod:`coap_optim.sharded_quant8`): the
    codes of row-sharded moments are row-sharded, the block scales replicated.
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
        block_size: int = 4096,
        min_8bit_size: int = 4096,
    ) -> None:
        self._block_size = block_size
        self._min_8bit_size = min_8bit_size
        self._qmaps: dict[torch.device, tuple[Tensor, Tensor]] = {}
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            rank=rank,
            rank_ratio=rank_ratio,
            update_interval=update_interval,
            reproject_factor=reproject_factor,
            scale=scale,
            restore_state=restore_state,
            projection=projection,
            correct_bias=correct_bias,
            convention=convention,
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
        )

    def _extra_defaults(self) -> dict[str, Any]:
        return {"block_size": self._block_size, "min_8bit_size": self._min_8bit_size}

    def _validate_algorithm_options(self, options: Mapping[str, Any], where: str) -> None:
        super()._validate_algorithm_options(options, where)
        check_int(options, "block_size", where, minimum=1)
        check_int(options, "min_8bit_size", where, minimum=0)

    # quantisation helpers ----------------------------------------------------------------------

    def _maps(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """The signed (``M``) and unsigned (``V``) dynamic maps on ``device`` (built once per device)."""
        if device not in self._qmaps:
            self._qmaps[device] = (
                create_dynamic_map(True).to(device),
                create_dynamic_map(False).to(device),
            )
        return self._qmaps[device]

    def _quantized_zeros(
        self, state: dict[str, Tensor], shape: tuple[int, ...], group: Mapping[str, Any], device: torch.device
    ) -> None:
        qmap_m, qmap_v = self._maps(device)
        for name, qmap in zip(_MOMENTS, (qmap_m, qmap_v)):
            zeros = torch.zeros(shape, dtype=torch.float32, device=device)
            codes, state[f"{name}_absmax"] = quantize_blockwise(
                zeros, qmap, block_size=group["block_size"], impl=group["impl"]
            )
            state[f"{name}_codes"] = codes.view(shape)

    def _dequantized(
        self, state: Mapping[str, Tensor], name: str, shape: tuple[int, ...], group: Mapping[str, Any]
    ) -> Tensor:
        qmap = self._maps(state[f"{name}_codes"].device)[_MOMENTS.index(name)]
        return dequantize_blockwise(
            state[f"{name}_codes"],
            state[f"{name}_absmax"],
            qmap,
            block_size=group["block_size"],
            shape=shape,
            impl=group["impl"],
        )

    def _store_quantized(self, state: dict[str, Tensor], name: str, value: Tensor, group: Mapping[str, Any]) -> None:
        qmap = self._maps(value.device)[_MOMENTS.index(name)]
        codes, state[f"{name}_absmax"] = quantize_blockwise(
            value.float().contiguous(), qmap, block_size=group["block_size"], impl=group["impl"]
        )
        state[f"{name}_codes"] = codes.view(value.shape)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """:meth:`CoapOptimizer.load_state_dict`, reshaping the flat codes of older checkpoints to the moment shape."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            for param in group["params"]:
                state = self.state.get(param, {})
                route = self._route(group, param)
                shape = tuple(param.shape) if route.kind == "plain" else low_rank_shape(param.shape, route)
                for name in _MOMENTS:
                    codes = state.get(f"{name}_codes")
                    if codes is not None and not is_dtensor(codes) and codes.dim() == 1 and len(shape) != 1:
                        state[f"{name}_codes"] = codes.view(shape)

    def _update_8bit(
        self, grad: Tensor, state: dict[str, Tensor], group: Mapping[str, Any], denom_scale: float
    ) -> Tensor:
        """Adam step on the quantised moments (updated in place); returns ``N`` in fp32, shape of ``grad``."""
        beta1, beta2 = group["betas"]
        qmap_m, qmap_v = self._maps(grad.device)
        return adam_update_8bit(
            grad,
            state["exp_avg_codes"],
            state["exp_avg_absmax"],
            state["exp_avg_sq_codes"],
            state["exp_avg_sq_absmax"],
            qmap_m,
            qmap_v,
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            denom_scale=denom_scale,
            block_size=group["block_size"],
            impl=group["impl"],
        )

    def _import_moments(
        self,
        param: Tensor,
        group: Mapping[str, Any],
        canonical: Mapping[str, Tensor],
        shape: tuple[int, ...],
        projected: bool,
        label: str,
    ) -> dict[str, Tensor]:
        moments = super()._import_moments(param, group, canonical, shape, projected, label)
        if not projected and param.numel() < group["min_8bit_size"]:
            return moments
        state: dict[str, Tensor] = {}
        for name in _MOMENTS:
            self._store_quantized(state, name, moments[name], group)
        return state

    # plain route -------------------------------------------------------------------------------

    def _init_plain_state(self, param: Tensor, state: dict[str, Tensor], group: Mapping[str, Any]) -> None:
        if param.numel() < group["min_8bit_size"]:
            super()._init_plain_state(param, state, group)
            return
        shard = self._row_shard(param) if is_dtensor(param) else None
        if shard is not None:
            local_shape = tuple(param.to_local().shape)  # type: ignore[attr-defined]
            self._quantized_zeros_sharded(state, group, shard, local_shape, tuple(param.shape), param.device)
            return
        self._quantized_zeros(state, tuple(param.shape), group, param.device)

    def _plain_update(
        self, param: Tensor, grad: Tensor, state: dict[str, Tensor], group: Mapping[str, Any], step: int
    ) -> None:
        if "exp_avg" in state:
            super()._plain_update(param, grad, state, group, step)
            return
        coefficients = adam_coefficients(group, step, projected=False)
        shard = self._row_shard(param) if is_dtensor(param) else None
        if shard is not None:
            local_param = param.to_local()  # type: ignore[attr-defined]
            update = self._update_8bit_sharded(grad.to_local().float(), state, group, shard, coefficients.denom_scale)  # type: ignore[attr-defined]
            apply_update(
                local_param,
                update,
                step_size=coefficients.step_size,
                decay=coefficients.decay,
                decay_before=coefficients.decay_before,
            )
            return
        update = self._update_8bit(grad.float(), state, group, coefficients.denom_scale)
        apply_update(
            param,
            update,
            step_size=coefficients.step_size,
            decay=coefficients.decay,
            decay_before=coefficients.decay_before,
        )

    # projected routes --------------------------------------------------------------------------

    def _init_low_rank_state(
        self, state: dict[str, Tensor], group: Mapping[str, Any], shape: tuple[int, ...], device: torch.device
    ) -> None:
        self._quantized_zeros(state, shape, group, device)

    def _first_moment(self, state: dict[str, Tensor], group: Mapping[str, Any], shape: tuple[int, ...]) -> Tensor:
        return self._dequantized(state, "exp_avg", shape, group)

    def _rotate_moments(
        self,
        state: dict[str, Tensor],
        group: Mapping[str, Any],
        shape: tuple[int, ...],
        restore: Callable[[Tensor], Tensor],
        project_new: Callable[[Tensor], Tensor],
    ) -> None:
        full_avg = restore(self._dequantized(state, "exp_avg", shape, group))
        full_std = restore(self._dequantized(state, "exp_avg_sq", shape, group).sqrt())
        self._store_quantized(state, "exp_avg", project_new(full_avg), group)
        self._store_quantized(state, "exp_avg_sq", project_new(full_std).square_(), group)

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
        coefficients = adam_coefficients(group, step, projected=True)
        low_rank = self.project_with(grad.float(), factors, route)
        update = self._update_8bit(low_rank, state, group, coefficients.denom_scale)
        if route.kind == "matrix":
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
        apply_update(
            param,
            self.back_project_with(update, factors, route),
            step_size=coefficients.step_size,
            decay=coefficients.decay,
            decay_before=coefficients.decay_before,
        )

    # FSDP2 row shards ---------------------------------------------------------------------------

    def _blocks(self, shard: RowShard, global_shape: tuple[int, ...], group: Mapping[str, Any], device: torch.device):
        width = math.prod(global_shape[1:])
        return ShardedBlocks(shard, width, group["block_size"], device)

    def _quantized_zeros_sharded(
        self,
        state: dict[str, Tensor],
        group: Mapping[str, Any],
        shard: RowShard,
        local_shape: tuple[int, ...],
        global_shape: tuple[int, ...],
        device: torch.device,
    ) -> None:
        """Row-sharded codes of zeros and replicated zero block scales (the global block layout)."""
        blocks = self._blocks(shard, global_shape, group, device)
        for name, qmap in zip(_MOMENTS, self._maps(device)):
            absmax = torch.zeros(blocks.n_blocks, dtype=torch.float32, device=device)
            codes = sharded_quantize(torch.zeros(math.prod(local_shape), device=device), absmax, qmap, blocks)
            state[f"{name}_codes"] = shard.sharded(codes.view(local_shape), global_shape)
            state[f"{name}_absmax"] = shard.replicated(absmax)

    def _update_8bit_sharded(
        self, grad: Tensor, state: dict[str, Tensor], group: Mapping[str, Any], shard: RowShard, denom_scale: float
    ) -> Tensor:
        """Adam on row-sharded quantised moments (global blocks; one small all-reduce of the block scales)."""
        beta1, beta2 = group["betas"]
        qmap_m, qmap_v = self._maps(grad.device)
        codes_m = state["exp_avg_codes"]
        blocks = self._blocks(shard, tuple(codes_m.shape), group, grad.device)
        return sharded_adam_update_8bit(
            grad,
            codes_m.to_local(),  # type: ignore[attr-defined]
            state["exp_avg_absmax"].to_local(),  # type: ignore[attr-defined]
            state["exp_avg_sq_codes"].to_local(),  # type: ignore[attr-defined]
            state["exp_avg_sq_absmax"].to_local(),  # type: ignore[attr-defined]
            qmap_m,
            qmap_v,
            blocks,
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            denom_scale=denom_scale,
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
        if route.side == "right":
            local_shape = (shard.local_rows, route.rank)
            self._quantized_zeros_sharded(state, group, shard, local_shape, (shape[0], route.rank), device)
            return
        self._quantized_zeros(state, (route.rank, shape[1]), group, device)
        for key in list(state):
            if key.endswith(("_codes", "_absmax")):
                state[key] = shard.replicated(state[key])

    def _first_moment_sharded(
        self, state: dict[str, Tensor], group: Mapping[str, Any], route: Route, shard: RowShard
    ) -> Tensor:
        codes = state["exp_avg_codes"]
        local_codes = codes.to_local()  # type: ignore[attr-defined]
        absmax = state["exp_avg_absmax"].to_local()  # type: ignore[attr-defined]
        qmap = self._maps(local_codes.device)[0]
        if route.side == "right":
            blocks = self._blocks(shard, tuple(codes.shape), group, local_codes.device)
            return sharded_dequantize(local_codes, absmax, qmap, blocks).view(local_codes.shape)
        return dequantize_blockwise(
            local_codes, absmax, qmap, block_size=group["block_size"], shape=local_codes.shape, impl=group["impl"]
        )

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
        coefficients = adam_coefficients(group, step, projected=True)
        side = route.matrix_side
        if side == "right":
            low_rank = grad.float() @ proj.float().T
            update = self._update_8bit_sharded(low_rank, state, group, shard, coefficients.denom_scale)
        else:
            # P^T G is a sum over rows (one all-reduce); the quantised moments are then the same on every rank.
            low_rank = shard.all_reduce_(proj.float().T @ grad.float())
            local = {key: value.to_local() for key, value in state.items() if key.endswith(("_codes", "_absmax"))}  # type: ignore[attr-defined]
            update = self._update_8bit(low_rank, local, group, coefficients.denom_scale)
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
