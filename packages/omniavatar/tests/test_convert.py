"""Converter round trip on a persistence-format pickle whose embedded code would raise if run."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from omniavatar_authors_pickle import authors_config, write_authors_pickle

from genblocks.errors import InputError
from omniavatar.config import OmniAvatarConfig
from omniavatar.convert_omniavatar_original import (
    GENERATOR_LAYOUT,
    ConversionError,
    convert_omniavatar,
    density_noise_note,
    read_labels,
)
from omniavatar.pipeline_omniavatar import OmniAvatarPipeline


def test_the_pickle_would_run_code(tmp_path: Path, tiny_config: OmniAvatarConfig) -> None:
    path, _ = write_authors_pickle(tmp_path, authors_config(tiny_config))
    with pytest.raises((RuntimeError, ModuleNotFoundError, AttributeError)), open(path, "rb") as handle:
        pickle.load(handle)


def test_round_trip_reproduces_images_depth_and_mask(tmp_path: Path, tiny_config: OmniAvatarConfig) -> None:
    config = authors_config(tiny_config)
    path, reference = write_authors_pickle(tmp_path, config)
    converted, report = convert_omniavatar(path, tmp_path / "converted", base=tiny_config)
    assert report.ok and "superresolution.block0.conv0.noise_const" in report.dropped and report.notes == []
    assert any(key.startswith("renderer.im3dmm._template_sdf.") for key in report.dropped)
    loaded = OmniAvatarPipeline.from_pretrained(tmp_path / "converted")
    saved = json.loads((tmp_path / "converted" / "config.json").read_text())
    assert saved["rendering_kwargs"]["pose_perturb_magtinude"] == 0.1
    assert loaded.config.igr.residual_warp is False and loaded.config.generator.c_scale == 1.0
    features = torch.randn(2, config.flame.feature_dim) * 0.3
    for pipeline in (converted, loaded):
        expected = reference([4, 5], features, yaw=torch.tensor([0.1, -0.2]), truncation_psi=0.7)
        actual = pipeline([4, 5], features, yaw=torch.tensor([0.1, -0.2]), truncation_psi=0.7)
        assert torch.equal(expected.images, actual.images)
        assert torch.equal(expected.depth, actual.depth)
        assert torch.equal(expected.mask, actual.mask)


def test_the_authors_conv_clamps_are_taken_over(tmp_path: Path, tiny_config: OmniAvatarConfig) -> None:
    # EG3D trains the SR with sr_num_fp16_res 4, which makes the authors' SR clamp at ±256 even in fp32; their
    # SynthesisBlock clamps the backbone at conv_clamp (EG3D's training sets None; 256 when init_kwargs omit it).
    extra = {"sr_num_fp16_res": 4, "conv_clamp": None}
    path, _ = write_authors_pickle(tmp_path, authors_config(tiny_config), extra_init=extra)
    converted, report = convert_omniavatar(path, tmp_path / "converted", base=tiny_config)
    assert report.ok and report.notes == []
    loaded = OmniAvatarPipeline.from_pretrained(tmp_path / "converted")
    for generator in (converted.generator, loaded.generator):
        assert generator.config.conv_clamp is None and generator.config.sr_conv_clamp == 256
        assert generator.superresolution.block1.conv1.conv_clamp == 256
        assert generator.backbone.synthesis.b4.conv1.conv_clamp is None
    (tmp_path / "default").mkdir()
    path, _ = write_authors_pickle(tmp_path / "default", authors_config(tiny_config), extra_init={"conv_clamp": 256})
    clamped, _ = convert_omniavatar(path, tmp_path / "default" / "converted", base=tiny_config)
    assert clamped.generator.config.conv_clamp == 256 and clamped.generator.config.sr_conv_clamp is None
    assert clamped.generator.backbone.synthesis.b4.conv1.conv_clamp == 256


def test_density_noise_is_noted() -> None:
    assert density_noise_note({"density_noise": 0.0}) is None and density_noise_note({}) is None
    note = density_noise_note({"density_noise": 1.0})
    assert note is not None and note.startswith("density_noise=1: the authors' renderer adds random density noise")


def test_strict_report_names_unexpected_keys(tmp_path: Path, tiny_config: OmniAvatarConfig) -> None:
    path, _ = write_authors_pickle(tmp_path, authors_config(tiny_config), {"decoder.extra_net.weight": torch.zeros(3)})
    with pytest.raises(ConversionError, match=r"decoder\.extra_net\.weight"):
        convert_omniavatar(path, tmp_path / "out", base=tiny_config)
    assert not (tmp_path / "out").exists()
    _, report = convert_omniavatar(path, tmp_path / "loose", strict=False, base=tiny_config)
    assert report.unexpected == ["decoder.extra_net.weight"]


def test_not_a_generator(tmp_path: Path) -> None:
    path = tmp_path / "other.pkl"
    path.write_bytes(pickle.dumps({"G_ema": {"weights": [1, 2, 3]}}))
    with pytest.raises(InputError) as caught:
        convert_omniavatar(path, tmp_path / "out")
    message = str(caught.value)
    assert message.startswith(f"network pickle {path}: expected a pickled network module, got {{'weights'")
    assert message.endswith(f"; expected {GENERATOR_LAYOUT}")
    assert "training.triplane.TriPlaneGenerator" in message and "rendering_kwargs" in message
    (tmp_path / "text.pkl").write_text("not a pickle")
    with pytest.raises(InputError, match="not a readable pickle"):
        convert_omniavatar(tmp_path / "text.pkl", tmp_path / "out")


def test_labels(tmp_path: Path, tiny_config: OmniAvatarConfig) -> None:
    np.save(tmp_path / "ffhq_labels.npy", np.zeros((3, 51), dtype=np.float32))
    assert read_labels(tmp_path / "ffhq_labels.npy", tiny_config.flame).shape == (3, 51)
    np.save(tmp_path / "bad.npy", np.zeros((3, 40), dtype=np.float32))
    with pytest.raises(InputError, match="rows of 51 numbers"):
        read_labels(tmp_path / "bad.npy", tiny_config.flame)


def test_demo_cameras_render_at_3_14_over_2_and_map_at_half_pi(tiny_config: OmniAvatarConfig) -> None:
    import math

    from genblocks.render3d.cameras import orbit_cam2world

    pipeline = OmniAvatarPipeline.from_config(tiny_config)
    g = tiny_config.generator
    labels = pipeline.cameras(torch.tensor([0.2]), torch.tensor([-0.05]))
    expected = orbit_cam2world(
        torch.tensor([3.14 / 2 + 0.2]), torch.tensor([3.14 / 2 - 0.05]), g.avg_camera_radius, g.avg_camera_pivot
    )
    torch.testing.assert_close(labels[:, :16], expected.reshape(1, 16))
    frontal = pipeline.cameras(0.0, 0.0, center=math.pi / 2)
    half_pi = orbit_cam2world(
        torch.tensor([math.pi / 2]), torch.tensor([math.pi / 2]), g.avg_camera_radius, g.avg_camera_pivot
    )
    torch.testing.assert_close(frontal[:, :16], half_pi.reshape(1, 16))
    assert not torch.allclose(frontal, pipeline.cameras(0.0, 0.0), atol=1e-4, rtol=0)  # 0.0008 rad apart
