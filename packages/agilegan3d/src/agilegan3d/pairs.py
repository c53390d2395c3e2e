"""Stage B of AgileGAN3D: the 3-D-aware augmentation of the style exemplars (spec agilegan3d §3 "Pair synthesis").

Tuple i draws a latent z and a camera (yaw, pitch) in the configured ranges from a generator seeded with
``seed + i``, renders ``x_real = G3D(ws, c)`` (``ws = mapping(z, c)``, truncated) and stylises it with the 2-D prior:
``x_sty = prior(x_real)``. Every stylised image thus comes with an exact camera label and its paired real face — the
two things the paper calls critical for the 3-D stage. Files, in ``folder``::

    00000.png         x_sty (uint8 RGB)
    00000_real.png    x_real
    00000.npz         ws (num_ws, w_dim) float32, c (25,) float32, yaw, pitch

The ``.npz`` is written last (atomically), so a tuple with an ``.npz`` is complete and a resumed run skips it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from agilegan3d.config import PairsConfig
from genblocks.errors import InputError
from genblocks.gan import TriPlaneGenerator
from genblocks.media import read_image, to_tensor, to_uint8, write_image
from genblocks.render3d import FFHQ_CAMERA, camera_label, intrinsics_matrix, orbit_cam2world

__all__ = ["PairDataset", "cameras_at", "pair_draw", "synthesize_pairs"]

logger = logging.getLogger(__name__)


def cameras_at(yaw: Tensor, pitch: Tensor, focal: float = FFHQ_CAMERA.focal) -> Tensor:
    """EG3D camera labels (N, 25) on the FFHQ orbit at yaw/pitch offsets (N,) from frontal, in radians."""
    cam2world = orbit_cam2world(yaw + math.pi / 2, pitch + math.pi / 2, FFHQ_CAMERA.radius, FFHQ_CAMERA.pivot)
    return camera_label(cam2world, intrinsics_matrix(focal))


def pair_draw(config: PairsConfig, index: int, z_dim: int) -> tuple[Tensor, float, float]:
    """The latent z (z_dim,) and the yaw, pitch offsets of tuple ``index`` (from a generator seeded ``seed + index``)."""
    generator = torch.Generator().manual_seed(config.seed + index)
    z = torch.randn(z_dim, generator=generator)
    if config.distribution == "uniform":
        angles = (torch.rand(2, generator=generator) * 2 - 1) * torch.tensor([config.yaw, config.pitch])
    else:
        angles = torch.randn(2, generator=generator) * torch.tensor([config.yaw, config.pitch])
    return z, float(angles[0]), float(angles[1])


def _save_npz(path: Path, arrays: dict[str, Any]) -> None:
    partial = path.with_suffix(".tmp.npz")
    with open(partial, "wb") as handle:
        np.savez(handle, **arrays)
    os.replace(partial, path)


@torch.no_grad()
def synthesize_pairs(
    generator: TriPlaneGenerator,
    prior: Callable[[Tensor], Tensor],
    config: PairsConfig,
    folder: str | os.PathLike,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``config.n`` tuples (x_sty, x_real, ws, c) into ``folder``, skipping the complete ones.

    Args:
        generator: G3D (run in eval mode, constant noise: a tuple re-renders exactly from its ws and c).
        prior: The 2-D stylisation, images (N, 3, H, W) in [-1, 1] -> same shape.
        config: Counts, ranges, truncation, batch size, seed.
        folder: Output folder (created).
        progress: ``progress(done, total)`` after each batch.

    Returns:
        ``folder``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    generator.eval()
    todo = [i for i in range(config.n) if not (folder / f"{i:05d}.npz").is_file()]
    done = config.n - len(todo)
    for start in range(0, len(todo), config.batch_size):
        indices = todo[start : start + config.batch_size]
        draws = [pair_draw(config, i, generator.z_dim) for i in indices]
        z = torch.stack([d[0] for d in draws])
        yaw = torch.tensor([d[1] for d in draws])
        pitch = torch.tensor([d[2] for d in draws])
        device = next(generator.parameters()).device
        z, c = z.to(device), cameras_at(yaw, pitch).to(device)
        ws = generator.mapping(z, c, truncation_psi=config.truncation_psi)
        real = generator.synthesis(ws, c, noise_mode="const")["image"].clamp(-1, 1)
        styled = prior(real).clamp(-1, 1)
        for k, index in enumerate(indices):
            stem = folder / f"{index:05d}"
            write_image(stem.with_suffix(".png"), to_uint8(styled[k]))
            write_image(folder / f"{index:05d}_real.png", to_uint8(real[k]))
            arrays = {
                "ws": ws[k].cpu().numpy().astype(np.float32),
                "c": c[k].cpu().numpy().astype(np.float32),
                "yaw": np.float32(yaw[k]),
                "pitch": np.float32(pitch[k]),
            }
            _save_npz(stem.with_suffix(".npz"), arrays)
        done += len(indices)
        logger.info("pairs: %d / %d", done, config.n)
        if progress is not None:
            progress(done, config.n)
    return folder


class PairDataset(Dataset[dict[str, Tensor]]):
    """The tuples of a pairs folder: ``{"image": x_sty (3, H, W), "real": x_real (3, H, W)`` in [-1, 1],
    ``"c": (25,), "ws": (num_ws, w_dim)}``.

    Args:
        folder: A folder written by :func:`synthesize_pairs`.
        limit: Use the first ``limit`` tuples only.

    Raises:
        InputError: No complete tuple in ``folder``.
    """

    def __init__(self, folder: str | os.PathLike, limit: int | None = None) -> None:
        self.folder = Path(folder)
        self.stems = sorted(p.with_suffix("") for p in self.folder.glob("[0-9]*.npz") if ".tmp" not in p.name)
        if limit is not None:
            self.stems = self.stems[:limit]
        if not self.stems:
            raise InputError(f"pairs folder {self.folder}: no tuples (run the pairs stage first)")

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        stem = self.stems[index]
        with np.load(stem.with_suffix(".npz")) as data:
            ws, c = torch.from_numpy(data["ws"]), torch.from_numpy(data["c"])
        image = to_tensor(read_image(stem.with_suffix(".png")))
        real = to_tensor(read_image(stem.parent / f"{stem.name}_real.png"))
        return {"image": image, "real": real, "c": c, "ws": ws}
