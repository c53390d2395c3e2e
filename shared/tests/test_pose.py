"""Camera estimation from face landmarks: recovers the yaw/pitch that produced synthetic landmarks, whatever the
crop, scale and roll, and gives a near-frontal camera for the astronaut's real dlib landmarks."""

from __future__ import annotations

import math

import pytest
import torch

from genblocks.errors import InputError
from genblocks.render3d.cameras import split_camera_label
from genblocks.render3d.pose import GENERIC_FACE_POINTS, LANDMARK_68_INDICES, estimate_camera, project_points


def synthetic_landmarks(yaw: float, pitch: float, roll: float = 0.0, scale: float = 300.0) -> torch.Tensor:
    """68 landmarks whose six pose points are the generic head seen at (yaw, pitch), rolled, scaled, shifted."""
    points = project_points(GENERIC_FACE_POINTS, torch.tensor([yaw]), torch.tensor([pitch]))[0]
    rotation = torch.tensor([[math.cos(roll), -math.sin(roll)], [math.sin(roll), math.cos(roll)]])
    pixels = points @ rotation.T * scale + torch.tensor([120.0, 80.0])
    landmarks = torch.full((68, 2), 100.0)
    landmarks[list(LANDMARK_68_INDICES)] = pixels
    return landmarks


@pytest.mark.parametrize(
    ("yaw", "pitch", "roll"), [(0.0, 0.0, 0.0), (0.4, -0.1, 0.0), (-0.7, 0.25, 0.2), (0.9, 0.3, -0.3)]
)
def test_recovers_the_pose_of_synthetic_landmarks(yaw: float, pitch: float, roll: float) -> None:
    camera, found_yaw, found_pitch = estimate_camera(synthetic_landmarks(yaw, pitch, roll))
    assert abs(found_yaw - yaw) < math.radians(1.0) and abs(found_pitch - pitch) < math.radians(1.0)
    cam2world, intrinsics = split_camera_label(camera[None])
    assert camera.shape == (25,) and abs(float(cam2world[0, :3, 3].norm()) - 2.7) < 1e-4
    assert abs(float(intrinsics[0, 0, 0]) - 4.2647) < 1e-4  # the FFHQ focal length
    # the camera looks at the FFHQ pivot
    forward = cam2world[0, :3, 2]
    to_pivot = torch.tensor([0.0, 0.0, 0.2]) - cam2world[0, :3, 3]
    assert float(torch.dot(forward, to_pivot / to_pivot.norm())) > 0.9999


def test_turning_the_head_moves_the_estimate_the_same_way() -> None:
    left = estimate_camera(synthetic_landmarks(-0.3, 0.0))[1]
    right = estimate_camera(synthetic_landmarks(0.3, 0.0))[1]
    assert left < -0.25 and right > 0.25


def test_real_astronaut_landmarks_are_near_frontal() -> None:
    data = pytest.importorskip("skimage.data")
    faces = pytest.importorskip("genblocks.faces")
    try:
        analyzer = faces.DlibFaceAnalyzer()
    except ImportError:
        pytest.skip("dlib is not installed (genblocks[face])")
    face = analyzer.get_face(data.astronaut(), embed=False)
    _, yaw, pitch = estimate_camera(torch.as_tensor(face.landmarks68, dtype=torch.float32))
    assert abs(yaw) < 0.45 and abs(pitch) < 0.45  # a roughly frontal portrait


def test_bad_landmarks_are_refused() -> None:
    with pytest.raises(InputError, match=r"\(68, 2\)"):
        estimate_camera(torch.zeros(5, 2))
    bad = torch.zeros(68, 2)
    bad[3, 0] = float("nan")
    with pytest.raises(InputError, match="finite"):
        estimate_camera(bad)
