"""``id-patch demo``: a two-person group image and its condition image from real faces, on the tiny CPU config.

The subjects are cut from a real photo that ships with scikit-image (``skimage.data.astronaut()``, NASA's portrait of
Eileen Collins, public domain): the astronaut's face, found by dlib, and the same crop mirrored left-right as a second
"subject" (the only real face at hand; dlib embeds the mirrored face close to, not equal to, the original). Both are
embedded by the tiny config's face encoder (dlib 128-d mapped to the tiny projector's 16 dimensions; the random tiny
encoder when dlib is not installed), placed at two positions of a 64-px image with two stick-figure poses, and rendered
by the tiny ``IDPatchPipeline``. The tiny model has random weights, so the generated image is noise-like: the demo shows
the mechanics (real faces -> embeddings -> ID patches at the chosen positions + ID tokens), not image quality. The
outputs are written at 4x (nearest neighbour) next to the 64-px originals so they can be looked at. Another generate
config (``id-patch demo --config paper``) runs the same scene at its own size, the positions scaled from 64 px.

Files written into the output folder: ``group.png``, ``condition.png``, ``group_and_condition_x4.png``,
``subject_0.png``, ``subject_1.png``, ``subjects.png`` and ``summary.json``.

Example::

    from id_patch.demo import run_demo

    summary = run_demo("outputs/id-patch/demo")  # the shipped configs/tiny.yaml
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from genblocks.media import write_demo_card
from id_patch.config import GenerateConfig

__all__ = ["DEMO_POSITIONS", "astronaut_subjects", "run_demo", "side_by_side", "tiny_generate_config"]

logger = logging.getLogger(__name__)

DEMO_SIZE = 64
"""Side of the tiny config's image, in which `DEMO_POSITIONS` are given."""
DEMO_POSITIONS = ((20.0, 22.0), (44.0, 22.0))
"""Nose positions (x, y) of the two subjects in the 64-px demo image (scaled to other sizes)."""


def astronaut_subjects() -> tuple[list[np.ndarray], str]:
    """Two subject images from ``skimage.data.astronaut()``: the face crop and its mirror image.

    Returns:
        ``([crop, mirrored crop], how the face was found)``; uint8 RGB arrays.

    Raises:
        ImportError: When scikit-image is not installed (it is a development dependency of the workspace).
    """
    try:
        from skimage import data
    except ImportError as error:
        raise ImportError(
            "the demo cuts its faces from skimage.data.astronaut(); install scikit-image "
            f"(`pip install scikit-image`, a dev dependency of this workspace) ({error})"
        ) from error
    from id_patch.preprocessing import crop_faces

    photo = data.astronaut()
    try:
        from genblocks.faces import DlibFaceAnalyzer

        face = DlibFaceAnalyzer().get_face(photo, name="skimage.data.astronaut()", embed=False)
        box, how = face.box, f"dlib detection, box {np.round(face.box).astype(int).tolist()}"
    except ImportError:
        box = np.array([175.0, 76.0, 265.0, 166.0], dtype=np.float32)
        how = "fixed box [175, 76, 265, 166] (dlib not installed)"
    crop = crop_faces(photo, box[None], margin=0.4)[0]
    return [crop, np.ascontiguousarray(crop[:, ::-1])], how


def side_by_side(images: list[Image.Image], scale: int = 1, gap: int = 4) -> Image.Image:
    """Images next to each other on white, each resized by ``scale`` (nearest neighbour)."""
    scaled = [im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST) for im in images]
    height = max(im.height for im in scaled)
    canvas = Image.new("RGB", (sum(im.width for im in scaled) + gap * (len(scaled) - 1), height), "white")
    x = 0
    for im in scaled:
        canvas.paste(im.convert("RGB"), (x, 0))
        x += im.width + gap
    return canvas


def tiny_generate_config() -> GenerateConfig:
    """The shipped ``configs/tiny.yaml`` (the one source of truth, also inside an installed wheel)."""
    from genblocks.cli import load_command_config

    return load_command_config(GenerateConfig, "id_patch", "generate", "tiny")[0]


def run_demo(out_dir: str | Path, config: GenerateConfig | None = None) -> dict[str, Any]:
    """Generate the demo group image and write it, its condition image, the subject crops and ``summary.json``.

    Args:
        out_dir: Output folder (created).
        config: A generate config; ``None``: the shipped ``configs/tiny.yaml``.

    Returns:
        The summary (also written to ``out_dir/summary.json``), with a ``headline`` mapping.
    """
    from dataclasses import replace

    from id_patch.config import build_face_encoder, build_pipeline, generate
    from id_patch.data import coco_keypoints_for_person

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config is None:
        config = tiny_generate_config()
    faces, how = astronaut_subjects()
    pipe = build_pipeline(config.model)
    default_size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    height, width = config.sampling.height or default_size, config.sampling.width or default_size
    scale_x, scale_y = width / DEMO_SIZE, height / DEMO_SIZE
    positions = [(x * scale_x, y * scale_y) for x, y in DEMO_POSITIONS]
    face_dim = pipe.id_projector.config.face_dim
    try:
        encoder = build_face_encoder(config.face, face_dim)
        encoder_note = f"{config.face.backend} face encoder mapped to {face_dim} dimensions"
    except ImportError as error:
        logger.warning("face backend %r unavailable (%s); using the random tiny encoder", config.face.backend, error)
        encoder = build_face_encoder(replace(config.face, backend="tiny"), face_dim)
        encoder_note = f"random tiny face encoder ({config.face.backend} unavailable: {error})"
    keypoints = np.stack([coco_keypoints_for_person(nose, min(height, width) / 16) for nose in positions])
    embeds = encoder.encode_subjects(faces).embeds
    start = time.perf_counter()
    run_config = replace(config, sampling=replace(config.sampling, height=height, width=width))
    output = generate(pipe, run_config, face_embeds=embeds, keypoints=keypoints)
    seconds = time.perf_counter() - start
    image, condition = output.images[0], output.condition_images[0]
    image.save(out / "group.png")
    condition.save(out / "condition.png")
    side_by_side([image, condition], scale=4).save(out / "group_and_condition_x4.png")
    subject_images = [Image.fromarray(face) for face in faces]
    for index, subject in enumerate(subject_images):
        subject.save(out / f"subject_{index}.png")
    side_by_side([im.resize((96, 96)) for im in subject_images]).save(out / "subjects.png")
    write_demo_card(
        out,
        "ID-Patch: a group photo of two subjects at chosen positions (tiny config, random weights)",
        [*(np.asarray(im) for im in subject_images), np.asarray(condition), np.asarray(image)],
        [*(f"subject {i + 1}" for i in range(len(subject_images))), "condition: poses + ID patches", "generated"],
        notes=[
            f"Positions (x, y) of the subjects' faces: {[tuple(round(v) for v in p) for p in positions]}.",
            "The condition image carries each subject's ID patch at its position; the ID tokens join the text.",
        ],
    )
    cosine = float(torch.nn.functional.cosine_similarity(embeds[0], embeds[1], dim=0))
    text_tokens = pipe.tokenizer.model_max_length
    summary = {
        "headline": {
            "subjects": len(faces),
            "seconds_per_image": seconds,
            "context_tokens": text_tokens + len(faces) * pipe.id_projector.config.num_tokens,
            "subject_cosine": cosine,
        },
        "subjects": (
            "skimage.data.astronaut() (NASA, public domain): the astronaut's face "
            f"({how}) and the same crop mirrored left-right as a second subject; there is one real person, "
            "so the two subjects are near-duplicates, not two identities"
        ),
        "face_encoder": encoder_note,
        "positions": [list(p) for p in positions],
        "size": [height, width],
        "model": (
            "tiny random-weight SDXL + ControlNet + ID projector (configs/tiny.yaml, spec §9): the image is "
            "noise-like; the condition image shows the two stick-figure poses and the ID patches at the positions"
            if config.model.base == "tiny" and config.model.pipeline is None
            else f"base {config.model.base}, pipeline {config.model.pipeline}, release {config.model.official_release}"
        ),
        "prompt": config.prompt,
        "sampling": vars(config.sampling),
        "files": [
            "group.png",
            "condition.png",
            "group_and_condition_x4.png",
            *[f"subject_{i}.png" for i in range(len(faces))],
            "subjects.png",
            "strip.png",
            "README.txt",
        ],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary
