"""Helpers of the FSDP2 tests: run a function on N forked CPU processes (gloo), and the tiny model they train.

Processes are forked from the test process (``torch.multiprocessing.start_processes(start_method="fork")``): torch,
FSDP and DCP are already imported, so a 2- or 4-process group starts in well under a second, where ``spawn`` would
re-import torch in every worker. The process group rendezvous through a file in the test's ``tmp_path``.

``fully_shard`` (FSDP2) works on CPU with gloo in torch 2.15, so the tests shard with FSDP2 itself: parameters are
``Shard(0)`` DTensors and gradients are reduce-scattered (averaged) by FSDP.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint  # imported before forking, like FSDP
import torch.distributed.checkpoint.state_dict
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

IN, HIDDEN, MID, OUT = 16, 42, 26, 8
# weights: (42, 16) right side, rank 8; (26, 42) left side, rank 13; (8, 26) left side, rank 4. 42 and 26 rows split
# unevenly over 4 ranks (11/11/11/9 and 7/7/7/5); 8 rows over 4 ranks are 2 each.
PROJECTION = {"rank_ratio": 2, "update_interval": 2, "reproject_factor": 2}
STEPS = 6  # t = 0 range finder, t = 2 refresh, t = 4 re-projection, and steps in between
GLOBAL_BATCH = 16


def _worker(rank: int, fn: Callable[..., None], world: int, init_file: str, args: tuple[Any, ...]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


def run_ranks(fn: Callable[..., None], world: int, tmp_path: Path, *args: Any) -> None:
    """Run ``fn(rank, world, *args)`` on ``world`` forked processes joined in one gloo process group."""
    init_file = tmp_path / f"pg-{world}-{len(os.listdir(tmp_path))}"
    mp.start_processes(_worker, args=(fn, world, str(init_file), args), nprocs=world, start_method="fork")


class Net(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(nn.Linear(IN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, MID), nn.Tanh(), nn.Linear(MID, OUT))


def net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net()


def shard(model: nn.Module, world: int) -> nn.Module:
    """FSDP2 over a 1-D CPU mesh: each Linear is its own group, then the root."""
    mesh = init_device_mesh("cpu", (world,))
    for module in model:
        if isinstance(module, nn.Linear):
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def batches(steps: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        x = torch.randn(GLOBAL_BATCH, IN, generator=generator)
        out.append((x, torch.sin(2.0 * x[:, :OUT])))
    return out


def local_rows(batch: tuple[torch.Tensor, torch.Tensor], rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's equal part of the global batch (FSDP2 averages the gradients over ranks)."""
    per = GLOBAL_BATCH // world
    return batch[0][rank * per : (rank + 1) * per], batch[1][rank * per : (rank + 1) * per]


def loss_of(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return F.mse_loss(model(batch[0]), batch[1])


def full_params(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter as a full tensor (all-gathered when sharded)."""
    return {
        name: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
        for name, p in model.named_parameters()
    }


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Every optimizer state tensor as a full tensor, keyed ``"<param>/<key>"``."""
    out = {}
    for name, p in model.named_parameters():
        for key, value in optimizer.state.get(p, {}).items():
            out[f"{name}/{key}"] = (value.full_tensor() if hasattr(value, "full_tensor") else value).clone()
    return out
