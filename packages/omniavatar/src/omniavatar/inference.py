"""``omniavatar render``: one head from a seed and 3DMM controls -> labelled images, a camera or expression path (GIF /
MP4), depth, and optionally a mesh. Files written into the output folder:

- ``image.png``: the requested sample; ``depth.png``: its depth (near = bright); ``mask.png``: accumulated opacity;
- ``grid.png``: labelled grid, rows = cameras (yaw −, 0, +), columns = the requested expression and three of the
  demo's variations (a random expression from the label pool or N(0, 1), plus the demo's jaw noise), ws fixed;
- ``orbit.gif`` / ``expression.gif`` (or ``.mp4``) with ``--path``; ``mesh.obj`` with ``--mesh``;
- ``summary.json``: the settings and the files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from genblocks.errors import InputError
from genblocks.media import label_frames, make_labelled_grid, write_image, write_video
from omniavatar.config import FlameLayout
from omniavatar.pipeline_omniavatar import OmniAvatarPipeline, write_obj

__all__ = ["RenderRequest", "parse_vector", "render_to_folder"]


def parse_vector(text: str | None, size: int, name: str, layout: FlameLayout) -> Tensor | None:
    """A comma-separated list (or a ``.npy`` file) of exactly `size` numbers; None passes through.

    Raises:
        InputError: wrong count or not numbers (the message names the layout).
    """
    if text is None:
        return None
    try:
        if text.endswith(".npy"):
            values = np.load(text, allow_pickle=False).astype(np.float32).reshape(-1)
        else:
            values = np.array([float(v) for v in text.split(",") if v.strip()], dtype=np.float32)
    except (ValueError, OSError) as error:
        raise InputError(f"--{name} {text!r}: expected {size} comma-separated numbers ({error})") from None
    if values.shape != (size,):
        raise InputError(f"--{name}: expected {size} values (layout {layout.describe()}), got {values.size}")
    return torch.from_numpy(values)


@dataclass
class RenderRequest:
    """What to render.

    Args:
        seed: The z seed.
        features: 3DMM features `(F,)`.
        yaw, pitch: Camera offsets from the demo's view (radians).
        path: ``none``, ``orbit`` (camera) or ``expression`` (neutral -> the requested features).
        video_format: ``gif`` or ``mp4``.
        mesh: Also export ``mesh.obj`` (marching cubes on the density; needs scikit-image).
        label_pool: Rows of 3DMM features the grid draws variations from (else N(0, 1) expressions).
        random_weights: Label the pictures "random weights".
        camera: A camera label `(25,)` (cam2world 16, intrinsics 9, e.g. a labels row's) for ``image.png``,
            ``depth.png``, ``mask.png`` and the mesh instead of `yaw` / `pitch`; the grid and the paths keep the
            demo's cameras. *optional*.
    """

    seed: int
    features: Tensor
    yaw: float = 0.0
    pitch: float = 0.0
    path: Literal["none", "orbit", "expression"] = "none"
    video_format: Literal["gif", "mp4"] = "gif"
    mesh: bool = False
    label_pool: Tensor | None = None
    random_weights: bool = True
    camera: Tensor | None = None


def _depth_picture(depth: Tensor) -> Tensor:
    """Depth `(1, r, r)` -> a grey image in [−1, 1], near = bright."""
    low, high = depth.amin(), depth.amax()
    normalised = (high - depth) / (high - low).clamp_min(1e-8)
    return (normalised * 2 - 1).expand(3, -1, -1)


def _variations(pipeline: OmniAvatarPipeline, request: RenderRequest, count: int) -> Tensor:
    """The demo's grouped samples: other expressions (pool rows or N(0, 1)) with the sample's shape, plus jaw noise."""
    layout = pipeline.layout
    generator = torch.Generator().manual_seed(request.seed)
    rows = []
    for _ in range(count):
        if request.label_pool is not None:
            row = request.label_pool[int(torch.randint(len(request.label_pool), (), generator=generator))].clone()
        else:
            row = torch.zeros(layout.feature_dim)
            row[layout.shape : layout.shape + layout.expression] = torch.randn(layout.expression, generator=generator)
        row[: layout.shape] = request.features[: layout.shape]
        row[-3:] += torch.randn(3, generator=generator) * torch.tensor(pipeline.config.render.jaw_noise)
        rows.append(row)
    return torch.stack(rows)


def render_to_folder(pipeline: OmniAvatarPipeline, request: RenderRequest, out: Path) -> dict[str, Any]:
    """Render `request` into `out` (module docstring); returns the summary written to ``summary.json``."""
    out.mkdir(parents=True, exist_ok=True)
    tag = " (random weights)" if request.random_weights else ""
    features = request.features[None]
    if request.camera is None:
        sample = pipeline([request.seed], features, yaw=request.yaw, pitch=request.pitch)
    else:
        ws = pipeline.map(pipeline.latents([request.seed]), features)
        sample = pipeline.render(ws, pipeline.labels(request.camera.reshape(1, 25), features))
    files = [
        write_image(out / "image.png", sample.images[0]),
        write_image(out / "depth.png", _depth_picture(sample.depth[0])),
        write_image(out / "mask.png", (sample.mask[0] * 2 - 1).expand(3, -1, -1)),
    ]
    columns = torch.cat([features, _variations(pipeline, request, 3)])
    ws = pipeline.map(pipeline.latents([request.seed]), features).expand(len(columns), -1, -1)
    r = pipeline.config.render
    rows, row_labels = [], []
    for yaw in (-r.yaw_range, 0.0, r.yaw_range):
        cameras = pipeline.cameras(
            torch.full((len(columns),), request.yaw + yaw), torch.full((len(columns),), request.pitch + r.pitch_offset)
        )
        images = pipeline.render(ws, pipeline.labels(cameras, columns)).images
        rows.append(list(images))
        row_labels.append(f"yaw {request.yaw + yaw:+.2f}")
    captions = [["requested", "variation 1", "variation 2", "variation 3"]] * len(rows)
    grid = make_labelled_grid(
        rows,
        captions,
        row_labels,
        title=f"OmniAvatar seed {request.seed}: ws fixed, expression varies{tag}",
        height=max(128, pipeline.generator.img_resolution),
    )
    files.append(write_image(out / "grid.png", grid))
    if request.path != "none":
        if request.path == "orbit":
            frames = pipeline.orbit(request.seed, features).images
            caption = f"camera orbit{tag}"
        else:
            frames = pipeline.expression_path(
                request.seed, torch.zeros_like(request.features), request.features
            ).images
            caption = f"neutral -> requested expression{tag}"
        labelled = label_frames(frames, caption, height=max(128, pipeline.generator.img_resolution))
        files.append(write_video(out / f"{request.path}.{request.video_format}", labelled, fps=r.fps))
    if request.mesh:
        vertices, faces = pipeline.mesh(sample.ws, features)
        files.append(write_obj(out / "mesh.obj", vertices, faces))
    summary = {
        "seed": request.seed,
        "yaw": request.yaw,
        "pitch": request.pitch,
        "features": request.features.tolist(),
        "camera": None if request.camera is None else request.camera.tolist(),
        "layout": pipeline.layout.describe(),
        "truncation_psi": r.truncation_psi,
        "noise_mode": r.noise_mode,
        "random_weights": request.random_weights,
        "files": [p.name for p in files],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
