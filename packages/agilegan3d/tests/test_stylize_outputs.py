"""``stylize --format mp4`` and ``--mesh``: the orbit as an MP4 with one frame per view, and a marching-cubes mesh of
the stylised density that lies in the tri-planes' box, on the iso-level of the grid it came from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from agilegan3d import load_preset
from agilegan3d.cli import main
from agilegan3d.demo import random_pipeline
from genblocks.media import read_video, write_image

pytest.importorskip("skimage")
FRONTAL = ["--set", "inference.camera_from=frontal"]


def _photo(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    return write_image(tmp_path / "face.png", rng.integers(0, 255, (48, 40, 3), dtype=np.uint8))


def test_stylize_writes_an_mp4_orbit_and_a_mesh_in_the_box(tmp_path: Path) -> None:
    pytest.importorskip("imageio_ffmpeg")
    out = tmp_path / "out"
    argv = [
        "stylize",
        "--image",
        str(_photo(tmp_path)),
        "--views",
        "5",
        "--format",
        "mp4",
        "--mesh",
        "--out",
        str(out),
    ]
    assert main([*argv, *FRONTAL]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["files"][:2] == ["strip.png", "orbit.mp4"] and summary["files"][-1] == "mesh.obj"
    assert not (out / "orbit.gif").exists()
    frames, fps = read_video(out / "orbit.mp4")
    assert frames.shape[0] == 5 and frames.shape[-1] == 3 and fps == pytest.approx(8.0)
    lines = (out / "mesh.obj").read_text().splitlines()
    vertices = np.array([[float(x) for x in line.split()[1:]] for line in lines if line.startswith("v ")])
    faces = np.array([[int(x) for x in line.split()[1:]] for line in lines if line.startswith("f ")])
    assert len(vertices) == summary["mesh"]["vertices"] > 0 and len(faces) == summary["mesh"]["faces"] > 0
    assert np.abs(vertices).max() <= 0.5 + 1e-6  # tiny G3D: box_warp 1, the cube [-0.5, 0.5]^3
    assert faces.min() >= 1 and faces.max() <= len(vertices)
    assert len(lines) == len(vertices) + len(faces)


def test_gif_stays_the_default_and_no_mesh_without_the_flag(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["stylize", "--image", str(_photo(tmp_path)), "--views", "2", "--out", str(out), *FRONTAL]) == 0
    frames, _ = read_video(out / "orbit.gif")
    assert frames.shape[0] == 2 and not (out / "mesh.obj").exists() and not (out / "orbit.mp4").exists()
    assert json.loads((out / "summary.json").read_text())["mesh"] is None


def test_mesh_vertices_sit_on_the_level_of_the_stylised_density_grid() -> None:
    config = load_preset("tiny")
    pipeline = random_pipeline(config)
    z = torch.randn(1, config.g3d.z_dim, generator=torch.Generator().manual_seed(1))
    ws = pipeline.generator.mapping(z, torch.zeros(1, 25))
    resolution = 20
    grid = pipeline.density_grid(ws, resolution)
    assert grid.shape == (resolution,) * 3
    level = float(grid.quantile(0.3))
    vertices, faces, used = pipeline.mesh(ws, resolution, level)
    assert used == level and faces.dtype == np.int64 and vertices.dtype == np.float32
    # world (x, y, z) in [-0.5, 0.5] -> grid_sample's (W, H, D) = (z, y, x) order, align_corners: grid points exact
    coords = torch.from_numpy(vertices[:, ::-1].copy() * 2.0).reshape(1, 1, 1, -1, 3)
    on_surface = F.grid_sample(grid[None, None], coords, mode="bilinear", align_corners=True).flatten()
    assert torch.allclose(on_surface, torch.full_like(on_surface, level), atol=1e-4)
    # the same grid straight from the generator's field at one grid point
    point = torch.tensor([[[-0.5, 0.5, -0.5 + 3 / (resolution - 1)]]])
    planes = pipeline.generator.synthesize_planes(ws, noise_mode="const")
    with torch.no_grad():
        sigma = pipeline.generator.density_and_features(planes, point, torch.zeros_like(point))["sigma"]
    assert sigma.item() == pytest.approx(grid[0, resolution - 1, 3].item(), abs=1e-5)


def test_an_uncrossed_mesh_level_exits_2_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = ["stylize", "--image", str(_photo(tmp_path)), "--mesh", "--out", str(out), *FRONTAL]
    assert main([*argv, "inference.mesh_level=1000"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "mesh level 1000" in lines[0], lines
    assert not out.exists()
