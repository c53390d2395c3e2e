"""genblocks.diffusion.reference_models and PlacedTemporalModules: the model pieces X-Portrait, DiffPortrait3D and
humananim share. Each is checked against the code the packages wrote before the move (re-stated here): the same
parameter names, shapes and values, a folder saved by the old form loads bit for bit, the same UNet outputs."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from diffusers.configuration_utils import register_to_config

from genblocks.diffusion import (
    MotionPlacement,
    PlacedTemporalModules,
    ReferenceBank,
    ReferenceComponents,
    ReferenceDenoiser,
    TemporalModuleConfig,
    TemporalModules,
    attach_reference_pair,
    controlnet_from_unet,
    copy_unet,
    load_sd15_folder,
    reference_mode,
    sd15_folder,
)
from genblocks.errors import InputError
from genblocks.tiny import tiny_sd15_components, tiny_unet

# --- the old form: a paper's own constructor, as x-portrait wrote it before the move ------------------------------


class _OldMotionModules(TemporalModules):
    set_attribute = "motion_modules"

    @register_to_config
    def __init__(
        self,
        input_blocks: Sequence[int] = (),
        output_blocks: Sequence[int] = (),
        module_channels: Sequence[int] = (),
        output_before_upsampler: bool = False,
        num_attention_heads: int = 8,
        num_layers: int = 1,
        max_len: int = 24,
        norm_num_groups: int = 32,
        norm_per_frame: bool = True,
        zero_init: bool = True,
    ) -> None:
        placement = MotionPlacement(
            input_blocks=tuple(input_blocks),
            output_blocks=tuple(output_blocks),
            output_before_upsampler=output_before_upsampler,
        )
        temporal = TemporalModuleConfig(
            num_attention_heads=num_attention_heads,
            num_layers=num_layers,
            max_len=max_len,
            norm_num_groups=norm_num_groups,
            norm_per_frame=norm_per_frame,
            zero_init=zero_init,
        )
        super().__init__(placement, module_channels, temporal)


class _MotionModules(PlacedTemporalModules):
    set_attribute = "motion_modules"
    defaults: ClassVar[dict[str, object]] = {"max_len": 12, "output_before_upsampler": True}


class _ViewModules(PlacedTemporalModules):
    set_attribute = "view_modules"


SETTINGS = {"num_attention_heads": 2, "norm_num_groups": 8, "zero_init": False}


def _old_modules(unet: UNet2DConditionModel, seed: int = 0) -> _OldMotionModules:
    placement = MotionPlacement.animatediff(unet)
    torch.manual_seed(seed)
    return _OldMotionModules(
        input_blocks=placement.input_blocks,
        output_blocks=placement.output_blocks,
        module_channels=TemporalModules.placement_channels(unet, placement),
        max_len=12,
        **SETTINGS,
    )


def test_placed_modules_build_what_the_old_constructor_built() -> None:
    unet = tiny_unet().eval()
    old = _old_modules(unet)
    torch.manual_seed(0)
    new = _MotionModules.for_placement(unet, MotionPlacement.animatediff(unet), **SETTINGS)
    names = ["input_blocks_1", "input_blocks_3", *(f"output_blocks_{j}" for j in range(4))]
    assert list(new.motion_modules) == names
    assert [m.in_channels for m in new.motion_modules.values()] == [32, 64, 64, 64, 32, 32]
    old_state, new_state = old.state_dict(), new.state_dict()
    assert [(k, v.shape) for k, v in new_state.items()] == [(k, v.shape) for k, v in old_state.items()]
    assert len(new_state) == 162 and sum(v.numel() for v in new_state.values()) == 347_424
    assert all(torch.equal(old_state[k], new_state[k]) for k in old_state)
    # defaults of the class fill what the call leaves out; the config holds the resolved values
    assert new.temporal_config.max_len == 12 and not new.placement.output_before_upsampler  # as placed
    bare = _MotionModules()
    assert bare.placement.output_before_upsampler and bare.temporal_config.max_len == 12 and not bare.motion_modules
    assert new.config["max_len"] == 12 and tuple(new.config["module_channels"]) == (32, 64, 64, 64, 32, 32)


def test_a_folder_saved_by_the_old_constructor_loads_bit_exactly(tmp_path: Path) -> None:
    unet = tiny_unet().eval()
    old = _old_modules(unet, seed=3)
    old.save_pretrained(tmp_path / "old")
    saved = json.loads((tmp_path / "old" / "config.json").read_text())
    saved["_class_name"] = "_MotionModules"
    (tmp_path / "old" / "config.json").write_text(json.dumps(saved))
    loaded = _MotionModules.from_pretrained(tmp_path / "old")
    assert loaded.placement == old.placement  # output_before_upsampler=False as saved, not the class default
    assert loaded.temporal_config == old.temporal_config
    assert all(torch.equal(value, loaded.state_dict()[key]) for key, value in old.state_dict().items())
    # a new save round-trips too, and an argument missing from config.json takes the class default
    loaded.save_pretrained(tmp_path / "new")
    again = _MotionModules.from_pretrained(tmp_path / "new")
    assert again.placement == old.placement and again.temporal_config == old.temporal_config
    config = json.loads((tmp_path / "new" / "config.json").read_text())
    del config["max_len"], config["output_before_upsampler"]
    (tmp_path / "new" / "config.json").write_text(json.dumps(config))
    trimmed = _MotionModules.from_pretrained(tmp_path / "new")
    assert trimmed.temporal_config.max_len == 12 and trimmed.placement.output_before_upsampler


def test_for_placement_refuses_an_unknown_setting() -> None:
    with pytest.raises(TypeError, match="heads"):
        _MotionModules.for_placement(tiny_unet(), MotionPlacement(), heads=2)


# --- the denoiser ---------------------------------------------------------------------------------------------------


class _Denoiser(ReferenceDenoiser):
    temporal_attribute = "view_modules"
    frames_name = "num_views"

    def __init__(
        self,
        unet: UNet2DConditionModel,
        reference_unet: UNet2DConditionModel,
        controlnet: ControlNetModel,
        view_modules: _ViewModules | None,
    ) -> None:
        super().__init__(unet, reference_unet, "full")
        self.controlnet = controlnet
        self.set_temporal_modules(view_modules)


def _parts(seed: int = 0) -> tuple[UNet2DConditionModel, UNet2DConditionModel, ControlNetModel, _ViewModules]:
    unet = tiny_unet(seed).eval()
    reference = tiny_unet(seed + 1).eval()
    controlnet = controlnet_from_unet(unet, seed, (8, 16))
    torch.manual_seed(seed)
    modules = _ViewModules.for_placement(unet, MotionPlacement.diffportrait3d(unet), **SETTINGS)
    for module in modules.view_modules.values():
        torch.nn.init.normal_(module.proj_out.weight, std=0.5)  # not identities, so they show in the output
    return unet, reference, controlnet, modules


def _inputs(frames: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(1, 4, 8, 8, generator=g),  # reference latents
        torch.randn(frames, 4, 8, 8, generator=g),  # noisy latents (b v)
        torch.randn(1, 5, 32, generator=g),  # reference text
        torch.randn(frames, 5, 32, generator=g),  # per-view text
    )


def test_denoiser_registers_in_the_packages_order_and_matches_the_hand_wired_step() -> None:
    unet, reference, controlnet, modules = _parts()
    model = _Denoiser(unet, reference, controlnet, modules)
    prefixes = list(dict.fromkeys(key.split(".")[0] for key in model.state_dict()))
    assert prefixes == ["unet", "reference_unet", "controlnet", "view_modules"]
    assert model.temporal_modules is modules and modules.attached
    ref_latents, x, ref_text, text = _inputs()
    with torch.no_grad():
        model.write_reference(ref_latents, 10, ref_text)
        down, mid = controlnet(
            x,
            10,
            text,
            controlnet_cond=torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)),
            return_dict=False,
        )
        residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        ours = model.denoise(x, 10, text, num_frames=2, residuals=residuals)
        ours_uncond = model.denoise(x, 10, text, num_frames=2, use_reference=False, unconditional=True)
        ours_plain = model.denoise(x, 10, text, num_frames=2, use_reference=False)

        # the same step wired by hand, as the packages did before the move
        unet2, reference2, _, modules2 = _parts()
        bank = ReferenceBank()
        attach_reference_pair(reference2, unet2, bank, "full")
        modules2.attach(unet2)
        with reference_mode(reference2, "write"):
            reference2(ref_latents, 10, encoder_hidden_states=ref_text)
        with reference_mode(unet2, "read"), modules2.frames(2):
            theirs = unet2(x, 10, encoder_hidden_states=text, **residuals).sample
        with reference_mode(unet2, "off"), modules2.frames(2), modules2.unconditional_pass():
            theirs_uncond = unet2(x, 10, encoder_hidden_states=text).sample
    assert torch.equal(ours, theirs) and torch.equal(ours_uncond, theirs_uncond)
    assert (ours_uncond - ours_plain).abs().max() > 1e-4  # the middle module runs only in the unconditional pass
    model.clear_reference()
    assert model.bank.is_empty()


def test_denoiser_without_temporal_modules_and_its_input_checks() -> None:
    unet, reference, controlnet, _ = _parts()
    model = _Denoiser(unet, reference, controlnet, None)
    assert model.temporal_modules is None and "view_modules" not in dict(model.named_children())
    _, x, _, text = _inputs(3)
    with pytest.raises(InputError, match="reference bank is empty"):
        model.check_sample(x, 3, use_reference=True)
    with pytest.raises(InputError, match=r"sample: expected \(B \* num_views, C, h, w\) with num_views=2, got \(3,"):
        model.check_sample(x, 2, use_reference=False)
    with torch.no_grad():
        out = model.denoise(x, 5, text, num_frames=3, use_reference=False)
        assert torch.equal(out, unet(x, 5, encoder_hidden_states=text).sample)  # bank off, no modules: the bare UNet
    with pytest.raises(ValueError, match="separate UNet"):
        _Denoiser(unet, unet, controlnet, None)


# --- builders -------------------------------------------------------------------------------------------------------


def test_copy_unet_is_a_separate_equal_unet_in_the_same_dtype() -> None:
    unet = tiny_unet(4)
    copy = copy_unet(unet)
    assert copy is not unet and copy.config == unet.config
    assert all(torch.equal(a, b) for a, b in zip(unet.state_dict().values(), copy.state_dict().values(), strict=True))
    half = copy_unet(unet.to(torch.float16))
    assert half.dtype == torch.float16
    assert all(torch.equal(a, b) for a, b in zip(unet.state_dict().values(), half.state_dict().values(), strict=True))


def test_controlnet_from_unet_is_seeded_from_unet_and_keeps_its_dtype_on_request() -> None:
    unet = tiny_unet(2)
    torch.manual_seed(7)
    expected = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16), conditioning_channels=6)
    net = controlnet_from_unet(unet, 7, [8, 16], conditioning_channels=6)
    assert net.config["conditioning_channels"] == 6 and tuple(net.config["conditioning_embedding_out_channels"]) == (
        8,
        16,
    )
    assert all(
        torch.equal(a, b) for a, b in zip(expected.state_dict().values(), net.state_dict().values(), strict=True)
    )
    other = controlnet_from_unet(unet, 8, (8, 16), conditioning_channels=6)
    hint = "controlnet_cond_embedding.conv_in.weight"
    assert not torch.equal(other.state_dict()[hint], net.state_dict()[hint])
    assert torch.equal(other.conv_in.weight, unet.conv_in.weight)  # the encoder is the UNet's
    half = unet.to(torch.float16)
    assert controlnet_from_unet(half, 7, (8, 16)).dtype == torch.float32
    assert controlnet_from_unet(half, 7, (8, 16), match_dtype=True).dtype == torch.float16


def test_load_sd15_folder_reads_a_saved_folder_and_names_missing_parts(tmp_path: Path) -> None:
    parts = tiny_sd15_components(seed=5)
    for name in ("unet", "vae", "text_encoder", "tokenizer"):
        getattr(parts, name).save_pretrained(tmp_path / name)
    unet, vae, text_encoder, tokenizer = load_sd15_folder(tmp_path)
    assert not any(p.requires_grad for p in unet.parameters())
    for ours, saved in ((unet, parts.unet), (vae, parts.vae), (text_encoder, parts.text_encoder)):
        assert all(
            torch.equal(a, b) for a, b in zip(saved.state_dict().values(), ours.state_dict().values(), strict=True)
        )
    assert tokenizer("a face").input_ids == parts.tokenizer("a face").input_ids
    config_only = load_sd15_folder(tmp_path, load_unet_weights=False)[0]
    assert config_only.config["block_out_channels"] == unet.config["block_out_channels"] and not torch.equal(
        config_only.conv_in.weight, unet.conv_in.weight
    )
    (tmp_path / "tokenizer").rename(tmp_path / "tok")
    with pytest.raises(InputError, match=r"missing sub-folders \['tokenizer'\]"):
        sd15_folder(tmp_path)


def test_placed_modules_of_a_middle_placement_resolve_every_field() -> None:
    unet = tiny_unet()
    placement = dataclasses.replace(MotionPlacement.animatediff(unet, output_before_upsampler=True), middle_block=True)
    modules: Any = _MotionModules.for_placement(unet, placement, **SETTINGS)
    assert modules.placement == placement and "middle_block" in modules.motion_modules
    assert modules.config["middle_block"] is True and modules.config["output_second_blocks"] == ()


def test_reference_components_as_dict_holds_every_field_of_a_papers_subclass() -> None:
    @dataclasses.dataclass
    class _Components(ReferenceComponents):
        controlnet: ControlNetModel
        motion_modules: _MotionModules | None

    parts = tiny_sd15_components(seed=1)
    unet = parts.unet
    reference = copy_unet(unet)
    controlnet = controlnet_from_unet(unet, 0, (8, 16))
    components = _Components(
        unet=unet,
        reference_unet=reference,
        vae=parts.vae,
        text_encoder=parts.text_encoder,
        tokenizer=parts.tokenizer,
        scheduler=parts.scheduler,
        controlnet=controlnet,
        motion_modules=None,
    )
    as_dict = components.as_dict()
    assert list(as_dict) == [
        "unet",
        "reference_unet",
        "vae",
        "text_encoder",
        "tokenizer",
        "scheduler",
        "controlnet",
        "motion_modules",
    ]
    assert as_dict["unet"] is unet and as_dict["controlnet"] is controlnet and as_dict["motion_modules"] is None
