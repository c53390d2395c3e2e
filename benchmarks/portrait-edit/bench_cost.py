"""Cost of one portrait edit: the edit mask (10 samples) against the edit itself, and seconds per edit against steps.

Command line (from the repository root)::

    uv run --frozen python -m benchmarks --package portrait-edit [--quick]

Seeds: components from ``portrait_edit.config.tiny_config()`` (``model.seed=0``); the source portrait
``torch.Generator().manual_seed(0)``; the pipeline's generator ``manual_seed(1)``. Weights are random (cost does not
depend on them); no downloads. CPU, fp32, ``PE_BENCH_THREADS`` torch threads (default 2).

Setups: ``tiny`` (the sizes of ``configs/tiny.yaml``: 64 px, UNet (32, 64), 17 CLIP tokens) and, unless
``--quick``, ``mid`` (128 px, UNet (64, 128, 256), cross-attention and CLIP width 64).

Measured (best of ``REPEATS`` calls of ``pipe(...)``, 4-way CFG s = (3, 2, 4)):

- ``edit``: ``use_mask=True`` with the mask passed in (mask-guided sampling with its reconstruction run, no mask
  generation); ``mask``: the same call generating the mask from 10 samples, minus ``edit``; the ratio mask / edit is the
  mask's share of the default pipeline's cost. (The mask costs 10 samples x 2 prompts x 4 CFG rows = 80 UNet rows once;
  the edit costs 2 runs x 4 rows per step.)
- seconds per edit against UniPC steps, with the mask off and on (10 samples).
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

COMMAND = "uv run --frozen python -m benchmarks --package portrait-edit"
THREADS = int(os.environ.get("PE_BENCH_THREADS", "2"))
REPEATS = 3
MASK_SAMPLES = 10


def _config(setup: str) -> Any:
    from portrait_edit.config import tiny_config

    config = tiny_config()
    if setup == "tiny":
        return config
    model = config.model
    random = replace(model.random, block_out_channels=(64, 128, 256), cross_attention_dim=64, norm_num_groups=32)
    clip = replace(model.random_clip, hidden_size=64)
    return replace(config, model=replace(model, resolution=128, clip_image_size=64, random=random, random_clip=clip))


def _best(call: Any) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(setup: str, steps_list: tuple[int, ...]) -> dict[str, Any]:
    """Seconds of the mask, the edit and the edit per step count for one setup."""
    from portrait_edit.pipeline_portrait_edit import load_pipeline, sampling_options

    config = _config(setup)
    pipe = load_pipeline(config)
    pipe.set_progress_bar_config(disable=True)
    size = config.model.resolution
    source = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    base = {**sampling_options(config), "mask_samples": MASK_SAMPLES, "output_type": "latent"}

    def call(**overrides: Any) -> Any:
        options = {**base, **overrides}
        generator = torch.Generator().manual_seed(1)
        return pipe(source, "a man, santa claus costume", source_prompt="a man", generator=generator, **options)

    with torch.no_grad():
        steps = config.sampling.num_inference_steps
        mask = call(num_inference_steps=1).masks
        call(num_inference_steps=steps)  # warm-up: the first calls pay one-off allocation and dispatch costs
        with_mask = _best(lambda: call(num_inference_steps=steps))
        edit = _best(lambda: call(num_inference_steps=steps, mask=mask))
        per_steps = {
            n: {
                "mask off": _best(lambda n=n: call(num_inference_steps=n, use_mask=False)),
                "mask on": _best(lambda n=n: call(num_inference_steps=n)),
            }
            for n in steps_list
        }
    return {"px": size, "steps": steps, "edit": edit, "mask": with_mask - edit, "per_steps": per_steps}


def run(out_dir: Path, quick: bool) -> dict[str, Any]:
    """Measure each setup; see the module docstring."""
    torch.set_num_threads(THREADS)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    setups = ["tiny"] if quick else ["tiny", "mid"]
    steps_list = (2, 4) if quick else (2, 5, 10, 20)
    rows: list[list[Any]] = []
    figures: dict[str, dict[str, Any]] = {}
    for setup in setups:
        result = measure(setup, steps_list)
        ratio = result["mask"] / result["edit"]
        figures[f"{setup}_mask_over_edit"] = {"value": ratio, "unit": "ratio"}
        rows.append(
            [setup, result["px"], "mask (10 samples)", result["steps"], round(result["mask"], 3), round(ratio, 3)]
        )
        rows.append([setup, result["px"], "edit (mask given)", result["steps"], round(result["edit"], 3), 1.0])
        first = min(steps_list)
        for n, seconds in result["per_steps"].items():
            for mode, value in seconds.items():
                reference = result["per_steps"][first][mode]
                rows.append([setup, result["px"], f"edit, {mode}", n, round(value, 3), round(value / reference, 3)])
                figures[f"{setup}_{mode.replace(' ', '_')}_{n}_steps"] = {"value": value, "unit": "s"}
    return {
        "title": f"portrait-edit: edit-mask cost vs edit cost, seconds per edit vs steps (CPU, {THREADS} threads)",
        "columns": ["setup", "px", "what", "steps", "seconds", "ratio"],
        "rows": rows,
        "figures": figures,
        "command": COMMAND + (" --quick" if quick else ""),
        "notes": (
            f"Ratio: mask rows / edit; step rows / the same mode at {min(steps_list)} steps. Random weights; CPU "
            "timings on a shared machine vary, the ratios are the figures to read."
        ),
    }
