"""Blockwise 8-bit moments of a row-sharded tensor, with the blocks of the unsharded tensor.

Without sharding, a moment of shape `(rows, ...)` is flattened and cut into blocks of ``block_size`` values, each with
one fp32 ``absmax`` (:mod:`coap_optim.kernels.quant8`). Under FSDP2 a rank holds rows ``[start, stop)``, i.e. the
flat range ``[start * width, stop * width)`` with ``width`` the values per row, whose ends need not fall on block
boundaries. To keep exactly the unsharded blocks (so that sharded and unsharded runs agree and a checkpoint can be
re-sharded), the codes stay row-sharded and the ``absmax`` vector (``ceil(numel / block_size)`` values, small) is
replicated: each rank takes the maximum over its part of every block it touches and one all-reduce (max) of the
``absmax`` vectors of both moments completes the blocks that straddle ranks.

The arithmetic is that of the pure-torch twin ``_adam_update_8bit_torch`` (dequantise, Adam, nearest-code
requantisation), element by element, so the sharded step equals the unsharded torch path to fp32 round-off.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from coap_optim.sharding import RowShard

__all__ = ["ShardedBlocks", "sharded_adam_update_8bit", "sharded_dequantize", "sharded_quantize"]


class ShardedBlocks:
    """Which global block each local value belongs to.

    Args:
        shard (`RowShard`): The row layout.
        width (`int`): Values per row of the flattened moment (``numel / rows``).
        block_size (`int`): Values per quantisation block.
        device (`torch.device`): Device of the index tensor.
    """

    def __init__(self, shard: RowShard, width: int, block_size: int, device: torch.device) -> None:
        self.shard = shard
        self.numel = shard.rows * width
        self.n_blocks = math.ceil(self.numel / block_size)
        first = shard.start * width
        self.index = torch.arange(first, first + shard.local_rows * width, device=device) // block_size

    def block_max(self, values: Tensor) -> Tensor:
        """Per-block ``max |x|`` of this rank's flat ``values`` (0 for blocks it does not touch), before the
        all-reduce."""
        out = torch.zeros(self.n_blocks, dtype=torch.float32, device=values.device)
        return out.scatter_reduce_(0, self.index, values.abs(), reduce="amax")


def _midpoints(qmap: Tensor) -> Tensor:
    return (qmap[:-1] + qmap[1:]) * 0.5


def sharded_dequantize(codes: Tensor, absmax: Tensor, qmap: Tensor, blocks: ShardedBlocks) -> Tensor:
    """fp32 values (flat) of this rank's ``codes`` with the replicated global ``absmax``."""
    return qmap[codes.reshape(-1).long()] * absmax[blocks.index]


def sharded_quantize(values: Tensor, absmax: Tensor, qmap: Tensor, blocks: ShardedBlocks) -> Tensor:
    """Nearest-code uint8 codes (flat) of this rank's flat ``values`` given the global ``absmax``."""
    inverse = torch.where(absmax > 0, 1.0 / absmax, torch.zeros_like(absmax))
    return torch.bucketize(values * inverse[blocks.index], _midpoints(qmap), out_int32=True).to(torch.uint8)


def sharded_adam_update_8bit(
    grad: Tensor,
    codes_m: Tensor,
    absmax_m: Tensor,
    codes_v: Tensor,
    absmax_v: Tensor,
    qmap_m: Tensor,
    qmap_v: Tensor,
    blocks: ShardedBlocks,
    *,
    beta1: float,
    beta2: float,
    eps: float,
    denom_scale: float,
) -> Tensor:
    """One Adam step on row-sharded 8-bit moments; codes and absmax are updated in place.

    Args:
        grad (`torch.Tensor`): This rank's rows of the (projected) gradient, any shape with ``blocks``' numel.
        codes_m, codes_v (`torch.Tensor`): This rank's uint8 codes of ``M`` and ``V`` (contiguous).
        absmax_m, absmax_v (`torch.Tensor`): The global fp32 block scales (replicated).
        qmap_m, qmap_v (`torch.Tensor`): The signed and unsigned dynamic maps.
        blocks (`ShardedBlocks`): The block layout.
        beta1, beta2, eps, denom_scale (`float`): As in :func:`coap_optim.kernels.adam_update_8bit`.

    Returns:
        `torch.Tensor`: The normalised update ``M / (sqrt(V) * denom_scale + eps)`` in fp32, shape of ``grad``.
    """
    flat_grad = grad.reshape(-1).float()
    exp_avg = sharded_dequantize(codes_m, absmax_m, qmap_m, blocks)
    exp_avg_sq = sharded_dequantize(codes_v, absmax_v, qmap_v, blocks)
    exp_avg = exp_avg * beta1 + (1.0 - beta1) * flat_grad
    exp_avg_sq = exp_avg_sq * beta2 + (1.0 - beta2) * flat_grad * flat_grad
    update = exp_avg / (exp_avg_sq.sqrt() * denom_scale + eps)
    scales = blocks.shard.all_reduce_(torch.cat([blocks.block_max(exp_avg), blocks.block_max(exp_avg_sq)]), op="max")
    absmax_m.copy_(scales[: blocks.n_blocks])
    absmax_v.copy_(scales[blocks.n_blocks :])
    codes_m.view(-1).copy_(sharded_quantize(exp_avg, absmax_m, qmap_m, blocks))
    codes_v.view(-1).copy_(sharded_quantize(exp_avg_sq, absmax_v, qmap_v, blocks))
    return update.view(grad.shape)
