"""LDM single-file checkpoints -> diffusers models: exact round trips and the unmatched-keys report.

The LDM layout is produced from tiny diffusers models by the inverse key maps below (written from CompVis
``openaimodel.py`` / ``autoencoder.py`` and ControlNet ``cldm.py`` naming), then read back with genblocks.
"""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from safetensors.torch import save_file

from genblocks.diffusion.checkpoints import (
    LDM_TEXT_ENCODER_PREFIX,
    LDM_UNET_PREFIX,
    LDM_VAE_PREFIX,
    PipelineConversionReport,
    clean_state_dict,
    convert_reference_ldm_state_dict,
    load_ldm_checkpoint,
    load_ldm_component,
    load_ldm_motion_modules,
    load_ldm_reference_unet,
    read_ldm_checkpoint,
    save_components,
    split_by_prefix,
    split_ldm_motion_keys,
    write_converted_pipeline,
)
from genblocks.diffusion.temporal import MotionPlacement, TemporalModuleConfig, TemporalModuleSet
from genblocks.testing.ldm_layout import clip_to_ldm, controlnet_to_ldm, motion_modules_to_ldm, unet_to_ldm, vae_to_ldm
from genblocks.tiny import tiny_clip_text_encoder, tiny_controlnet, tiny_sdxl_unet, tiny_unet, tiny_vae


def _prefixed(prefix: str, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state_dict.items()}


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.fixture(scope="module")
def sources():
    unet = tiny_unet(seed=1)
    controlnet = tiny_controlnet(unet, seed=2)
    with torch.no_grad():  # non-zero zero-convs, so that a wrong mapping cannot pass by accident
        for p in controlnet.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return {"unet": unet, "vae": tiny_vae(seed=3), "text": tiny_clip_text_encoder(seed=4), "controlnet": controlnet}


@pytest.fixture(scope="module")
def ldm_checkpoint(sources):
    return {
        **_prefixed(LDM_UNET_PREFIX, unet_to_ldm(sources["unet"])),
        **_prefixed(LDM_VAE_PREFIX, vae_to_ldm(sources["vae"])),
        **_prefixed(LDM_TEXT_ENCODER_PREFIX, clip_to_ldm(sources["text"])),
        **_prefixed("pose_control_model.", controlnet_to_ldm(sources["controlnet"])),
    }


def _targets() -> dict[str, torch.nn.Module]:
    unet = tiny_unet(seed=10)
    return {
        LDM_UNET_PREFIX: unet,
        LDM_VAE_PREFIX: tiny_vae(seed=11),
        LDM_TEXT_ENCODER_PREFIX: tiny_clip_text_encoder(seed=12),
        "pose_control_model.": tiny_controlnet(unet, seed=13),
    }


def test_inverse_maps_produce_ldm_names(ldm_checkpoint):
    keys = set(ldm_checkpoint)
    for expected in ("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
                     "model.diffusion_model.input_blocks.2.0.op.weight", "model.diffusion_model.middle_block.2.out_layers.3.bias",
                     "model.diffusion_model.output_blocks.1.1.conv.weight", "model.diffusion_model.out.2.weight",
                     "first_stage_model.encoder.mid.attn_1.q.weight", "first_stage_model.decoder.up.1.upsample.conv.weight",
                     "pose_control_model.input_hint_block.14.weight", "pose_control_model.zero_convs.3.0.bias",
                     "pose_control_model.middle_block_out.0.weight",
                     "cond_stage_model.transformer.text_model.final_layer_norm.weight"):  # fmt: skip
        assert expected in keys, expected
    assert ldm_checkpoint["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4


@pytest.mark.parametrize("container", ["th", "safetensors"])
def test_round_trip_is_exact(sources, ldm_checkpoint, tmp_path, container):
    if container == "th":
        path = tmp_path / "model_state.th"
        wrapped = {"state_dict": {f"module.{k}": v for k, v in ldm_checkpoint.items()}, "global_step": 415001}
        torch.save(wrapped, path)
    else:
        path = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in ldm_checkpoint.items()}, path)
    targets = _targets()
    report = load_ldm_checkpoint(path, targets)
    assert report.is_exact, report
    _assert_same_weights(targets[LDM_UNET_PREFIX], sources["unet"])
    _assert_same_weights(targets[LDM_VAE_PREFIX], sources["vae"])
    _assert_same_weights(targets[LDM_TEXT_ENCODER_PREFIX], sources["text"])
    _assert_same_weights(targets["pose_control_model."], sources["controlnet"])


def test_round_trip_outputs_match(sources, ldm_checkpoint):
    unet = tiny_unet(seed=10)
    report = load_ldm_component(unet, split_by_prefix(ldm_checkpoint, [LDM_UNET_PREFIX])[0][LDM_UNET_PREFIX])
    assert report.is_exact
    x, ehs = torch.randn(1, 4, 8, 8), torch.randn(1, 3, 32)
    with torch.no_grad():
        assert torch.equal(unet(x, 7, ehs).sample, sources["unet"](x, 7, ehs).sample)


def test_unmatched_keys_report(ldm_checkpoint):
    checkpoint = dict(ldm_checkpoint)
    del checkpoint["model.diffusion_model.out.2.weight"]  # missing
    del checkpoint["first_stage_model.quant_conv.bias"]  # missing
    motion = "model.diffusion_model.input_blocks_motion_module.0.0.temporal_transformer.proj_in.weight"
    checkpoint[motion] = torch.zeros(3, 3)  # unconverted: a package maps motion modules itself
    checkpoint["model.diffusion_model.foo.weight"] = torch.zeros(1)  # unknown key
    wrong = "pose_control_model.zero_convs.0.0.weight"
    checkpoint[wrong] = torch.zeros(1, 1, 1, 1)  # wrong shape
    checkpoint["appearance_control_model.time_embed.0.weight"] = torch.zeros(1)  # prefix nobody asked for
    checkpoint["first_stage_model.encoder.mid.attn_1.q.weight"] = checkpoint[
        "first_stage_model.encoder.mid.attn_1.q.weight"
    ][:, :, 0, 0]  # already linear: still loads

    targets = _targets()
    report = load_ldm_checkpoint(checkpoint, targets)
    assert not report.is_exact
    unet_report = report.components[LDM_UNET_PREFIX]
    assert unet_report.missing_keys == ["conv_out.weight"]
    assert unet_report.unexpected_keys == sorted([motion.removeprefix(LDM_UNET_PREFIX), "foo.weight"])
    assert unet_report.mismatched_keys == []
    vae_report = report.components[LDM_VAE_PREFIX]
    assert vae_report.missing_keys == ["quant_conv.bias"] and vae_report.unexpected_keys == []
    cn_report = report.components["pose_control_model."]
    assert cn_report.missing_keys == [] and cn_report.unexpected_keys == []
    assert len(cn_report.mismatched_keys) == 1
    assert cn_report.mismatched_keys[0].startswith("zero_convs.0.0.weight -> controlnet_down_blocks.0.weight")
    assert report.components[LDM_TEXT_ENCODER_PREFIX].is_exact
    assert report.unclaimed_keys == ["appearance_control_model.time_embed.0.weight"]


def test_reference_unet_without_out_and_shallow_hint_encoder():
    unet = tiny_unet(seed=5)
    reference = {k: v for k, v in unet_to_ldm(unet).items() if not k.startswith("out.")}
    target = tiny_unet(seed=6)
    report = load_ldm_component(target, reference)
    assert report.missing_keys == ["conv_norm_out.bias", "conv_norm_out.weight", "conv_out.bias", "conv_out.weight"]
    assert report.unexpected_keys == [] and report.mismatched_keys == []
    # x-portrait's tiny ControlNets use hint widths (8, 16): conv_out is input_hint_block.6, not diffusers' fixed 14.
    shallow = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16), conditioning_channels=6)
    ldm = controlnet_to_ldm(shallow)
    assert "input_hint_block.6.weight" in ldm
    fresh = ControlNetModel.from_unet(
        tiny_unet(seed=7), conditioning_embedding_out_channels=(8, 16), conditioning_channels=6
    )
    assert load_ldm_component(fresh, ldm).is_exact
    _assert_same_weights(fresh, shallow)


def _temporal_set(unet: UNet2DConditionModel, seed: int) -> TemporalModuleSet:
    torch.manual_seed(seed)
    config = TemporalModuleConfig(num_attention_heads=2, max_len=8, norm_num_groups=8, zero_init=False)
    return TemporalModuleSet.build(unet, MotionPlacement.diffportrait3d(unet), config)


def test_motion_modules_round_trip_and_report():
    unet = tiny_unet(seed=1)
    source, target = _temporal_set(unet, seed=2), _temporal_set(unet, seed=3)
    motion = motion_modules_to_ldm(source)
    assert all("_motion_module." in key for key in motion)
    state = {**unet_to_ldm(unet), **motion}
    motion_state, unet_state = split_ldm_motion_keys(state)
    assert motion_state.keys() == motion.keys() and unet_state.keys() == unet_to_ldm(unet).keys()
    assert load_ldm_motion_modules(motion_state, target).is_exact
    _assert_same_weights(target, source)

    broken = dict(motion_state)
    first = next(iter(broken))
    broken["output_blocks_motion_module.99.0.temporal_transformer.proj_in.weight"] = torch.zeros(1)
    broken[first] = torch.zeros(3)
    report = load_ldm_motion_modules(broken, _temporal_set(unet, seed=4))
    assert report.unexpected_keys and all(key.startswith(LDM_UNET_PREFIX) for key in report.unexpected_keys[:1])
    assert len(report.mismatched_keys) == 1 and "checkpoint (3,)" in report.mismatched_keys[0]
    assert not report.missing_keys
    none_report = load_ldm_motion_modules(motion_state, None, prefix="p.")
    assert sorted(none_report.unexpected_keys) == sorted("p." + key for key in motion_state)


def test_reference_unet_loader_ignores_hint_block_and_missing_out():
    unet = tiny_unet(seed=5)
    reference = {k: v for k, v in unet_to_ldm(unet).items() if not k.startswith("out.")}
    reference["input_hint_block.0.weight"] = torch.zeros(2)
    target = tiny_unet(seed=6)
    report, ignored = load_ldm_reference_unet(target, reference, "control_model.")
    assert report.is_exact
    assert ignored == [
        "control_model.input_hint_block.0.weight",
        "reference_unet.conv_norm_out.bias",
        "reference_unet.conv_norm_out.weight",
        "reference_unet.conv_out.bias",
        "reference_unet.conv_out.weight",
    ]
    assert torch.equal(target.conv_in.weight, unet.conv_in.weight)


def test_clean_split_read_and_save(ldm_checkpoint, tmp_path):
    cleaned = clean_state_dict({"state_dict": {"module.module.a.b": torch.ones(1), "c": torch.zeros(1), "n": 3}})
    assert set(cleaned) == {"a.b", "c"}
    with pytest.raises(ValueError, match=r"'module\.' prefix"):
        clean_state_dict({"module.a": torch.ones(1), "a": torch.ones(1)})
    groups, rest = split_by_prefix(
        {"control_model.x": 1, "pose_control_model.x": 2, "local_pose_control_model.x": 3, "other.y": 4},
        ["control_model.", "pose_control_model.", "local_pose_control_model."],
    )
    assert groups == {
        "control_model.": {"x": 1},
        "pose_control_model.": {"x": 2},
        "local_pose_control_model.": {"x": 3},
    }
    assert rest == {"other.y": 4}
    with pytest.raises(ValueError, match="not a file"):
        read_ldm_checkpoint(tmp_path / "missing.th")
    with pytest.raises(ValueError, match="CLIPTextModel"):
        load_ldm_component(torch.nn.Linear(1, 1), {})
    with pytest.raises(ValueError, match=r"label_emb.*UNet2DConditionModel config"):
        load_ldm_component(tiny_sdxl_unet(), {})  # SDXL text-time embedding keys are required by the converter
    with pytest.raises(ValueError, match="weights_only"):
        path = tmp_path / "pickled.ckpt"
        torch.save({"state_dict": {}, "hyper_parameters": _Opaque()}, path)
        read_ldm_checkpoint(path)
    targets = _targets()
    load_ldm_checkpoint(ldm_checkpoint, targets)
    written = save_components(
        {"unet": targets[LDM_UNET_PREFIX], "text_encoder": targets[LDM_TEXT_ENCODER_PREFIX]}, tmp_path / "out"
    )
    assert (written["unet"] / "diffusion_pytorch_model.safetensors").is_file()
    assert (written["text_encoder"] / "model.safetensors").is_file()
    reloaded = UNet2DConditionModel.from_pretrained(written["unet"])
    _assert_same_weights(reloaded, targets[LDM_UNET_PREFIX])


class _Opaque:
    """An object torch.load(weights_only=True) refuses."""


def test_pipeline_report_ignores_scheduler_buffers_and_refuses_a_foreign_file() -> None:
    from genblocks.diffusion.checkpoints import ConversionReport, PipelineConversionReport
    from genblocks.errors import InputError

    report = PipelineConversionReport.from_unclaimed(["betas", "alphas_cumprod", "cond_stage_model.extra"])
    assert report.ignored_keys == ["alphas_cumprod", "betas"] and report.unclaimed_keys == ["cond_stage_model.extra"]
    report.components["unet"] = ConversionReport(unexpected_keys=["foo"], loaded_keys=0)
    with pytest.raises(InputError, match=r"ckpt\.th matches nothing"):
        report.check_matches("ckpt.th")
    report.components["unet"] = ConversionReport(loaded_keys=12)
    report.check_matches("ckpt.th")  # something loaded: a partial match is reported, not refused
    assert report.loaded_keys == 12 and report.to_dict()["loaded_keys"] == 12
    assert not report.is_exact  # the unclaimed key
    report.unclaimed_keys.clear()
    assert report.is_exact and "unet: 12 loaded" in report.summary()


class _ViewReport(PipelineConversionReport):
    temporal_name = "view_modules"


def _reference_paper_checkpoint() -> tuple[dict[str, torch.Tensor], dict[str, torch.nn.Module]]:
    """An official-layout checkpoint of a reference-UNet paper (DiffPortrait3D's prefixes) and the models it holds."""
    unet = tiny_unet(seed=1)
    modules = _temporal_set(unet, seed=2)
    reference = tiny_unet(seed=3)
    controlnet = tiny_controlnet(unet, seed=4)
    with torch.no_grad():
        for p in controlnet.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    reference_state = {k: v for k, v in unet_to_ldm(reference).items() if not k.startswith("out.")}
    reference_state["input_hint_block.0.weight"] = torch.ones(2)
    checkpoint = {
        **_prefixed(LDM_UNET_PREFIX, {**unet_to_ldm(unet), **motion_modules_to_ldm(modules)}),
        **_prefixed("control_model.", reference_state),
        **_prefixed("pose_control_model.", controlnet_to_ldm(controlnet)),
        "betas": torch.linspace(0, 1, 4),  # a complete training checkpoint's DDPM schedule
        "lr_scheduler.step": torch.zeros(1),
    }
    return checkpoint, {"unet": unet, "temporal": modules, "reference_unet": reference, "view_controlnet": controlnet}


PAPER_PREFIXES = {
    "unet": LDM_UNET_PREFIX,
    "reference_unet": "control_model.",
    "view_controlnet": "pose_control_model.",
    "vae": LDM_VAE_PREFIX,
    "text_encoder": LDM_TEXT_ENCODER_PREFIX,
}


def test_convert_reference_ldm_state_dict_loads_every_part_and_reports_the_rest() -> None:
    checkpoint, sources = _reference_paper_checkpoint()
    unet = tiny_unet(seed=10)
    targets = {
        "unet": unet,
        "reference_unet": tiny_unet(seed=11),
        "view_controlnet": tiny_controlnet(unet, seed=12),
        "vae": tiny_vae(seed=13),
        "text_encoder": tiny_clip_text_encoder(seed=14),
    }
    vae_before = {k: v.clone() for k, v in targets["vae"].state_dict().items()}
    temporal = _temporal_set(unet, seed=15)
    wrapped = {"state_dict": {"module." + key: value for key, value in checkpoint.items()}}
    report = convert_reference_ldm_state_dict(wrapped, PAPER_PREFIXES, targets, temporal, _ViewReport)
    assert isinstance(report, _ViewReport)
    assert list(report.components) == ["unet", "reference_unet", "view_controlnet"]  # no vae/text keys: kept
    assert all(part.is_exact for part in report.components.values()) and report.temporal.is_exact
    for name in ("unet", "reference_unet", "view_controlnet"):
        own = {k: v for k, v in targets[name].state_dict().items() if name != "reference_unet" or "_out." not in k}
        theirs = sources[name].state_dict()
        assert all(torch.equal(value, theirs[key]) for key, value in own.items()), name
    _assert_same_weights(temporal, sources["temporal"])
    assert all(torch.equal(v, vae_before[k]) for k, v in targets["vae"].state_dict().items())
    assert report.ignored_keys == [
        "betas",
        "control_model.input_hint_block.0.weight",
        "reference_unet.conv_norm_out.bias",
        "reference_unet.conv_norm_out.weight",
        "reference_unet.conv_out.bias",
        "reference_unet.conv_out.weight",
    ]
    assert report.unclaimed_keys == ["lr_scheduler.step"] and not report.is_exact
    expected = sum(len(sources[n].state_dict()) for n in ("unet", "temporal", "view_controlnet"))
    assert report.loaded_keys == expected + len(sources["reference_unet"].state_dict()) - 4  # no out layers
    assert report.to_dict()["view_modules"]["loaded_keys"] == len(sources["temporal"].state_dict())

    # the optional parts load when the checkpoint has them; without temporal modules their keys are unexpected
    vae = tiny_vae(seed=20)
    with_vae = {**checkpoint, **_prefixed(LDM_VAE_PREFIX, vae_to_ldm(vae))}
    with_vae.pop("lr_scheduler.step")
    report = convert_reference_ldm_state_dict(with_vae, PAPER_PREFIXES, targets, None, _ViewReport)
    assert list(report.components) == ["unet", "reference_unet", "view_controlnet", "vae"]
    _assert_same_weights(targets["vae"], vae)
    assert len(report.temporal.unexpected_keys) == len(motion_modules_to_ldm(sources["temporal"]))
    without_text = {name: model for name, model in targets.items() if name != "text_encoder"}
    with pytest.raises(ValueError, match=r"lacks components \['text_encoder'\]"):
        convert_reference_ldm_state_dict(checkpoint, PAPER_PREFIXES, without_text, None, _ViewReport)


def test_write_converted_pipeline_saves_the_pipeline_and_its_report(tmp_path) -> None:
    class _Pipeline:
        def save_pretrained(self, output, safe_serialization: bool) -> None:
            output.mkdir(parents=True)
            (output / "model_index.json").write_text(json.dumps({"safe": safe_serialization}))

    report = _ViewReport(unclaimed_keys=["x"])
    folder = write_converted_pipeline(_Pipeline(), report, tmp_path / "out")
    assert folder == tmp_path / "out"
    assert json.loads((folder / "model_index.json").read_text()) == {"safe": True}
    saved = json.loads((folder / "conversion_report.json").read_text())
    assert saved == json.loads(json.dumps(report.to_dict())) and saved["unclaimed_keys"] == ["x"]


def test_read_ldm_checkpoint_unpickles_in_full_only_when_trusted(tmp_path) -> None:
    path = tmp_path / "model_state.th"
    torch.save({"state_dict": {"module.a": torch.ones(2)}, "opaque": _Opaque()}, path)
    with pytest.raises(ValueError, match="weights_only"):
        read_ldm_checkpoint(path)
    state = read_ldm_checkpoint(path, trust_pickle=True)
    assert list(state) == ["a"] and torch.equal(state["a"], torch.ones(2))
