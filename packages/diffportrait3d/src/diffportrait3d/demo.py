"""``diffportrait3d demo``: an orbit GIF of scikit-image's astronaut portrait with a random-weight configuration
(the shipped ``tiny`` by default).

The model is random and untrained: the GIF shows the plumbing (reference bank, view ControlNet on EG3D condition
renders, cross-view modules, 3D-aware noise from an EG3D inversion), not the paper's quality.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from diffportrait3d.cameras import orbit_cameras
from diffportrait3d.config import DiffPortrait3DConfig, tiny_config
from diffportrait3d.noise3d import EG3DConditionRenderer, EG3DNoisePrior, tiny_eg3d
from diffportrait3d.pipeline_diffportrait3d import load_pipeline
from genblocks.errors import InputError
from genblocks.media import label_frames, write_demo_card, write_video

__all__ = ["demo_portrait", "run_demo"]


def demo_portrait() -> np.ndarray:
    """The astronaut portrait (``skimage.data.astronaut``), cropped to the face: uint8 (H, W, 3)."""
    try:
        from skimage import data
    except ImportError as error:
        raise ImportError("the demo needs scikit-image: pip install 'diffportrait3d[demo]'") from error
    return np.ascontiguousarray(data.astronaut()[0:256, 120:376])


def run_demo(out: Path, config: DiffPortrait3DConfig | None = None, num_views: int = 8) -> dict:
    """Render an orbit of ``num_views`` views of the astronaut and write ``orbit.gif``, ``conditions.gif``,
    ``noise_renders.gif``, ``side_by_side.gif``, ``strip.png``, ``README.txt`` and ``summary.json`` (with a
    ``"headline"``) under ``out``. Returns the summary.

    Args:
        out: The output folder (created).
        config: A random-weight configuration (``source="random"``); defaults to the shipped ``tiny``.
        num_views: Views on the orbit.

    Raises:
        InputError: ``config.source`` is not ``random`` (the demo's README says the weights are random; render a
            pretrained pipeline with ``diffportrait3d render``).
    """
    config = config if config is not None else tiny_config()
    if config.source != "random":
        raise InputError(
            f"demo runs random weights (source=random), got source={config.source!r}: use `diffportrait3d render` "
            "for a pretrained pipeline"
        )
    out.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(config)
    portrait = torch.from_numpy(demo_portrait()).permute(2, 0, 1).float() / 255
    cameras = orbit_cameras(num_views)
    renderer = EG3DConditionRenderer(tiny_eg3d(seed=1))
    prior = EG3DNoisePrior(tiny_eg3d(seed=0), config.inference.inversion_steps, config.inference.inversion_lr)
    start = time.perf_counter()
    noise_renders = prior.renders(portrait, cameras)
    noise_seconds = time.perf_counter() - start
    start = time.perf_counter()
    output = pipe(
        portrait,
        cameras=cameras,
        condition_renderer=renderer,
        noise_renders=noise_renders,
        num_inference_steps=config.inference.num_inference_steps,
        guidance_scale=config.inference.guidance_scale,
        eta=config.inference.eta,
        generator=torch.Generator().manual_seed(config.seed),
        output_type="pt",
    )
    seconds = time.perf_counter() - start
    assert not isinstance(output, tuple)  # return_dict=True
    fps = config.inference.fps
    write_video(out / "orbit.gif", output.images, fps=fps, value_range=(0.0, 1.0))
    write_video(out / "conditions.gif", output.condition_images, fps=fps, value_range=(0.0, 1.0))
    write_video(out / "noise_renders.gif", noise_renders, fps=fps, value_range=(0.0, 1.0))
    captions = ["input portrait", "condition (another subject, target view)", "3D-aware noise render", "output view"]
    side_by_side = label_frames(
        [portrait, output.condition_images, noise_renders, output.images],
        captions,
        title="DiffPortrait3D orbit (random weights)",
        height=192,
        value_range=(0.0, 1.0),
    )
    write_video(out / "side_by_side.gif", side_by_side, fps=fps)
    middle = num_views // 2
    write_demo_card(
        out,
        f"DiffPortrait3D: the astronaut from a new view ({config.model.resolution} px, random weights)",
        [portrait, output.condition_images[middle], noise_renders[middle], output.images[middle]],
        captions,
        notes=[
            f"View {middle + 1} of {num_views} on the orbit. orbit.gif: every output view; conditions.gif and",
            "noise_renders.gif: the condition images and EG3D renders behind them; side_by_side.gif: all four, labelled.",
        ],
        value_range=(0.0, 1.0),
    )
    losses = prior.last_inversion.losses if prior.last_inversion is not None else []
    summary = {
        "headline": {
            "views": num_views,
            "seconds_per_view": seconds / num_views,
            "noise_prior_seconds": noise_seconds,
            "inversion_loss_first": losses[0] if losses else None,
            "inversion_loss_last": losses[-1] if losses else None,
        },
        "config": asdict(config),
        "files": ["orbit.gif", "conditions.gif", "noise_renders.gif", "side_by_side.gif", "strip.png", "README.txt"],
        "note": "tiny random-weight model: the orbit shows the pipeline, not a trained model's quality",
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
