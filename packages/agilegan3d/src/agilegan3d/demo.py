"""``agilegan3d demo``: scikit-image's astronaut portrait through a tiny **random-weights** style (no training, no
download): the built-in 2-D toon prior on the photo, and the encoder + style generator rendering an orbit. Every
picture is labelled "random weights": it shows that each step runs, not what a trained style looks like.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from agilegan3d.config import AgileGAN3DConfig
from agilegan3d.modeling_agilegan3d import build_encoder, build_g3d, toon_filter
from agilegan3d.pipeline_agilegan3d import AgileGAN3DPipeline
from agilegan3d.preprocessing import default_face_analyzer, prepare_photo
from agilegan3d.stylize import stylize_photo
from genblocks.media import write_demo_card

__all__ = ["demo_photo", "random_pipeline", "run_demo"]

LABEL = "random weights"


def demo_photo() -> np.ndarray:
    """The astronaut photo (``skimage.data.astronaut``): uint8 (512, 512, 3)."""
    try:
        from skimage import data
    except ImportError as error:
        raise ImportError("the demo needs scikit-image: pip install 'agilegan3d[demo]'") from error
    return np.array(data.astronaut(), dtype=np.uint8, copy=True)


def random_pipeline(config: AgileGAN3DConfig) -> AgileGAN3DPipeline:
    """A style pipeline with seeded random G3s (= G3D) and encoder, shaped by ``config``."""
    generator = build_g3d(config.g3d)
    return AgileGAN3DPipeline(generator, build_encoder(config.encoder, generator, config.seed + 3), None, config)


def run_demo(config: AgileGAN3DConfig, out_dir: str | os.PathLike, views: int | None = None) -> dict[str, Any]:
    """Write the demo into ``out_dir``: ``strip.png``, ``orbit.gif``, ``views/``, ``prior.png``, ``README.txt``,
    ``summary.json`` (with a ``headline`` dict). Returns the summary."""
    out = Path(out_dir)
    start = time.perf_counter()
    photo_array = demo_photo()
    analyzer = default_face_analyzer() if config.inference.camera_from != "frontal" else None
    photo = prepare_photo(photo_array, analyzer, config.inference.camera_from, 256, "astronaut")
    pipeline = random_pipeline(config)
    output, summary = stylize_photo(pipeline, photo, out / "stylize", views, LABEL)
    toon = toon_filter(photo.image.unsqueeze(0), config.prior.toon_levels, config.prior.toon_edges)[0]
    strip, _ = write_demo_card(
        out,
        f"AgileGAN3D demo: astronaut -> stylised 3-D orbit ({LABEL})",
        [photo.image, toon, *output.images[0]],
        [
            "input photo",
            "2-D toon prior (a fixed filter)",
            *(f"view {k} ({LABEL})" for k in range(len(output.cameras))),
        ],
        notes=[
            f"Input: {photo.reason}.",
            "stylize/strip.png and stylize/orbit.gif: the encoder and style generator (random) on an orbit.",
        ],
    )
    seconds = time.perf_counter() - start
    summary = {
        **summary,
        "headline": {
            "views": len(output.cameras),
            "view_shape": list(output.images.shape[-3:]),
            "seconds": round(seconds, 2),
            "weights": LABEL,
        },
        "strip": str(strip.relative_to(out)),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
