"""Seconds per frame and real-time factor of DREAM-Talk's portrait warp renderer against image size, with and
without the face crop and paste-back.

Command line (from the repository root)::

    uv run --frozen python -m benchmarks --package dream-talk [--quick]

Seeds and inputs: a synthetic smooth-textured portrait of N x N pixels (no downloads, no dlib: the landmarks are the
proxy template scaled to 0.15 N per normalised unit, a face about a quarter of the photo wide, centred at (0.5 N,
0.45 N)); the motion is ``numpy.random.default_rng(0)``: jawOpen swinging 0 -> 1 -> 0 twice a second (so the mouth
interior is painted in most frames), the other blendshapes uniform in [0, 0.2], head pose uniform in +-0.1.
CPU, fp32, 1 torch thread and ``DREAM_TALK_BENCH_THREADS`` when set to more (a frame's tensors are small, so on a shared
machine extra intra-op threads can cost more than they give).

Each row renders 50 frames (2 s at 25 fps; 25 with ``--quick``) after a 2-frame warm-up (the best of ``REPEATS`` = 2 runs): seconds per frame and
RTF = render seconds / video seconds at 25 fps (below 1 is faster than real time). ``crop`` is ``render.crop_margin``
(0.5, the default: only the face crop is warped and pasted back with a feathered mask) or ``none`` (the whole photo is
warped); bicubic sampling (``render.interpolation``) and the mouth fill on, as in the default config.
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
FPS = 25.0
REPEATS = 2


def portrait_and_landmarks(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth N x N texture and the proxy template placed as a face a quarter of the photo wide."""
    from dream_talk.render import template_landmarks

    y, x = np.mgrid[0:size, 0:size].astype(np.float64) * (256.0 / size)
    channels = [128 + 60 * np.sin(x / 11), 128 + 60 * np.sin(y / 9 + 1), 128 + 50 * np.sin((x + y) / 13)]
    portrait = np.stack(channels, -1).round().astype(np.uint8)
    return portrait, template_landmarks() * 0.15 * size + np.array([0.5, 0.45]) * size


def talking_motion(frames: int) -> np.ndarray:
    """(frames, 58): jawOpen swinging twice a second, small random other blendshapes and head pose (seed 0)."""
    from dream_talk.motion import blendshape_index

    rng = np.random.default_rng(0)
    motion = np.zeros((frames, 58))
    motion[:, :52] = rng.uniform(0.0, 0.2, (frames, 52))
    motion[:, blendshape_index("jawOpen")] = 0.5 - 0.5 * np.cos(2 * np.pi * 2.0 * np.arange(frames) / FPS)
    motion[:, 52:58] = rng.uniform(-0.1, 0.1, (frames, 6))
    return motion


def measure(size: int, crop_margin: float | None, frames: int) -> float:
    """Seconds to render ``frames`` frames of an N x N portrait."""
    from dream_talk.warp_render import PortraitWarpRenderer

    portrait, landmarks = portrait_and_landmarks(size)
    motion = talking_motion(frames)
    renderer = PortraitWarpRenderer(landmarks, crop_margin=crop_margin)
    renderer(portrait, motion[:2])  # warm-up
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        renderer(portrait, motion)
        times.append(time.perf_counter() - start)
    return min(times)


def run(out_dir: Path, quick: bool) -> dict[str, Any]:
    """Measure each image size with and without the crop; see the module docstring."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    frames = 25 if quick else 50
    sizes = (256, 512) if quick else (256, 512, 1024)
    rows: list[list[Any]] = []
    figures: dict[str, dict[str, Any]] = {}
    previous = torch.get_num_threads()
    try:
        for threads in sorted({1, THREADS}):
            torch.set_num_threads(threads)
            for size in sizes:
                for crop in (0.5, None):
                    elapsed = measure(size, crop, frames)
                    label = "none" if crop is None else f"{crop:g}"
                    per_frame = elapsed / frames
                    rows.append([f"{size} px", label, threads, frames, round(per_frame, 4), round(per_frame * FPS, 3)])
                    key = f"warp_{size}px_crop_{label}_{threads}t"
                    figures[f"{key}_s_per_frame"] = {"value": per_frame, "unit": "s"}
                    figures[f"{key}_rtf"] = {"value": per_frame * FPS, "unit": "ratio"}
    finally:
        torch.set_num_threads(previous)
    return {
        "title": "dream-talk: warp renderer seconds per frame and real-time factor at 25 fps (CPU)",
        "columns": ["image", "crop_margin", "threads", "frames", "s / frame", "RTF @ 25 fps"],
        "rows": rows,
        "figures": figures,
        "command": COMMAND + (" --quick" if quick else ""),
        "notes": (
            "Synthetic portrait with a face a quarter of the photo wide; bicubic sampling, mouth fill on; RTF = "
            "render seconds / video seconds. Shared-machine CPU timings vary."
        ),
    }
