"""An OmniAvatar generator pickle in the authors' layout (persistence format, the authors' rendering_kwargs), written
from a seeded tiny pipeline, for the converter and CLI tests."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from omniavatar_test_pickle import write_persistence_pickle

from omniavatar.config import OmniAvatarConfig
from omniavatar.convert_omniavatar_original import original_state_dict
from omniavatar.pipeline_omniavatar import OmniAvatarPipeline


def authors_config(tiny: OmniAvatarConfig) -> OmniAvatarConfig:
    return replace(tiny, igr=replace(tiny.igr, residual_warp=False))


def rendering_kwargs(config: OmniAvatarConfig) -> dict[str, Any]:
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


def write_authors_pickle(
    tmp_path: Path,
    config: OmniAvatarConfig,
    extra_keys: dict[str, torch.Tensor] | None = None,
    extra_init: dict[str, Any] | None = None,
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
    rk = rendering_kwargs(config)
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
        "sr_num_fp16_res": 0,
        "num_fp16_res": 0,
        "conv_clamp": None,
        **(extra_init or {}),
    }
    path = write_persistence_pickle(
        tmp_path / "omniavatar.pkl", state, init, {"rendering_kwargs": rk, "neural_rendering_resolution": 16}
    )
    return path, reference
