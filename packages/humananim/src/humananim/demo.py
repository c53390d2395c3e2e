"""``humananim demo``: animate scikit-image's astronaut with her own skeleton moved by a scripted dance, on the tiny
random-weight model (the output shows the plumbing, not quality).

The reference skeleton comes from MediaPipe Holistic when it is installed; otherwise a body template
(:func:`humananim.keypoints.body_template`) is anchored on her 68 face landmarks from dlib (when the
``face-recognition-models`` files are installed), or on a schematic 68-point face placed in dlib's HOG face box (dlib
alone). The dance (:func:`humananim.keypoints.scripted_dance`) keeps her bone lengths; its hint is the rendered skeleton
plus the hand motion-blur channels with the sharpness set to sharp.

Files in ``--out``: ``reference.png``, ``skeleton.gif``, ``animation.gif``, ``side_by_side.gif`` (labelled reference |
skeleton | result), ``strip.png`` and ``README.txt`` (:func:`genblocks.media.write_demo_card`), ``keypoints.json`` and
``summary.json`` (how the skeleton was found, frames, seconds per frame).
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

from humananim.config import HumanAnimConfig
from humananim.keypoints import Keypoints, body_template, render_pose, save_keypoints, scripted_dance

__all__ = ["astronaut_reference", "reference_skeleton", "run_demo"]

logger = logging.getLogger(__name__)


def astronaut_reference(height: int, width: int) -> np.ndarray:
    """scikit-image's astronaut, centre-cropped to the ``height:width`` aspect (full resolution), uint8 RGB."""
    try:
        from skimage import data
    except ImportError as error:
        raise ImportError("the demo portrait needs scikit-image: pip install 'humananim[demo]'") from error
    image = data.astronaut()
    side_h, side_w = image.shape[:2]
    crop_w = min(side_w, round(side_h * width / height))
    crop_h = min(side_h, round(crop_w * height / width))
    left = (side_w - crop_w) // 2
    return np.ascontiguousarray(image[:crop_h, left : left + crop_w])


def reference_skeleton(image: np.ndarray) -> tuple[Keypoints, str]:
    """The reference person's skeleton and how it was found (``mediapipe``, ``dlib landmarks``, ``dlib face box``)."""
    height, width = image.shape[:2]
    try:
        from humananim.keypoints_backends import MediaPipeBackend

        points = MediaPipeBackend()(image)
        if (points[:18, 2] > 0.3).sum() >= 6:
            return Keypoints(points[None], width, height), "mediapipe"
    except ImportError:
        logger.info("demo: mediapipe is not installed; anchoring a body template on the face")
    from humananim.keypoints_backends import DlibTemplateBackend, schematic_face

    backend = DlibTemplateBackend()
    points = backend(image)
    if (points[:18, 2] > 0).any():
        how = (
            "dlib landmarks + body template"
            if backend.analyzer is not None
            else "dlib face box + schematic face + body template"
        )
        return Keypoints(points[None], width, height), how
    box = (0.35 * width, 0.12 * height, 0.65 * width, 0.4 * height)
    return body_template(schematic_face(box), width, height), "fixed face box + body template"


def run_demo(config: HumanAnimConfig, out: str | Path, num_frames: int = 8) -> dict[str, Any]:
    """Animate the astronaut (module docstring) and write the demo files; returns the summary."""
    from genblocks.media import label_frames, write_demo_card, write_image, write_video
    from humananim.pipeline import driving_hints, load_pipeline, sampling_options

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    height, width = config.model.height, config.model.width
    full = astronaut_reference(height, width)
    skeleton, how = reference_skeleton(full)
    skeleton = skeleton.resized(width, height)
    reference = np.array(Image.fromarray(full).resize((width, height), Image.Resampling.LANCZOS))
    dance = scripted_dance(skeleton, num_frames, amplitude=0.4)
    pose_images, blur_maps = driving_hints(dance, config)
    pipeline = load_pipeline(config)
    generator = torch.Generator().manual_seed(config.sampling.seed)
    start = time.perf_counter()
    output = pipeline(
        reference,
        pose_images=pose_images,
        blur_maps=blur_maps,
        generator=generator,
        output_type="pt",
        **sampling_options(config),
    )
    seconds = time.perf_counter() - start
    frames = output.frames  # type: ignore[union-attr]
    fps = config.sampling.fps or 8.0
    scale = max(1, 256 // height)
    skeleton_frames = render_pose(dance)
    write_image(out / "reference.png", reference)
    write_video(out / "skeleton.gif", skeleton_frames, fps=fps)
    write_video(out / "animation.gif", frames, fps=fps, value_range=(0.0, 1.0))
    captions = ["reference (astronaut)", "driving skeleton + hands + face", "result (random weights)"]
    side = label_frames(
        [reference, skeleton_frames, (frames.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()],
        captions,
        title=f"humananim: the astronaut dancing ({height}x{width}, random weights)",
        height=height * scale,
    )
    write_video(out / "side_by_side.gif", side, fps=fps)
    middle = num_frames // 2
    write_demo_card(
        out,
        f"humananim: the astronaut driven by a scripted dance of her own skeleton ({height}x{width}, random weights)",
        [
            reference,
            skeleton_frames[middle],
            (frames[middle].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy(),
        ],
        captions,
        notes=[
            f"Skeleton found by: {how}. Frame {middle + 1} of {num_frames}.",
            "skeleton.gif: the pose hint; animation.gif: the result; side_by_side.gif: all three, labelled.",
        ],
    )
    save_keypoints(dance, out / "keypoints.json")
    summary = {"skeleton_from": how, "frames": num_frames, "seconds_per_frame": seconds / num_frames}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
