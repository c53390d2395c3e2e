"""LookAt cameras, intrinsics, the 25-d camera label and the pinhole ray sampler (genblocks.render3d)."""

from __future__ import annotations

import math

import pytest
import torch

from genblocks.render3d.cameras import (
    FFHQ_CAMERA,
    LookAtCameraSampler,
    camera_label,
    intrinsics_matrix,
    look_at,
    normalize_intrinsics,
    orbit_cam2world,
    split_camera_label,
)
from genblocks.render3d.rays import pixel_centers, sample_rays


def test_ffhq_frontal_camera_matches_eg3d_preset():
    cam2world = LookAtCameraSampler().sample(1)
    expected = torch.tensor(
        [[1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 2.7], [0.0, 0.0, 0.0, 1.0]]
    )  # OpenCV axes: x right, y down (world -y), z forward (world -z); centre at radius 2.7 on +z
    torch.testing.assert_close(cam2world[0], expected, atol=1e-6, rtol=0)
    assert FFHQ_CAMERA.pivot == (0.0, 0.0, 0.2) and FFHQ_CAMERA.focal == 4.2647


def test_orbit_radius_yaw_direction_and_rotation_is_orthonormal():
    yaw = torch.tensor([math.pi / 2, math.pi / 2 + 0.4, math.pi / 2 - 0.4, 1.0])
    pitch = torch.tensor([math.pi / 2, math.pi / 2, math.pi / 2 - 0.3, 2.0])
    cam2world = orbit_cam2world(yaw, pitch, radius=2.7, pivot=(0.0, 0.0, 0.2))
    origins = cam2world[:, :3, 3]
    torch.testing.assert_close(origins.norm(dim=-1), torch.full((4,), 2.7))
    assert origins[2, 0] < 0 < origins[1, 0]  # larger yaw moves the camera to +x (EG3D convention)
    assert origins[2, 1] > 0  # pitch below pi/2 raises the camera
    rotation = cam2world[:, :3, :3]
    torch.testing.assert_close(rotation.transpose(1, 2) @ rotation, torch.eye(3).expand(4, 3, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rotation), torch.ones(4), atol=1e-6, rtol=0)


@pytest.mark.parametrize("resolution", [5, 8])
def test_central_ray_points_at_lookat_target(resolution):
    sampler = LookAtCameraSampler()
    generator = torch.Generator().manual_seed(0)
    cam2world = sampler.sample(6, yaw_std=0.5, pitch_std=0.3, generator=generator)
    origins, directions = sample_rays(cam2world, sampler.intrinsics(6), resolution)
    to_target = torch.tensor(sampler.pivot) - cam2world[:, :3, 3]
    to_target = to_target / to_target.norm(dim=-1, keepdim=True)
    grid = directions.reshape(6, resolution, resolution, 3)
    half = resolution // 2
    if resolution % 2:  # the middle pixel's centre is the principal point
        central = grid[:, half, half]
    else:  # the principal point is the corner shared by the four middle pixels: their mean points at it
        central = grid[:, half - 1 : half + 1, half - 1 : half + 1].mean(dim=(1, 2))
        central = central / central.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(central, to_target, atol=1e-5, rtol=0)
    torch.testing.assert_close(origins, cam2world[:, None, :3, 3].expand_as(origins))
    torch.testing.assert_close(directions.norm(dim=-1), torch.ones(6, resolution * resolution))


def test_pixel_centre_convention_row_major():
    uv = pixel_centers(4)
    assert uv.shape == (16, 2)
    torch.testing.assert_close(uv[0], torch.tensor([0.125, 0.125]))
    torch.testing.assert_close(uv[1], torch.tensor([0.375, 0.125]))  # next column, same row
    torch.testing.assert_close(uv[4], torch.tensor([0.125, 0.375]))  # next row
    torch.testing.assert_close(uv[-1], torch.tensor([0.875, 0.875]))


def test_rays_reproject_onto_pixel_centres_with_skew_and_offset_principal_point():
    intrinsics = intrinsics_matrix((3.0, 2.5), principal_point=(0.45, 0.55), skew=0.2, batch_size=2)
    cam2world = orbit_cam2world(torch.tensor([1.2, 2.0]), torch.tensor([1.4, 1.9]), radius=3.0, pivot=(0.1, 0.0, 0.2))
    origins, directions = sample_rays(cam2world, intrinsics, 6)
    points = origins + 1.7 * directions
    world2cam = torch.linalg.inv(cam2world)
    camera = (points - cam2world[:, None, :3, 3]) @ world2cam[:, :3, :3].transpose(1, 2)
    projected = camera @ intrinsics.transpose(1, 2)
    uv = projected[..., :2] / projected[..., 2:]
    torch.testing.assert_close(uv, pixel_centers(6).expand(2, 36, 2), atol=1e-5, rtol=0)


def test_camera_label_round_trip_and_validation():
    sampler = LookAtCameraSampler()
    c = sampler.sample_labels(3, yaw_std=0.2, generator=torch.Generator().manual_seed(1))
    assert c.shape == (3, 25)
    cam2world, intrinsics = split_camera_label(c)
    torch.testing.assert_close(camera_label(cam2world, intrinsics), c)
    torch.testing.assert_close(intrinsics[0], intrinsics_matrix(4.2647))
    with pytest.raises(ValueError, match="camera label c must have shape"):
        split_camera_label(c[:, :24])
    bad = c.clone()
    bad[:, 15] = 2.0
    with pytest.raises(ValueError, match="bottom row"):
        split_camera_label(bad)
    bad = c.clone()
    bad[:, 24] = 0.0
    with pytest.raises(ValueError, match="intrinsics bottom row"):
        split_camera_label(bad)


def test_normalize_intrinsics_and_input_errors():
    pixels = torch.tensor([[2183.0, 0.0, 256.0], [0.0, 2183.0, 256.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(normalize_intrinsics(pixels, 512, 512), intrinsics_matrix(2183.0 / 512))
    with pytest.raises(ValueError, match="origins and targets must differ"):
        look_at(torch.zeros(1, 3), (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="up is parallel"):
        look_at(torch.tensor([[0.0, 2.0, 0.0]]), (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="intrinsics must have shape"):
        sample_rays(torch.eye(4).expand(2, 4, 4), torch.eye(3).expand(1, 3, 3), 4)
    with pytest.raises(ValueError, match="distribution"):
        LookAtCameraSampler().sample(1, distribution="cauchy")  # type: ignore[arg-type]


def test_uniform_sampler_stays_within_half_width():
    sampler = LookAtCameraSampler(radius=1.0, pivot=(0.0, 0.0, 0.0))
    cam2world = sampler.sample(64, yaw_std=0.3, distribution="uniform", generator=torch.Generator().manual_seed(2))
    origins = cam2world[:, :3, 3]
    yaw = torch.atan2(origins[:, 2], -origins[:, 0])
    assert bool(((yaw - math.pi / 2).abs() <= 0.3 + 1e-5).all())
    torch.testing.assert_close(origins[:, 1], torch.zeros(64), atol=1e-5, rtol=0)
