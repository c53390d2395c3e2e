"""Cost of each AgileGAN3D stage and of stylising one photo, at the tiny and a mid size, on CPU.

Command line (from the repository root)::

    uv run --frozen python -m benchmarks --package agilegan3d [--quick]

Seeds: every network from ``agilegan3d`` configs (``seed=0``), the toon/StyleGAN2 priors as configured, the photo
``torch.Generator().manual_seed(0)``. Weights are random (cost does not depend on them); no downloads. CPU, fp32,
``AG3D_BENCH_THREADS`` torch threads (default 2).

Setups: ``tiny`` (``configs/tiny.yaml``: 32-px EG3D, 16-px rendering, 8 + 8 samples; 32-px StyleGAN2 prior) and,
unless ``--quick``, ``mid`` (64-px EG3D with 32-px rendering and 12 + 12 samples, 16-channel planes; 64-px prior).

Measured: seconds per training iteration of the prior and transfer stages (one iteration = the four GAN optimizer
steps, R1 and the density regulariser at their lazy intervals, averaged over the timed iterations after one warm-up
iteration; ``--quick`` times one iteration, warm-up included), per encoder step, per synthesised pair, and per stylised photo (encode + 8 orbit views); "per 100" columns
are 100x those.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

COMMAND = "uv run --frozen python -m benchmarks --package agilegan3d"
THREADS = int(os.environ.get("AG3D_BENCH_THREADS", "2"))


class _Timer(L.Callback):
    """Wall seconds of every training batch."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def _config(setup: str, iterations: int) -> Any:
    from agilegan3d.config import load_preset

    config = load_preset("tiny")
    if setup == "mid":
        g3d = dataclasses.replace(
            config.g3d,
            img_resolution=64,
            backbone_resolution=64,
            plane_channels=16,
            channel_base=1024,
            channel_max=64,
            decoder_hidden_features=32,
            decoder_output_features=16,
            num_samples=12,
            num_importance=12,
            neural_rendering_resolution=32,
            sr_channels=(32, 16),
        )
        prior = dataclasses.replace(
            config.prior,
            resolution=64,
            w_dim=64,
            z_dim=64,
            channel_base=1024,
            channel_max=64,
            encoder_channels=(16, 32, 48, 64),
            encoder_input_size=64,
        )
        encoder = dataclasses.replace(config.encoder, channels=(16, 32, 48, 64), input_size=64)
        config = dataclasses.replace(config, g3d=g3d, prior=prior, encoder=encoder)
    steps = 4 * (iterations + 1) if iterations else 4
    train = dataclasses.replace(config.train, checkpoint_every_n_steps=10_000, log_every_n_steps=4)
    return dataclasses.replace(
        config,
        train=train,
        prior_steps=steps,
        transfer_steps=steps,
        encoder_steps=iterations + 1 if iterations else 1,
        pairs=dataclasses.replace(config.pairs, n=8, batch_size=4),
    )


def _fit_seconds(config: Any, stage: str, run: Path) -> float:
    from agilegan3d.training import build_stage
    from genblocks.training import fit

    timer = _Timer()
    fit(out_dir=run / stage, callbacks=[timer], **build_stage(config, stage, run))
    timed = timer.seconds[1:] if len(timer.seconds) > 1 else timer.seconds
    return sum(timed) / len(timed)


def measure(setup: str, iterations: int) -> dict[str, float]:
    """Seconds per prior / transfer iteration, encoder step, pair and stylised photo for one setup."""
    from agilegan3d.demo import random_pipeline
    from agilegan3d.modeling_agilegan3d import build_g3d
    from agilegan3d.pairs import synthesize_pairs
    from agilegan3d.pipeline_agilegan3d import orbit_cameras
    from agilegan3d.training import load_style_prior

    config = _config(setup, iterations)
    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder)
        prior = _fit_seconds(config, "prior", run)
        start = time.perf_counter()
        synthesize_pairs(build_g3d(config.g3d), load_style_prior(config, run), config.pairs, run / "pairs")
        pair = (time.perf_counter() - start) / config.pairs.n
        transfer = _fit_seconds(config, "transfer", run)
        encoder = _fit_seconds(config, "encoder", run)
    pipe = random_pipeline(config)
    size = config.g3d.img_resolution
    photo = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cameras = orbit_cameras(8)
    pipe(photo, cameras=cameras)  # warm-up
    start = time.perf_counter()
    pipe(photo, cameras=cameras)
    stylise = time.perf_counter() - start
    return {"px": size, "prior": prior, "pair": pair, "transfer": transfer, "encoder": encoder, "stylise": stylise}


def run(out_dir: Path, quick: bool) -> dict[str, Any]:
    """Measure each setup; see the module docstring."""
    torch.set_num_threads(THREADS)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    setups = ["tiny"] if quick else ["tiny", "mid"]
    iterations = 0 if quick else 3  # 0: one iteration per stage, timed with its warm-up (an upper bound)
    rows: list[list[Any]] = []
    figures: dict[str, dict[str, Any]] = {}
    labels = {
        "prior": "prior: 1 iteration (StyleGAN2 few-shot, DiffAugment)",
        "pair": "pairs: 1 tuple (render + stylise + write)",
        "transfer": "transfer: 1 iteration (dual D, guidance, density reg)",
        "encoder": "encoder: 1 step (recon + latent + multi-view)",
        "stylise": "stylise: 1 photo, 8 views",
    }
    for setup in setups:
        result = measure(setup, iterations)
        for key, label in labels.items():
            seconds = result[key]
            rows.append([setup, result["px"], label, round(seconds, 3), round(100 * seconds, 1)])
            figures[f"{setup}_{key}_seconds"] = {"value": seconds, "unit": "s"}
    return {
        "title": f"agilegan3d: seconds per stage iteration and per stylised photo (CPU, {THREADS} threads)",
        "columns": ["setup", "px", "what", "seconds", "seconds per 100"],
        "rows": rows,
        "figures": figures,
        "command": COMMAND + (" --quick" if quick else ""),
        "notes": "Random weights; CPU timings on a shared machine vary by run. GPU figures pending.",
    }
