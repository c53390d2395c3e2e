"""The official-checkpoint converter: a state dict written in the upstream LDM layout from our own tiny model converts
back exactly (key maps from genblocks.testing.ldm_layout)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffportrait3d.cli import main
from diffportrait3d.config import tiny_config
from diffportrait3d.convert_diffportrait3d_original import (
    convert_diffportrait3d_checkpoint,
    convert_diffportrait3d_state_dict,
    save_converted_pipeline,
)
from diffportrait3d.modeling_diffportrait3d import build_random_components
from diffportrait3d.pipeline_diffportrait3d import DiffPortrait3DPipeline
from genblocks.diffusion.temporal import ldm_motion_module_names
from genblocks.testing.ldm_layout import controlnet_to_ldm, motion_modules_to_ldm, unet_to_ldm


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + key: value for key, value in state.items()}


def _source():
    config = tiny_config()
    parts = build_random_components(config.model, config.random, seed=1)
    with torch.no_grad():
        for module in (parts.reference_unet, parts.view_controlnet, parts.view_modules):
            for param in module.parameters():
                param.add_(torch.randn_like(param) * 0.01)
    hint = {k: torch.randn_like(v) for k, v in controlnet_to_ldm(parts.view_controlnet).items() if "input_hint" in k}
    state = {
        **_prefixed("model.diffusion_model.", unet_to_ldm(parts.unet)),
        **_prefixed("model.diffusion_model.", motion_modules_to_ldm(parts.view_modules.module_set)),
        **_prefixed("control_model.", {**unet_to_ldm(parts.reference_unet, with_out=False), **hint}),
        **_prefixed("pose_control_model.", controlnet_to_ldm(parts.view_controlnet)),
    }
    return parts, state


def _same(a: torch.nn.Module, b: torch.nn.Module, skip: tuple[str, ...] = ()) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        if not key.startswith(skip):
            assert torch.equal(sa[key], sb[key]), key


def test_round_trip_exact(tmp_path: Path) -> None:
    source, state = _source()
    assert "model.diffusion_model.middle_block_motion_module.0.temporal_transformer.proj_in.weight" in state
    assert "model.diffusion_model.output_blocks_motion_module.1.1.temporal_transformer.proj_out.weight" in state
    config = tiny_config()
    target = build_random_components(config.model, config.random, seed=2)
    report = convert_diffportrait3d_state_dict(state, target)
    assert report.is_exact, report.to_dict()
    _same(source.unet, target.unet)
    _same(source.reference_unet, target.reference_unet, skip=("conv_norm_out", "conv_out"))
    _same(source.view_controlnet, target.view_controlnet)
    _same(source.view_modules, target.view_modules)
    # the .th file path (weights_only) and the saved pipeline folder
    torch.save({"state_dict": state}, tmp_path / "model_state.th")
    again = build_random_components(config.model, config.random, seed=3)
    assert convert_diffportrait3d_checkpoint(tmp_path / "model_state.th", again).is_exact
    folder = save_converted_pipeline(again, report, tmp_path / "pipe", views_per_batch=4)
    loaded = DiffPortrait3DPipeline.from_pretrained(folder)
    _same(loaded.view_modules, source.view_modules)
    assert (folder / "conversion_report.json").is_file()


def test_mismatches_are_reported() -> None:
    _, state = _source()
    key = "pose_control_model.zero_convs.0.0.weight"
    state.pop(key)
    state["model.diffusion_model.output_blocks_motion_module.9.0.temporal_transformer.proj_in.weight"] = torch.zeros(1)
    state["extra.key"] = torch.zeros(1)
    config = tiny_config()
    report = convert_diffportrait3d_state_dict(state, build_random_components(config.model, config.random, seed=2))
    assert not report.is_exact
    assert report.unclaimed_keys == ["extra.key"]
    assert report.components["view_controlnet"].missing_keys
    assert report.view_modules.unexpected_keys


def test_sd15_cross_view_key_map() -> None:
    from diffusers import UNet2DConditionModel

    from genblocks.diffusion import MotionPlacement

    with torch.device("meta"):
        unet = UNet2DConditionModel()  # SD1.5's architecture (the diffusers defaults), no memory
    names = ldm_motion_module_names(MotionPlacement.diffportrait3d(unet))
    assert len(names) == 11 + 1 + 12 + 3
    assert names["input_blocks_motion_module.0.0"] == "input_blocks_1"
    assert names["input_blocks_motion_module.10.0"] == "input_blocks_11"
    assert names["middle_block_motion_module.0"] == "middle_block"
    assert [k for k in names if k.endswith(".1") and k.startswith("output")] == [
        "output_blocks_motion_module.2.1",
        "output_blocks_motion_module.5.1",
        "output_blocks_motion_module.8.1",
    ]


def test_cli_convert_writes_the_pipeline_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, state = _source()
    base = tmp_path / "sd15"
    for name in ("unet", "vae", "text_encoder", "tokenizer"):
        getattr(source, name).save_pretrained(base / name)
    torch.save({"state_dict": state}, tmp_path / "model_state.th")
    out = tmp_path / "pipe"
    argv = ["convert", "--config", "tiny", "--checkpoint", str(tmp_path / "model_state.th"), "--base", str(base)]
    assert main([*argv, "--out", str(out), "--set", "model.views_per_batch=2", "--strict"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["is_exact"]
    assert (out / "model_index.json").is_file()
    assert json.loads((out / "conversion_report.json").read_text())["is_exact"]
    loaded = DiffPortrait3DPipeline.from_pretrained(out)
    assert loaded.config.views_per_batch == 2  # the --set reached the converter's model config
    _same(loaded.view_controlnet, source.view_controlnet)
    _same(loaded.view_modules, source.view_modules)
