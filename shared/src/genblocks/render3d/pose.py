"""Camera estimation from 2-D face landmarks: the EG3D camera (25 values) under which a generic 3-D face would show
the photo's landmarks (for diffportrait3d's inversion, omniavatar and agilegan3d, whose generators take the camera).

The head is a generic six-point 3-D face (nose tip, chin, outer eye corners, mouth corners; a rough average head, in
EG3D world units: +y up, the face looking along +z). For candidate yaw/pitch offsets the points are projected with the
real orbit camera (:func:`~genblocks.render3d.cameras.orbit_cam2world`, FFHQ rig, perspective), the best 2-D
similarity (scale, in-plane rotation, shift: head roll and the crop) maps them onto the photo's landmarks, and the
offsets with the smallest residual win: a coarse grid, then finer grids around the best cell. Using the renderer's own
camera makes the estimate follow the generator's conventions by construction. The generic head limits the accuracy to
a few degrees on real faces; the estimate is a starting point for inversion, which refines it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from genblocks.errors import InputError
from genblocks.render3d.cameras import FFHQ_CAMERA, CameraPreset, camera_label, intrinsics_matrix, orbit_cam2world

__all__ = ["GENERIC_FACE_POINTS", "LANDMARK_68_INDICES", "estimate_camera", "project_points", "similarity_residual"]

GENERIC_FACE_POINTS = torch.tensor(
    [
        [0.0, 0.0, 0.0],  # nose tip
        [0.0, -0.330, -0.065],  # chin
        [-0.225, 0.170, -0.135],  # outer corner of the eye on the image left
        [0.225, 0.170, -0.135],  # outer corner of the eye on the image right
        [-0.150, -0.150, -0.125],  # mouth corner, image left
        [0.150, -0.150, -0.125],  # mouth corner, image right
    ]
)
"""A generic head's six points (a commonly used average-face model, metres / 1000 x 0.5 here: EG3D units), (6, 3)."""
GENERIC_FACE_POINTS = (GENERIC_FACE_POINTS - GENERIC_FACE_POINTS.mean(dim=0)) * 0.5 + torch.tensor([0.0, 0.0, 0.2])

LANDMARK_68_INDICES = (30, 8, 36, 45, 48, 54)
"""The dlib / iBUG 68-point indices of :data:`GENERIC_FACE_POINTS`, in the same order."""


def project_points(points: Tensor, yaw: Tensor, pitch: Tensor, rig: CameraPreset = FFHQ_CAMERA) -> Tensor:
    """Project world points with orbit cameras at yaw/pitch offsets from frontal.

    Args:
        points: (P, 3) world points.
        yaw: (N,) yaw offsets in radians (0 = frontal).
        pitch: (N,) pitch offsets in radians (0 = level).
        rig: Radius, pivot and focal length.

    Returns:
        (N, P, 2) normalised image coordinates (x right, y down, in [0, 1] across the image).
    """
    cam2world = orbit_cam2world(yaw + math.pi / 2, pitch + math.pi / 2, radius=rig.radius, pivot=rig.pivot)
    world2cam = torch.linalg.inv(cam2world)
    homogeneous = torch.cat([points, torch.ones(points.shape[0], 1)], dim=1)  # (P, 4)
    camera = torch.einsum("nij,pj->npi", world2cam, homogeneous)[..., :3]
    intrinsics = intrinsics_matrix(rig.focal)
    pixels = torch.einsum("ij,npj->npi", intrinsics, camera)
    return pixels[..., :2] / pixels[..., 2:3]


def similarity_residual(source: Tensor, target: Tensor) -> Tensor:
    """RMS distance between ``target`` and the best 2-D similarity transform of ``source``, per candidate.

    Args:
        source: (N, P, 2) projected points of N candidates.
        target: (P, 2) observed points.

    Returns:
        (N,) residuals, in ``target``'s units divided by its spread (scale-free).
    """
    target = target - target.mean(dim=0)
    spread = target.norm(dim=-1).pow(2).mean().sqrt().clamp_min(1e-12)
    target = target / spread
    source = source - source.mean(dim=1, keepdim=True)
    # complex-number form of the 2-D similarity: target ~ a * source with a complex a (rotation and scale)
    s = torch.complex(source[..., 0], source[..., 1])
    t = torch.complex(target[..., 0], target[..., 1])
    a = (s.conj() * t).sum(dim=1) / (s.abs().pow(2).sum(dim=1)).clamp_min(1e-12)
    return (a[:, None] * s - t).abs().pow(2).mean(dim=1).sqrt()


def estimate_camera(
    landmarks: Tensor,
    rig: CameraPreset = FFHQ_CAMERA,
    max_yaw: float = 1.2,
    max_pitch: float = 0.6,
    refinements: int = 3,
) -> tuple[Tensor, float, float]:
    """The EG3D camera of a face from its 68 landmarks.

    Args:
        landmarks: (68, 2) dlib / iBUG landmarks in pixels (any image size or crop: only their shape is used).
        rig: The camera rig of the result (EG3D's FFHQ rig by default).
        max_yaw: Largest |yaw| searched, radians.
        max_pitch: Largest |pitch| searched, radians.
        refinements: Finer grids around the best candidate after the coarse one.

    Returns:
        ``(camera (25,), yaw, pitch)``: the EG3D camera label and the offsets from frontal in radians.

    Raises:
        InputError: ``landmarks`` is not a finite (68, 2) array.
    """
    landmarks = torch.as_tensor(landmarks, dtype=torch.float32)
    if landmarks.shape != (68, 2) or not bool(torch.isfinite(landmarks).all()):
        raise InputError(f"landmarks: expected finite (68, 2) pixel coordinates, got shape {tuple(landmarks.shape)}")
    target = landmarks[list(LANDMARK_68_INDICES)]
    yaw_range, pitch_range = (-max_yaw, max_yaw), (-max_pitch, max_pitch)
    best = (0.0, 0.0)
    for _ in range(refinements + 1):
        yaws = torch.linspace(*yaw_range, 25)
        pitches = torch.linspace(*pitch_range, 13)
        grid_yaw, grid_pitch = torch.meshgrid(yaws, pitches, indexing="ij")
        residual = similarity_residual(
            project_points(GENERIC_FACE_POINTS, grid_yaw.flatten(), grid_pitch.flatten(), rig), target
        )
        index = int(residual.argmin())
        best = (float(grid_yaw.flatten()[index]), float(grid_pitch.flatten()[index]))
        yaw_step, pitch_step = float(yaws[1] - yaws[0]), float(pitches[1] - pitches[0])
        yaw_range = (best[0] - yaw_step, best[0] + yaw_step)
        pitch_range = (best[1] - pitch_step, best[1] + pitch_step)
    yaw, pitch = best
    cam2world = orbit_cam2world(
        torch.tensor([yaw + math.pi / 2]), torch.tensor([pitch + math.pi / 2]), rig.radius, rig.pivot
    )
    return camera_label(cam2world, intrinsics_matrix(rig.focal))[0], yaw, pitch
