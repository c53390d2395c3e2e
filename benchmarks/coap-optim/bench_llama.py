"""Tiny-LLaMA pre-training on CPU: COAP vs AdamW, 8-bit AdamW, GaLore, APOLLO and LoRA (spec §10 protocol).

Command line (from the repository root)::

    uv run --frozen python -m benchmarks --package coap-optim [--quick]
    COAP_BENCH_THREADS=1 uv run --frozen python -m benchmarks --package coap-optim   # on a shared CPU

Seeds: model initialisation ``torch.manual_seed(0)`` before ``LlamaForCausalLM(config)`` (identical initial weights for
every optimizer); training batches from ``torch.Generator().manual_seed(0)`` (identical batches for every optimizer);
validation batches from ``torch.Generator().manual_seed(1)``; COAP's range-finder seed 3407. fp32; 2 torch threads
(the environment variable ``COAP_BENCH_THREADS`` overrides it, e.g. 1 on a CPU shared with other jobs: two threads
per process on an oversubscribed 2-core machine make OpenMP spin and inflate timings many-fold).

Model (full mode): ``transformers.LlamaConfig`` with hidden 256, FFN 688, 4 layers, 4 heads, byte vocabulary 256,
untied embeddings (3.30M parameters); sequences of 128 bytes, batch 8, 300 steps, constant lr, wd 0, betas
(0.9, 0.999), eps 1e-6. Learning rate: a 3-point sweep per optimizer (spec §10), each optimizer reported at the lr of
its lowest final validation loss: {2.5e-4, 5e-4, 1e-3} for full-rank updates (AdamW, 8-bit AdamW, LoRA), {5e-4, 1e-3,
2e-3} for APOLLO, {1e-3, 2e-3, 4e-3} for the projected optimizers with scale 0.25 (GaLore, COAP), whose projected
weights move by lr x scale. Data: the text of ``pydoc_data.topics`` (ships with CPython), first 90 % for training, last
10 % for validation (``coap_optim.demo.load_corpus``). Quick mode: hidden 64, FFN 176, 2 layers, seq 64, 40 steps.

Optimizers (projected ones act on the Linears of ``self_attn``/``mlp`` only, like the official LLaMA example):

- ``torch.optim.AdamW``;
- ``bitsandbytes.optim.AdamW8bit`` (block-wise 8-bit; runs on CPU in bitsandbytes >= 0.45);
- ``galore_torch.GaLoreAdamW``: rank 64, ``update_proj_gap`` 200, scale 0.25, ``proj_type="std"``;
- ``apollo_torch.APOLLOAdamW``: rank 64, random projection, channel scaling, scale 1, gap 200;
- LoRA (``peft``) on the same Linears, rank chosen so its Adam state matches COAP's (embeddings, norms and LM head
  trained in full, base Linears frozen), trained with ``torch.optim.AdamW``;
- ours: ``coap_optim.CoapAdamW`` with ``projection="coap"`` / ``"svd"`` / ``"random"`` and ``CoapAdamW8bit``: rank 64,
  ``update_interval`` (T_u) 40, ``reproject_factor`` 5, scale 0.25.

Reported per optimizer: optimizer-state bytes per model parameter (every tensor reachable from ``optimizer.state``,
projection matrices and quantisation maps included, counted by ``_common.state_bytes`` for everyone; the denominator is
the base model's parameter count), mean / median ``optimizer.step()`` time, median whole-iteration time, final
validation loss (mean next-byte cross-entropy in nats over 16 fixed batches of 8 x 128 bytes), all at the best lr of
the sweep; the sweep itself is reported as a second table (final validation loss per lr).
"""

from __future__ import annotations

import importlib.util
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _load_common() -> Any:
    name = "benchmarks_coap_optim__common"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("_common.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


common = _load_common()

COMMAND = "uv run --frozen python -m benchmarks --package coap-optim"
THREADS = int(os.environ.get("COAP_BENCH_THREADS", "2"))  # the spec §10 protocol: 2 CPU threads
MODEL_SEED = 0
DATA_SEED = 0
VAL_SEED = 1
TARGET_MODULES = ("self_attn", "mlp")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class Setup:
    """One benchmark size (every optimizer shares it)."""

    hidden: int
    ffn: int
    layers: int
    heads: int
    seq: int
    batch: int
    steps: int
    eval_every: int
    eval_batches: int
    lr: float
    rank: int
    coap_interval: int
    coap_reproject: int
    galore_gap: int
    scale: float


FULL = Setup(
    hidden=256,
    ffn=688,
    layers=4,
    heads=4,
    seq=128,
    batch=8,
    steps=300,
    eval_every=50,
    eval_batches=16,
    lr=1e-3,
    rank=64,
    coap_interval=40,
    coap_reproject=5,
    galore_gap=200,
    scale=0.25,
)
QUICK = Setup(
    hidden=64,
    ffn=176,
    layers=2,
    heads=4,
    seq=64,
    batch=8,
    steps=40,
    eval_every=10,
    eval_batches=8,
    lr=1e-3,
    rank=16,
    coap_interval=10,
    coap_reproject=2,
    galore_gap=20,
    scale=0.25,
)


@dataclass
class Run:
    """One optimizer's measurements."""

    label: str
    key: str
    lr: float = 0.0
    steps: list[int] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    step_ms: list[float] = field(default_factory=list)
    iteration_ms: list[float] = field(default_factory=list)
    state_bytes: int = 0
    wall_s: float = 0.0
    note: str = ""
    error: str = ""


def _model(setup: Setup) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=256,
        hidden_size=setup.hidden,
        intermediate_size=setup.ffn,
        num_hidden_layers=setup.layers,
        num_attention_heads=setup.heads,
        num_key_value_heads=setup.heads,
        max_position_embeddings=setup.seq,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    torch.manual_seed(MODEL_SEED)
    return LlamaForCausalLM(config)


def _split(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(projected, regular): weights of the Linears inside ``self_attn``/``mlp`` vs everything else."""
    targeted = {
        id(module.weight)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and any(t in name for t in TARGET_MODULES)
    }
    projected = [p for p in model.parameters() if id(p) in targeted]
    regular = [p for p in model.parameters() if id(p) not in targeted]
    return projected, regular


def _coap_matched_lora_rank(model: nn.Module, rank: int) -> int:
    """LoRA rank whose Adam state (2 r (m + n) floats per Linear) matches COAP's (r min(m, n) + 2 r max(m, n))."""
    projected, _ = _split(model)
    coap = sum(rank * (min(p.shape) + 2 * max(p.shape)) for p in projected)
    per_rank = sum(2 * (p.shape[0] + p.shape[1]) for p in projected)
    return max(1, round(coap / per_rank))


OptimizerFactory = Callable[[nn.Module, Setup], tuple[nn.Module, torch.optim.Optimizer, str]]


def _adamw(model: nn.Module, setup: Setup) -> tuple[nn.Module, torch.optim.Optimizer, str]:
    return model, torch.optim.AdamW(model.parameters(), lr=setup.lr, eps=1e-6, weight_decay=0.0), ""


def _bnb_adamw8bit(model: nn.Module, setup: Setup) -> tuple[nn.Module, torch.optim.Optimizer, str]:
    import bitsandbytes as bnb

    optimizer = bnb.optim.AdamW8bit(model.parameters(), lr=setup.lr, eps=1e-6, weight_decay=0.0)
    return model, optimizer, "tensors under 4096 elements stay fp32 (min_8bit_size)"


def _galore(model: nn.Module, setup: Setup) -> tuple[nn.Module, torch.optim.Optimizer, str]:
    from galore_torch import GaLoreAdamW

    projected, regular = _split(model)
    groups = [
        {"params": regular},
        {
            "params": projected,
            "rank": setup.rank,
            "update_proj_gap": setup.galore_gap,
            "scale": setup.scale,
            "proj_type": "std",
        },
    ]
    optimizer = GaLoreAdamW(groups, lr=setup.lr, eps=1e-6, weight_decay=0.0, no_deprecation_warning=True)
    return model, optimizer, f"rank {setup.rank}, gap {setup.galore_gap}, scale {setup.scale}"


def _apollo(model: nn.Module, setup: Setup) -> tuple[nn.Module, torch.optim.Optimizer, str]:
    from apollo_torch import APOLLOAdamW

    projected, regular = _split(model)
    groups = [
        {"params": regular},
        {
            "params": projected,
            "rank": setup.rank,
            "proj": "random",
            "scale_type": "channel",
            "scale": 1,
            "update_proj_gap": setup.galore_gap,
            "proj_type": "std",
        },
    ]
    optimizer = APOLLOAdamW(groups, lr=setup.lr, eps=1e-6, weight_decay=0.0)
    return model, optimizer, f"rank {setup.rank}, random, channel, scale 1, gap {setup.galore_gap}"


def _lora(model: nn.Module, setup: Setup) -> tuple[nn.Module, torch.optim.Optimizer, str]:
    from peft import LoraConfig, get_peft_model

    rank = _coap_matched_lora_rank(model, setup.rank)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=LORA_TARGETS, bias="none")
    torch.manual_seed(MODEL_SEED)
    peft_model = get_peft_model(model, config)
    for name, param in peft_model.named_parameters():
        if "lora_" not in name and not any(f".{t}." in name for t in LORA_TARGETS):
            param.requires_grad_(True)  # embeddings, norms and LM head train in full, as in the other runs
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=setup.lr, eps=1e-6, weight_decay=0.0)
    adapters = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    return peft_model, optimizer, f"rank {rank} (alpha {2 * rank}); adapters add {adapters / 1e6:.3f}M params"


def _coap(projection: str, eight_bit: bool = False) -> OptimizerFactory:
    def factory(model: nn.Module, setup: Setup) -> tuple[nn.Module, torch.optim.Optimizer, str]:
        from coap_optim import CoapAdamW, CoapAdamW8bit, param_groups

        groups = param_groups(model, rank=setup.rank, target_modules=list(TARGET_MODULES))
        optimizer_class = CoapAdamW8bit if eight_bit else CoapAdamW
        optimizer = optimizer_class(
            groups,
            lr=setup.lr,
            eps=1e-6,
            weight_decay=0.0,
            update_interval=setup.coap_interval,
            reproject_factor=setup.coap_reproject,
            scale=setup.scale,
            projection=projection,
        )
        return model, optimizer, f"rank {setup.rank}, T_u {setup.coap_interval}, x{setup.coap_reproject}"

    return factory


FULL_RANK_LRS = (2.5e-4, 5e-4, 1e-3)
APOLLO_LRS = (5e-4, 1e-3, 2e-3)
PROJECTED_LRS = (1e-3, 2e-3, 4e-3)

# (key, label, factory, is a baseline whose failure is recorded rather than raised, lr sweep)
OPTIMIZERS: list[tuple[str, str, OptimizerFactory, bool, tuple[float, ...]]] = [
    ("adamw", "torch AdamW", _adamw, True, FULL_RANK_LRS),
    ("bnb_adamw8bit", "bitsandbytes AdamW8bit", _bnb_adamw8bit, True, FULL_RANK_LRS),
    ("galore", "GaLore AdamW", _galore, True, PROJECTED_LRS),
    ("apollo", "APOLLO AdamW", _apollo, True, APOLLO_LRS),
    ("lora", "LoRA + AdamW", _lora, True, FULL_RANK_LRS),
    ("coap", "COAP AdamW (ours)", _coap("coap"), False, PROJECTED_LRS),
    ("coap_svd", "COAP AdamW, svd projection (ours)", _coap("svd"), False, PROJECTED_LRS),
    ("coap_random", "COAP AdamW, random projection (ours)", _coap("random"), False, PROJECTED_LRS),
    ("coap_8bit", "COAP AdamW8bit (ours)", _coap("coap", eight_bit=True), False, PROJECTED_LRS),
]


def _loss(model: nn.Module, window: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=window[:, :-1]).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), window[:, 1:].reshape(-1))


@torch.no_grad()
def _evaluate(model: nn.Module, batches: list[torch.Tensor]) -> float:
    model.eval()
    value = statistics.fmean(_loss(model, batch).item() for batch in batches)
    model.train()
    return value


def _train(key: str, label: str, factory: OptimizerFactory, setup: Setup, data: dict[str, Any]) -> Run:
    from coap_optim.demo import sample_batch

    run = Run(label=label, key=key, lr=setup.lr)
    start = time.perf_counter()
    model, optimizer, run.note = factory(_model(setup), setup)
    model.train()
    generator = torch.Generator().manual_seed(DATA_SEED)
    for step in range(1, setup.steps + 1):
        batch = sample_batch(data["train"], setup.batch, setup.seq, generator)
        begin = time.perf_counter()
        loss = _loss(model, batch)
        loss.backward()
        step_begin = time.perf_counter()
        optimizer.step()
        end = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"{label}: loss {loss.item()} at step {step}")
        run.step_ms.append(1e3 * (end - step_begin))
        run.iteration_ms.append(1e3 * (end - begin))
        if step % setup.eval_every == 0 or step == setup.steps:
            run.steps.append(step)
            run.val_losses.append(_evaluate(model, data["val"]))
    run.state_bytes = common.state_bytes(optimizer)
    run.wall_s = time.perf_counter() - start
    return run


def _warm_up(setup: Setup, data: dict[str, Any]) -> None:
    """A few untimed iterations so that one-off costs (lazy imports, allocator growth) do not land on the first run."""
    model = _model(setup)
    optimizer = torch.optim.AdamW(model.parameters(), lr=setup.lr)
    for batch in data["val"][:3]:
        _loss(model, batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def run(out_dir: Path, quick: bool) -> dict[str, Any]:
    """Train the tiny LLaMA once per optimizer; see the module docstring."""
    from coap_optim.demo import load_corpus, sample_batch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    setup = QUICK if quick else FULL
    corpus = load_corpus()
    split = int(0.9 * corpus.numel())
    val_generator = torch.Generator().manual_seed(VAL_SEED)
    data = {
        "train": corpus[:split],
        "val": [
            sample_batch(corpus[split:], setup.batch, setup.seq, val_generator) for _ in range(setup.eval_batches)
        ],
    }
    num_params = sum(p.numel() for p in _model(setup).parameters())
    load_before = os.getloadavg()[0]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    runs: list[Run] = []
    sweeps: dict[str, list[Run]] = {}
    try:
        _warm_up(setup, data)
        for key, label, factory, is_baseline, grid in OPTIMIZERS:
            candidates: list[Run] = []
            for lr in grid[1:2] if quick else grid:
                try:
                    candidates.append(_train(key, label, factory, replace(setup, lr=lr), data))
                except (ImportError, RuntimeError, NotImplementedError, AttributeError, TypeError) as error:
                    if not is_baseline:
                        raise
                    message = f"{type(error).__name__}: {str(error).splitlines()[0]}"
                    candidates = [Run(label=label, key=key, lr=lr, error=message)]
                    break
            sweeps[key] = candidates
            runs.append(min(candidates, key=lambda r: r.val_losses[-1] if not r.error else math.inf))
    finally:
        torch.set_num_threads(previous_threads)
    load_after = os.getloadavg()[0]

    rows: list[list[Any]] = []
    figures: dict[str, dict[str, Any]] = {}
    done = {r.key: r for r in runs if not r.error}
    for r in runs:
        if r.error:
            rows.append([r.label, "n/a", "n/a", "n/a", "n/a", "n/a", "n/a", "n/a", f"did not run: {r.error}"])
            continue
        per_param = r.state_bytes / num_params
        mean_step, median_step = statistics.fmean(r.step_ms), statistics.median(r.step_ms)
        rows.append(
            [
                r.label,
                r.lr,
                r.state_bytes / 2**20,
                per_param,
                mean_step,
                median_step,
                statistics.median(r.iteration_ms),
                r.val_losses[-1],
                r.note,
            ]
        )
        figures[f"state_bytes_per_param_{r.key}"] = {"value": per_param, "unit": "B/param"}
        figures[f"mean_step_ms_{r.key}"] = {"value": mean_step, "unit": "ms"}
        figures[f"median_step_ms_{r.key}"] = {"value": median_step, "unit": "ms"}
        figures[f"val_loss_{r.key}"] = {"value": r.val_losses[-1], "unit": "nats/byte"}
        figures[f"best_lr_{r.key}"] = {"value": r.lr, "unit": "lr"}
    if "coap" in done and "galore" in done:
        figures["state_bytes_ratio_coap_vs_galore"] = {
            "value": done["coap"].state_bytes / done["galore"].state_bytes,
            "unit": "x",
        }
        figures["mean_step_time_ratio_coap_vs_galore"] = {
            "value": statistics.fmean(done["coap"].step_ms) / statistics.fmean(done["galore"].step_ms),
            "unit": "x",
        }
    if "coap_8bit" in done and "adamw" in done:
        figures["state_bytes_ratio_coap8bit_vs_adamw"] = {
            "value": done["coap_8bit"].state_bytes / done["adamw"].state_bytes,
            "unit": "x",
        }
    if "adamw" in done:
        reference = done["adamw"].val_losses[-1]
        for key in ("coap", "coap_svd", "coap_random", "coap_8bit"):
            if key in done:
                figures[f"val_loss_rel_pct_{key}_vs_adamw"] = {
                    "value": 100.0 * (done[key].val_losses[-1] - reference) / reference,
                    "unit": "%",
                }
    plot = common.line_plot(
        out_dir / ("llama_loss_curves_quick.png" if quick else "llama_loss_curves.png"),
        {r.label: (r.steps, r.val_losses) for r in done.values()},
        xlabel="step",
        ylabel="validation loss (nats / byte)",
        title=f"tiny LLaMA ({num_params / 1e6:.2f}M params) on pydoc_data.topics, CPU",
        marker="o",
    )
    walls = ", ".join(f"{r.key} {r.wall_s:.0f}s" for r in done.values())
    notes = (
        f"{num_params / 1e6:.3f}M parameters; setup {asdict(setup)}. State bytes count every tensor reachable from "
        f"optimizer.state (P, codes, absmax, quantile maps, step counters), each storage once, divided by the base "
        f"model's parameter count. Validation: the same {setup.eval_batches} fixed batches of {setup.batch} x "
        f"{setup.seq} bytes at every evaluation. Step times are optimizer.step() only; iteration = forward + "
        f"backward + step; {THREADS} torch thread(s). 1-minute load average {load_before:.2f} before, {load_after:.2f} after (2 cores; a load "
        f"above 2 means another process shared the CPU and timings are inflated). Wall time per run: {walls}. "
        + (
            "Quick mode: one lr per optimizer (the middle of its sweep)."
            if quick
            else "Each optimizer at the best lr of its 3-point sweep (final validation loss); the sweep: "
            + "; ".join(
                f"{key} " + ", ".join(f"{r.lr:g}: {r.val_losses[-1]:.3f}" for r in candidates if not r.error)
                for key, candidates in sweeps.items()
            )
            + "."
        )
    )
    if plot is None:
        notes += " No plot: matplotlib is not installed."
    return {
        "title": f"Tiny LLaMA on pydoc_data.topics: optimizer state, step time, validation loss{' (quick)' if quick else ''}",
        "command": COMMAND + (" --quick" if quick else ""),
        "columns": [
            "optimizer",
            "best lr",
            "state MiB",
            "state B/param",
            "mean step ms",
            "median step ms",
            "median iteration ms",
            "final val loss",
            "settings / notes",
        ],
        "rows": rows,
        "figures": figures,
        "artifacts": [str(Path(out_dir.name) / plot.name)] if plot else [],
        "notes": notes,
        "curves": {r.key: {"lr": r.lr, "steps": r.steps, "val_loss": r.val_losses} for r in done.values()},
        "lr_sweep": {
            key: {f"{r.lr:g}": r.val_losses[-1] for r in candidates if not r.error}
            for key, candidates in sweeps.items()
        },
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(Path("results/coap-optim"), "--quick" in sys.argv), indent=2, default=str))
