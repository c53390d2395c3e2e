"""Metrics: FID/KID formulas, Chamfer and unprojected surfaces, control error and identity consistency plumbing."""

from __future__ import annotations

import math

import numpy as np
import torch

from omniavatar.config import OmniAvatarConfig
from omniavatar.metrics import (
    chamfer_distance,
    control_error,
    depth_consistency,
    frechet_distance,
    identity_consistency,
    kernel_inception_distance,
    surface_points,
)
from omniavatar.pipeline_omniavatar import OmniAvatarOutput, OmniAvatarPipeline


def test_frechet_and_kid() -> None:
    rng = np.random.RandomState(0)
    real = rng.randn(400, 4)
    assert abs(frechet_distance(real, real)) < 1e-6
    assert math.isclose(frechet_distance(real, real + 1.0), 4.0, rel_tol=1e-6)
    same = kernel_inception_distance(real, rng.randn(400, 4))
    shifted = kernel_inception_distance(real, rng.randn(400, 4) + 1.0)
    assert abs(same) < 0.05 < shifted


def test_surface_points_unproject_depth(tiny_config: OmniAvatarConfig) -> None:
    pipeline = OmniAvatarPipeline.from_config(tiny_config)
    labels = pipeline.labels(pipeline.cameras(0.0, 0.0), torch.zeros(1, tiny_config.flame.feature_dim))
    depth = torch.full((1, 1, 4, 4), 2.5)
    mask = torch.ones(1, 1, 4, 4)
    output = OmniAvatarOutput(depth, depth, depth, mask, torch.zeros(1), labels)
    points = surface_points(output)
    origin = labels[0, :16].reshape(4, 4)[:3, 3]
    torch.testing.assert_close((points - origin).norm(dim=-1), torch.full((16,), 2.5))
    assert chamfer_distance(points, points) == 0.0
    assert chamfer_distance(points, points + torch.tensor([0.1, 0.0, 0.0])) > 0.05


def test_generator_metrics_run(tiny_config: OmniAvatarConfig) -> None:
    pipeline = OmniAvatarPipeline.from_config(tiny_config)
    pose_dim = tiny_config.flame.pose_dim
    errors = control_error(pipeline, lambda images: torch.zeros(len(images), pose_dim), count=2)
    assert errors["expression"] > 0.3 and errors["pose"] > 0.0
    identity = identity_consistency(pipeline, lambda images: images.flatten(1), heads=2, variations=2)
    assert -1 <= identity["different"] <= 1 and identity["same"] > 0.5
    assert depth_consistency(pipeline, yaw=0.0, threshold=-1.0) < 1e-4
    assert depth_consistency(pipeline, yaw=0.3, threshold=-1.0) > 1e-3
