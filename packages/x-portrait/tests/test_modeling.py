"""The model: bare-UNet equivalence, the reference bank, summed ControlNets, temporal modules and their placement."""

from __future__ import annotations

import copy

import pytest
import torch
from xp_testing import RESOLUTION, TINY_MODEL, randomize_motion_modules, tiny_components

from genblocks.diffusion.reference_attention import reference_layer_names
from genblocks.testing.controlnets import randomize_controlnet_outputs
from x_portrait.modeling_x_portrait import XPortraitModel, XPortraitMotionModules, build_base_components

FRAMES = 3


def _inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "sample": torch.randn(FRAMES, 4, 8, 8, generator=generator),
        "text": torch.randn(FRAMES, 16, 32, generator=generator),
        "source": torch.randn(1, 4, 8, 8, generator=generator),
        "motion": torch.rand(FRAMES, 3, RESOLUTION, RESOLUTION, generator=generator) * 2 - 1,
        "local": torch.rand(FRAMES, 3, RESOLUTION, RESOLUTION, generator=generator) * 2 - 1,
    }


def _model(components, motion_modules: bool = True) -> XPortraitModel:
    return XPortraitModel(
        components.unet,
        components.reference_unet,
        components.motion_controlnet,
        components.local_controlnet,
        components.motion_modules if motion_modules else None,
    )


def _randomize_controlnet_outputs(components) -> None:
    """Zero convs -> small random weights, so the ControlNets' residuals are not zero."""
    randomize_controlnet_outputs([components.motion_controlnet, components.local_controlnet], condition_embedding=True)


@torch.no_grad()
def test_bank_off_zero_scales_zero_temporal_equals_base_unet() -> None:
    components = tiny_components()
    _randomize_controlnet_outputs(components)
    base = copy.deepcopy(components.unet)
    model = _model(components)
    x = _inputs()
    t = torch.tensor(500)
    model.write_reference(x["source"], t, x["text"][:1])
    out = model(
        x["sample"], t, x["text"], num_frames=FRAMES, motion_image=x["motion"], local_image=x["local"],
        use_reference=False, controlnet_scales=(0.0, 0.0),
    )  # fmt: skip
    expected = base(x["sample"], t, encoder_hidden_states=x["text"]).sample
    assert torch.equal(out, expected)
    # the "controlnet-important" unconditional pass ignores the written bank and the ControlNets
    assert not model.bank.is_empty()
    assert torch.equal(model.unconditional(x["sample"], t, x["text"], num_frames=FRAMES), expected)
    assert not torch.equal(model(x["sample"], t, x["text"], num_frames=FRAMES, motion_image=x["motion"]), expected)


@torch.no_grad()
def test_each_condition_changes_the_output() -> None:
    components = tiny_components()
    randomize_motion_modules(components)
    _randomize_controlnet_outputs(components)
    model = _model(components)
    x = _inputs()
    t = torch.tensor(300)
    model.write_reference(x["source"], t, x["text"][:1])
    kwargs = {"num_frames": FRAMES, "motion_image": x["motion"], "local_image": x["local"]}
    full = model(x["sample"], t, x["text"], **kwargs)
    assert not torch.allclose(full, model(x["sample"], t, x["text"], **{**kwargs, "use_reference": False}))
    assert not torch.allclose(full, model(x["sample"], t, x["text"], **{**kwargs, "local_image": None}))
    assert not torch.allclose(full, model(x["sample"], t, x["text"], **{**kwargs, "motion_image": None}))
    # temporal modules: frames interact only with num_frames > 1
    per_frame = torch.cat(
        [
            model(x["sample"][i : i + 1], t, x["text"][i : i + 1], num_frames=1, motion_image=x["motion"][i : i + 1],
                  local_image=x["local"][i : i + 1])
            for i in range(FRAMES)
        ]
    )  # fmt: skip
    assert not torch.allclose(full, per_frame, atol=1e-5)


@torch.no_grad()
def test_controlnet_residuals_are_summed() -> None:
    components = tiny_components()
    _randomize_controlnet_outputs(components)
    model = _model(components, motion_modules=False)
    x = _inputs()
    t = torch.tensor(100)
    cond = {"motion": x["motion"], "local": x["local"]}
    both = model.controlnets(x["sample"], t, x["text"], controlnet_cond=cond)
    motion = model.motion_controlnet(x["sample"], t, x["text"], controlnet_cond=x["motion"], return_dict=False)
    local = model.local_controlnet(x["sample"], t, x["text"], controlnet_cond=x["local"], return_dict=False)
    for summed, a, b in zip(both.down_block_res_samples, motion[0], local[0], strict=True):
        torch.testing.assert_close(summed, a + b)
    torch.testing.assert_close(both.mid_block_res_sample, motion[1] + local[1])


@torch.no_grad()
def test_zero_initialised_temporal_modules_are_identity_and_window_independent() -> None:
    components = tiny_components()
    model = _model(components)
    x = _inputs()
    t = torch.tensor(700)
    model.write_reference(x["source"], t, x["text"][:1])
    kwargs = {"motion_image": x["motion"], "local_image": x["local"]}
    together = model(x["sample"], t, x["text"], num_frames=FRAMES, **kwargs)
    alone = torch.cat(
        [model(x["sample"][i : i + 1], t, x["text"][i : i + 1], num_frames=1, motion_image=x["motion"][i : i + 1],
               local_image=x["local"][i : i + 1]) for i in range(FRAMES)]
    )  # fmt: skip
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_reference_bank_covers_every_transformer_block() -> None:
    components = tiny_components()
    model = _model(components)
    x = _inputs()
    model.write_reference(x["source"], torch.tensor(10), x["text"][:1])
    names = reference_layer_names(components.unet)
    assert model.bank.layer_names == names
    assert len(names) == 1 + 1 + 2  # tiny UNet: down, mid, 2 up blocks (SD1.5: 6 + 1 + 9 = 16)
    for name in names:
        assert model.bank[name].shape[0] == 1  # one source, repeated over frames when read
    with pytest.raises(ValueError, match="reference bank is empty"):
        model.clear_reference()
        model(x["sample"], torch.tensor(10), x["text"], num_frames=FRAMES)


def test_motion_modules_placement_and_save_load(tmp_path) -> None:
    components = tiny_components()
    modules = components.motion_modules
    assert isinstance(modules, XPortraitMotionModules)
    # tiny (32, 64) UNet, one layer per block: LDM input blocks 1 (level 0) and 3 (level 1), output blocks 0-3
    assert modules.placement.input_blocks == (1, 3)
    assert modules.placement.output_blocks == (0, 1, 2, 3)
    assert all(float(p.detach().abs().sum()) == 0.0 for n, p in modules.named_parameters() if "proj_out" in n)
    randomize_motion_modules(components)
    modules.save_pretrained(tmp_path / "motion_modules")
    loaded = XPortraitMotionModules.from_pretrained(tmp_path / "motion_modules")
    assert list(loaded.config.module_channels) == list(modules.config.module_channels) == [32, 64, 64, 64, 32, 32]
    for (name, a), (_, b) in zip(modules.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="max_len"), modules.frames(TINY_MODEL.temporal_max_len + 1):
        pass


def test_build_base_components_from_a_diffusers_folder(tmp_path) -> None:
    source = tiny_components(seed=2)
    for name in ("unet", "vae", "text_encoder", "tokenizer"):
        getattr(source, name).save_pretrained(tmp_path / name)
    built = build_base_components(tmp_path, TINY_MODEL)
    assert not any(p.requires_grad for p in built.unet.parameters())
    for a, b in zip(built.unet.state_dict().values(), source.unet.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # reference UNet and ControlNet encoders start from the base UNet (upstream initialisation)
    assert torch.equal(built.reference_unet.conv_in.weight, source.unet.conv_in.weight)
    assert torch.equal(built.motion_controlnet.conv_in.weight, source.unet.conv_in.weight)
    assert float(built.local_controlnet.controlnet_mid_block.weight.detach().abs().sum()) == 0.0
    assert built.motion_modules is not None
    with pytest.raises(ValueError, match="base_model"):
        build_base_components(tmp_path / "unet", TINY_MODEL)
