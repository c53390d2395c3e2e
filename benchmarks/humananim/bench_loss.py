"""Cost of humananim's regional and identity losses per training step, as a ratio to the plain epsilon loss.

Command line (from the repository root)::

    uv run --frozen python -m benchmarks --package humananim [--quick]

Seeds: ``humananim.training.build_training`` on the tiny config (components seed 0, synthetic clip 0); the module's
generator is reset to 123 before every timed step, so every variant sees the same timestep and noise. Weights are
random (cost does not depend on them); no downloads. The identity term uses a random ArcFace IR-SE (units (1, 1, 1, 1),
widths (16, 32, 64, 128), 112-px crops) and the step's timestep is forced below ``id_loss_max_t`` so the term runs.

Variants (each one full training step: forward of every model, loss, backward), video stage, tiny config (64 x 48
frames), clips of 4 frames:

- ``plain``: epsilon MSE only (``lambda_face = lambda_hand = lambda_id = 0``);
- ``regional eps`` / ``regional x0_latent`` / ``regional pixel``: + face and hand region MSE in that space (pixel
  space decodes the predicted clean latents with the VAE);
- ``regional eps + identity``: + the identity cosine loss (decode + two face-embedder passes).

Seconds per step are the median of ``repeats`` runs after one warm-up; the ratio is to ``plain``.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

COMMAND = "uv run --frozen python -m benchmarks --package humananim"
THREADS = int(os.environ.get("HU_BENCH_THREADS", "2"))
COLUMNS = ["variant", "s/step", "ratio to plain"]


def _module(lambda_face: float, lambda_hand: float, lambda_id: float, space: str, identity: bool) -> Any:
    from genblocks.faces.arcface import IRSEBackbone
    from humananim.config import tiny_config
    from humananim.training import build_training

    base = tiny_config()
    config = replace(
        base,
        train=replace(base.train, stage="video", num_frames=4, cond_drop_ref=0.0, cond_drop_pose=0.0),
        loss=replace(
            base.loss,
            lambda_face=lambda_face,
            lambda_hand=lambda_hand,
            lambda_id=lambda_id,
            region_space=space,  # type: ignore[arg-type]
            id_loss_max_t=1000,  # every timestep runs the identity term
        ),
    )
    embedder = None
    if identity:
        torch.manual_seed(0)
        embedder = IRSEBackbone(units=(1, 1, 1, 1), channels=(16, 32, 64, 128), embedding_dim=128)
    arguments = build_training(config, face_embedder=embedder, synthetic_clips=1)
    module = arguments["module"]
    batch = {k: v[None] for k, v in arguments["datamodule"].dataset[0].items()}
    return module, batch


def _step_seconds(module: Any, batch: dict[str, torch.Tensor], repeats: int) -> float:
    times = []
    for index in range(repeats + 1):
        module.generator.manual_seed(123)
        module.zero_grad(set_to_none=True)
        start = time.perf_counter()
        module.compute_loss(batch).backward()
        if index:  # the first run is the warm-up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(out_dir: Path, quick: bool) -> dict[str, Any]:
    """Time every variant; see the module docstring."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    repeats = 2 if quick else 5
    variants = [
        ("plain", 0.0, 0.0, 0.0, "eps", False),
        ("regional eps", 1.0, 1.0, 0.0, "eps", False),
        ("regional x0_latent", 1.0, 1.0, 0.0, "x0_latent", False),
        ("regional pixel", 1.0, 1.0, 0.0, "pixel", False),
        ("regional eps + identity", 1.0, 1.0, 0.1, "eps", True),
    ]
    if quick:
        variants = [variants[0], variants[1], variants[4]]
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    load_before = os.getloadavg()[0]
    rows, figures = [], {}
    plain = None
    try:
        for name, lf, lh, lid, space, identity in variants:
            module, batch = _module(lf, lh, lid, space, identity)
            seconds = _step_seconds(module, batch, repeats)
            if plain is None:
                plain = seconds
            ratio = seconds / plain
            rows.append([name, round(seconds, 4), round(ratio, 3)])
            key = name.replace(" + ", "_").replace(" ", "_")
            figures[f"{key}_seconds_per_step"] = {"value": seconds, "unit": "s/step"}
            figures[f"{key}_ratio_to_plain"] = {"value": ratio, "unit": "x"}
    finally:
        torch.set_num_threads(previous)
    notes = (
        f"{THREADS} torch thread(s) on CPU; 1-minute load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} "
        f"after. Tiny config, video stage, 1 clip of 4 frames at 64 x 48; median of {repeats} steps after a warm-up. "
        "On the tiny model the VAE is a large share of the step, so pixel-space and identity terms cost relatively "
        "more than they would on SD1.5."
    )
    return {
        "title": "humananim: cost of the regional and identity losses per training step (random weights)",
        "command": COMMAND + (" --quick" if quick else ""),
        "columns": COLUMNS,
        "rows": rows,
        "figures": figures,
        "notes": notes,
    }
