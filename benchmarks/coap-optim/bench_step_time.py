"""Step time of COAP vs GaLore (and AdamW) on the tiny LLaMA, interleaved so that both see the same machine load.

``bench_llama.py`` trains one optimizer after the other; on a CPU shared with other jobs the load changes between runs
and biases their step-time ratio. Here the optimizers train side by side in one process: three copies of the same
model, the same batch at every step, and each step times ``optimizer.step()`` of every copy in a rotating order. The
ratio of the means is then a fair comparison even when the machine is busy.

Setup: the ``bench_llama`` model and data (hidden 256, FFN 688, 4 layers, byte vocabulary, seq 128, batch 8), 300
steps, rank 64 on the attention/MLP Linears, scale 0.25, GaLore ``update_proj_gap`` 200, COAP ``update_interval`` 40 and
``reproject_factor`` 5 (so COAP updates its projection 7 times, GaLore twice); lr = each optimizer's best lr of the
``bench_llama`` sweep. The mean includes the projection-update steps; the median is a plain step. Quick mode: the
small model, 40 steps.

Command line (from the repository root)::

    uv run --frozen python -m benchmarks --package coap-optim
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch


def _load(name: str, file: str) -> Any:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(file))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


llama = _load("benchmarks_coap_optim_bench_llama", "bench_llama.py")

COMMAND = "uv run --frozen python -m benchmarks --package coap-optim"
# (key, label, best lr of the bench_llama sweep)
CONTENDERS = [
    ("adamw", "torch AdamW", 5e-4),
    ("galore", "GaLore AdamW", 4e-3),
    ("coap", "COAP AdamW (ours)", 4e-3),
]


def run(out_dir: Path, quick: bool) -> dict[str, Any]:
    """Train the contenders side by side and time their optimizer steps; see the module docstring."""
    from coap_optim.demo import load_corpus, sample_batch

    setup = llama.QUICK if quick else llama.FULL
    factories = {key: factory for key, _, factory, _, _ in llama.OPTIMIZERS}
    corpus = load_corpus()
    train = corpus[: int(0.9 * corpus.numel())]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(llama.THREADS)
    load_before = os.getloadavg()[0]
    try:
        trainees = []
        for key, label, lr in CONTENDERS:
            model, optimizer, _ = factories[key](llama._model(setup), replace(setup, lr=lr))
            model.train()
            trainees.append({"key": key, "label": label, "lr": lr, "model": model, "optimizer": optimizer, "ms": []})
        generator = torch.Generator().manual_seed(llama.DATA_SEED)
        losses: dict[str, float] = {}
        for step in range(setup.steps):
            batch = sample_batch(train, setup.batch, setup.seq, generator)
            for trainee in trainees:
                loss = llama._loss(trainee["model"], batch)
                loss.backward()
                losses[trainee["key"]] = loss.item()
            for index in range(len(trainees)):
                trainee = trainees[(index + step) % len(trainees)]
                begin = time.perf_counter()
                trainee["optimizer"].step()
                trainee["ms"].append(1e3 * (time.perf_counter() - begin))
                trainee["optimizer"].zero_grad(set_to_none=True)
    finally:
        torch.set_num_threads(previous_threads)
    load_after = os.getloadavg()[0]

    by_key = {t["key"]: t for t in trainees}
    rows = []
    figures: dict[str, dict[str, Any]] = {}
    for trainee in trainees:
        mean, median = statistics.fmean(trainee["ms"]), statistics.median(trainee["ms"])
        rows.append([trainee["label"], trainee["lr"], mean, median, max(trainee["ms"]), losses[trainee["key"]]])
        figures[f"interleaved_mean_step_ms_{trainee['key']}"] = {"value": mean, "unit": "ms"}
        figures[f"interleaved_median_step_ms_{trainee['key']}"] = {"value": median, "unit": "ms"}
    coap, galore = by_key["coap"]["ms"], by_key["galore"]["ms"]
    figures["interleaved_mean_step_ratio_coap_vs_galore"] = {
        "value": statistics.fmean(coap) / statistics.fmean(galore),
        "unit": "x",
    }
    figures["interleaved_median_step_ratio_coap_vs_galore"] = {
        "value": statistics.median(coap) / statistics.median(galore),
        "unit": "x",
    }
    return {
        "title": f"Step time, interleaved in one process: COAP vs GaLore vs AdamW{' (quick)' if quick else ''}",
        "command": COMMAND + (" --quick" if quick else ""),
        "columns": ["optimizer", "lr", "mean step ms", "median step ms", "max step ms", "last train loss"],
        "rows": rows,
        "figures": figures,
        "artifacts": [],
        "notes": (
            f"{setup.steps} steps, same batches, step order rotated every step; {llama.THREADS} torch thread(s); "
            f"1-minute load average {load_before:.2f} before, {load_after:.2f} after. COAP mean / GaLore mean = "
            f"{figures['interleaved_mean_step_ratio_coap_vs_galore']['value']:.3f}x, median ratio "
            f"{figures['interleaved_median_step_ratio_coap_vs_galore']['value']:.3f}x."
        ),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(Path("results/coap-optim"), "--quick" in sys.argv), indent=2, default=str))
