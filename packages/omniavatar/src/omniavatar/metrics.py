"""Evaluation of a generator (spec §6's likely metrics; the paper's tables could not be read):

- **control error**: mean |(β̂, θ̂) − (β, θ)| of a :class:`~omniavatar.training.ControlEstimator` (or any callable
  image -> values) on images rendered at random expressions and poses;
- **identity consistency**: mean cosine similarity between a face embedder's features (any callable
  images `(N, 3, H, W)` in [−1, 1] -> `(N, D)`, e.g. ArcFace weights you have) of one head across expressions and
  views, against different heads;
- **depth consistency**: symmetric Chamfer distance between the surface points two views of one head unproject
  (depth · ray, opacity > 0.5);
- **FID / KID** between feature sets of real and generated images (the feature extractor is yours).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from genblocks.metrics import frechet_distance, kernel_inception_distance
from genblocks.render3d.cameras import split_camera_label
from genblocks.render3d.rays import sample_rays
from omniavatar.pipeline_omniavatar import OmniAvatarOutput, OmniAvatarPipeline

__all__ = [
    "chamfer_distance",
    "control_error",
    "depth_consistency",
    "frechet_distance",
    "identity_consistency",
    "kernel_inception_distance",
    "surface_points",
]

Embedder = Callable[[Tensor], Tensor]


def _random_features(pipeline: OmniAvatarPipeline, count: int, seed: int) -> Tensor:
    layout = pipeline.layout
    generator = torch.Generator().manual_seed(seed)
    features = torch.zeros(count, layout.feature_dim)
    start = layout.shape
    features[:, start : start + layout.expression] = torch.randn(count, layout.expression, generator=generator)
    features[:, -6:] = torch.randn(count, 6, generator=generator) * torch.tensor(
        [0.02] * 3 + list(pipeline.config.render.jaw_noise)
    )
    return features


@torch.no_grad()
def control_error(
    pipeline: OmniAvatarPipeline, estimator: Embedder, count: int = 8, seed: int = 0
) -> dict[str, float]:
    """Mean absolute error of re-estimated expression and pose against the inputs, over `count` heads."""
    features = _random_features(pipeline, count, seed)
    out = pipeline(list(range(seed, seed + count)), features)
    estimate = estimator(out.images)
    target = features[:, -pipeline.layout.pose_dim :]
    error = (estimate.cpu() - target).abs()
    e = pipeline.layout.expression
    return {"expression": float(error[:, :e].mean()), "pose": float(error[:, e:].mean())}


@torch.no_grad()
def identity_consistency(
    pipeline: OmniAvatarPipeline, embedder: Embedder, heads: int = 4, variations: int = 3, seed: int = 0
) -> dict[str, float]:
    """Cosine similarity of embeddings: the same head over expressions and views (``same``) and different heads at the
    neutral frontal view (``different``)."""
    same = []
    neutral = []
    for head in range(heads):
        features = _random_features(pipeline, variations, seed + head)
        features[0] = 0
        yaw = torch.linspace(-pipeline.config.render.yaw_range, pipeline.config.render.yaw_range, variations)
        out = pipeline([seed + head] * variations, features, yaw=yaw)
        embedding = torch.nn.functional.normalize(embedder(out.images).float(), dim=-1)
        similarity = embedding @ embedding.T
        same.append(float(similarity[~torch.eye(variations, dtype=torch.bool)].mean()))
        neutral.append(embedding[0])
    stacked = torch.stack(neutral)
    cross = stacked @ stacked.T
    different = float(cross[~torch.eye(heads, dtype=torch.bool)].mean()) if heads > 1 else float("nan")
    return {"same": float(np.mean(same)), "different": different}


def surface_points(output: OmniAvatarOutput, index: int = 0, threshold: float = 0.5) -> Tensor:
    """World points `(P, 3)` of the rendered surface of sample `index`: depth × ray where the opacity > threshold."""
    labels = output.labels[index : index + 1, :25]
    cam2world, intrinsics = split_camera_label(labels)
    resolution = output.depth.shape[-1]
    origins, directions = sample_rays(cam2world, intrinsics, resolution)
    depth = output.depth[index].reshape(-1, 1)
    mask = output.mask[index].reshape(-1) > threshold
    return (origins[0] + depth * directions[0])[mask]


def chamfer_distance(a: Tensor, b: Tensor) -> float:
    """Symmetric mean nearest-neighbour distance between point sets `(P, 3)` and `(Q, 3)` (inf when one is empty)."""
    if len(a) == 0 or len(b) == 0:
        return float("inf")
    distances = torch.cdist(a, b)
    return float(0.5 * (distances.min(dim=1).values.mean() + distances.min(dim=0).values.mean()))


@torch.no_grad()
def depth_consistency(pipeline: OmniAvatarPipeline, seed: int = 0, yaw: float = 0.25, threshold: float = 0.5) -> float:
    """Chamfer distance between the surfaces one head shows from yaw −`yaw` and +`yaw` (same ws and features)."""
    features = torch.zeros(2, pipeline.layout.feature_dim)
    out = pipeline([seed, seed], features, yaw=torch.tensor([-yaw, yaw]))
    return chamfer_distance(surface_points(out, 0, threshold), surface_points(out, 1, threshold))
