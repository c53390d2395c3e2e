"""Cost of humananim inference: seconds per frame and peak memory vs window length and overlap.

Command line (from the repository root)::

    uv run --frozen python -m benchmarks --package humananim [--quick]

Seeds: components ``build_random_components(tiny_config().model, tiny_config().random, seed=0)`` (random weights: cost
does not depend on them; no downloads), inputs ``torch.Generator().manual_seed(0)``. CPU, fp32, ``HUMANANIM_BENCH_THREADS``
torch threads (default 1: a loaded 2-core machine is slower with 2).

Each row animates F frames of 64 x 48 px (the tiny config's non-square size) with 2 DDIM steps, animation CFG 7.5
(conditional pass + the no-reference, no-pose pass per window), the reference bank written once per step, overlapping
windows (no wrap-around) averaged per frame, VAE decode in chunks of 4. Seconds per frame = wall time of ``pipe(...)``
/ F. Peak memory is the rise of the process's peak RSS during the call (``benchmarks.memory.peak_memory``): it grows
with the window, not with F. Overlap costs extra windows: (F - overlap) / (window - overlap) of them, rounded up.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.memory import peak_memory

COMMAND = "uv run --frozen python -m benchmarks --package humananim"
THREADS = int(os.environ.get("HUMANANIM_BENCH_THREADS", "1"))
STEPS = 2
COLUMNS = ["frames", "window", "overlap", "windows", "s/frame", "peak MiB"]
FULL = (16, ((2, 0), (4, 0), (4, 2), (8, 0), (8, 2), (8, 4)))
QUICK = (8, ((4, 0), (4, 2), (8, 0)))


def _pipeline() -> Any:
    from humananim.config import tiny_config
    from humananim.modeling import build_random_components
    from humananim.pipeline import HumanAnimPipeline

    config = tiny_config()
    parts = build_random_components(config.model, config.random, seed=0)
    pipe = HumanAnimPipeline(**parts.as_dict(), fusion_blocks=config.model.fusion_blocks)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _animate(pipe: Any, num_frames: int, window: int, overlap: int) -> tuple[float, float]:
    generator = torch.Generator().manual_seed(0)
    reference = torch.rand(3, 64, 48, generator=generator)
    poses = torch.rand(num_frames, 3, 64, 48, generator=generator)
    with peak_memory() as memory:
        start = time.perf_counter()
        pipe(
            reference, poses, num_inference_steps=STEPS, window_size=window, window_overlap=overlap,
            vae_chunk_size=4, generator=torch.Generator().manual_seed(1), output_type="pt",
        )  # fmt: skip
        seconds = time.perf_counter() - start
    return seconds, memory["peak_mib"]


def run(out_dir: Path, quick: bool) -> dict[str, Any]:
    """Measure every (window, overlap) pair; see the module docstring."""
    from humananim.pipeline import animation_windows

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    num_frames, pairs = QUICK if quick else FULL
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    load_before = os.getloadavg()[0]
    rows: list[list[Any]] = []
    figures: dict[str, dict[str, Any]] = {}
    try:
        pipe = _pipeline()
        _animate(pipe, 2, 2, 0)  # warm-up
        for window, overlap in pairs:
            seconds, peak = _animate(pipe, num_frames, window, overlap)
            count = len(animation_windows(num_frames, window, overlap))
            rows.append([num_frames, window, overlap, count, round(seconds / num_frames, 4), round(peak, 1)])
            figures[f"w{window}_o{overlap}_seconds_per_frame"] = {"value": seconds / num_frames, "unit": "s/frame"}
            figures[f"w{window}_o{overlap}_peak_memory"] = {"value": peak, "unit": "MiB"}
    finally:
        torch.set_num_threads(previous_threads)
    notes = (
        f"{THREADS} torch thread(s) on CPU; 1-minute load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} "
        f"after. Tiny random model, 64 x 48 px, {STEPS} DDIM steps, CFG 7.5. Peak memory: rise of the peak RSS during "
        "the call (weights excluded)."
    )
    return {
        "title": "humananim inference cost vs window length and overlap (tiny random model)",
        "command": COMMAND + (" --quick" if quick else ""),
        "columns": COLUMNS,
        "rows": rows,
        "figures": figures,
        "notes": notes,
    }
