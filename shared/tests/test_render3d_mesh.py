"""genblocks.render3d.mesh: density grid layout, marching cubes in world units, OBJ round trip, clear errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from genblocks.errors import InputError
from genblocks.render3d import density_grid, marching_cubes_mesh, write_obj

pytest.importorskip("skimage")

RADIUS = 0.3
BOX = 1.0
RESOLUTION = 33


def sphere_density(points: Tensor) -> Tensor:
    """Negative signed distance of a sphere of radius RADIUS centred at (0.1, 0, 0): positive inside."""
    centre = torch.tensor([0.1, 0.0, 0.0])
    return RADIUS - (points - centre).norm(dim=-1, keepdim=True)


def test_density_grid_is_indexed_xyz_over_the_box_and_chunking_changes_nothing() -> None:
    calls: list[int] = []

    def field(points: Tensor) -> Tensor:
        calls.append(points.shape[1])
        return points[..., :1] + 10 * points[..., 1:2] + 100 * points[..., 2:3]

    grid = density_grid(field, box_size=2.0, resolution=5, chunk=7)
    assert grid.shape == (5, 5, 5)
    assert sum(calls) == 125 and max(calls) == 7
    axis = torch.linspace(-1, 1, 5)
    assert torch.allclose(grid[:, 0, 0], axis - 10 - 100)
    assert torch.allclose(grid[4, :, 0], 1 + 10 * axis - 100)
    assert torch.allclose(grid[4, 4, :], 11 + 100 * axis)
    assert torch.equal(grid, density_grid(field, box_size=2.0, resolution=5, chunk=1000))


def test_sphere_mesh_vertices_lie_on_the_radius_within_half_a_voxel() -> None:
    grid = density_grid(sphere_density, BOX, RESOLUTION)
    vertices, faces = marching_cubes_mesh(grid, BOX, level=0.0)
    assert vertices.dtype == np.float32 and faces.dtype == np.int64
    assert vertices.shape[1] == 3 and faces.shape[1] == 3 and len(faces) > 100
    assert faces.min() == 0 and faces.max() == len(vertices) - 1
    radii = np.linalg.norm(vertices - np.array([0.1, 0.0, 0.0], dtype=np.float32), axis=1)
    voxel = BOX / (RESOLUTION - 1)
    assert np.abs(radii - RADIUS).max() < voxel / 2
    # world units: the surface spans the sphere's extent along x (centre 0.1), not grid indices
    assert vertices[:, 0].min() == pytest.approx(0.1 - RADIUS, abs=voxel / 2)
    assert vertices[:, 0].max() == pytest.approx(0.1 + RADIUS, abs=voxel / 2)
    # the same from a numpy grid, and a higher level shrinks the sphere by that much
    inner, _ = marching_cubes_mesh(grid.numpy(), BOX, level=0.1)
    inner_radii = np.linalg.norm(inner - np.array([0.1, 0.0, 0.0], dtype=np.float32), axis=1)
    assert np.abs(inner_radii - (RADIUS - 0.1)).max() < voxel / 2


def test_obj_round_trip(tmp_path: Path) -> None:
    vertices, faces = marching_cubes_mesh(density_grid(sphere_density, BOX, 17), BOX, level=0.0)
    path = write_obj(tmp_path / "sub" / "mesh.obj", vertices, faces)
    assert path == tmp_path / "sub" / "mesh.obj"
    assert [p.name for p in path.parent.iterdir()] == ["mesh.obj"]  # no temporary left behind
    lines = path.read_text().splitlines()
    v_lines = [line for line in lines if line.startswith("v ")]
    f_lines = [line for line in lines if line.startswith("f ")]
    assert len(v_lines) == len(vertices) and len(f_lines) == len(faces) and len(lines) == len(vertices) + len(faces)
    read_vertices = np.array([[float(x) for x in line.split()[1:]] for line in v_lines])
    read_faces = np.array([[int(x) for x in line.split()[1:]] for line in f_lines])
    assert read_faces.min() == 1 and read_faces.max() == len(vertices)
    np.testing.assert_array_equal(read_faces - 1, faces)
    np.testing.assert_allclose(read_vertices, vertices, atol=1e-6)


def test_uncrossed_level_and_missing_scikit_image_raise_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    grid = density_grid(sphere_density, BOX, 9)
    with pytest.raises(InputError, match=r"level 5\.0: .* never crosses it"):
        marching_cubes_mesh(grid, BOX, level=5.0)
    monkeypatch.setitem(sys.modules, "skimage.measure", None)
    with pytest.raises(InputError, match="scikit-image"):
        marching_cubes_mesh(grid, BOX, level=0.0)


def test_bad_arguments_raise_value_error() -> None:
    with pytest.raises(ValueError, match="resolution"):
        density_grid(sphere_density, BOX, 1)
    with pytest.raises(ValueError, match=r"\(1, 8, 1\)"):
        density_grid(lambda p: p, BOX, 2)
    with pytest.raises(ValueError, match="cube"):
        marching_cubes_mesh(np.zeros((4, 4, 5)), BOX, level=0.0)
