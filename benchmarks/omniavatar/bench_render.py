"""OmniAvatar generator cost on CPU: milliseconds per image against neural-rendering resolution and samples per ray,
training iterations per second of the tiny GAN, and parameter counts at the paper's sizes (meta device).

Command line (from the repository root)::

    uv run --frozen python -m benchmarks --package omniavatar [--quick]

Seeds: the generator ``torch.manual_seed(0)`` (``OmniAvatarPipeline.from_config``), z from seed 0 as the authors' demo.
Weights are random (cost does not depend on them); no downloads. CPU, fp32, ``OA_BENCH_THREADS`` torch threads
(default 2). Setups: ``tiny`` (``configs/tiny.yaml``: 32 px out, 32² backbone, D = 2) and, unless ``--quick``, ``mid``
(128 px out, 64² backbone, 16-channel volumes, D = 4, SR 2x from 64). Each figure is the best of ``REPEATS`` calls.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import torch

COMMAND = "uv run --frozen python -m benchmarks --package omniavatar"
THREADS = int(os.environ.get("OA_BENCH_THREADS", "2"))
REPEATS = 3


def _config(setup: str) -> Any:
    from genblocks.config import load_config
    from omniavatar.config import OmniAvatarConfig

    config = load_config(OmniAvatarConfig, str(resources.files("omniavatar") / "configs" / "tiny.yaml"))
    if setup == "tiny":
        return config
    generator = replace(
        config.generator,
        z_dim=64,
        w_dim=64,
        img_resolution=128,
        backbone_resolution=64,
        plane_channels=16,
        triplane_depth=4,
        channel_base=2048,
        channel_max=64,
        decoder_hidden=32,
        decoder_output_dim=16,
        sr_channels=(32, 16),
        neural_rendering_resolution=32,
    )
    return replace(config, generator=generator)


def _best(call: Any) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def render_ms(setup: str, resolution: int, samples: int) -> float:
    """Milliseconds per image (batch 1) at a neural-rendering resolution and samples per ray (half importance)."""
    from omniavatar.pipeline_omniavatar import OmniAvatarPipeline

    config = _config(setup)
    generator = replace(
        config.generator,
        neural_rendering_resolution=resolution,
        depth_resolution=samples // 2,
        depth_resolution_importance=samples // 2,
    )
    pipeline = OmniAvatarPipeline.from_config(replace(config, generator=generator), seed=0)
    with torch.no_grad():
        pipeline([0])
        return 1000 * _best(lambda: pipeline([0]))


def training_iterations_per_second(iterations: int) -> float:
    """Tiny Stage II: iterations (4 optimizer steps each) per second on one synthetic batch of 2."""
    from omniavatar.training import OmniAvatarDataModule, OmniAvatarGANModule

    config = _config("tiny")
    torch.manual_seed(0)
    module = OmniAvatarGANModule(config)
    data = OmniAvatarDataModule(config)
    batch = module._gan_batch(next(iter(data.train_dataloader())))
    g_opt = torch.optim.Adam(module.generator.parameters(), lr=1e-3)
    d_opt = torch.optim.Adam(module.discriminator.parameters(), lr=1e-3)
    module.log = lambda *args, **kwargs: None  # type: ignore[method-assign]

    def iteration() -> None:
        for optimizer, loss_fn in (
            (g_opt, module.generator_loss),
            (g_opt, module.generator_regularization),
            (d_opt, module.discriminator_loss),
            (d_opt, module.discriminator_regularization),
        ):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(batch)
            if loss is not None:
                loss.backward()
            optimizer.step()

    iteration()
    start = time.perf_counter()
    for _ in range(iterations):
        iteration()
    return iterations / (time.perf_counter() - start)


def paper_parameters() -> dict[str, int]:
    """Parameter counts of the paper-size generator parts (meta device, no memory)."""
    from genblocks.config import load_config
    from omniavatar.config import OmniAvatarConfig
    from omniavatar.modeling_omniavatar import OmniAvatarGenerator

    config = load_config(OmniAvatarConfig, str(resources.files("omniavatar") / "configs" / "paper.yaml"))
    with torch.device("meta"):
        generator = OmniAvatarGenerator(config.generator, config.flame, config.igr)
    parts = {
        "backbone": generator.backbone,
        "decoder": generator.decoder,
        "superresolution": generator.superresolution,
    }
    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in parts.items()}
    assert generator.semantic_sdf is not None
    counts["semantic_sdf (W + template)"] = sum(p.numel() for p in generator.semantic_sdf.parameters())
    counts["total"] = sum(p.numel() for p in generator.parameters())
    return counts


def run(out_dir: Path, quick: bool) -> dict[str, Any]:
    """Measure; see the module docstring."""
    torch.set_num_threads(THREADS)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    rows: list[list[Any]] = []
    figures: dict[str, dict[str, Any]] = {}
    grid = {"tiny": [(16, 16), (32, 16), (16, 32)]}
    if not quick:
        grid["mid"] = [(32, 32), (64, 32), (32, 64)]
    for setup, points in grid.items():
        for resolution, samples in points:
            ms = render_ms(setup, resolution, samples)
            rows.append([setup, "render", f"{resolution}² x {samples} samples/ray", round(ms, 1), "ms/image"])
            figures[f"{setup}_render_{resolution}px_{samples}spr"] = {"value": ms, "unit": "ms"}
    ips = training_iterations_per_second(1 if quick else 3)
    rows.append(["tiny", "train", "GAN iteration (4 optimizer steps), batch 2", round(ips, 3), "iterations/s"])
    figures["tiny_train_iterations_per_s"] = {"value": ips, "unit": "1/s"}
    for name, count in paper_parameters().items():
        rows.append(["paper", "parameters", name, count, "parameters"])
        figures[f"paper_parameters_{name.split()[0]}"] = {"value": count, "unit": "parameters"}
    return {
        "title": f"omniavatar: render cost vs resolution and samples, training speed, paper sizes (CPU, {THREADS} threads)",
        "columns": ["setup", "what", "settings", "value", "unit"],
        "rows": rows,
        "figures": figures,
        "command": COMMAND + (" --quick" if quick else ""),
        "notes": "Random weights; CPU timings on a shared machine vary. GPU figures pending.",
    }
