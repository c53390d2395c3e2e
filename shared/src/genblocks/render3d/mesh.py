"""A surface mesh from a density field: sample σ on a cube grid, run marching cubes, write a Wavefront OBJ.

The field is any callable ``points (1, N, 3) -> sigma (1, N, 1)`` (an EG3D tri-plane field for given ``ws``, an
OmniAvatar volume field, an analytic density), queried in chunks without gradients. The cube is centred at the origin
with side ``box_size`` (EG3D's ``box_warp``); grid index ``(i, j, k)`` is the point ``(x_i, y_j, z_k)`` with
``x_i = −box_size/2 + i · box_size/(R − 1)``. scikit-image (``skimage.measure.marching_cubes``) is imported only
when a mesh is made.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from genblocks.errors import InputError

__all__ = ["PointDensity", "density_grid", "marching_cubes_mesh", "write_obj"]

PointDensity = Callable[[Tensor], Tensor]
"""``points (1, N, 3) -> sigma (1, N, 1)``."""


@torch.no_grad()
def density_grid(density_fn: PointDensity, box_size: float, resolution: int, chunk: int = 32768) -> Tensor:
    """σ on a ``resolution``³ grid spanning the cube of side ``box_size`` centred at the origin.

    Args:
        density_fn (`PointDensity`): ``points (1, N, 3) -> sigma (1, N, 1)``.
        box_size (`float`): side of the cube, world units.
        resolution (`int`): grid points per axis R (at least 2).
        chunk (`int`, defaults to 32768): points per call of ``density_fn``.

    Returns:
        `torch.Tensor` of shape `(R, R, R)`, float32 on the CPU, indexed ``(x, y, z)``.
    """
    if resolution < 2:
        raise ValueError(f"resolution must be at least 2, got {resolution}")
    if box_size <= 0:
        raise ValueError(f"box_size must be positive, got {box_size}")
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")
    half = box_size / 2
    axis = torch.linspace(-half, half, resolution)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(1, -1, 3)
    values = []
    for start in range(0, grid.shape[1], chunk):
        points = grid[:, start : start + chunk]
        sigma = density_fn(points)
        if sigma.shape != (1, points.shape[1], 1):
            raise ValueError(f"density_fn must return (1, {points.shape[1]}, 1), got {tuple(sigma.shape)}")
        values.append(sigma[0, :, 0].detach().float().cpu())
    return torch.cat(values).reshape(resolution, resolution, resolution)


def marching_cubes_mesh(
    sigma_grid: Tensor | np.ndarray, box_size: float, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """The ``level`` iso-surface of a density grid made by :func:`density_grid`.

    Args:
        sigma_grid (`torch.Tensor` or `np.ndarray` of shape `(R, R, R)`): densities indexed ``(x, y, z)``.
        box_size (`float`): side of the cube the grid spans, world units.
        level (`float`): the iso-value.

    Returns:
        `tuple[np.ndarray, np.ndarray]`: vertices `(V, 3)` float32 in world units and faces `(T, 3)` int64 (0-based
        vertex indices).

    Raises:
        InputError: scikit-image is not installed, or ``level`` is not strictly inside the grid's range.
    """
    sigma = sigma_grid.detach().cpu().numpy() if isinstance(sigma_grid, Tensor) else np.asarray(sigma_grid)
    if sigma.ndim != 3 or len(set(sigma.shape)) != 1 or sigma.shape[0] < 2:
        raise ValueError(f"sigma_grid must be a cube (R, R, R) with R >= 2, got shape {sigma.shape}")
    try:
        from skimage.measure import marching_cubes
    except ImportError:
        raise InputError("mesh export needs scikit-image, which is not installed: pip install scikit-image") from None
    low, high = float(sigma.min()), float(sigma.max())
    if not low < level < high:
        raise InputError(f"mesh level {level}: the density grid spans [{low:.3g}, {high:.3g}] and never crosses it")
    vertices, faces, _, _ = marching_cubes(sigma.astype(np.float32), level)
    resolution = sigma.shape[0]
    vertices = vertices / (resolution - 1) * box_size - box_size / 2
    return vertices.astype(np.float32), faces.astype(np.int64)


def write_obj(path: str | os.PathLike[str], vertices: np.ndarray, faces: np.ndarray) -> Path:
    """Write a Wavefront OBJ atomically: one ``v x y z`` line per vertex, then one ``f a b c`` line per face (1-based).

    Args:
        path (`str` or `os.PathLike`): the file; its folder is created.
        vertices (`np.ndarray` of shape `(V, 3)`): positions.
        faces (`np.ndarray` of shape `(T, 3)`): 0-based vertex indices.

    Returns:
        `Path`: the written file.
    """
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in np.asarray(vertices, dtype=np.float64).reshape(-1, 3)]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in np.asarray(faces, dtype=np.int64).reshape(-1, 3)]
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return target
