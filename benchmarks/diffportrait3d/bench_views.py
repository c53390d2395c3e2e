"""Cost of DiffPortrait3D inference: seconds per view and peak memory vs views per batch, and the cost of the 3D-aware
noise step (EG3D inversion + renders) against the denoising.

Command line (from the repository root)::

    uv run --frozen python -m benchmarks --package diffportrait3d [--quick]

Seeds: components ``build_random_components(..., seed=0)``, inputs ``torch.Generator().manual_seed(0)``. Weights are
random (cost does not depend on them); no downloads. CPU, fp32, ``DP3D_BENCH_THREADS`` torch threads (default 1:
a loaded 2-core machine is much slower with 2).

Setups:

- ``tiny``: 64-px views, UNet (32, 64), VAE (8, 8, 8, 8), 2 cross-view heads (``diffportrait3d/configs/tiny.yaml``);
- ``mid``: 128-px views, UNet (64, 128, 256) with 2 layers per level, cross-attention width 256, VAE (32, 64, 64, 64),
  SD's hint encoder (16, 32, 96, 256), 8 cross-view heads.

Each row renders V = views-per-batch views as one batch with 2 DDIM steps, CFG 3 (reference UNet once per step, the
conditional pass with the view ControlNet and the bare-UNet unconditional pass), eta 0.5. Seconds per view = wall
time of ``pipe(...)`` / V. Peak memory is the rise of the process's peak RSS during the call (``VmHWM`` reset through
``/proc/self/clear_refs``). The noise row times ``EG3DNoisePrior.renders`` (tiny EG3D, 20 inversion steps, V renders)
next to the denoising of the same V views; a real run uses a 512-px EG3D and ~200 steps, so scale accordingly.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.memory import peak_memory

COMMAND = "uv run --frozen python -m benchmarks --package diffportrait3d"
THREADS = int(os.environ.get("DP3D_BENCH_THREADS", "1"))
STEPS = 2
INVERSION_STEPS = 20
COLUMNS = ["setup", "px", "views/batch", "s/view", "peak MiB"]


@dataclass(frozen=True)
class Setup:
    name: str
    resolution: int
    views: tuple[int, ...]
    block_out_channels: tuple[int, ...]
    layers_per_block: int
    cross_attention_dim: int
    norm_num_groups: int
    vae_block_out_channels: tuple[int, ...]
    hint_channels: tuple[int, ...]
    view_heads: int
    view_groups: int


TINY = Setup("tiny", 64, (1, 2, 4, 8), (32, 64), 1, 32, 8, (8, 8, 8, 8), (8, 8, 16, 16), 2, 8)
MID = Setup("mid", 128, (1, 2, 4, 8), (64, 128, 256), 2, 256, 32, (32, 64, 64, 64), (16, 32, 96, 256), 8, 32)


def _pipeline(setup: Setup) -> Any:
    from diffportrait3d.config import ModelConfig, RandomComponentsConfig
    from diffportrait3d.modeling_diffportrait3d import build_random_components
    from diffportrait3d.pipeline_diffportrait3d import DiffPortrait3DPipeline

    model = ModelConfig(
        resolution=setup.resolution,
        views_per_batch=max(setup.views),
        controlnet_embedding_channels=setup.hint_channels,
        view_heads=setup.view_heads,
        view_max_len=32,
        view_norm_groups=setup.view_groups,
    )
    random = RandomComponentsConfig(
        block_out_channels=setup.block_out_channels,
        layers_per_block=setup.layers_per_block,
        cross_attention_dim=setup.cross_attention_dim,
        norm_num_groups=setup.norm_num_groups,
        vae_block_out_channels=setup.vae_block_out_channels,
        vae_norm_num_groups=8,
    )
    parts = build_random_components(model, random, seed=0)
    pipe = DiffPortrait3DPipeline(**parts.as_dict(), views_per_batch=max(setup.views))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _denoise(pipe: Any, setup: Setup, views: int) -> tuple[float, float]:
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, setup.resolution, setup.resolution, generator=generator)
    conditions = torch.rand(views, 3, setup.resolution, setup.resolution, generator=generator)
    with peak_memory() as memory:
        start = time.perf_counter()
        pipe(
            image, condition_images=conditions, num_inference_steps=STEPS, views_per_batch=views,
            generator=torch.Generator().manual_seed(1), output_type="pt",
        )  # fmt: skip
        seconds = time.perf_counter() - start
    return seconds, memory["peak_mib"]


def _noise_step(setup: Setup, views: int) -> float:
    from diffportrait3d.cameras import orbit_cameras
    from diffportrait3d.noise3d import EG3DNoisePrior, tiny_eg3d

    prior = EG3DNoisePrior(tiny_eg3d(seed=0), num_steps=INVERSION_STEPS, lr=0.05)
    image = torch.rand(3, setup.resolution, setup.resolution, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    prior.renders(image, orbit_cameras(views))
    return time.perf_counter() - start


def run(out_dir: Path, quick: bool) -> dict[str, Any]:
    """Measure every setup and views-per-batch size; see the module docstring."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    setups = [Setup(**{**TINY.__dict__, "views": (1, 4)})] if quick else [TINY, MID]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    load_before = os.getloadavg()[0]
    rows: list[list[Any]] = []
    figures: dict[str, dict[str, Any]] = {}
    try:
        for setup in setups:
            pipe = _pipeline(setup)
            _denoise(pipe, setup, 1)  # warm-up
            for views in setup.views:
                seconds, peak = _denoise(pipe, setup, views)
                rows.append([setup.name, setup.resolution, views, round(seconds / views, 4), round(peak, 1)])
                figures[f"{setup.name}_v{views}_seconds_per_view"] = {"value": seconds / views, "unit": "s/view"}
                figures[f"{setup.name}_v{views}_peak_memory"] = {"value": peak, "unit": "MiB"}
            views = max(setup.views)
            denoise_seconds, _ = _denoise(pipe, setup, views)
            noise_seconds = _noise_step(setup, views)
            figures[f"{setup.name}_noise_prior_seconds"] = {"value": noise_seconds, "unit": "s"}
            figures[f"{setup.name}_noise_vs_denoise"] = {"value": noise_seconds / denoise_seconds, "unit": "x"}
            rows.append([f"{setup.name} 3D noise ({INVERSION_STEPS} inv. steps)", setup.resolution, views,
                         round(noise_seconds / views, 4), "-"])  # fmt: skip
            del pipe
    finally:
        torch.set_num_threads(previous_threads)
    notes = (
        f"{THREADS} torch thread(s) on CPU; 1-minute load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} "
        f"after. {STEPS} DDIM steps, CFG 3, eta 0.5; all views of a row in one batch. Peak memory: rise of the peak "
        "RSS during the call (weights excluded). The 3D-noise row: tiny EG3D inversion + renders, seconds per view."
    )
    return {
        "title": "DiffPortrait3D inference cost vs views per batch (random weights)",
        "command": COMMAND + (" --quick" if quick else ""),
        "columns": COLUMNS,
        "rows": rows,
        "figures": figures,
        "notes": notes,
    }
