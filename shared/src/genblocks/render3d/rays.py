"""Pinhole ray sampler: one ray per pixel centre, in world space (EG3D, arXiv 2112.07945, ``RaySampler`` in
NVlabs/eg3d ``eg3d/training/volumetric_rendering/ray_sampler.py``, re-derived here).

Pixel (row i, column j) of an R x R image has normalised image coordinates u = (j + 0.5)/R, v = (i + 0.5)/R. Its
camera-space direction inverts ``K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` at depth 1:
y = (v − cy)/fy, x = (u − cx − s·y)/fx, z = 1; the world direction is ``R_c2w @ (x, y, z)``, normalised, and every ray
starts at the camera centre. Rays are ordered row-major (index i·R + j), so ``(N, R*R, C) -> (N, C, R, R)`` is a
``permute(0, 2, 1).reshape``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["pixel_centers", "sample_rays"]


def pixel_centers(
    resolution: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Normalised pixel-centre coordinates ``(u, v) = ((j + 0.5)/R, (i + 0.5)/R)`` in row-major pixel order.

    Args:
        resolution (`int`): image side R.
        device, dtype: placement of the result.

    Returns:
        `torch.Tensor` of shape `(R*R, 2)`; column 0 is the horizontal coordinate u, column 1 the vertical v.
    """
    if resolution < 1:
        raise ValueError(f"resolution must be a positive integer, got {resolution}")
    centers = (torch.arange(resolution, device=device, dtype=dtype) + 0.5) / resolution
    v, u = torch.meshgrid(centers, centers, indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=-1)


def sample_rays(cam2world: Tensor, intrinsics: Tensor, resolution: int) -> tuple[Tensor, Tensor]:
    """World-space rays through the pixel centres of an R x R image.

    Args:
        cam2world (`torch.Tensor` of shape `(N, 4, 4)`): camera-to-world matrices (OpenCV axes: x right, y down,
            z forward).
        intrinsics (`torch.Tensor` of shape `(N, 3, 3)`): normalised intrinsics
            ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]``.
        resolution (`int`): image side R.

    Returns:
        `(origins, directions)`, each of shape `(N, R*R, 3)`; directions have unit length.
    """
    if cam2world.dim() != 3 or cam2world.shape[1:] != (4, 4):
        raise ValueError(f"cam2world must have shape (N, 4, 4), got {tuple(cam2world.shape)}")
    if intrinsics.shape != (cam2world.shape[0], 3, 3):
        raise ValueError(f"intrinsics must have shape ({cam2world.shape[0]}, 3, 3), got {tuple(intrinsics.shape)}")
    uv = pixel_centers(resolution, device=cam2world.device, dtype=cam2world.dtype)
    fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]
    cx, cy, skew = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None], intrinsics[:, 0, 1, None]
    y_cam = (uv[None, :, 1] - cy) / fy
    x_cam = (uv[None, :, 0] - cx - skew * y_cam) / fx
    directions_cam = torch.stack([x_cam, y_cam, torch.ones_like(x_cam)], dim=-1)
    directions = directions_cam @ cam2world[:, :3, :3].transpose(1, 2)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    origins = cam2world[:, None, :3, 3].expand_as(directions)
    return origins, directions
