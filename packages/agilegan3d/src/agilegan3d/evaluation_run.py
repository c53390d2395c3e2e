"""``agilegan3d eval``: stylise every photo of a folder and score the style (:mod:`agilegan3d.evaluation`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from agilegan3d.augment import resize_like
from agilegan3d.config import AgileGAN3DConfig
from agilegan3d.evaluation import style_metrics
from agilegan3d.modeling_agilegan3d import load_torchscript
from agilegan3d.pipeline_agilegan3d import AgileGAN3DPipeline, orbit_cameras
from agilegan3d.preprocessing import default_face_analyzer, prepare_photo
from genblocks.errors import InputError
from genblocks.media import read_image
from genblocks.metrics import load_feature_extractor

__all__ = ["evaluate_style"]

_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def evaluate_style(
    config: AgileGAN3DConfig,
    images: str | os.PathLike,
    exemplars: str | os.PathLike,
    out_dir: str | os.PathLike,
    style: str | os.PathLike | None = None,
    identity: str | os.PathLike | None = None,
    features: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Score ``style`` (default: random tiny) on the photos in ``images`` against ``exemplars``; writes
    ``metrics.json`` in ``out_dir`` and returns it.

    Raises:
        InputError: No photos, or neither ``identity`` nor ``features`` (nothing to measure).
    """
    from agilegan3d.data import load_exemplars
    from agilegan3d.demo import random_pipeline

    if identity is None and features is None:
        raise InputError("--identity / --features: give at least one network (nothing to measure otherwise)")
    files = sorted(p for p in Path(images).iterdir() if p.suffix.lower() in _SUFFIXES)
    if not files:
        raise InputError(f"--images {images}: no images ({', '.join(_SUFFIXES)})")
    style_images = load_exemplars(exemplars, config.g3d.img_resolution, 2).images
    identity_net = load_torchscript(identity, "--identity")
    feature_net = None if features is None else load_feature_extractor(features, "--features")
    pipe = AgileGAN3DPipeline.from_pretrained(style) if style is not None else random_pipeline(config)
    inference = config.inference
    analyzer = default_face_analyzer() if inference.camera_from != "frontal" else None
    inputs, frontal, views = [], [], []
    cameras = orbit_cameras(max(2, inference.views), inference.yaw, inference.pitch)
    for path in files:
        photo = prepare_photo(read_image(path), analyzer, inference.camera_from, 256, f"--images {path.name}")
        image = resize_like(photo.image.unsqueeze(0), pipe.encoder.input_size)
        out = pipe(image, cameras=torch.cat([photo.camera.unsqueeze(0), cameras]))
        size = out.images.shape[-1]
        inputs.append(resize_like(photo.image.unsqueeze(0), size))
        frontal.append(out.images[:, 0])
        views.append(out.images[:, 1:])
    with torch.no_grad():
        metrics = style_metrics(
            torch.cat(inputs),
            torch.cat(frontal),
            torch.cat(views),
            style_images,
            identity_net,
            feature_net,
        )
    result = {
        "photos": len(files),
        "exemplars": len(style_images),
        "style": str(style) if style else "random",
        **metrics,
    }
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(result, indent=1))
    return result
