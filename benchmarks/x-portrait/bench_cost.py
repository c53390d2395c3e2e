"""Cost of X-Portrait inference: seconds per frame and peak memory vs frames per window, split into reference UNet,
ControlNets, denoising UNet (with its temporal modules) and VAE.

Command line (from the repository root)::

    uv run --frozen python -m benchmarks --package x-portrait [--quick]
    XP_BENCH_THREADS=1 uv run --frozen python -m benchmarks --package x-portrait   # on a shared CPU

Seeds: components ``build_random_components(..., seed=0)``; inputs ``torch.Generator().manual_seed(0)``; the
pipeline's generator ``manual_seed(999)``. Weights are random (cost does not depend on them); no downloads.

Setups (CPU, fp32, ``XP_BENCH_THREADS`` torch threads, default 2):

- ``tiny``: the sizes of ``x-portrait --config tiny`` (``x_portrait/configs/tiny.yaml``): 64-px frames, UNet
  (32, 64), VAE (8, 8, 8, 8), 2 temporal heads; its frame-position table is 24 long (8 in the YAML);
- ``mid``: 128-px frames, UNet (64, 128, 256) with 2 layers per level and 8 heads, cross-attention width 256, VAE
  (32, 64, 64, 64), SD's hint encoder (16, 32, 96, 256), 8 temporal heads.

Each run animates F = W frames as one window of W frames (so the table is "per window"), with 2 DDIM steps (3 model
calls per window per step: reference UNet once per step, conditional and bare-UNet unconditional passes), CFG 5,
patch images from synthetic landmarks, alignment on. Seconds per frame = wall time of ``pipe(...)`` / F. The split comes
from forward hooks timing each component (reference UNet, both ControlNets, the denoising UNet including its temporal
modules, VAE encoder + decoder); the rest (text encoder, preprocessing, scheduler) is "other". Peak memory is the rise
of the process's peak resident set (``VmHWM`` reset through ``/proc/self/clear_refs``) during the call on CPU, and
``torch.cuda.max_memory_allocated`` on a GPU.

On a CUDA machine (not in quick mode) a ``sd15-size`` row adds SD1.5-shaped random weights (UNet (320, 640, 1280,
1280), SD VAE, a 2-layer 768-wide text encoder) in fp16 at 512 px with a 16-frame window: the upstream setting that
users report needs ~58 GB (bytedance/X-Portrait#10).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.memory import peak_memory

COMMAND = "uv run --frozen python -m benchmarks --package x-portrait"
THREADS = int(os.environ.get("XP_BENCH_THREADS", "2"))
STEPS = 2
COLUMNS = ["setup", "px", "frames/window", "s/frame", "peak MiB", "ref UNet %", "ControlNets %", "UNet %", "VAE %"]
COLUMNS += ["other %"]


@dataclass(frozen=True)
class Setup:
    name: str
    resolution: int
    windows: tuple[int, ...]
    block_out_channels: tuple[int, ...]
    layers_per_block: int
    attention_head_dim: int
    cross_attention_dim: int
    norm_num_groups: int
    vae_block_out_channels: tuple[int, ...]
    hint_channels: tuple[int, ...]
    temporal_heads: int
    temporal_groups: int
    dtype: torch.dtype = torch.float32
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)


TINY = Setup("tiny", 64, (1, 2, 4, 8), (32, 64), 1, 8, 32, 8, (8, 8, 8, 8), (8, 8, 16, 16), 2, 8)
MID = Setup("mid", 128, (1, 2, 4, 8), (64, 128, 256), 2, 8, 256, 32, (32, 64, 64, 64), (16, 32, 96, 256), 8, 32)
SD15 = Setup(
    "sd15-size", 512, (16,), (320, 640, 1280, 1280), 2, 8, 768, 32, (128, 256, 512, 512), (16, 32, 96, 256), 8, 32,
    dtype=torch.float16, device="cuda",
)  # fmt: skip


def _pipeline(setup: Setup) -> Any:
    from x_portrait.config import ModelConfig, RandomComponentsConfig
    from x_portrait.modeling_x_portrait import build_random_components
    from x_portrait.pipeline_x_portrait import XPortraitPipeline

    model = ModelConfig(
        resolution=setup.resolution,
        patch_size=setup.resolution // 4,
        controlnet_embedding_channels=setup.hint_channels,
        temporal_heads=setup.temporal_heads,
        temporal_max_len=max(24, max(setup.windows)),
        temporal_norm_groups=setup.temporal_groups,
    )
    sizes = RandomComponentsConfig(
        block_out_channels=setup.block_out_channels,
        layers_per_block=setup.layers_per_block,
        attention_head_dim=setup.attention_head_dim,
        cross_attention_dim=setup.cross_attention_dim,
        norm_num_groups=setup.norm_num_groups,
        vae_block_out_channels=setup.vae_block_out_channels,
        vae_norm_num_groups=min(32, min(setup.vae_block_out_channels)),
    )
    components = build_random_components(model, sizes, seed=0)
    pipe = XPortraitPipeline(**components.as_dict(), patch_size=model.patch_size)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(setup.device)
    if setup.dtype != torch.float32:
        pipe.to(dtype=setup.dtype)
    return pipe


class _Timer:
    """Forward hooks that add up the wall time of each named component (synchronising CUDA around each call)."""

    def __init__(self, modules: dict[str, list[torch.nn.Module]], cuda: bool) -> None:
        self.seconds = dict.fromkeys(modules, 0.0)
        self.cuda = cuda
        self._start: dict[int, float] = {}
        self._handles = []
        for name, group in modules.items():
            for module in group:
                self._handles.append(module.register_forward_pre_hook(self._pre))
                self._handles.append(module.register_forward_hook(self._post(name)))

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def _pre(self, module: torch.nn.Module, args: Any) -> None:
        self._start[id(module)] = self._now()

    def _post(self, name: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            self.seconds[name] += self._now() - self._start.pop(id(module))

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def _inputs(resolution: int, frames: int) -> dict[str, Any]:
    from x_portrait.preprocessing import similarity_matrix, transform_landmarks

    generator = torch.Generator().manual_seed(0)
    source = torch.rand(3, resolution, resolution, generator=generator)
    driving = torch.rand(frames, 3, resolution, resolution, generator=generator)
    scale = resolution / 64
    face = np.zeros((68, 2))
    face[:17] = np.stack([np.linspace(-14, 14, 17), np.full(17, 8.0)], 1)
    face[17:27] = np.stack([np.r_[np.linspace(-12, -3, 5), np.linspace(3, 12, 5)], np.full(10, -10.0)], 1)
    face[27:36] = np.stack([np.zeros(9), np.linspace(-6, 2, 9)], 1)
    face[36:42] = np.stack([np.linspace(-10, -4, 6), np.full(6, -6.0)], 1)
    face[42:48] = np.stack([np.linspace(4, 10, 6), np.full(6, -6.0)], 1)
    face[48:68] = np.stack([np.linspace(-6, 6, 20), np.full(20, 8.0)], 1)
    face = face * scale + resolution / 2
    moves = [
        similarity_matrix((resolution / 2, resolution / 2), 0.05 * np.sin(i), 1.0, (i % 3, 0)) for i in range(frames)
    ]
    return {
        "source_image": source,
        "driving_frames": driving,
        "source_landmarks": face,
        "driving_landmarks": np.stack([transform_landmarks(face, m) for m in moves]),
    }


def _measure(pipe: Any, setup: Setup, window: int) -> dict[str, float]:
    cuda = setup.device == "cuda"
    timer = _Timer(
        {
            "reference UNet": [pipe.reference_unet],
            "ControlNets": [pipe.motion_controlnet, pipe.local_controlnet],
            "denoising UNet": [pipe.unet],
            "VAE": [pipe.vae.encoder, pipe.vae.decoder],
        },
        cuda,
    )
    inputs = _inputs(setup.resolution, window)
    try:
        with peak_memory(cuda) as memory:
            start = time.perf_counter()
            pipe(
                **inputs,
                num_inference_steps=STEPS,
                window_size=window,
                window_overlap=0,
                vae_chunk_size=16,
                generator=torch.Generator().manual_seed(999),
                output_type="pt",
            )
            if cuda:
                torch.cuda.synchronize()
            total = time.perf_counter() - start
    finally:
        timer.remove()
    parts = {name: 100.0 * seconds / total for name, seconds in timer.seconds.items()}
    return {"seconds_per_frame": total / window, "total": total, **memory, **parts}


def run(out_dir: Path, quick: bool) -> dict[str, Any]:
    """Measure every setup and window size; see the module docstring."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    setups = [replace(TINY, windows=(1, 4))] if quick else [TINY, MID]
    if not quick and torch.cuda.is_available():
        setups.append(SD15)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    load_before = os.getloadavg()[0]
    rows, figures = [], {}
    try:
        for setup in setups:
            pipe = _pipeline(setup)
            _measure(pipe, setup, 1)  # warm-up: allocator, kernels, lazy imports
            for window in setup.windows:
                result = _measure(pipe, setup, window)
                split = [round(result[k], 1) for k in ("reference UNet", "ControlNets", "denoising UNet", "VAE")]
                rows.append(
                    [setup.name, setup.resolution, window, round(result["seconds_per_frame"], 4),
                     round(result["peak_mib"], 1), *split, round(100 - sum(split), 1)]
                )  # fmt: skip
                key = f"{setup.name}_w{window}"
                figures[f"{key}_seconds_per_frame"] = {"value": result["seconds_per_frame"], "unit": "s/frame"}
                figures[f"{key}_peak_memory"] = {"value": result["peak_mib"], "unit": "MiB"}
            del pipe
    finally:
        torch.set_num_threads(previous_threads)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    notes = (
        f"{THREADS} torch thread(s) on CPU; 1-minute load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} "
        f"after (timings on a loaded machine are inflated). CUDA device: {device}. {STEPS} DDIM steps, CFG 5, one "
        "window of W frames; percentages are shares of the wall time of the whole call. Peak memory: rise of the "
        "peak RSS on CPU (weights excluded, they exist before the call), peak allocated memory above the weights on "
        "CUDA."
    )
    return {
        "title": "X-Portrait inference cost vs frames per window (random weights)",
        "command": COMMAND + (" --quick" if quick else ""),
        "columns": COLUMNS,
        "rows": rows,
        "figures": figures,
        "notes": notes,
    }
