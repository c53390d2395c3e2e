"""``diffportrait3d demo``: an orbit GIF of scikit-image's astronaut portrait with a random-weight configuration
(the shipped ``tiny`` by default).

The model is random and untrained: the GIF shows the plumbing (reference bank, view ControlNet on EG3D condition
renders, cross-view modules, 3D-aware noise from an EG3D inversion), not the paper's quality. With the face extra
(dlib) the portrait is EG3D's crop of the astronaut photo and the inversion's camera comes from its landmarks; without
it, a fixed hand crop and the render grid search.
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
from diffportrait3d.preprocessing import default_face_analyzer, prepare_portrait
from genblocks.errors import InputError
from genblocks.media import label_frames, write_demo_card, write_video

__all__ = ["demo_photo", "demo_portrait", "run_demo"]


def demo_photo() -> np.ndarray:
    """The astronaut photo (``skimage.data.astronaut``): uint8 (512, 512, 3)."""
    try:
        from skimage import data
    except ImportError as error:
        raise ImportError("the demo needs scikit-image: pip install 'diffportrait3d[demo]'") from error
    return np.asarray(data.astronaut())


def demo_portrait() -> np.ndarray:
    """The astronaut portrait cropped to the face by hand (the demo's portrait without a face analyzer): uint8
    (256, 256, 3)."""
    return np.ascontiguousarray(demo_photo()[0:256, 120:376])


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
    camera_from = config.inference.camera_from
    analyzer = default_face_analyzer() if camera_from != "grid" else None
    prepared = prepare_portrait(demo_photo(), analyzer, camera_from, max(config.model.resolution, 256), "astronaut")
    if prepared.crop is None:  # no landmarks: the hand crop, and the inversion searches the camera on a grid
        prepared.image = torch.from_numpy(demo_portrait()).permute(2, 0, 1).float() / 255
    portrait = prepared.image
    cameras = orbit_cameras(num_views)
    renderer = EG3DConditionRenderer(tiny_eg3d(seed=1))
    prior = EG3DNoisePrior(tiny_eg3d(seed=0), config.inference.inversion_steps, config.inference.inversion_lr)
    start = time.perf_counter()
    noise_renders = prior.renders(portrait, cameras, landmarks=prepared.landmarks)
    noise_seconds = time.perf_counter() - start
    start = time.perf_counter()
    output = pipe(
        portrait,
        cameras=cameras,
        condition_renderer=renderer,
        noise_prior="eg3d",
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
    input_caption = "input (EG3D crop)" if prepared.crop is not None else "input portrait"
    captions = [input_caption, "condition (another subject, target view)", "3D-aware noise render", "output view"]
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
    inversion = prior.last_inversion
    losses = inversion.losses if inversion is not None else []
    summary = {
        "headline": {
            "views": num_views,
            "seconds_per_view": seconds / num_views,
            "noise_prior_seconds": noise_seconds,
            "inversion_loss_first": losses[0] if losses else None,
            "inversion_loss_last": losses[-1] if losses else None,
            "camera_from": inversion.camera_source if inversion is not None else None,
        },
        "portrait": prepared.reason,
        "config": asdict(config),
        "files": ["orbit.gif", "conditions.gif", "noise_renders.gif", "side_by_side.gif", "strip.png", "README.txt"],
        "note": "tiny random-weight model: the orbit shows the pipeline, not a trained model's quality",
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
