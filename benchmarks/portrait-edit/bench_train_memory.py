"""Training memory per step of the MCDM (whole UNet + adapter trained) with AdamW against COAP 8-bit AdamW.

Command line (from the repository root)::

    uv run --frozen python -m benchmarks --package portrait-edit [--quick]

What one step holds besides activations: the trainable parameters, their gradients (as many bytes) and the optimizer
state. AdamW keeps two fp32 moments per parameter (8 bytes); COAP 8-bit AdamW (``coap_adamw8bit``, coap-optim's
default rank rule ``r = min(m, n) // 4``) keeps 8-bit moments of the low-rank projected gradients of the 2-D weights,
plus their projection matrices, and full 8-bit moments of everything it does not project (biases, norms, convs).

Measured per optimizer, each in a fresh Python process so one run's freed memory does not hide the other's:

- ``state``: bytes of every tensor in ``optimizer.state`` after the first step (exact, not sampled);
- ``params + grads + state``: the step's memory without activations;
- ``peak RSS, step 1`` / ``step 2``: the rise of the process's peak resident memory during the first step (the
  optimizer state is allocated there) and the second (steady state), from ``benchmarks.memory.peak_memory``;
- ``process peak, step 2``: resident memory before the second step plus that rise, the whole process's steady-state
  peak (weights of the frozen parts, libraries, state, gradients and activations);
- ``seconds, step 2``.

Ratios are COAP 8-bit / AdamW. Seeds: components from ``portrait_edit.config.tiny_config()`` resized (``model.seed=0``),
the batch from ``torch.Generator().manual_seed(0)``. Random weights (memory does not depend on them); no downloads.
CPU, fp32, ``PE_BENCH_THREADS`` torch threads (default 2).

Setups: ``tiny`` (the tiny config: 64 px, UNet (32, 64)) and, unless ``--quick``, ``mid`` (128 px, UNet
(128, 256, 512), cross-attention and CLIP width 256, 2 layers per block).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

COMMAND = "uv run --frozen python -m benchmarks --package portrait-edit"
THREADS = int(os.environ.get("PE_BENCH_THREADS", "2"))
OPTIMIZERS = ("adamw", "coap_adamw8bit")
BATCH = 2
ROOT = Path(__file__).resolve().parents[2]


def _config(setup: str, optimizer: str) -> Any:
    from genblocks.training import OptimizerConfig
    from portrait_edit.config import tiny_config

    config = tiny_config()
    train = replace(config.train, optimizer=OptimizerConfig(name=optimizer, lr=5e-6, weight_decay=1e-2))
    config = replace(config, train=train)
    if setup == "tiny":
        return config
    model = config.model
    random = replace(
        model.random,
        block_out_channels=(128, 256, 512),
        layers_per_block=2,
        cross_attention_dim=256,
        attention_head_dim=32,
        norm_num_groups=32,
    )
    clip = replace(model.random_clip, hidden_size=256, num_attention_heads=8, intermediate_size=512)
    model = replace(model, resolution=128, clip_image_size=64, random=random, random_clip=clip)
    return replace(config, model=model)


def _tensor_bytes(value: Any) -> int:
    import torch

    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(_tensor_bytes(v) for v in value)
    return sum(_tensor_bytes(v) for v in vars(value).values()) if hasattr(value, "__dict__") else 0


def _resident_mib() -> float:
    """The process's resident memory now (``VmRSS``), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure_one(setup: str, optimizer_name: str) -> dict[str, Any]:
    """One optimizer on one setup, in this process: bytes, peak RSS rises and step time (see the module docstring)."""
    import torch

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks.memory import peak_memory
    from portrait_edit.training import build_training_module

    torch.set_num_threads(THREADS)
    config = _config(setup, optimizer_name)
    module = build_training_module(config)
    module.setup("fit")
    module.train()
    optimizer = module.configure_optimizers()
    size = config.model.resolution
    generator = torch.Generator().manual_seed(0)
    batch = {
        "source": torch.rand(BATCH, 3, size, size, generator=generator) * 2 - 1,
        "target": torch.rand(BATCH, 3, size, size, generator=generator) * 2 - 1,
        "prompt": ["a man, santa claus costume"] * BATCH,
        "source_prompt": ["a man"] * BATCH,
    }

    def step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        module.compute_loss(batch).backward()
        optimizer.step()
        return time.perf_counter() - start

    with peak_memory() as first:
        step()
    state = _tensor_bytes(list(optimizer.state.values()))
    resident = _resident_mib()
    with peak_memory() as second:
        seconds = step()
    params = sum(p.numel() * p.element_size() for p in (*module.unet.parameters(), *module.adapter.parameters()))
    return {
        "setup": setup,
        "px": size,
        "optimizer": optimizer_name,
        "trainable_params": sum(p.numel() for p in (*module.unet.parameters(), *module.adapter.parameters())),
        "param_bytes": params,
        "state_bytes": state,
        "step_bytes": 2 * params + state,
        "peak_step1_mib": first["peak_mib"],
        "peak_step2_mib": second["peak_mib"],
        "process_peak_step2_mib": resident + second["peak_mib"],
        "seconds": seconds,
    }


def _measure_in_child(setup: str, optimizer: str) -> dict[str, Any]:
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); "
        "from benchmarks.run import load_module; "
        "bench = load_module(__import__('pathlib').Path(sys.argv[2])); "
        "print('RESULT ' + json.dumps(bench.measure_one(sys.argv[3], sys.argv[4])))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(ROOT), str(Path(__file__).resolve()), setup, optimizer],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{setup}/{optimizer} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return dict(json.loads(lines[-1][len("RESULT ") :]))


def run(out_dir: Path, quick: bool) -> dict[str, Any]:
    """Measure each optimizer on each setup; see the module docstring."""
    import importlib.util

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    if importlib.util.find_spec("coap_optim") is None:
        raise RuntimeError("coap-optim is not installed (pip install genblocks[coap])")
    setups = ["tiny"] if quick else ["tiny", "mid"]
    rows: list[list[Any]] = []
    figures: dict[str, dict[str, Any]] = {}
    mib = 2**20
    for setup in setups:
        results = {name: _measure_in_child(setup, name) for name in OPTIMIZERS}
        base = results["adamw"]
        for name, r in results.items():
            rows.append(
                [
                    setup,
                    r["px"],
                    f"{r['trainable_params'] / 1e6:.2f}M",
                    name,
                    round(r["state_bytes"] / mib, 2),
                    round(r["state_bytes"] / base["state_bytes"], 3),
                    round(r["step_bytes"] / mib, 2),
                    round(r["step_bytes"] / base["step_bytes"], 3),
                    round(r["peak_step1_mib"], 1),
                    round(r["peak_step2_mib"], 1),
                    round(r["process_peak_step2_mib"], 1),
                    round(r["process_peak_step2_mib"] / base["process_peak_step2_mib"], 3),
                    round(r["seconds"], 3),
                ]
            )
        coap = results["coap_adamw8bit"]
        figures[f"{setup}_state_ratio"] = {"value": coap["state_bytes"] / base["state_bytes"], "unit": "ratio"}
        figures[f"{setup}_step_bytes_ratio"] = {"value": coap["step_bytes"] / base["step_bytes"], "unit": "ratio"}
        figures[f"{setup}_adamw_state_mib"] = {"value": base["state_bytes"] / mib, "unit": "MiB"}
        figures[f"{setup}_coap_state_mib"] = {"value": coap["state_bytes"] / mib, "unit": "MiB"}
        ratio = coap["process_peak_step2_mib"] / base["process_peak_step2_mib"]
        figures[f"{setup}_process_peak_step2_ratio"] = {"value": ratio, "unit": "ratio"}
        if base["peak_step1_mib"] > 0:
            ratio = coap["peak_step1_mib"] / base["peak_step1_mib"]
            figures[f"{setup}_peak_step1_ratio"] = {"value": ratio, "unit": "ratio"}
    return {
        "title": f"portrait-edit: training memory per step, AdamW vs COAP 8-bit (CPU, {THREADS} threads)",
        "columns": [
            "setup",
            "px",
            "trainable",
            "optimizer",
            "state MiB",
            "state ratio",
            "params+grads+state MiB",
            "ratio",
            "peak RSS step 1 MiB",
            "peak RSS step 2 MiB",
            "process peak step 2 MiB",
            "ratio",
            "seconds step 2",
        ],
        "rows": rows,
        "figures": figures,
        "command": COMMAND + (" --quick" if quick else ""),
        "notes": (
            f"Batch {BATCH}, fp32, whole UNet + adapter trained (VAE, text encoder, CLIP vision frozen). Ratios: "
            "COAP 8-bit / AdamW. Peak RSS is the rise during the step in a fresh process (activations included; step "
            "1 allocates the optimizer state). Random weights."
        ),
    }
