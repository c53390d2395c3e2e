"""Real-time factor of DREAM-Talk motion generation (audio features + EmoDiff sampling with CFG + lip refinement)
and of the preview rendering, against window length and sampling steps.

Command line (from the repository root)::

    uv run --frozen python -m benchmarks --package dream-talk [--quick]

Seeds: components ``DreamTalkPipeline.from_config(config)`` (``emodiff.seed=0``; random weights: cost does not depend
on them; no downloads), audio ``dream_talk.demo.synthetic_speech(seed=0)``, sampling ``torch.Generator().manual_seed(0)``.
CPU, fp32, ``DREAM_TALK_BENCH_THREADS`` torch threads (default 1: on the shared 2-core machine these were measured on,
2 intra-op threads contended with other jobs and made single timings swing by up to 10x).

Setups: ``tiny`` (configs/tiny.yaml: d 32, 2 layers, 13 MFCCs) and, unless ``--quick``, ``paper`` (the paper
config's denoiser: d 256, 8 layers, 8 heads, 4-layer lip refiner; MFCC + delta front-end instead of wav2vec2, so no
download). Each row generates the motion of 4 s of speech (2 s with ``--quick``) at 25 fps with chained windows (stride
window - 1), three CFG branches per step batched together; RTF = wall seconds / audio seconds (below 1 is faster than
real time); the best of ``REPEATS`` = 3 timed calls after a 1-step warm-up. The render row times ``KeypointPreviewRenderer(256)`` over the same frames; the portrait warp renderer's rows
are ``bench_render.py``'s.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

_PREFIX = (
    f"DREAM_TALK_BENCH_THREADS={os.environ['DREAM_TALK_BENCH_THREADS']} "
    if "DREAM_TALK_BENCH_THREADS" in os.environ
    else ""
)
COMMAND = _PREFIX + "uv run --frozen python -m benchmarks --package dream-talk"
THREADS = int(os.environ.get("DREAM_TALK_BENCH_THREADS", "1"))
REPEATS = 3
FPS = 25.0


def _best(call: Any) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def _config(setup: str, window: int) -> Any:
    from dream_talk.config import load_shipped_config

    if setup == "tiny":
        return load_shipped_config("tiny", [f"emodiff.window={window}"])
    overrides = ["audio.kind=mfcc", "audio.deltas=true", f"emodiff.window={window}", "emodiff.style_frames=64"]
    return load_shipped_config("paper", overrides)


def measure(setup: str, window: int, steps: int, seconds: float) -> float:
    """Seconds to turn ``seconds`` of speech into motion (features + sampling + lip refinement)."""
    from dream_talk.audio_features import AudioFrontEnd
    from dream_talk.demo import synthetic_speech
    from dream_talk.pipeline_dream_talk import DreamTalkPipeline

    config = _config(setup, window)
    pipe = DreamTalkPipeline.from_config(config)
    front = AudioFrontEnd(config.audio)
    speech = synthetic_speech(seconds, 16000, seed=0)
    style = torch.zeros(1, 16, config.motion.dim)

    def call(count: int = steps) -> None:
        features = torch.from_numpy(front(speech, 16000, FPS))[None]
        pipe(features, style, generator=torch.Generator().manual_seed(0), num_inference_steps=count)

    with torch.no_grad():
        call(1)  # warm-up: the first calls pay one-off allocation and dispatch costs
        return _best(call)


def measure_render(seconds: float) -> float:
    """Seconds to render the preview frames of ``seconds`` at 25 fps."""
    from dream_talk.render import KeypointPreviewRenderer

    frames = round(seconds * FPS)
    motion = np.random.default_rng(0).uniform(0, 1, (frames, 58)) * 0.5
    portrait = np.full((256, 256, 3), 128, np.uint8)
    renderer = KeypointPreviewRenderer(256)
    renderer(portrait, motion[:2])
    return _best(lambda: renderer(portrait, motion))


def run(out_dir: Path, quick: bool) -> dict[str, Any]:
    """Measure each setup; see the module docstring."""
    torch.set_num_threads(THREADS)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    seconds = 2.0 if quick else 4.0
    grid = {"tiny": ((8, 16), (2, 10))} if quick else {"tiny": ((8, 32), (2, 10)), "paper": ((32, 64), (10, 25))}
    rows: list[list[Any]] = []
    figures: dict[str, dict[str, Any]] = {}
    for setup, (windows, steps_list) in grid.items():
        for window in windows:
            for steps in steps_list:
                elapsed = measure(setup, window, steps, seconds)
                rows.append([setup, "motion", window, steps, seconds, round(elapsed, 3), round(elapsed / seconds, 4)])
                figures[f"{setup}_w{window}_s{steps}_rtf"] = {"value": elapsed / seconds, "unit": "ratio"}
    elapsed = measure_render(seconds)
    rows.append(["-", "preview render 256 px", "-", "-", seconds, round(elapsed, 3), round(elapsed / seconds, 4)])
    figures["render_rtf"] = {"value": elapsed / seconds, "unit": "ratio"}
    return {
        "title": f"dream-talk: real-time factor of motion generation and preview rendering (CPU, {THREADS} threads)",
        "columns": ["setup", "what", "window", "steps", "audio s", "seconds", "RTF"],
        "rows": rows,
        "figures": figures,
        "command": COMMAND + (" --quick" if quick else ""),
        "notes": (
            "RTF = wall seconds / audio seconds. Random weights; 25 fps; chained windows; 3 CFG branches batched per "
            "step; the paper setup uses MFCC + delta features (no wav2vec2 download). Shared-machine CPU timings vary."
        ),
    }
