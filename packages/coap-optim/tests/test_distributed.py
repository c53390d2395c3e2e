"""CoapAdamW under 2-process DDP (gloo on CPU, launched by Lightning), with and without gradient accumulation.

Every rank saves its final parameters and projection matrices; the test asserts that the ranks agree bit for bit and
that the result matches a single-process run of the same optimizer on the full (global) batch.

Launcher: ``strategy="ddp_fork"`` (Lightning's DDP with forked workers), chosen by trying inside pytest:
``"ddp"`` re-executes the command line (here: pytest itself) in each worker, so every worker runs its own copy of the
test with its own ``tmp_path`` and the parent never sees rank 0's files (the test fails); ``"ddp_spawn"`` passes but
each spawned worker re-imports torch and Lightning: 8 s per test on an idle 2-core machine, 84 s when the CPU was
shared with other jobs; ``"ddp_fork"`` is the same launcher with the fork start method (no re-import): 0.3 s idle,
2 s shared. The DDP semantics under test (gloo all-reduce of gradients, no_sync during accumulation) are identical.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from coap_optim import CoapAdamW, param_groups

L = pytest.importorskip("lightning")

pytestmark = pytest.mark.distributed

STRATEGY = "ddp_fork"
WORLD_SIZE = 2
PER_RANK_BATCH = 8
STEPS = 6  # optimizer steps at t = 0 (range finder), 2 and 4 (re-projection), with refreshes in between
# DDP sums the two ranks' gradients in a different order than one process does: fp32 round-off, then 6 Adam steps.
ATOL = 1e-5


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 8))


def _optimizer(net: nn.Module) -> CoapAdamW:
    return CoapAdamW(param_groups(net, rank=4), lr=1e-2, update_interval=2, reproject_factor=2)


def _dataset(n: int) -> torch.utils.data.TensorDataset:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(n, 16, generator=generator)
    return torch.utils.data.TensorDataset(x, torch.sin(x[:, :8] * 2.0))


def _snapshot(net: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, dict[str, torch.Tensor]]:
    params = {name: p.detach().clone() for name, p in net.named_parameters()}
    projections = {
        name: optimizer.state[p]["P"].clone() for name, p in net.named_parameters() if "P" in optimizer.state[p]
    }
    return {"params": params, "P": projections}


class _DDPModule(L.LightningModule):
    def __init__(self, out_dir: str, num_samples: int) -> None:
        super().__init__()
        self.out_dir = out_dir
        self.num_samples = num_samples
        self.net = _net()

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        # An explicit unshuffled sampler (Lightning's automatic one shuffles): rank r takes samples r, r + 2, ..., so
        # the micro-batches of one optimizer step cover exactly the next `global_batch` consecutive samples.
        sampler = torch.utils.data.DistributedSampler(
            _dataset(self.num_samples), num_replicas=self.trainer.world_size, rank=self.global_rank, shuffle=False
        )
        return torch.utils.data.DataLoader(_dataset(self.num_samples), batch_size=PER_RANK_BATCH, sampler=sampler)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> CoapAdamW:
        return _optimizer(self.net)

    def on_train_end(self) -> None:
        snapshot = _snapshot(self.net, self.trainer.optimizers[0])
        snapshot["world_size"] = torch.tensor(self.trainer.world_size)
        torch.save(snapshot, Path(self.out_dir) / f"rank{self.global_rank}.pt")


def _single_process(global_batch: int) -> dict[str, dict[str, torch.Tensor]]:
    """The same optimizer on one process, one optimizer step per ``global_batch`` consecutive samples."""
    net = _net()
    optimizer = _optimizer(net)
    x, y = _dataset(STEPS * global_batch).tensors
    for step in range(STEPS):
        rows = slice(step * global_batch, (step + 1) * global_batch)
        F.mse_loss(net(x[rows]), y[rows]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return _snapshot(net, optimizer)


@pytest.fixture
def restore_environ():
    """Lightning's launcher exports MASTER_ADDR / MASTER_PORT / ranks into ``os.environ``; undo that afterwards."""
    saved = dict(os.environ)
    yield
    for key in set(os.environ) - set(saved):
        del os.environ[key]
    os.environ.update(saved)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_ddp_ranks_agree_and_match_single_process(tmp_path, restore_environ, accumulate: int) -> None:
    global_batch = WORLD_SIZE * PER_RANK_BATCH * accumulate
    trainer = L.Trainer(
        accelerator="cpu",
        devices=WORLD_SIZE,
        strategy=STRATEGY,
        max_steps=STEPS,
        accumulate_grad_batches=accumulate,
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(_DDPModule(str(tmp_path), STEPS * global_batch))

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]
    assert [int(r["world_size"]) for r in ranks] == [WORLD_SIZE, WORLD_SIZE]
    assert set(ranks[0]["P"]) == {"0.weight", "2.weight"}
    for kind in ("params", "P"):
        for name, tensor in ranks[0][kind].items():
            assert torch.equal(tensor, ranks[1][kind][name]), f"ranks disagree on {kind} {name}"

    reference = _single_process(global_batch)
    initial = dict(_net().named_parameters())
    for name, tensor in ranks[0]["params"].items():
        assert not torch.equal(tensor, initial[name]), f"{name} never changed"
        torch.testing.assert_close(tensor, reference["params"][name], rtol=0.0, atol=ATOL)
    for name, tensor in ranks[0]["P"].items():
        torch.testing.assert_close(tensor, reference["P"][name], rtol=0.0, atol=ATOL)


def test_single_process_reference_depends_on_the_batch_split() -> None:
    """Guard for the test above: a different global batch gives a clearly different result (not within ``ATOL``)."""
    a, b = _single_process(WORLD_SIZE * PER_RANK_BATCH), _single_process(WORLD_SIZE * PER_RANK_BATCH * 2)
    worst = max((a["params"][n] - b["params"][n]).abs().max().item() for n in a["params"])
    assert worst > 100 * ATOL
