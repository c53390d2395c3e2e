"""Tiny seeded FG-Net models and a synthetic AU task for tests, the smoke check, the demo and the benchmarks.

The synthetic task (spec fg-net §9): 68-point landmark sets jittered around a reference face, random AU labels, target
heatmaps from `fg_net.heatmaps.au_heatmaps`, and images in which every active AU paints a blob at its own landmark
centres (in the colour channel ``k % 3``), so the labels are visible and learnable from the image alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from fg_net.config import FGNetConfig, tiny_config
from fg_net.heatmaps import au_heatmaps
from fg_net.modeling_fg_net import FGNet

__all__ = ["REFERENCE_LANDMARKS_256", "SyntheticAUDataset", "SyntheticAUTask", "synthetic_au_task", "tiny_fg_net"]

REFERENCE_LANDMARKS_256 = np.array(
    [
        [61, 128], [62, 146], [65, 162], [68, 178], [72, 195], [82, 209], [96, 221], [110, 231], [127, 234],
        [144, 231], [160, 222], [174, 210], [184, 195], [190, 179], [194, 161], [196, 144], [197, 126],
        [70, 113], [78, 104], [91, 101], [103, 103], [115, 108], [143, 109], [155, 104], [166, 102], [179, 104],
        [187, 113], [129, 122], [130, 134], [130, 146], [130, 158], [115, 165], [122, 167], [130, 169], [137, 166],
        [144, 164], [84, 122], [92, 117], [101, 117], [110, 125], [100, 126], [91, 126], [147, 125], [155, 118],
        [165, 117], [173, 123], [165, 126], [156, 126], [95, 178], [107, 177], [120, 177], [129, 178], [137, 177],
        [149, 177], [161, 177], [150, 193], [138, 200], [128, 201], [118, 200], [106, 193], [99, 179], [119, 182],
        [128, 183], [137, 182], [157, 179], [137, 192], [128, 193], [119, 192],
    ],
    dtype=np.float32,
)  # fmt: skip
"""dlib's 68 landmarks of scikit-image's ``astronaut`` after FFHQ alignment to 256 px (detected again on the aligned
crop, rounded to whole pixels), shape (68, 2), (x, y): a realistic reference face for synthetic data."""


def tiny_fg_net(seed: int = 0, config: FGNetConfig | None = None) -> FGNet:
    """A seeded tiny FG-Net (`fg_net.config.tiny_config` unless ``config`` is given), in eval mode.

    Args:
        seed (`int`, defaults to 0): ``torch.manual_seed`` before building.
        config (`FGNetConfig`, *optional*): the model config.

    Returns:
        `FGNet`.
    """
    torch.manual_seed(seed)
    return FGNet(config if config is not None else tiny_config()).eval()


@dataclass(frozen=True)
class SyntheticAUTask:
    """A synthetic AU detection set.

    Args:
        images (`Tensor` of shape `(N, 3, S, S)`): inputs in [-1, 1].
        labels (`Tensor` of shape `(N, K)`): 0/1 AU labels, int64.
        landmarks (`Tensor` of shape `(N, 68, 2)`): landmark sets in 256-px aligned coordinates.
        heatmaps (`Tensor` of shape `(N, K, T, T)`): target heatmaps.
        aus (`tuple[int, ...]`): the K AUs.
    """

    images: Tensor
    labels: Tensor
    landmarks: Tensor
    heatmaps: Tensor
    aus: tuple[int, ...]


def synthetic_au_task(
    count: int,
    aus: Sequence[int] = (1, 2, 6, 12),
    image_size: int = 32,
    heatmap_size: int = 16,
    sigma: float = 2.5,
    jitter: float = 6.0,
    point_noise: float = 1.0,
    active_probability: float = 0.5,
    blob_strength: float = 1.0,
    image_noise: float = 0.05,
    seed: int = 0,
) -> SyntheticAUTask:
    """Build a synthetic AU task from known landmark sets and labels.

    Landmarks: `REFERENCE_LANDMARKS_256` shifted by a per-sample offset (uniform in ``[-jitter, jitter]`` px) plus
    per-point Gaussian noise. Labels: independent Bernoulli(``active_probability``). Targets: `au_heatmaps` at
    ``heatmap_size`` (landmark scale ``heatmap_size / 256``). Images: Gaussian noise plus, for each active AU k, its
    positive heatmap rendered at ``image_size`` (sigma scaled from the heatmap) times ``blob_strength`` in channel
    ``k % 3``.

    Args:
        count (`int`): samples.
        aus (`Sequence[int]`, defaults to `(1, 2, 6, 12)`): the AUs.
        image_size (`int`, defaults to 32): image side.
        heatmap_size (`int`, defaults to 16): target side.
        sigma (`float`, defaults to 2.5): target Gaussian sigma in heatmap pixels.
        jitter (`float`, defaults to 6.0): maximum global landmark shift (256-px units).
        point_noise (`float`, defaults to 1.0): per-point landmark noise std (256-px units).
        active_probability (`float`, defaults to 0.5): probability that an AU is active.
        blob_strength (`float`, defaults to 1.0): amplitude of an active AU's blob in the image.
        image_noise (`float`, defaults to 0.05): std of the image noise.
        seed (`int`, defaults to 0): generator seed.

    Returns:
        `SyntheticAUTask`.
    """
    if count < 1:
        raise ValueError(f"`count` must be positive, got {count}.")
    generator = torch.Generator().manual_seed(seed)
    aus = tuple(aus)
    reference = torch.from_numpy(REFERENCE_LANDMARKS_256).double()
    shift = (torch.rand(count, 1, 2, generator=generator, dtype=torch.float64) * 2 - 1) * jitter
    noise = torch.randn(count, 68, 2, generator=generator, dtype=torch.float64) * point_noise
    landmarks = reference + shift + noise
    labels = (torch.rand(count, len(aus), generator=generator) < active_probability).long()
    heatmaps = au_heatmaps(landmarks, labels, aus, size=heatmap_size, sigma=sigma, landmark_scale=heatmap_size / 256)
    blobs = au_heatmaps(
        landmarks,
        labels,
        aus,
        size=image_size,
        sigma=sigma * image_size / heatmap_size,
        landmark_scale=image_size / 256,
    ).clamp(min=0.0)
    images = torch.randn(count, 3, image_size, image_size, generator=generator) * image_noise
    for k in range(len(aus)):
        images[:, k % 3] += blob_strength * blobs[:, k]
    return SyntheticAUTask(images.clamp(-1.0, 1.0), labels, landmarks.float(), heatmaps, aus)


class SyntheticAUDataset(Dataset):
    """A `SyntheticAUTask` as dict samples ``{"image", "labels", "heatmap"}`` (the batch layout of
    `fg_net.training.FGNetTrainingModule`).

    Args:
        task (`SyntheticAUTask`): the data.
    """

    def __init__(self, task: SyntheticAUTask) -> None:
        self.task = task

    def __len__(self) -> int:
        return self.task.images.shape[0]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {
            "image": self.task.images[index],
            "labels": self.task.labels[index],
            "heatmap": self.task.heatmaps[index],
        }
