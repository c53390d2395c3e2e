"""Communication per training step under FSDP2: COAP (fp32, 8-bit, svd projection) vs plain sharded AdamW.

A LLaMA-shaped stack of Linears (per block: q, k, v, o of `(h, h)`, gate and up of `(f, h)`, down of `(h, f)`; the
down projection is the one left-side matrix) is wrapped with ``fully_shard`` per block on ``WORLD`` forked CPU
processes over gloo, and trained with each optimizer on the same data. A wrapper around ``torch.distributed``'s
collectives (``all_reduce``, ``all_gather_into_tensor``, ``all_gather_single``, ``reduce_scatter_tensor``,
``reduce_scatter_single``, ...) counts, per rank, the bytes each call moves under the ring model: ``2 (N-1)/N`` times
the tensor for an all-reduce, ``(N-1)/N`` times the gathered (or scattered) tensor for an all-gather
(reduce-scatter). FSDP's own traffic (parameter all-gathers in forward and backward, gradient reduce-scatters) is
counted separately from the traffic inside ``optimizer.step()``.

COAP steps come in three kinds: a plain step (only the left-side ``P^T G`` all-reduce), a refresh step (every
``T_u``) and a re-projection step (every ``T_u * k``); each kind is measured, and the per-step average is then
given for the paper's schedule (LLaMA-1B: ``T_u`` = 40, ``k`` = 5) as ``plain + (refresh - plain) * (k-1)/(k T_u) +
(reproject - plain) / (k T_u)``. Ratios are to sharded ``torch.optim.AdamW``, whose step moves no bytes.

Command line (from the repository root)::

    uv run --frozen python -m benchmarks --package coap-optim
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch._dynamo  # imported before forking: each worker would otherwise import it (seconds)
import torch.distributed as dist
import torch.distributed.fsdp
import torch.multiprocessing as mp
from torch import nn

import coap_optim  # noqa: F401

COMMAND = "uv run --frozen python -m benchmarks --package coap-optim"
WORLD = 4
PAPER_INTERVAL, PAPER_FACTOR = 40, 5
# Measured schedule: update_interval 2, reproject_factor 2 -> t=0 range finder, t=2 refresh, t=4 re-projection.
STEPS = 6
STEP_KIND = {0: "init", 1: "plain", 2: "refresh", 3: "plain", 4: "reproject", 5: "plain"}

_COLLECTIVES = (
    "all_reduce",
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_single",
    "reduce_scatter_tensor",
    "reduce_scatter_single",
    "broadcast",
)


class CollectiveCounter:
    """Patches ``torch.distributed``'s collectives to add up the bytes each rank sends (ring model)."""

    def __init__(self, world: int) -> None:
        self.world = world
        self.bytes = 0.0
        self.calls: dict[str, int] = {}
        self._saved: dict[str, Any] = {}

    def _wrap(self, name: str, original: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            if name == "all_gather" and isinstance(args[0], list):
                size = sum(t.numel() * t.element_size() for t in args[0])
            elif name.startswith(("all_gather", "reduce_scatter")):
                size = max(t.numel() * t.element_size() for t in tensors)  # the full (gathered / scattered) tensor
            else:
                size = tensors[0].numel() * tensors[0].element_size()
            factor = (self.world - 1) / self.world
            self.bytes += size * (2 * factor if name == "all_reduce" else factor)
            self.calls[name] = self.calls.get(name, 0) + 1
            return original(*args, **kwargs)

        return counted

    def __enter__(self) -> CollectiveCounter:
        for name in _COLLECTIVES:
            if hasattr(dist, name):
                self._saved[name] = getattr(dist, name)
                setattr(dist, name, self._wrap(name, self._saved[name]))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, original in self._saved.items():
            setattr(dist, name, original)


class Block(nn.Module):
    def __init__(self, hidden: int, ffn: int) -> None:
        super().__init__()
        self.attn = nn.ModuleDict({k: nn.Linear(hidden, hidden, bias=False) for k in ("q", "k", "v", "o")})
        self.mlp = nn.ModuleDict(
            {
                "gate": nn.Linear(hidden, ffn, bias=False),
                "up": nn.Linear(hidden, ffn, bias=False),
                "down": nn.Linear(ffn, hidden, bias=False),
            }
        )
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attn
        h = x + a["o"](torch.tanh(a["q"](x)) * a["k"](x) + a["v"](x))
        m = self.mlp
        return self.norm(h + m["down"](torch.nn.functional.silu(m["gate"](h)) * m["up"](h)))


def _optimizers(hidden: int) -> dict[str, Any]:
    from coap_optim import CoapAdamW, CoapAdamW8bit

    def groups(model: nn.Module) -> list[dict[str, Any]]:
        projected = [p for n, p in model.named_parameters() if p.dim() == 2]
        rest = [p for n, p in model.named_parameters() if p.dim() != 2]
        return [{"params": projected, "rank": hidden // 4}, {"params": rest}]

    schedule = {"update_interval": 2, "reproject_factor": 2, "scale": 0.25, "lr": 1e-3}
    return {
        "adamw": lambda model: torch.optim.AdamW(model.parameters(), lr=1e-3),
        "coap": lambda model: CoapAdamW(groups(model), **schedule),
        "coap_8bit": lambda model: CoapAdamW8bit(groups(model), **schedule),
        "svd": lambda model: CoapAdamW(groups(model), projection="svd", **schedule),
        "coap_right": lambda model: CoapAdamW(groups(model), side="right", **schedule),
    }


def _worker(rank: int, world: int, init_file: str, out: str, hidden: int, ffn: int, layers: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))
    results: dict[str, dict[str, list[float]]] = {}
    try:
        for name, make in _optimizers(hidden).items():
            torch.manual_seed(0)
            model = nn.Sequential(*[Block(hidden, ffn) for _ in range(layers)])
            for block in model:
                fully_shard(block, mesh=mesh)
            fully_shard(model, mesh=mesh)
            optimizer = make(model)
            generator = torch.Generator().manual_seed(1 + rank)
            fsdp, step_bytes = [], []
            for _ in range(STEPS):
                x = torch.randn(8, hidden, generator=generator)
                with CollectiveCounter(world) as counter:
                    model(x).square().mean().backward()
                fsdp.append(counter.bytes)
                with CollectiveCounter(world) as counter:
                    optimizer.step()
                step_bytes.append(counter.bytes)
                optimizer.zero_grad(set_to_none=True)
            results[name] = {"fsdp": fsdp, "step": step_bytes}
    finally:
        dist.destroy_process_group()
    if rank == 0:
        torch.save(results, Path(out) / "comm.pt")


def _measure(hidden: int, ffn: int, layers: int) -> dict[str, dict[str, list[float]]]:
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(
            _worker,
            args=(WORLD, str(Path(tmp) / "pg"), tmp, hidden, ffn, layers),
            nprocs=WORLD,
            start_method="fork",
        )
        return torch.load(Path(tmp) / "comm.pt", weights_only=True)


def run(out_dir: Path, quick: bool = False) -> dict[str, Any]:
    hidden, ffn, layers = (64, 172, 2) if quick else (256, 688, 4)
    measured = _measure(hidden, ffn, layers)
    fsdp_adamw = sum(measured["adamw"]["fsdp"]) / STEPS
    weights = (PAPER_FACTOR - 1) / (PAPER_FACTOR * PAPER_INTERVAL), 1 / (PAPER_FACTOR * PAPER_INTERVAL)
    rows, figures = [], {}
    labels = {
        "adamw": "torch AdamW (sharded)",
        "coap": "CoapAdamW",
        "coap_8bit": "CoapAdamW8bit",
        "svd": 'CoapAdamW, projection="svd"',
        "coap_right": 'CoapAdamW, side="right"',
    }
    for name, data in measured.items():
        kinds = {kind: data["step"][t] for t, kind in STEP_KIND.items()}
        fsdp = sum(data["fsdp"]) / STEPS
        amortised = (
            kinds["plain"]
            + (kinds["refresh"] - kinds["plain"]) * weights[0]
            + (kinds["reproject"] - kinds["plain"]) * weights[1]
        )
        total_ratio = (fsdp + amortised) / fsdp_adamw
        rows.append(
            [
                labels[name],
                fsdp / 1e3,
                kinds["plain"] / 1e3,
                kinds["refresh"] / 1e3,
                kinds["reproject"] / 1e3,
                amortised / 1e3,
                amortised / fsdp_adamw,
                total_ratio,
            ]
        )
        figures[f"comm_total_ratio_{name}_vs_adamw"] = {"value": total_ratio, "unit": "x"}
        figures[f"comm_optimizer_fraction_{name}"] = {"value": amortised / fsdp_adamw, "unit": "x"}
    params = layers * (4 * hidden * hidden + 3 * hidden * ffn + 2 * hidden)
    return {
        "title": f"FSDP2 communication per step, {WORLD} ranks: COAP vs sharded AdamW{' (quick)' if quick else ''}",
        "command": COMMAND + (" --quick" if quick else ""),
        "columns": [
            "optimizer",
            "FSDP kB/step",
            "step kB (plain)",
            "step kB (refresh)",
            "step kB (re-projection)",
            f"step kB, avg at T_u={PAPER_INTERVAL}, k={PAPER_FACTOR}",
            "step / FSDP AdamW bytes",
            "total / AdamW total",
        ],
        "rows": rows,
        "figures": figures,
        "artifacts": [],
        "notes": (
            f"{layers} blocks, hidden {hidden}, FFN {ffn} ({params / 1e6:.2f}M parameters), rank {hidden // 4} on every "
            f"2-D weight, fp32, batch 8 per rank, {WORLD} CPU processes (gloo), fully_shard per block. kB sent per "
            "rank (ring model). FSDP's parameter all-gathers and gradient reduce-scatters are the same for every "
            "optimizer; COAP's plain step adds the all-reduce of P^T G for the left-side (down) projections and of "
            "the non-finite check; the refresh and re-projection add the small products of the range finder and "
            "the refresh; svd all-gathers each gradient at every update; side='right' projects the down matrices on the right "
            "too, so its plain step moves only the non-finite check."
        ),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(Path("results/coap-optim"), "--quick" in sys.argv), indent=2, default=str))
