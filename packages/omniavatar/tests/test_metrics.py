"""Metrics: FID/KID formulas, Chamfer and unprojected surfaces, control error and identity consistency plumbing; FID /
KID of rendered heads against real images through a scripted extractor; the real-image folder reader."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from genblocks.errors import InputError
from genblocks.media import write_image
from genblocks.metrics import load_feature_extractor
from omniavatar.config import OmniAvatarConfig
from omniavatar.metrics import (
    chamfer_distance,
    control_error,
    depth_consistency,
    fid_kid,
    frechet_distance,
    identity_consistency,
    kernel_inception_distance,
    labelled_samples,
    random_samples,
    read_real_images,
    real_image_files,
    real_labels,
    surface_points,
)
from omniavatar.pipeline_omniavatar import OmniAvatarOutput, OmniAvatarPipeline


def test_frechet_and_kid() -> None:
    rng = np.random.RandomState(0)
    real = rng.randn(400, 4)
    assert abs(frechet_distance(real, real)) < 1e-6
    assert math.isclose(frechet_distance(real, real + 1.0), 4.0, rel_tol=1e-6)
    same = kernel_inception_distance(real, rng.randn(400, 4))
    shifted = kernel_inception_distance(real, rng.randn(400, 4) + 1.0)
    assert abs(same) < 0.05 < shifted


def test_surface_points_unproject_depth(tiny_config: OmniAvatarConfig) -> None:
    pipeline = OmniAvatarPipeline.from_config(tiny_config)
    labels = pipeline.labels(pipeline.cameras(0.0, 0.0), torch.zeros(1, tiny_config.flame.feature_dim))
    depth = torch.full((1, 1, 4, 4), 2.5)
    mask = torch.ones(1, 1, 4, 4)
    output = OmniAvatarOutput(depth, depth, depth, mask, torch.zeros(1), labels)
    points = surface_points(output)
    origin = labels[0, :16].reshape(4, 4)[:3, 3]
    torch.testing.assert_close((points - origin).norm(dim=-1), torch.full((16,), 2.5))
    assert chamfer_distance(points, points) == 0.0
    assert chamfer_distance(points, points + torch.tensor([0.1, 0.0, 0.0])) > 0.05


def test_generator_metrics_run(tiny_config: OmniAvatarConfig) -> None:
    pipeline = OmniAvatarPipeline.from_config(tiny_config)
    pose_dim = tiny_config.flame.pose_dim
    errors = control_error(pipeline, lambda images: torch.zeros(len(images), pose_dim), count=2)
    assert errors["expression"] > 0.3 and errors["pose"] > 0.0
    identity = identity_consistency(pipeline, lambda images: images.flatten(1), heads=2, variations=2)
    assert -1 <= identity["different"] <= 1 and identity["same"] > 0.5
    assert depth_consistency(pipeline, yaw=0.0, threshold=-1.0) < 1e-4
    assert depth_consistency(pipeline, yaw=0.3, threshold=-1.0) > 1e-3


class _ConvPool(torch.nn.Module):
    """A tiny FID extractor: 3x3 conv to 6 channels, ReLU, global average pool -> (N, 6)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean((2, 3))


def scripted_extractor(folder: Path) -> Path:
    """A TorchScript file of a seeded :class:`_ConvPool` in `folder`."""
    torch.manual_seed(0)
    path = folder / "extractor.pt"
    torch.jit.script(_ConvPool()).save(str(path))
    return path


def test_fid_kid_of_rendered_heads_against_themselves_and_a_shifted_set(
    tmp_path: Path, tiny_config: OmniAvatarConfig
) -> None:
    pipeline = OmniAvatarPipeline.from_config(tiny_config)
    extractor = load_feature_extractor(scripted_extractor(tmp_path), "--features")
    samples = random_samples(pipeline, 6, seed=0, batch_size=4)
    assert samples.shape == (6, 3, 32, 32) and samples.min() >= -1 and samples.max() <= 1
    torch.testing.assert_close(random_samples(pipeline, 6, seed=0, batch_size=6), samples)  # batching is invisible
    assert not torch.equal(samples[0], samples[1])  # other seeds, cameras and expressions
    same = fid_kid(pipeline, extractor, samples, 6, seed=0, batch_size=4)
    assert same["fid"] == pytest.approx(0.0, abs=1e-6)
    assert same["real_images"] == 6 and same["generated_images"] == 6
    shifted = fid_kid(pipeline, extractor, (samples + 0.5).clamp(-1, 1), 6, seed=0, batch_size=4)
    assert shifted["fid"] > 1e-3 and shifted["fid"] > 1000 * same["fid"]
    assert shifted["kid"] > same["kid"]
    with pytest.raises(InputError, match="at least 2 real and 2 generated"):
        fid_kid(pipeline, extractor, samples[:1], 6)


def test_read_real_images_reads_an_ffhq_style_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("00000/00000.png", "00000/00001.png", "00001/01000.jpg", "masks/00000/00000.png"):
        write_image(tmp_path / "ffhq" / name, rng.integers(0, 255, (48, 40, 3), dtype=np.uint8), (0, 255))
    (tmp_path / "ffhq" / "notes.txt").write_text("not an image")
    files = real_image_files(tmp_path / "ffhq")
    assert [p.relative_to(tmp_path / "ffhq").as_posix() for p in files] == [
        "00000/00000.png",
        "00000/00001.png",
        "00001/01000.jpg",
    ]
    images = read_real_images(tmp_path / "ffhq", 16, count=2)
    assert images.shape == (2, 3, 16, 16) and images.min() >= -1 and images.max() <= 1
    assert read_real_images(tmp_path / "ffhq", 16, count=10).shape == (3, 3, 16, 16)  # all when fewer
    labels = {"labels": [["00001/01000.jpg", [0.0] * 51], ["00000/00001.png", [0.0] * 51]]}
    (tmp_path / "ffhq" / "dataset.json").write_text(json.dumps(labels))
    assert [p.name for p in real_image_files(tmp_path / "ffhq")] == ["00001.png", "01000.jpg"]  # the listed files


def test_read_real_images_refuses_empty_and_one_image_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"^--real .*empty: no images"):
        read_real_images(tmp_path / "empty", 16, 10)
    write_image(tmp_path / "one" / "a.png", np.zeros((8, 8, 3), dtype=np.uint8), (0, 255))
    with pytest.raises(InputError, match=r"^--real .*one: FID / KID need at least 2 real images, found 1"):
        read_real_images(tmp_path / "one", 16, 10)
    with pytest.raises(InputError, match=r"^--real .*missing: folder not found"):
        read_real_images(tmp_path / "missing", 16, 10)
    (tmp_path / "listed").mkdir()
    (tmp_path / "listed" / "dataset.json").write_text(json.dumps({"labels": [["gone.png", []]]}))
    with pytest.raises(InputError, match=r"lists 1 missing files, e\.g\. gone\.png"):
        read_real_images(tmp_path / "listed", 16, 10)


def test_labelled_samples_follow_the_real_data_labels(tmp_path: Path, tiny_config: OmniAvatarConfig) -> None:
    """EG3D's FID protocol: each generated head is mapped and rendered with a label row of the real data."""
    pipeline = OmniAvatarPipeline.from_config(tiny_config)
    feature_dim = pipeline.layout.feature_dim
    side = pipeline.labels(pipeline.cameras(torch.tensor([0.6]), torch.tensor([0.0])), torch.zeros(1, feature_dim))
    samples = labelled_samples(pipeline, side, 3, seed=4, batch_size=2)
    ws = pipeline.generator.mapping(pipeline.latents([4]), side, truncation_psi=1.0)
    torch.testing.assert_close(samples[:1], pipeline.render(ws, side).images.clamp(-1, 1))
    frontal = pipeline.labels(pipeline.cameras(torch.zeros(1), torch.zeros(1)), torch.zeros(1, feature_dim))
    assert not torch.equal(labelled_samples(pipeline, frontal, 1, seed=4), samples[:1])  # the label's camera is used

    folder = tmp_path / "ffhq"
    folder.mkdir()
    assert real_labels(folder, 25 + feature_dim) is None  # no dataset.json: random conditioning
    rows = [["a.png", side[0].tolist()], ["b.png", frontal[0].tolist()]]
    (folder / "dataset.json").write_text(json.dumps({"labels": rows}))
    torch.testing.assert_close(real_labels(folder, 25 + feature_dim), torch.cat([side, frontal]))
    rows[1][1] = rows[1][1][:-1]
    (folder / "dataset.json").write_text(json.dumps({"labels": rows}))
    with pytest.raises(
        InputError, match=rf"label row 1 has {24 + feature_dim} values, expected {25 + feature_dim} \(25 camera"
    ):
        real_labels(folder, 25 + feature_dim)
