"""Converter round trip on a persistence-format pickle whose embedded code would raise if run."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from omniavatar_test_pickle import write_persistence_pickle

from genblocks.errors import InputError
from omniavatar.config import OmniAvatarConfig
from omniavatar.convert_omniavatar_original import (
    ConversionError,
    convert_omniavatar,
    original_state_dict,
    read_labels,
)
from omniavatar.pipeline_omniavatar import OmniAvatarPipeline


def _authors_config(tiny: OmniAvatarConfig) -> OmniAvatarConfig:
    return replace(tiny, igr=replace(tiny.igr, residual_warp=False))


def _rendering_kwargs(config: OmniAvatarConfig) -> dict[str, Any]:
    g, igr = config.generator, config.igr
    return {
        "triplane_depth": g.triplane_depth,
        "feature_dim": config.flame.feature_dim,
        "im3dmm_path": "/data/im3dmm.pt",
        "template_sdf_path": "/data/template_sdf.pt",
        "bbox": [list(igr.bbox[0]), list(igr.bbox[1])],
        "intermediate_dims": list(igr.intermediate_dims),
        "template_intermediate_dims": list(igr.template_intermediate_dims),
        "skip_connection_layers": list(igr.skip_connection_layers),
        "decoder_activation": "sigmoid",
        "decoder_lr_mul": 1.0,
        "pose_embed": True,
        "pose_perturb_magtinude": 0.1,
        "c_scale": 1.0,
        "c_gen_conditioning_zero": False,
        "use_background": False,
        "with_torgb": False,
        "superresolution_module": "training.superresolution.SuperresolutionHybrid2X",
        "sr_antialias": True,
        "superresolution_noise_mode": "none",
        "box_warp": g.box_warp,
        "ray_start": g.ray_start,
        "ray_end": g.ray_end,
        "depth_resolution": g.depth_resolution,
        "depth_resolution_importance": g.depth_resolution_importance,
        "avg_camera_radius": g.avg_camera_radius,
        "avg_camera_pivot": list(g.avg_camera_pivot),
        "with_sdf": False,
        "delta_geom": True,
        "clamp_mode": "softplus",
        "disparity_space_sampling": False,
        "density_reg": 0.25,
    }


def _write(
    tmp_path: Path, config: OmniAvatarConfig, extra_keys: dict[str, torch.Tensor] | None = None
) -> tuple[Path, OmniAvatarPipeline]:
    reference = OmniAvatarPipeline.from_config(config, seed=7)
    with torch.no_grad():
        reference.generator.sigmoid_beta.fill_(0.02)
        reference.generator.backbone.mapping.w_avg.normal_()
    state = original_state_dict(reference.generator)
    state["superresolution.block0.conv0.noise_const"] = torch.randn(16, 16)
    state["superresolution.block0.conv0.noise_strength"] = torch.zeros([])
    state["superresolution.resample_filter"] = torch.ones(4, 4) / 16
    state.update(extra_keys or {})
    rk = _rendering_kwargs(config)
    g = config.generator
    init = {
        "z_dim": g.z_dim,
        "c_dim": g.c_dim,
        "w_dim": g.w_dim,
        "img_resolution": g.img_resolution,
        "img_channels": 3,
        "channel_base": g.channel_base,
        "channel_max": g.channel_max,
        "mapping_kwargs": {"num_layers": 2},
        "rendering_kwargs": rk,
        "sr_kwargs": {},
    }
    path = write_persistence_pickle(
        tmp_path / "omniavatar.pkl", state, init, {"rendering_kwargs": rk, "neural_rendering_resolution": 16}
    )
    return path, reference


def test_the_pickle_would_run_code(tmp_path: Path, tiny_config: OmniAvatarConfig) -> None:
    path, _ = _write(tmp_path, _authors_config(tiny_config))
    with pytest.raises((RuntimeError, ModuleNotFoundError, AttributeError)), open(path, "rb") as handle:
        pickle.load(handle)


def test_round_trip_reproduces_images_depth_and_mask(tmp_path: Path, tiny_config: OmniAvatarConfig) -> None:
    config = _authors_config(tiny_config)
    path, reference = _write(tmp_path, config)
    converted, report = convert_omniavatar(path, tmp_path / "converted", base=tiny_config)
    assert report.ok and "superresolution.block0.conv0.noise_const" in report.dropped
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


def test_strict_report_names_unexpected_keys(tmp_path: Path, tiny_config: OmniAvatarConfig) -> None:
    path, _ = _write(tmp_path, _authors_config(tiny_config), {"decoder.extra_net.weight": torch.zeros(3)})
    with pytest.raises(ConversionError, match=r"decoder\.extra_net\.weight"):
        convert_omniavatar(path, tmp_path / "out", base=tiny_config)
    assert not (tmp_path / "out").exists()
    _, report = convert_omniavatar(path, tmp_path / "loose", strict=False, base=tiny_config)
    assert report.unexpected == ["decoder.extra_net.weight"]


def test_not_a_generator(tmp_path: Path) -> None:
    path = tmp_path / "other.pkl"
    path.write_bytes(pickle.dumps({"G_ema": {"weights": [1, 2, 3]}}))
    with pytest.raises(InputError):
        convert_omniavatar(path, tmp_path / "out")
    (tmp_path / "text.pkl").write_text("not a pickle")
    with pytest.raises(InputError, match="not a readable pickle"):
        convert_omniavatar(tmp_path / "text.pkl", tmp_path / "out")


def test_labels(tmp_path: Path, tiny_config: OmniAvatarConfig) -> None:
    np.save(tmp_path / "ffhq_labels.npy", np.zeros((3, 51), dtype=np.float32))
    assert read_labels(tmp_path / "ffhq_labels.npy", tiny_config.flame).shape == (3, 51)
    np.save(tmp_path / "bad.npy", np.zeros((3, 40), dtype=np.float32))
    with pytest.raises(InputError, match="rows of 51 numbers"):
        read_labels(tmp_path / "bad.npy", tiny_config.flame)
