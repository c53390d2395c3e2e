"""Cameras for 3-D-aware GANs: LookAt poses on an orbit, normalised pinhole intrinsics and the 25-d EG3D camera label.

Conventions (EG3D, arXiv 2112.07945; NVlabs/eg3d ``eg3d/camera_utils.py`` on ``main``):

- World space: +y up, the face looks along +z. Camera space is OpenCV-style: x right, y down, z forward, so a
  ``cam2world`` matrix has columns (right, down, forward, origin).
- Orbit angles follow EG3D's ``LookAtPoseSampler``: ``yaw`` (horizontal) and ``pitch`` (vertical) are both π/2 for the
  frontal view. The camera sits on a sphere of ``radius`` around the **world origin** at polar angle
  φ = arccos(1 − 2·pitch/π) (pitch clamped to (0, π)) and azimuth π − yaw, and looks at ``pivot``; with the FFHQ preset
  the frontal camera is at (0, 0, 2.7), looking at (0, 0, 0.2).
- Intrinsics are normalised by the image size: ``[[fx, skew, cx], [0, fy, cy], [0, 0, 1]]`` with the principal point
  at (0.5, 0.5) for a centred crop; FFHQ uses fx = fy = 4.2647 (an 18.837° field of view).
- The camera label is ``c = concat(cam2world.flatten(), intrinsics.flatten())``, 16 + 9 = 25 values, row-major.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "CAMERA_LABEL_DIM",
    "FFHQ_CAMERA",
    "CameraPreset",
    "LookAtCameraSampler",
    "camera_label",
    "intrinsics_matrix",
    "look_at",
    "normalize_intrinsics",
    "orbit_cam2world",
    "split_camera_label",
]

CAMERA_LABEL_DIM = 25
"""Length of the EG3D camera label: a flattened 4x4 cam2world matrix plus a flattened 3x3 normalised intrinsics."""


@dataclass(frozen=True)
class CameraPreset:
    """A camera rig and the ray range / box that goes with it.

    Args:
        radius (`float`): distance of the camera from the world origin.
        pivot (`tuple[float, float, float]`): the look-at point.
        focal (`float`): normalised focal length (focal in pixels / image size).
        ray_start (`float`): near bound of the rendered depth range.
        ray_end (`float`): far bound of the rendered depth range.
        box_warp (`float`): side length of the cube that the feature planes span, centred at the origin.
    """

    radius: float
    pivot: tuple[float, float, float]
    focal: float
    ray_start: float
    ray_end: float
    box_warp: float


FFHQ_CAMERA = CameraPreset(radius=2.7, pivot=(0.0, 0.0, 0.2), focal=4.2647, ray_start=2.25, ray_end=3.3, box_warp=1.0)
"""EG3D's FFHQ rig (``avg_camera_radius``, ``avg_camera_pivot``, ``ray_start``/``ray_end``, ``box_warp``)."""


def _as_vector(value: Sequence[float] | Tensor, name: str, device: torch.device | None, dtype: torch.dtype) -> Tensor:
    vector = torch.as_tensor(value, dtype=dtype, device=device)
    if vector.shape[-1:] != (3,):
        raise ValueError(f"{name} must have 3 coordinates in its last dimension, got shape {tuple(vector.shape)}")
    return vector


def intrinsics_matrix(
    focal: float | tuple[float, float] = FFHQ_CAMERA.focal,
    principal_point: tuple[float, float] = (0.5, 0.5),
    skew: float = 0.0,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """A normalised pinhole intrinsics matrix ``[[fx, skew, cx], [0, fy, cy], [0, 0, 1]]``.

    Args:
        focal (`float` or `(fx, fy)`, defaults to the FFHQ 4.2647): focal length divided by the image size.
        principal_point (`(cx, cy)`, defaults to `(0.5, 0.5)`): principal point divided by the image size.
        skew (`float`, defaults to 0): normalised skew.
        batch_size (`int`, *optional*): when given, the matrix is repeated to shape `(batch_size, 3, 3)`.
        device, dtype: placement of the result.

    Returns:
        `torch.Tensor` of shape `(3, 3)` or `(batch_size, 3, 3)`.
    """
    fx, fy = (focal, focal) if isinstance(focal, (int, float)) else focal
    if fx <= 0 or fy <= 0:
        raise ValueError(f"focal must be positive, got {focal}")
    cx, cy = principal_point
    matrix = torch.tensor([[fx, skew, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=dtype, device=device)
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        matrix = matrix.expand(batch_size, 3, 3).clone()
    return matrix


def normalize_intrinsics(intrinsics: Tensor, width: int, height: int) -> Tensor:
    """Divide pixel-unit intrinsics by the image size: row 0 by `width`, row 1 by `height`.

    Args:
        intrinsics (`torch.Tensor` of shape `(..., 3, 3)`): intrinsics in pixels.
        width (`int`): image width in pixels.
        height (`int`): image height in pixels.

    Returns:
        `torch.Tensor` of shape `(..., 3, 3)`, the normalised intrinsics that the camera label stores.
    """
    if intrinsics.shape[-2:] != (3, 3):
        raise ValueError(f"intrinsics must have shape (..., 3, 3), got {tuple(intrinsics.shape)}")
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, got {width} x {height}")
    scale = intrinsics.new_tensor([1.0 / width, 1.0 / height, 1.0]).unsqueeze(-1)
    return intrinsics * scale


def look_at(
    origins: Tensor,
    targets: Sequence[float] | Tensor,
    up: Sequence[float] = (0.0, 1.0, 0.0),
) -> Tensor:
    """Camera-to-world matrices of cameras at `origins` looking at `targets` (OpenCV camera axes).

    The columns of the rotation are ``right = normalize(forward × up)``, ``down = forward × right`` and
    ``forward = normalize(target − origin)``, so image rows grow against `up` and columns grow to the camera's right.

    Args:
        origins (`torch.Tensor` of shape `(N, 3)`): camera centres in world space.
        targets (`torch.Tensor` of shape `(N, 3)` or `(3,)`): look-at points.
        up (`tuple[float, float, float]`, defaults to `(0, 1, 0)`): the world up direction; must not be parallel to a
            viewing direction.

    Returns:
        `torch.Tensor` of shape `(N, 4, 4)`.
    """
    if origins.dim() != 2 or origins.shape[1] != 3:
        raise ValueError(f"origins must have shape (N, 3), got {tuple(origins.shape)}")
    targets_t = _as_vector(targets, "targets", origins.device, origins.dtype).expand_as(origins)
    up_t = _as_vector(up, "up", origins.device, origins.dtype).expand_as(origins)
    forward = targets_t - origins
    if bool((forward.norm(dim=-1) < 1e-8).any()):
        raise ValueError("origins and targets must differ: a camera cannot look at its own centre")
    forward = forward / forward.norm(dim=-1, keepdim=True)
    right = torch.linalg.cross(forward, up_t, dim=-1)
    if bool((right.norm(dim=-1) < 1e-8).any()):
        raise ValueError("up is parallel to a viewing direction; choose another up vector")
    right = right / right.norm(dim=-1, keepdim=True)
    down = torch.linalg.cross(forward, right, dim=-1)
    cam2world = torch.eye(4, dtype=origins.dtype, device=origins.device).repeat(origins.shape[0], 1, 1)
    cam2world[:, :3, :3] = torch.stack([right, down, forward], dim=-1)
    cam2world[:, :3, 3] = origins
    return cam2world


def orbit_cam2world(
    yaw: Tensor,
    pitch: Tensor,
    radius: float = FFHQ_CAMERA.radius,
    pivot: Sequence[float] | Tensor = FFHQ_CAMERA.pivot,
) -> Tensor:
    """Cameras on EG3D's orbit: centre on a sphere of `radius` around the world origin, looking at `pivot`.

    Args:
        yaw (`torch.Tensor` of shape `(N,)`): horizontal angle in radians, π/2 = frontal; larger values move the
            camera towards +x.
        pitch (`torch.Tensor` of shape `(N,)`): vertical angle in radians, π/2 = level, 0 = above; clamped to
            (1e-5, π − 1e-5) and mapped to the polar angle arccos(1 − 2·pitch/π) as in EG3D.
        radius (`float`, defaults to 2.7): orbit radius.
        pivot (`(3,)`, defaults to `(0, 0, 0.2)`): look-at point.

    Returns:
        `torch.Tensor` of shape `(N, 4, 4)`.
    """
    if yaw.shape != pitch.shape or yaw.dim() != 1:
        raise ValueError(f"yaw and pitch must be 1-D of equal length, got {tuple(yaw.shape)} and {tuple(pitch.shape)}")
    if radius <= 0:
        raise ValueError(f"radius must be positive, got {radius}")
    polar = torch.arccos(1.0 - 2.0 * pitch.clamp(1e-5, math.pi - 1e-5) / math.pi)
    origins = radius * torch.stack(
        [-torch.sin(polar) * torch.cos(yaw), torch.cos(polar), torch.sin(polar) * torch.sin(yaw)], dim=-1
    )
    return look_at(origins, pivot)


class LookAtCameraSampler:
    """Samples LookAt cameras around a pivot, as 4x4 matrices or as 25-d EG3D camera labels.

    Args:
        radius (`float`, defaults to 2.7): orbit radius (FFHQ preset).
        pivot (`tuple[float, float, float]`, defaults to `(0, 0, 0.2)`): look-at point (FFHQ preset).
        focal (`float`, defaults to 4.2647): normalised focal length of the intrinsics in the labels (FFHQ preset).

    Example::

        sampler = LookAtCameraSampler()
        c = sampler.sample_labels(4, yaw_std=0.3, pitch_std=0.15, generator=torch.Generator().manual_seed(0))
    """

    def __init__(
        self,
        radius: float = FFHQ_CAMERA.radius,
        pivot: tuple[float, float, float] = FFHQ_CAMERA.pivot,
        focal: float = FFHQ_CAMERA.focal,
    ) -> None:
        if radius <= 0 or focal <= 0:
            raise ValueError(f"radius and focal must be positive, got radius={radius}, focal={focal}")
        self.radius = radius
        self.pivot = tuple(pivot)
        self.focal = focal

    def __repr__(self) -> str:
        return f"{type(self).__name__}(radius={self.radius}, pivot={self.pivot}, focal={self.focal})"

    def sample(
        self,
        batch_size: int,
        yaw_mean: float = math.pi / 2,
        pitch_mean: float = math.pi / 2,
        yaw_std: float = 0.0,
        pitch_std: float = 0.0,
        distribution: Literal["gaussian", "uniform"] = "gaussian",
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw camera-to-world matrices.

        Args:
            batch_size (`int`): number of cameras N.
            yaw_mean, pitch_mean (`float`, default π/2): centre of the angle distribution (frontal view).
            yaw_std, pitch_std (`float`, default 0): standard deviation (``"gaussian"``, EG3D ``LookAtPoseSampler``)
                or half-width (``"uniform"``, EG3D ``UniformCameraPoseSampler``) of each angle.
            distribution (`"gaussian"` or `"uniform"`): how the angles are drawn.
            generator (`torch.Generator`, *optional*): source of randomness.
            device: placement of the result.

        Returns:
            `torch.Tensor` of shape `(N, 4, 4)`.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if distribution == "gaussian":
            noise = torch.randn(2, batch_size, generator=generator)
        elif distribution == "uniform":
            noise = torch.rand(2, batch_size, generator=generator) * 2.0 - 1.0
        else:
            raise ValueError(f"distribution must be 'gaussian' or 'uniform', got {distribution!r}")
        yaw = yaw_mean + yaw_std * noise[0]
        pitch = pitch_mean + pitch_std * noise[1]
        return orbit_cam2world(yaw, pitch, self.radius, self.pivot).to(device)

    def intrinsics(self, batch_size: int, device: torch.device | str | None = None) -> Tensor:
        """Normalised intrinsics of shape `(batch_size, 3, 3)` for this sampler's focal length."""
        return intrinsics_matrix(self.focal, batch_size=batch_size, device=device)

    def sample_labels(
        self,
        batch_size: int,
        yaw_mean: float = math.pi / 2,
        pitch_mean: float = math.pi / 2,
        yaw_std: float = 0.0,
        pitch_std: float = 0.0,
        distribution: Literal["gaussian", "uniform"] = "gaussian",
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Like `sample`, but returns 25-d camera labels of shape `(N, 25)`."""
        cam2world = self.sample(
            batch_size, yaw_mean, pitch_mean, yaw_std, pitch_std, distribution, generator=generator, device=device
        )
        return camera_label(cam2world, self.intrinsics(batch_size, device=cam2world.device))


def camera_label(cam2world: Tensor, intrinsics: Tensor) -> Tensor:
    """Pack cameras into EG3D's 25-d label: flattened cam2world (16) then flattened normalised intrinsics (9).

    Args:
        cam2world (`torch.Tensor` of shape `(N, 4, 4)`).
        intrinsics (`torch.Tensor` of shape `(N, 3, 3)` or `(3, 3)`): normalised intrinsics.

    Returns:
        `torch.Tensor` of shape `(N, 25)`.
    """
    if cam2world.dim() != 3 or cam2world.shape[1:] != (4, 4):
        raise ValueError(f"cam2world must have shape (N, 4, 4), got {tuple(cam2world.shape)}")
    if intrinsics.shape[-2:] != (3, 3) or intrinsics.dim() not in (2, 3):
        raise ValueError(f"intrinsics must have shape (N, 3, 3) or (3, 3), got {tuple(intrinsics.shape)}")
    intrinsics = intrinsics.to(cam2world).expand(cam2world.shape[0], 3, 3)
    return torch.cat([cam2world.reshape(-1, 16), intrinsics.reshape(-1, 9)], dim=1)


def split_camera_label(c: Tensor, atol: float = 1e-4) -> tuple[Tensor, Tensor]:
    """Unpack and validate 25-d camera labels.

    Args:
        c (`torch.Tensor` of shape `(N, 25)`): camera labels (callers with extra conditioning, e.g. OmniAvatar's
            3DMM features, pass ``c[:, :25]``).
        atol (`float`, defaults to 1e-4): tolerance for the constant rows checked below.

    Returns:
        `(cam2world, intrinsics)` of shapes `(N, 4, 4)` and `(N, 3, 3)`.

    Raises:
        ValueError: when `c` is not `(N, 25)`, the cam2world bottom row is not (0, 0, 0, 1), or the intrinsics bottom
            row is not (0, 0, 1).
    """
    if c.dim() != 2 or c.shape[1] != CAMERA_LABEL_DIM:
        raise ValueError(f"camera label c must have shape (N, {CAMERA_LABEL_DIM}), got {tuple(c.shape)}")
    cam2world = c[:, :16].reshape(-1, 4, 4)
    intrinsics = c[:, 16:].reshape(-1, 3, 3)
    if not torch.allclose(cam2world[:, 3], c.new_tensor([0.0, 0.0, 0.0, 1.0]).expand(c.shape[0], 4), atol=atol):
        raise ValueError("camera label c: the cam2world bottom row (c[:, 12:16]) must be (0, 0, 0, 1)")
    if not torch.allclose(intrinsics[:, 2], c.new_tensor([0.0, 0.0, 1.0]).expand(c.shape[0], 3), atol=atol):
        raise ValueError("camera label c: the intrinsics bottom row (c[:, 22:25]) must be (0, 0, 1)")
    return cam2world, intrinsics
