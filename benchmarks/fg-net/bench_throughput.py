"""FG-Net throughput: images per second and peak memory for inference and for one training step.

Command line (from the repository root)::

    uv run --frozen python -m benchmarks --package fg-net [--quick]
    FG_NET_BENCH_THREADS=1 uv run --frozen python -m benchmarks --package fg-net   # on a shared CPU

Sizes (random weights with the right shapes; timings do not depend on the values):

- ``tiny``: `fg_net.config.tiny_config` (spec §9: 32-px StyleGAN2 with <= 32 channels, tiny IR-SE encoder on 32-px
  inputs, 16-px interpreter with 8 outputs), batch 8 for inference and training.
- ``paper``: `fg_net.config.paper_config("BP4D")`: pSp ``GradualStyleEncoder(50, 'ir_se')`` on 256-px faces (267M
  parameters), 1024-px config-F StyleGAN2 with re-mapping and constant noise (30M), the pyramid interpreter to
  32 x 128 x 128 heatmaps (27M). On CPU at batch 1 (one warm-up and one timed call: a training step takes minutes);
  with a CUDA GPU at the paper's batches (32 for evaluation, 16 for training) in fp32.
- ``--quick``: tiny only.

What is timed. Inference: ``FGNet.au_heatmaps`` in eval mode under ``torch.no_grad()`` (encoder -> re-mapping ->
synthesis features -> interpreter; face alignment excluded). Training step: what `fg_net.training.FGNetTrainingModule`
does per batch, without Lightning's loop: forward in train mode, the per-AU heatmap MSE against random targets in
[-1, 1], backward, gradient-norm clipping at 0.1, and the module's AdamW step (lr 5e-5, weight decay 5e-4) over
encoder + generator + interpreter. Seeds: ``torch.manual_seed(0)`` before building the model, inputs from
``torch.Generator().manual_seed(1)``. The figure is the best of the timed calls (after one warm-up); on CPU
``FG_NET_BENCH_THREADS`` torch threads (default 2).

Memory, per device, each (size, mode) in a fresh subprocess: on CUDA ``torch.cuda.max_memory_allocated()`` minus the
allocation after building the model; on CPU the resident-set high-water mark above the loaded model
(``/proc/self/clear_refs`` reset to 5, then ``VmHWM - VmRSS``), over the warm-up and timed calls, so a training
step's figure includes gradients and the AdamW state created by the first step.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COMMAND = "uv run --frozen python -m benchmarks --package fg-net"
THREADS = int(os.environ.get("FG_NET_BENCH_THREADS", "2"))
MODEL_SEED = 0
INPUT_SEED = 1


@dataclass(frozen=True)
class Size:
    """One benchmark size."""

    name: str
    infer_batch: int
    train_batch: int
    repeats: int
    device: str = "cpu"


TINY = Size("tiny", infer_batch=8, train_batch=8, repeats=5)
PAPER_CPU = Size("paper", infer_batch=1, train_batch=1, repeats=1)
PAPER_GPU = Size("paper", infer_batch=32, train_batch=16, repeats=5, device="cuda")
MODES = ("inference", "training")


def _proc_status(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def measure(size_name: str, mode: str, device: str, batch: int, repeats: int) -> dict[str, Any]:
    """Build the model of a size, then time ``repeats`` calls of ``mode`` after one warm-up and record peak memory."""
    import torch

    from fg_net.config import TrainingConfig, paper_config, tiny_config
    from fg_net.modeling_fg_net import FGNet
    from fg_net.training import FGNetTrainingModule, heatmap_loss

    torch.set_num_threads(THREADS)
    config = tiny_config() if size_name == "tiny" else paper_config("BP4D")
    torch.manual_seed(MODEL_SEED)
    model = FGNet(config).to(device)
    params = sum(p.numel() for p in model.parameters())
    generator = torch.Generator().manual_seed(INPUT_SEED)
    size = config.input_size
    images = (torch.rand(batch, 3, size, size, generator=generator) * 2 - 1).to(device)
    targets = torch.rand(batch, config.num_aus, config.heatmap_size, config.heatmap_size, generator=generator) * 2 - 1
    targets = targets.to(device)

    if mode == "inference":
        model.eval()

        def call() -> None:
            with torch.no_grad():
                model.au_heatmaps(images)

    else:
        module = FGNetTrainingModule(config, TrainingConfig(), model)
        optimizer = module.configure_optimizers()
        model.train()

        def call() -> None:
            optimizer.zero_grad(set_to_none=True)
            loss = heatmap_loss(model(images), targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
            optimizer.step()

    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        method = "cuda max_memory_allocated"
    else:
        base = _proc_status("VmRSS")
        method = "VmHWM - VmRSS (/proc/self/status)" if base is not None and _reset_peak_rss() else "n/a"
    seconds = []
    for index in range(repeats + 1):
        start = time.perf_counter()
        call()
        if device == "cuda":
            torch.cuda.synchronize()
        if index:  # the first call is the warm-up
            seconds.append(time.perf_counter() - start)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        high = _proc_status("VmHWM")
        peak = None if method == "n/a" or high is None else high - base
    return {"seconds": seconds, "peak_bytes": peak, "memory_method": method, "params": params}


def _worker(*args: str) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=7200)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark worker {args} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(out_dir: Path, quick: bool) -> dict[str, Any]:
    """Measure inference and training throughput and memory at each size; see the module docstring."""
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    sizes = [TINY] if quick else [TINY, PAPER_GPU if cuda else PAPER_CPU]
    rows: list[list[Any]] = []
    figures: dict[str, dict[str, Any]] = {}
    raw: dict[str, Any] = {}
    for size in sizes:
        for mode in MODES:
            batch = size.infer_batch if mode == "inference" else size.train_batch
            result = _worker(size.name, mode, size.device, str(batch), str(size.repeats))
            raw[f"{size.name}/{mode}"] = result
            best = min(result["seconds"])
            throughput = batch / best
            peak = result["peak_bytes"]
            peak_mib = None if peak is None else peak / 2**20
            figures[f"{size.name}_{mode}_images_per_s"] = {"value": throughput, "unit": "images/s"}
            if peak_mib is not None:
                figures[f"{size.name}_{mode}_peak_memory"] = {"value": peak_mib, "unit": "MiB"}
            rows.append(
                [
                    size.name,
                    mode,
                    size.device,
                    batch,
                    round(result["params"] / 1e6, 3),
                    round(best * 1000.0, 2),
                    round(throughput, 3),
                    "n/a" if peak_mib is None else round(peak_mib, 1),
                ]
            )
    (out_dir / "bench_throughput_raw.json").write_text(json.dumps(raw, indent=2))
    device = torch.cuda.get_device_name(0) if cuda else f"CPU, {THREADS} torch thread(s)"
    notes = (
        "Inference: FGNet.au_heatmaps (encoder -> re-mapping -> StyleGAN2 features -> interpreter), eval mode, no "
        "grad, alignment excluded. Training step: forward + per-AU heatmap MSE + backward + grad-norm clip 0.1 + "
        "AdamW (lr 5e-5, wd 5e-4) over encoder, generator and interpreter. Best of the timed calls after one warm-up. "
        "Peak memory: above the loaded model, each row in a fresh process (CPU: resident-set high-water mark, "
        f"includes allocator caching; training includes the AdamW state of the first step). Device: {device}."
        + ("" if cuda else " The paper size runs on CPU at batch 1 here (no CUDA GPU).")
    )
    return {
        "title": "FG-Net throughput and peak memory (inference and training step)",
        "command": COMMAND + (" --quick" if quick else ""),
        "columns": ["size", "mode", "device", "batch", "params (M)", "ms / call", "images / s", "peak memory (MiB)"],
        "rows": rows,
        "figures": figures,
        "notes": notes,
    }


if __name__ == "__main__":
    name, mode, device, batch, repeats = sys.argv[1:6]
    print(json.dumps(measure(name, mode, device, int(batch), int(repeats))))
