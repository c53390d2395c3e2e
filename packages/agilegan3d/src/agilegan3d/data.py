"""AgileGAN3D's training data: the style exemplars (a folder, or a built-in synthetic toon style), per-sample seeds
for the encoder's synthetic renders, and the shuffled loader every stage hands to ``genblocks.training.fit`` (which
replaces its sampler with the resumable one).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from agilegan3d.augment import resize_like
from agilegan3d.modeling_agilegan3d import toon_filter
from agilegan3d.pairs import cameras_at
from genblocks.errors import InputError
from genblocks.gan import TriPlaneGenerator
from genblocks.media import read_image, to_tensor

__all__ = ["ExemplarDataset", "Exemplars", "SeedDataset", "StageDataModule", "load_exemplars", "synthetic_exemplars"]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Exemplars:
    """The style exemplars as a batch.

    Attributes:
        images: (N, 3, R, R) in [-1, 1].
        hashes: SHA-256 of each source file (or of the synthetic pixels), for ``config.json``.
        notes: What was changed (resizes), one line each.
    """

    images: Tensor
    hashes: list[str]
    notes: list[str]


def load_exemplars(folder: str | os.PathLike, resolution: int, min_count: int = 5) -> Exemplars:
    """Read a folder of style exemplars, resized (with a note) to ``resolution`` squares.

    Raises:
        InputError: Not a folder, or fewer than ``min_count`` images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--exemplars {folder}: expected a folder of style images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if len(files) < min_count:
        raise InputError(
            f"--exemplars {folder}: {len(files)} style images, expected at least {min_count} (the paper uses about 20)"
        )
    images, hashes, notes = [], [], []
    for path in files:
        array = read_image(path)
        hashes.append(hashlib.sha256(path.read_bytes()).hexdigest())
        tensor = to_tensor(array).unsqueeze(0)
        h, w = tensor.shape[-2:]
        if h != w:
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            tensor = tensor[..., top : top + side, left : left + side]
            notes.append(f"{path.name}: {w}x{h} centre-cropped to {side}x{side}")
        if tensor.shape[-1] != resolution:
            notes.append(f"{path.name}: resized {tensor.shape[-1]} -> {resolution}")
            tensor = resize_like(tensor, resolution)
        images.append(tensor[0].clamp(-1, 1))
    return Exemplars(torch.stack(images), hashes, notes)


@torch.no_grad()
def synthetic_exemplars(generator: TriPlaneGenerator, count: int, resolution: int, seed: int = 1234) -> Exemplars:
    """A built-in style with no files: :func:`~agilegan3d.modeling_agilegan3d.toon_filter` of ``count`` G3D renders at
    random cameras (for trying the package and for tests; label anything made from it as such)."""
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(count, generator.z_dim, generator=rng)
    angles = (torch.rand(2, count, generator=rng) * 2 - 1) * torch.tensor([[0.5], [0.2]])
    device = next(generator.parameters()).device
    c = cameras_at(angles[0], angles[1]).to(device)
    images = generator.eval()(z.to(device), c, truncation_psi=0.7, noise_mode="const")["image"].cpu()
    images = resize_like(toon_filter(images.clamp(-1, 1)), resolution)
    hashes = [hashlib.sha256(image.numpy().tobytes()).hexdigest() for image in images]
    return Exemplars(images, hashes, [f"{count} synthetic exemplars (toon filter of random G3D renders)"])


class SeedDataset(Dataset[Tensor]):
    """Item i is the integer ``seed + i`` (as a 0-d tensor): per-sample draws made from it are the same on resume."""

    def __init__(self, length: int, seed: int = 0) -> None:
        self.length, self.seed = length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Tensor:
        return torch.tensor(self.seed + index)


class StageDataModule(L.LightningDataModule):
    """One shuffled training loader over ``dataset`` (fit replaces its sampler with the resumable one)."""

    def __init__(self, dataset: Dataset[Any], batch_size: int) -> None:
        super().__init__()
        self.dataset, self.batch_size = dataset, batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True, drop_last=False)


class ExemplarDataset(Dataset[dict[str, Tensor]]):
    """Exemplars as ``{"image": (3, R, R)}``, with a camera ``"c"`` per exemplar for the naive 3-D ablation."""

    def __init__(self, images: Tensor, cameras: Tensor | None = None) -> None:
        self.images, self.cameras = images, cameras

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        item = {"image": self.images[index]}
        if self.cameras is not None:
            item["c"] = self.cameras[index]
        return item
