"""Row sharding of FSDP2 / DTensor parameters as the COAP optimizers see it.

FSDP2 (``torch.distributed.fsdp.fully_shard``) keeps every parameter as a DTensor sharded on dim 0 (``Shard(0)``) over
one mesh dimension, possibly replicated over another (HSDP); its gradient has the same layout after the
reduce-scatter. Rank ``k`` of the shard group holds rows ``[start, stop)`` of the global `(m, ...)` tensor, with
``torch.chunk`` sizes (``ceil(m / world)`` rows per rank, the last ranks possibly shorter or empty).

:class:`RowShard` describes that layout and runs the small collectives of the sharded optimizer step over the shard
group (through ``torch.distributed``'s module functions, so a counting wrapper sees them). Layouts other than
``Shard(0)`` / ``Replicate()`` raise :class:`UnsupportedShardingError`, which names the set-up.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["RowShard", "UnsupportedShardingError", "is_dtensor", "row_shard"]


class UnsupportedShardingError(ValueError):
    """A sharded set-up the COAP optimizers do not handle (the message names it and what works instead)."""


def is_dtensor(tensor: Tensor) -> bool:
    """Whether ``tensor`` is a DTensor, without importing ``torch.distributed.tensor`` (slow) when nobody did."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(tensor, module.DTensor)


def _local(tensor: Tensor) -> Tensor:
    return tensor.to_local() if is_dtensor(tensor) else tensor  # type: ignore[attr-defined]


@dataclass(frozen=True)
class RowShard:
    """Where one rank's rows of a dim-0-sharded DTensor sit, and the collectives over its shard group.

    Args:
        mesh (`DeviceMesh`): The parameter's device mesh.
        placements (`tuple`): The parameter's placements (``Shard(0)`` on ``shard_dim``, ``Replicate()`` elsewhere).
        shard_dim (`int` or `None`): The mesh dimension that shards dim 0; `None` when the tensor is only replicated.
        rows (`int`): Global size ``m`` of dim 0.
        start (`int`): First global row held here.
        stop (`int`): One past the last global row held here.
        world (`int`): Ranks in the shard group (1 when replicated only).
    """

    mesh: Any
    placements: tuple[Any, ...]
    shard_dim: int | None
    rows: int
    start: int
    stop: int
    world: int

    @property
    def group(self) -> Any:
        """The process group of the shard mesh dimension (`None` when not sharded)."""
        return None if self.shard_dim is None else self.mesh.get_group(self.shard_dim)

    @property
    def local_rows(self) -> int:
        """Rows held here (``stop - start``, may be 0)."""
        return self.stop - self.start

    def all_reduce_(self, tensor: Tensor, op: str = "sum") -> Tensor:
        """Sum (``op="sum"``) or maximum (``op="max"``) of ``tensor`` over the shard group, in place; returns it."""
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX, group=self.group)
        return tensor

    def gather_rows(self, local: Tensor) -> Tensor:
        """The global `(rows, ...)` tensor from each rank's `(local_rows, ...)` rows (an all-gather)."""
        if self.world == 1:
            return local
        import torch.distributed as dist

        chunk = -(-self.rows // self.world)
        padded = local.new_zeros((chunk, *local.shape[1:]))
        padded[: local.shape[0]] = local
        out = local.new_empty((chunk * self.world, *local.shape[1:]))
        dist.all_gather_into_tensor(out, padded.contiguous(), group=self.group)
        return out[: self.rows]

    def sharded(self, local: Tensor, global_shape: tuple[int, ...]) -> Tensor:
        """Wrap this rank's rows of a `global_shape` tensor as a DTensor with the parameter's placements."""
        from torch.distributed.tensor import DTensor

        stride = torch.empty(global_shape, device="meta").stride()
        return DTensor.from_local(
            local, self.mesh, self.placements, run_check=False, shape=torch.Size(global_shape), stride=stride
        )

    def replicated(self, full: Tensor) -> Tensor:
        """Wrap a tensor that every rank holds whole as a replicated DTensor on the parameter's mesh."""
        from torch.distributed.tensor import DTensor, Replicate

        placements = tuple(Replicate() for _ in self.placements)
        return DTensor.from_local(full, self.mesh, placements, run_check=False)


def row_shard(param: Tensor, label: str) -> RowShard | None:
    """The :class:`RowShard` of a DTensor parameter, or `None` for an ordinary tensor.

    Args:
        param (`torch.Tensor`): The parameter.
        label (`str`): Its name for error messages.

    Returns:
        `RowShard` or `None`.

    Raises:
        `UnsupportedShardingError`: for an FSDP1 FlatParameter, or a DTensor placed other than ``Shard(0)`` on one
            mesh dimension and ``Replicate()`` on the others (tensor parallel ``Shard(1)``, ``Partial``, strided
            sharding of FSDP2 + TP, or dim 0 sharded twice).
    """
    if getattr(param, "_is_flat_param", False) or getattr(param, "_fsdp_flattened", False):
        raise UnsupportedShardingError(
            f"{label} is an FSDP1 FlatParameter (flattened and concatenated weights); the COAP optimizers support "
            "FSDP2 (torch.distributed.fsdp.fully_shard, DTensor parameters) and DDP, not FSDP1"
        )
    if not is_dtensor(param):
        return None
    from torch.distributed.tensor import Replicate, Shard

    placements = tuple(param.placements)  # type: ignore[attr-defined]
    mesh = param.device_mesh  # type: ignore[attr-defined]
    shard_dims = [i for i, p in enumerate(placements) if isinstance(p, Shard)]
    bad = [
        p
        for p in placements
        if not isinstance(p, Replicate) and not (type(p) is Shard and p.dim == 0)  # _StridedShard subclasses Shard
    ]
    if bad or len(shard_dims) > 1 or not param.dim():
        raise UnsupportedShardingError(
            f"{label} is a DTensor with placements {placements}; the COAP optimizers support dim-0 sharding over one "
            "mesh dimension (FSDP2's Shard(0), optionally with Replicate() for HSDP), not tensor-parallel, strided "
            "or partial placements"
        )
    rows = int(param.shape[0])
    local_rows = int(_local(param).shape[0])
    if not shard_dims:
        return RowShard(mesh, placements, None, rows, 0, rows, 1)
    dim = shard_dims[0]
    world = mesh.size(dim)
    chunk = -(-rows // world)
    start = min(mesh.get_local_rank(dim) * chunk, rows)
    stop = min(start + chunk, rows)
    if stop - start != local_rows:
        raise UnsupportedShardingError(
            f"{label}: the local shard has {local_rows} rows where torch.chunk sharding of {rows} rows over {world} "
            f"ranks gives {stop - start}; only FSDP2's even (torch.chunk) dim-0 sharding is supported"
        )
    return RowShard(mesh, placements, dim, rows, start, stop, world)
