"""Stylise one photo and write the files a person looks at: ``strip.png`` (input | the stylised head from the orbit's
cameras, labelled), ``orbit.gif`` or ``orbit.mp4`` (input beside the stylised orbit; MP4 through imageio-ffmpeg),
``views/view_<k>.png``, optionally ``mesh.obj`` (marching cubes on the stylised generator's density for the encoded
code, world units inside the tri-planes' box, :mod:`genblocks.render3d.mesh`) and ``summary.json``. Used by
``agilegan3d stylize`` (``--format gif|mp4``, ``--mesh``) and ``agilegan3d demo``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agilegan3d.augment import resize_like
from agilegan3d.pipeline_agilegan3d import AgileGAN3DOutput, AgileGAN3DPipeline, orbit_cameras
from agilegan3d.preprocessing import PreparedPhoto
from genblocks.errors import InputError
from genblocks.media import label_frames, make_strip, write_image, write_video
from genblocks.render3d.mesh import write_obj

__all__ = ["VIDEO_FORMATS", "stylize_photo"]

VIDEO_FORMATS = ("gif", "mp4")
"""Containers of the orbit video."""


def stylize_photo(
    pipeline: AgileGAN3DPipeline,
    photo: PreparedPhoto,
    out_dir: str | os.PathLike,
    views: int | None = None,
    label: str = "",
    video_format: str = "gif",
    mesh: bool = False,
) -> tuple[AgileGAN3DOutput, dict[str, Any]]:
    """Encode ``photo``, render the stylised head on an orbit of ``views`` cameras and write the files.

    Args:
        pipeline: The style.
        photo: The prepared photo (:func:`agilegan3d.preprocessing.prepare_photo`).
        out_dir: Output folder (created).
        views: Orbit cameras (default ``inference.views``).
        label: Appended to every caption (e.g. ``"random weights"``).
        video_format: ``"gif"`` (``orbit.gif``) or ``"mp4"`` (``orbit.mp4``, H.264; needs imageio-ffmpeg).
        mesh: Also write ``mesh.obj`` (``inference.mesh_resolution`` and ``inference.mesh_level``; needs
            scikit-image).

    Returns:
        The pipeline output and the summary written to ``summary.json``.

    Raises:
        InputError: An unknown ``video_format``; for ``mesh``, scikit-image missing or a level the density never
            crosses.
    """
    if video_format not in VIDEO_FORMATS:
        raise InputError(f"video format {video_format!r}: expected one of {', '.join(VIDEO_FORMATS)}")
    inference = pipeline.config.inference
    count = views if views is not None else inference.views
    cameras = orbit_cameras(count, inference.yaw, inference.pitch)
    size = pipeline.encoder.input_size
    image = resize_like(photo.image.unsqueeze(0), size)
    output = pipeline(image, cameras=cameras, input_cameras=photo.camera.unsqueeze(0))
    # the mesh first: a level its density never crosses is refused before anything is written
    shape = pipeline.mesh(output.ws) if mesh else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = output.images[0]
    suffix = f" ({label})" if label else ""
    for k, frame in enumerate(frames):
        write_image(out / "views" / f"view_{k:03d}.png", frame)
    t = torch.arange(count, dtype=torch.float32) / count
    yaws = [math.degrees(inference.yaw * math.sin(2 * math.pi * float(v))) for v in t]
    height = max(128, frames.shape[-1])
    strip = make_strip(
        [photo.image, *frames],
        [f"input{suffix}", *(f"stylised, yaw {y:+.0f}°{suffix}" for y in yaws)],
        title=f"AgileGAN3D style '{pipeline.config.style}'{suffix}",
        height=height,
    )
    write_image(out / "strip.png", strip)
    still = resize_like(photo.image.unsqueeze(0), frames.shape[-1])[0]
    gif = label_frames([still, frames], ["input", f"stylised orbit{suffix}"], height=height)
    orbit = f"orbit.{video_format}"
    write_video(out / orbit, gif, fps=inference.fps)
    files = ["strip.png", orbit, *(f"views/view_{k:03d}.png" for k in range(count))]
    mesh_summary = None
    if shape is not None:
        vertices, faces, level = shape
        write_obj(out / "mesh.obj", vertices, faces)
        files.append("mesh.obj")
        mesh_summary = {"vertices": len(vertices), "faces": len(faces), "level": level}
    summary = {
        "style": pipeline.config.style,
        "views": count,
        "image_shape": list(output.images.shape),
        "input_camera": {"yaw": photo.yaw, "pitch": photo.pitch, "how": photo.reason},
        "files": files,
        "mesh": mesh_summary,
        "label": label,
        "value_range": [float(np.round(float(frames.min()), 4)), float(np.round(float(frames.max()), 4))],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return output, summary
