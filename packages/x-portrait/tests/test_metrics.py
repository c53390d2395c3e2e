"""Metrics: landmark expression and pose distances, per-frame image metrics, identity similarity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from xp_testing import face_landmarks

from genblocks.faces import Face, FaceAnalyzer
from x_portrait.metrics import evaluate_animation, expression_distance, frame_metrics, pose_descriptors, pose_distance
from x_portrait.preprocessing import similarity_matrix, transform_landmarks


def test_expression_distance_ignores_pose_and_sees_expression() -> None:
    driving = np.stack([face_landmarks(seed=i) for i in range(3)])
    moved = np.stack([transform_landmarks(d, similarity_matrix((32, 32), 0.3, 1.2, (4, -2))) for d in driving])
    np.testing.assert_allclose(expression_distance(moved, driving), 0.0, atol=1e-9)
    opened = moved.copy()
    opened[:, 57:60, 1] += 3.0  # lower lip down: an expression change
    assert (expression_distance(opened, driving) > 0.01).all()
    assert math.isnan(expression_distance(np.full((1, 68, 2), np.nan), driving[:1])[0])


def test_pose_distance_sees_rotation() -> None:
    face = face_landmarks()[None]
    rolled = transform_landmarks(face, similarity_matrix((32, 32), math.radians(10)))
    np.testing.assert_allclose(pose_descriptors(rolled)[0, 0] - pose_descriptors(face)[0, 0], 10.0, atol=1e-6)
    assert pose_distance(rolled, face)[0] == pytest.approx(1.0, abs=1e-6)  # 10 degrees x 0.1


def test_frame_metrics_on_identical_and_shifted_frames() -> None:
    frames = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    same = frame_metrics(frames, frames)
    assert (
        same["l1"] == [0.0, 0.0] and all(math.isinf(v) for v in same["psnr"]) and same["ssim"] == pytest.approx([1, 1])
    )
    noisy = (frames + 0.1).clamp(0, 1)
    assert all(0 < v < 0.1 for v in frame_metrics(noisy, frames)["l1"])


class _Embedder(FaceAnalyzer):
    """Every image holds one face; its embedding is the image's mean colour."""

    def analyze(self, image: np.ndarray, boxes: np.ndarray | None = None, embed: bool = True) -> list[Face]:
        landmarks = face_landmarks(center=(image.shape[1] / 2, image.shape[0] / 2)).astype(np.float32)
        embedding = image.reshape(-1, 3).mean(0).astype(np.float32) if embed else None
        box = np.array([0, 0, image.shape[1], image.shape[0]], np.float32)
        return [Face(box=box, score=1.0, landmarks5=landmarks[:5], landmarks68=landmarks, embedding=embedding)]


def test_evaluate_animation_with_a_face_analyzer() -> None:
    frames = torch.full((2, 3, 32, 32), 0.5)
    frames[:, 0] = 0.9
    metrics = evaluate_animation(frames, frames * 0.9, source=frames[0], analyzer=_Embedder())
    assert metrics.identity == pytest.approx(1.0) and metrics.face_rate == 1.0
    assert metrics.expression == pytest.approx(0.0, abs=1e-9) and metrics.pose == pytest.approx(0.0, abs=1e-9)
    assert metrics.to_dict()["psnr"] == pytest.approx(10 * math.log10(1 / ((0.09**2 + 0.05**2 * 2) / 3)), rel=1e-4)
