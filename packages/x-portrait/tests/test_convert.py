"""The official-checkpoint converter: a state dict written in the upstream LDM layout from our own random tiny model
converts back exactly, and every key that does not match is reported."""

from __future__ import annotations

import pytest
import torch
from xp_testing import randomize_motion_modules, tiny_components

from genblocks.testing.ldm_layout import controlnet_to_ldm, motion_modules_to_ldm, unet_to_ldm
from x_portrait.convert_x_portrait_original import (
    convert_x_portrait_checkpoint,
    convert_x_portrait_state_dict,
    save_converted_pipeline,
)
from x_portrait.pipeline_x_portrait import XPortraitPipeline


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + key: value for key, value in state.items()}


@pytest.fixture(scope="module")
def source_components():
    components = tiny_components(seed=1)
    randomize_motion_modules(components)
    with torch.no_grad():  # non-zero zero-convs and distinct trainable weights: a wrong mapping cannot pass
        for module in (components.reference_unet, components.motion_controlnet, components.local_controlnet):
            for param in module.parameters():
                param.add_(torch.randn_like(param) * 0.01)
    return components


@pytest.fixture(scope="module")
def official_state(source_components):
    c = source_components
    hint = controlnet_to_ldm(c.motion_controlnet)
    appearance_hint = {k: torch.randn_like(v) for k, v in hint.items() if k.startswith("input_hint_block.")}
    return {
        **_prefixed("model.diffusion_model.", unet_to_ldm(c.unet)),
        **_prefixed("model.diffusion_model.", motion_modules_to_ldm(c.motion_modules.module_set)),
        **_prefixed("appearance_control_model.", {**unet_to_ldm(c.reference_unet, with_out=False), **appearance_hint}),
        **_prefixed("pose_control_model.", controlnet_to_ldm(c.motion_controlnet)),
        **_prefixed("local_pose_control_model.", controlnet_to_ldm(c.local_controlnet)),
    }


def _assert_same(a: torch.nn.Module, b: torch.nn.Module, skip: tuple[str, ...] = ()) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        if not key.startswith(skip):
            assert torch.equal(sa[key], sb[key]), key


def test_official_layout_names(official_state) -> None:
    for key in (
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
        "model.diffusion_model.input_blocks_motion_module.0.0.temporal_transformer.proj_in.weight",
        "model.diffusion_model.output_blocks_motion_module.3.0.temporal_transformer.transformer_blocks.0."
        "attention_blocks.1.pos_encoder.pe",
        "model.diffusion_model.output_blocks_motion_module.1.0.temporal_transformer.transformer_blocks.0.ff_norm.bias",
        "appearance_control_model.middle_block.1.proj_out.weight",
        "appearance_control_model.input_hint_block.0.weight",
        "pose_control_model.zero_convs.2.0.weight",
        "local_pose_control_model.middle_block_out.0.bias",
    ):
        assert key in official_state, key
    assert not any(k.startswith("appearance_control_model.out.") for k in official_state)


def test_round_trip_is_exact_and_reports_ignored_keys(source_components, official_state, tmp_path) -> None:
    path = tmp_path / "model_state-415001.th"
    torch.save({"state_dict": {f"module.{k}": v for k, v in official_state.items()}, "global_step": 7}, path)
    target = tiny_components(seed=5)
    report = convert_x_portrait_checkpoint(path, target)
    assert report.is_exact, report.summary()
    assert report.unmatched_count() == 0
    assert sorted(report.components) == ["local_controlnet", "motion_controlnet", "reference_unet", "unet"]
    assert all(k.startswith("appearance_control_model.input_hint_block.") for k in report.ignored_keys[:-4])
    assert report.ignored_keys[-4:] == [
        "reference_unet.conv_norm_out.bias", "reference_unet.conv_norm_out.weight",
        "reference_unet.conv_out.bias", "reference_unet.conv_out.weight",
    ]  # fmt: skip
    src = source_components
    _assert_same(target.unet, src.unet)
    _assert_same(target.reference_unet, src.reference_unet, skip=("conv_norm_out", "conv_out"))
    _assert_same(target.motion_controlnet, src.motion_controlnet)
    _assert_same(target.local_controlnet, src.local_controlnet)
    _assert_same(target.motion_modules, src.motion_modules)

    out = save_converted_pipeline(target, report, tmp_path / "converted", patch_size=16)
    assert (out / "motion_modules" / "diffusion_pytorch_model.safetensors").is_file()
    assert (out / "conversion_report.json").is_file()
    loaded = XPortraitPipeline.from_pretrained(out)
    _assert_same(loaded.motion_modules, src.motion_modules)


def test_unmatched_keys_are_reported(official_state) -> None:
    state = dict(official_state)
    state["model.diffusion_model.output_blocks_motion_module.9.0.temporal_transformer.proj_in.weight"] = torch.zeros(1)
    state["model.diffusion_model.input_blocks_motion_module.0.0.temporal_transformer.extra.weight"] = torch.zeros(1)
    state["cond_stage_model_ema.decay"] = torch.tensor(0.99)
    dropped = "pose_control_model.zero_convs.1.0.weight"
    del state[dropped]
    state["local_pose_control_model.zero_convs.0.0.weight"] = torch.zeros(3, 3, 1, 1)
    report = convert_x_portrait_state_dict(state, tiny_components(seed=6))
    assert not report.is_exact
    assert report.unclaimed_keys == ["cond_stage_model_ema.decay"]
    assert report.components["motion_controlnet"].missing_keys == ["controlnet_down_blocks.1.weight"]
    assert len(report.components["local_controlnet"].mismatched_keys) == 1
    assert sorted(report.motion_modules.unexpected_keys) == [
        "model.diffusion_model.input_blocks_motion_module.0.0.temporal_transformer.extra.weight",
        "model.diffusion_model.output_blocks_motion_module.9.0.temporal_transformer.proj_in.weight",
    ]
    without_motion = tiny_components(seed=6, with_motion_modules=False)
    report = convert_x_portrait_state_dict(official_state, without_motion)
    assert report.motion_modules.unexpected_keys and not report.is_exact
