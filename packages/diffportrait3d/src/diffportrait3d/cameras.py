"""Camera paths as 25-d EG3D labels (flattened cam2world + normalised intrinsics), built on ``genblocks.render3d``.

Yaw and pitch follow EG3D's orbit convention (``genblocks.render3d.orbit_cam2world``): π/2 is frontal and level; a
yaw offset of +0.3 rad turns the camera towards +x.
"""

from __future__ import annotations

import math

import torch

from genblocks.render3d import FFHQ_CAMERA, CameraPreset, camera_label, intrinsics_matrix, orbit_cam2world

__all__ = ["cameras_at", "check_cameras", "orbit_cameras", "yaw_sweep_cameras"]


def cameras_at(yaw: torch.Tensor, pitch: torch.Tensor, rig: CameraPreset = FFHQ_CAMERA) -> torch.Tensor:
    """EG3D camera labels at yaw/pitch *offsets* from frontal.

    Args:
        yaw (`torch.Tensor` of shape `(N,)`): Yaw offsets in radians (0 = frontal).
        pitch (`torch.Tensor` of shape `(N,)`): Pitch offsets in radians (0 = level).
        rig (`CameraPreset`, defaults to EG3D's FFHQ rig): Radius, pivot and focal length.

    Returns:
        `torch.Tensor` of shape `(N, 25)`.
    """
    yaw = torch.as_tensor(yaw, dtype=torch.float32).reshape(-1)
    pitch = torch.as_tensor(pitch, dtype=torch.float32).reshape(-1)
    cam2world = orbit_cam2world(yaw + math.pi / 2, pitch + math.pi / 2, radius=rig.radius, pivot=rig.pivot)
    return camera_label(cam2world, intrinsics_matrix(rig.focal))


def yaw_sweep_cameras(
    num_views: int, max_yaw: float = 0.5, pitch: float = 0.0, rig: CameraPreset = FFHQ_CAMERA
) -> torch.Tensor:
    """``num_views`` cameras from yaw ``-max_yaw`` to ``+max_yaw`` at a fixed pitch: `(num_views, 25)`."""
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    yaw = torch.linspace(-max_yaw, max_yaw, num_views) if num_views > 1 else torch.zeros(1)
    return cameras_at(yaw, torch.full((num_views,), float(pitch)), rig)


def orbit_cameras(
    num_views: int, yaw_amplitude: float = 0.5, pitch_amplitude: float = 0.15, rig: CameraPreset = FFHQ_CAMERA
) -> torch.Tensor:
    """A closed elliptic orbit around the frontal view (yaw = a sin θ, pitch = b cos θ): `(num_views, 25)`."""
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    theta = torch.arange(num_views, dtype=torch.float32) * (2 * math.pi / num_views)
    return cameras_at(yaw_amplitude * torch.sin(theta), pitch_amplitude * torch.cos(theta), rig)


def check_cameras(cameras: torch.Tensor, name: str = "cameras") -> torch.Tensor:
    """Validate camera labels: a non-empty `(N, 25)` float tensor without NaN/inf; returns it as float32."""
    cameras = torch.as_tensor(cameras, dtype=torch.float32)
    if cameras.ndim == 1 and cameras.shape[0] == 25:
        cameras = cameras[None]
    if cameras.ndim != 2 or cameras.shape[1] != 25:
        raise ValueError(f"{name} must be 25-d EG3D camera labels of shape (N, 25), got {tuple(cameras.shape)}")
    if cameras.shape[0] == 0:
        raise ValueError(f"{name} is empty: give at least one camera")
    bad = (~torch.isfinite(cameras)).any(dim=1).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"{name} {bad} contain NaN or inf values")
    return cameras
