"""Temporal (AnimateDiff "Vanilla") module, its placement in diffusers UNets, and the LDM / AnimateDiff key maps."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

from genblocks.diffusion.temporal import (
    MotionPlacement,
    TemporalModuleConfig,
    TemporalModules,
    TemporalModuleSet,
    TemporalTransformer,
    convert_animatediff_motion_state_dict,
    convert_ldm_motion_state_dict,
    insert_temporal_modules,
    ldm_motion_module_names,
    unet_ldm_layout,
)
from genblocks.tiny import tiny_sdxl_unet, tiny_unet

TINY = TemporalModuleConfig(num_attention_heads=2, max_len=8, norm_num_groups=8)


def _module(seed: int = 0, zero_init: bool = False, **overrides: object) -> TemporalTransformer:
    torch.manual_seed(seed)
    settings = {"num_attention_heads": 2, "max_len": 8, "norm_num_groups": 8, "zero_init": zero_init, **overrides}
    return TemporalTransformer(16, **settings).eval()  # type: ignore[arg-type]


def _video(batch: int, frames: int, seed: int = 0, size: int = 3) -> torch.Tensor:
    return torch.randn(batch * frames, 16, size, size, generator=torch.Generator().manual_seed(seed))


def _randomize(modules: TemporalModuleSet, only: str | None = None, seed: int = 0) -> None:
    """Give output projections random weights, so modules are no longer identities."""
    torch.manual_seed(seed)
    for name, module in modules.items():
        if only is None or name == only:
            torch.nn.init.normal_(module.proj_out.weight, std=0.5)


# --- the module ----------------------------------------------------------------------------------------------------


def test_zero_initialised_module_is_identity() -> None:
    x = _video(2, 4)
    module = _module(zero_init=True)
    assert torch.equal(module.proj_out.weight, torch.zeros_like(module.proj_out.weight))
    assert torch.equal(module(x, num_frames=4), x)


def _explicit_vanilla(module: TemporalTransformer, x: torch.Tensor, frames: int) -> torch.Tensor:
    """AnimateDiff's ``TemporalTransformer3DModel`` written out: per-frame GroupNorm, then per pixel over frames."""
    bf, c, h, w = x.shape
    b = bf // frames
    heads = module.num_attention_heads
    z = F.group_norm(x, module.norm.num_groups, module.norm.weight, module.norm.bias, eps=1e-6)
    z = z.reshape(b, frames, c, h * w).permute(0, 3, 1, 2).reshape(b * h * w, frames, c)
    z = module.proj_in(z)
    position = torch.arange(frames)[:, None]
    div = torch.exp(torch.arange(0, c, 2) * (-math.log(10000.0) / c))
    pe = torch.zeros(frames, c)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(position * div), torch.cos(position * div)
    for block in module.transformer_blocks:
        for norm, attn in ((block.norm1, block.attn1), (block.norm2, block.attn2)):
            n = F.layer_norm(z, (c,), norm.weight, norm.bias) + pe
            q, k, v = (
                p(n).reshape(-1, frames, heads, c // heads).transpose(1, 2) for p in (attn.to_q, attn.to_k, attn.to_v)
            )
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // heads), dim=-1) @ v
            z = z + attn.to_out[0](a.transpose(1, 2).reshape(-1, frames, c))
        n = F.layer_norm(z, (c,), block.norm3.weight, block.norm3.bias)
        hidden, gate = block.ff.net[0].proj(n).chunk(2, dim=-1)
        z = z + block.ff.net[2](hidden * F.gelu(gate))
    z = module.proj_out(z).reshape(b, h * w, frames, c).permute(0, 2, 3, 1).reshape(bf, c, h, w)
    return z + x


def test_module_equals_explicit_animatediff_computation() -> None:
    module = _module(seed=3)
    x = _video(2, 4)
    with torch.no_grad():
        assert torch.allclose(module(x, num_frames=4), _explicit_vanilla(module, x, 4), atol=1e-5)


def test_norm_per_frame_off_equals_diffusers_animatediff_transformer() -> None:
    module = _module(seed=3, norm_per_frame=False)
    x = _video(2, 4)
    with torch.no_grad():
        ours = module(x, num_frames=4)
        diffusers_out = AnimateDiffTransformer3D.forward(module, x, num_frames=4)
        per_frame = _module(seed=3)(x, num_frames=4)
    assert torch.allclose(ours, diffusers_out, atol=1e-5)
    assert (ours - per_frame).abs().max() > 1e-4  # the two GroupNorm conventions differ


def test_permuting_frames_permutes_outputs_without_positional_encoding() -> None:
    frames, perm = 4, torch.tensor([2, 0, 3, 1])
    x = _video(2, frames)
    index = (torch.arange(2)[:, None] * frames + perm).flatten()  # permute frames inside each sample
    module = _module(positional_encoding=False)
    with torch.no_grad():
        assert torch.allclose(module(x[index], num_frames=frames), module(x, num_frames=frames)[index], atol=1e-5)
        with_pe = _module(positional_encoding=True)
        diff = (with_pe(x[index], num_frames=frames) - with_pe(x, num_frames=frames)[index]).abs().max()
    assert diff > 1e-3  # with positions, frame order changes the result


def test_frames_never_mix_across_batch_items() -> None:
    module = _module()
    x = _video(3, 4)
    y = x.clone()
    y[:4] += torch.randn_like(y[:4])  # every frame of sample 0
    with torch.no_grad():
        out_x, out_y = module(x, num_frames=4), module(y, num_frames=4)
    assert torch.equal(out_x[4:], out_y[4:])
    assert (out_x[:4] - out_y[:4]).abs().max() > 1e-3


def test_frames_never_mix_across_pixels() -> None:
    module = _module()
    x = _video(2, 4)
    y = x.clone()
    # Swap two pixels of frame 0: the frame's GroupNorm statistics stay the same, so any change elsewhere could only
    # come from attention mixing pixels.
    y[0, :, 0, 0], y[0, :, 2, 1] = x[0, :, 2, 1], x[0, :, 0, 0]
    with torch.no_grad():
        out_x, out_y = module(x, num_frames=4), module(y, num_frames=4)
    changed = (out_x - out_y).abs().amax(dim=1)  # (b f, h, w)
    mask = torch.zeros(3, 3, dtype=torch.bool)
    mask[0, 0] = mask[2, 1] = True
    assert changed[:, ~mask].max() < 1e-5
    assert changed[1, mask].min() > 1e-3  # frame 1 at the swapped pixels sees frame 0 through attention

    blocks_in = torch.randn(5, 4, 16)  # (b h w, f, c): sequences are independent
    blocks_pert = blocks_in.clone()
    blocks_pert[2] += 1.0
    with torch.no_grad():
        a, b = module.transformer_blocks[0](blocks_in), module.transformer_blocks[0](blocks_pert)
    assert torch.equal(a[[0, 1, 3, 4]], b[[0, 1, 3, 4]])


def test_number_of_frames_comes_from_the_call() -> None:
    module = _module()
    for frames in (3, 4):
        x = _video(2, frames)
        with torch.no_grad():
            assert torch.allclose(module(x, num_frames=frames), _explicit_vanilla(module, x, frames), atol=1e-5)
    with pytest.raises(ValueError, match="num_frames=4"):
        module(_video(1, 6), num_frames=4)
    with pytest.raises(ValueError, match="max_len=8"):
        module(_video(1, 9), num_frames=9)
    with pytest.raises(ValueError, match="divisible by norm_num_groups"):
        TemporalTransformer(12, num_attention_heads=2, norm_num_groups=8)


# --- placement in a UNet -------------------------------------------------------------------------------------------


def _sd15_structured_unet() -> UNet2DConditionModel:
    """SD1.5's block structure (4 levels, 2 layers, attention in the first 3) at tiny width."""
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=16,
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=8,
    ).eval()


def test_presets_reproduce_the_papers_ldm_indices_on_sd15_structure() -> None:
    unet = _sd15_structured_unet()
    layout = unet_ldm_layout(unet)
    assert len(layout.input_blocks) == 12 and len(layout.output_blocks) == 12
    assert layout.input_blocks[3].target == "down_blocks.0.downsamplers.0"
    assert layout.input_blocks[11].target == "down_blocks.3.resnets.1"
    assert layout.output_blocks[2].target == "up_blocks.0.upsamplers.0"
    assert layout.output_blocks[2].pre_upsampler_target == "up_blocks.0.resnets.2"
    assert layout.output_blocks[5].pre_upsampler_target == "up_blocks.1.attentions.2"
    assert layout.middle_block is not None and layout.middle_block.target == "mid_block.attentions.0"

    animatediff = MotionPlacement.preset("animatediff", unet)
    assert animatediff.input_blocks == (1, 2, 4, 5, 7, 8, 10, 11)  # X-Portrait
    assert animatediff.output_blocks == tuple(range(12)) and not animatediff.middle_block
    assert len(animatediff.module_names()) == 20

    dp3d = MotionPlacement.preset("diffportrait3d", unet)
    assert dp3d.input_blocks == tuple(range(1, 12))
    assert dp3d.output_second_blocks == (2, 5, 8)
    assert dp3d.middle_block and dp3d.middle_uncond_only
    assert len(dp3d.module_names()) == 11 + 1 + 12 + 3

    names = ldm_motion_module_names(animatediff)
    assert names["input_blocks_motion_module.2.0"] == "input_blocks_4"
    assert names["output_blocks_motion_module.11.0"] == "output_blocks_11"
    names = ldm_motion_module_names(dp3d)
    assert names["input_blocks_motion_module.0.0"] == "input_blocks_1"
    assert names["output_blocks_motion_module.2.1"] == "output_blocks_2_1"
    assert names["middle_block_motion_module.0"] == "middle_block"

    modules = insert_temporal_modules(unet, dp3d, TINY)
    x, text = torch.randn(4, 4, 16, 16), torch.randn(4, 3, 16)
    with torch.no_grad(), modules.frames(2), modules.unconditional_pass():
        out = unet(x, 5, text).sample
    modules.remove()
    with torch.no_grad():
        assert torch.equal(out, unet(x, 5, text).sample)


def _call(unet: UNet2DConditionModel, sample: torch.Tensor) -> torch.Tensor:
    batch = sample.shape[0]
    text = torch.randn(1, 5, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    added = None
    if unet.config.addition_embed_type == "text_time":
        added = {"text_embeds": torch.ones(batch, 32), "time_ids": torch.ones(batch, 6)}
    return unet(sample, 10, text.expand(batch, -1, -1), added_cond_kwargs=added).sample


@pytest.mark.parametrize(
    ("factory", "preset"), [(tiny_unet, "animatediff"), (tiny_unet, "diffportrait3d"), (tiny_sdxl_unet, "animatediff")]
)
def test_zero_initialised_modules_leave_the_unet_output_unchanged(factory, preset: str) -> None:
    unet = factory().eval()
    x = torch.randn(6, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = _call(unet, x)
        modules = insert_temporal_modules(unet, MotionPlacement.preset(preset, unet), TINY)
        with modules.frames(3), modules.unconditional_pass():
            assert torch.equal(_call(unet, x), plain)


def test_inserted_modules_mix_frames_and_take_the_frame_count_from_the_call() -> None:
    unet = tiny_unet().eval()
    modules = insert_temporal_modules(unet, MotionPlacement.animatediff(unet), TINY)
    _randomize(modules)
    for frames in (3, 4):
        x = torch.randn(2 * frames, 4, 8, 8, generator=torch.Generator().manual_seed(frames))
        y = x.clone()
        y[0] += 1.0  # frame 0 of sample 0
        with torch.no_grad():
            modules.num_frames = frames
            out_x, out_y = _call(unet, x), _call(unet, y)
            modules.remove()
            plain_x, plain_y = _call(unet, x), _call(unet, y)
            modules.attach(unet)
        assert (out_x[1] - out_y[1]).abs().max() > 1e-4  # frame 1 sees frame 0
        assert torch.equal(out_x[frames:], out_y[frames:])  # sample 1 untouched
        assert torch.allclose(plain_x[1], plain_y[1], atol=1e-6)  # the plain UNet treats frames independently
    modules.num_frames = 4
    with pytest.raises(ValueError, match="num_frames=4"), torch.no_grad():
        _call(unet, torch.randn(6, 4, 8, 8))
    modules.num_frames = None
    with pytest.raises(ValueError, match="num_frames is not set"), torch.no_grad():
        _call(unet, torch.randn(6, 4, 8, 8))


def test_num_frames_getter_and_module_set_state_dict() -> None:
    unet = tiny_unet().eval()
    state = {"frames": 2}
    modules = insert_temporal_modules(unet, MotionPlacement.animatediff(unet), TINY, lambda: state["frames"])
    assert isinstance(modules, torch.nn.ModuleDict)
    assert list(modules) == [
        "input_blocks_1",
        "input_blocks_3",
        "output_blocks_0",
        "output_blocks_1",
        "output_blocks_2",
        "output_blocks_3",
    ]
    assert "input_blocks_1.transformer_blocks.0.attn1.to_q.weight" in modules.state_dict()
    assert not any(k.startswith("input_blocks_1") for k in unet.state_dict())  # the UNet's own keys are untouched
    _randomize(modules)
    with torch.no_grad():
        for frames in (2, 3):
            state["frames"] = frames
            assert _call(unet, torch.randn(2 * frames, 4, 8, 8)).shape == (2 * frames, 4, 8, 8)


def test_gradients_flow_only_to_temporal_modules_of_a_frozen_unet() -> None:
    unet = tiny_unet()
    unet.requires_grad_(False)
    modules = insert_temporal_modules(unet, MotionPlacement.diffportrait3d(unet), TINY)
    x, target = torch.randn(6, 4, 8, 8), torch.randn(6, 4, 8, 8)
    with modules.frames(3), modules.unconditional_pass():
        loss = F.mse_loss(_call(unet, x), target)
    loss.backward()
    assert all(p.grad is None for p in unet.parameters())
    assert all(p.grad is not None for p in modules.parameters())
    assert all(module.proj_out.weight.grad.abs().sum() > 0 for module in modules.values())
    torch.optim.SGD(modules.parameters(), lr=0.1).step()
    with torch.no_grad(), modules.frames(3), modules.unconditional_pass():
        assert F.mse_loss(_call(unet, x), target) < loss


def test_middle_module_runs_only_in_the_unconditional_pass() -> None:
    unet = tiny_unet().eval()
    x = torch.randn(6, 4, 8, 8)
    with torch.no_grad():
        plain = _call(unet, x)
        modules = insert_temporal_modules(unet, MotionPlacement.diffportrait3d(unet), TINY)
        _randomize(modules, only="middle_block")
        with modules.frames(3):
            assert torch.equal(_call(unet, x), plain)
            with modules.unconditional_pass():
                assert (_call(unet, x) - plain).abs().max() > 1e-4
        assert not modules.unconditional


class _ViewModules(TemporalModules):
    """A paper's saveable subclass, as the packages write one: typed JSON settings, its own attribute name."""

    set_attribute = "view_modules"

    @register_to_config
    def __init__(
        self,
        input_blocks: tuple[int, ...] = (),
        output_blocks: tuple[int, ...] = (),
        output_second_blocks: tuple[int, ...] = (),
        middle_block: bool = False,
        middle_uncond_only: bool = False,
        module_channels: tuple[int, ...] = (),
        max_len: int = 8,
    ) -> None:
        placement = MotionPlacement(
            input_blocks=tuple(input_blocks),
            output_blocks=tuple(output_blocks),
            output_second_blocks=tuple(output_second_blocks),
            middle_block=middle_block,
            middle_uncond_only=middle_uncond_only,
        )
        super().__init__(
            placement, module_channels, TemporalModuleConfig(num_attention_heads=2, max_len=max_len, norm_num_groups=8)
        )


def _view_modules(unet: UNet2DConditionModel) -> _ViewModules:
    placement = MotionPlacement.diffportrait3d(unet)
    torch.manual_seed(0)
    return _ViewModules(
        input_blocks=placement.input_blocks,
        output_blocks=placement.output_blocks,
        output_second_blocks=placement.output_second_blocks,
        middle_block=placement.middle_block,
        middle_uncond_only=placement.middle_uncond_only,
        module_channels=TemporalModules.placement_channels(unet, placement),
    ).to_unet(unet)


def test_temporal_modules_subclass_attaches_saves_and_loads(tmp_path) -> None:
    unet = tiny_unet().eval()
    modules = _view_modules(unet)
    assert isinstance(modules.view_modules, TemporalModuleSet) and modules.module_set is modules.view_modules
    assert modules.placement.module_names() == list(modules.view_modules)
    assert all(key.startswith("view_modules.") for key in modules.state_dict())
    _randomize(modules.view_modules)
    x = torch.randn(6, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = _call(unet, x)
        assert modules.attach(unet) is modules and modules.attached
        with modules.frames(3):
            cond = _call(unet, x)
            with modules.unconditional_pass():
                uncond = _call(unet, x)
        modules.remove()
        assert not modules.attached and torch.equal(_call(unet, x), plain)
    assert (cond - plain).abs().max() > 1e-4 and (uncond - cond).abs().max() > 1e-4  # middle module: uncond only
    with pytest.raises(ValueError, match="max_len=8"), modules.frames(9):
        pass
    with pytest.raises(TypeError, match="_ViewModules runs through hooks"):
        modules(x, num_frames=3)
    modules.save_pretrained(tmp_path)
    loaded = _ViewModules.from_pretrained(tmp_path)
    assert loaded.max_frames == 8 and loaded.placement == modules.placement
    for key, value in modules.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.raises(ValueError, match="one width per module"):
        _ViewModules(input_blocks=(1,), module_channels=(16, 16))


def test_output_module_before_or_after_the_upsampler() -> None:
    unet = tiny_unet().eval()
    sizes: dict[bool, tuple[int, ...]] = {}
    for before in (False, True):
        modules = insert_temporal_modules(
            unet, MotionPlacement.animatediff(unet, output_before_upsampler=before), TINY
        )
        modules["output_blocks_1"].register_forward_pre_hook(
            lambda m, args, b=before: sizes.update({b: args[0].shape[-2:]})
        )
        with torch.no_grad(), modules.frames(2):
            _call(unet, torch.randn(2, 4, 8, 8))
        modules.remove()
    assert sizes == {False: (8, 8), True: (4, 4)}  # up_blocks.0 upsamples 4x4 -> 8x8


def test_placement_validation() -> None:
    with pytest.raises(ValueError, match="conv_in"):
        MotionPlacement(input_blocks=(0, 1))
    with pytest.raises(ValueError, match="subset"):
        MotionPlacement(output_blocks=(1,), output_second_blocks=(2,))
    with pytest.raises(ValueError, match="repeated"):
        MotionPlacement(input_blocks=(1, 1))
    with pytest.raises(ValueError, match="out of range"):
        insert_temporal_modules(tiny_unet(), MotionPlacement(input_blocks=(7,)), TINY)
    with pytest.raises(ValueError, match="unknown motion placement preset"):
        MotionPlacement.preset("magic", tiny_unet())  # type: ignore[arg-type]


# --- checkpoint key maps -------------------------------------------------------------------------------------------

_TO_ANIMATEDIFF = (
    (
        r"transformer_blocks\.(\d+)\.attn([12])\.",
        lambda m: f"transformer_blocks.{m[1]}.attention_blocks.{int(m[2]) - 1}.",
    ),
    (r"transformer_blocks\.(\d+)\.norm([12])\.", lambda m: f"transformer_blocks.{m[1]}.norms.{int(m[2]) - 1}."),
    (r"transformer_blocks\.(\d+)\.norm3\.", lambda m: f"transformer_blocks.{m[1]}.ff_norm."),
)


def _animatediff_subkey(key: str) -> list[str]:
    """Our parameter name in AnimateDiff's naming (the position table appears once per attention there)."""
    if key.endswith("pos_embed.pe"):
        block = key.split(".")[1]
        return [f"temporal_transformer.transformer_blocks.{block}.attention_blocks.{a}.pos_encoder.pe" for a in (0, 1)]
    for pattern, replace in _TO_ANIMATEDIFF:
        key = re.sub(pattern, replace, key)
    return [f"temporal_transformer.{key}"]


def _random_set(unet: UNet2DConditionModel, placement: MotionPlacement, seed: int) -> TemporalModuleSet:
    torch.manual_seed(seed)
    config = TemporalModuleConfig(num_attention_heads=2, max_len=8, norm_num_groups=8, zero_init=False)
    return TemporalModuleSet.build(unet, placement, config)


def test_ldm_checkpoint_layout_maps_onto_our_modules() -> None:
    unet = tiny_unet()
    placement = MotionPlacement.diffportrait3d(unet)
    source = _random_set(unet, placement, seed=1)
    ours_to_ldm = {ours: ldm for ldm, ours in ldm_motion_module_names(placement).items()}
    prefix = "model.diffusion_model."
    ldm: dict[str, torch.Tensor] = {f"{prefix}input_blocks.0.0.weight": torch.zeros(1)}  # a UNet key: ignored
    for key, value in source.state_dict().items():
        name, sub = key.split(".", 1)
        for ldm_sub in _animatediff_subkey(sub):
            ldm[f"{prefix}{ours_to_ldm[name]}.{ldm_sub}"] = value.clone()
    assert f"{prefix}output_blocks_motion_module.1.1.temporal_transformer.proj_out.weight" in ldm
    assert f"{prefix}middle_block_motion_module.0.temporal_transformer.transformer_blocks.0.norms.1.bias" in ldm
    ldm[f"{prefix}input_blocks_motion_module.9.0.temporal_transformer.proj_in.weight"] = torch.zeros(
        1
    )  # no such module
    ldm[f"{prefix}input_blocks_motion_module.0.0.temporal_transformer.extra.weight"] = torch.zeros(1)  # unknown name

    converted, unmatched = convert_ldm_motion_state_dict(ldm, placement, prefix=prefix)
    assert sorted(unmatched) == sorted(
        [
            f"{prefix}input_blocks_motion_module.9.0.temporal_transformer.proj_in.weight",
            f"{prefix}input_blocks_motion_module.0.0.temporal_transformer.extra.weight",
        ]
    )
    target = _random_set(unet, placement, seed=2)
    target.load_state_dict(converted, strict=True)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_animatediff_and_motion_adapter_layouts_map_onto_our_modules() -> None:
    unet = tiny_unet()
    placement = MotionPlacement.animatediff(unet)
    source = _random_set(unet, placement, seed=1)
    layout = unet_ldm_layout(unet)
    where = {
        f"input_blocks_{b.index}": f"down_blocks.{b.down_or_up_block}.motion_modules.{b.layer}"
        for b in layout.input_blocks
        if b.kind == "layer"
    }
    where |= {
        f"output_blocks_{b.index}": f"up_blocks.{b.down_or_up_block}.motion_modules.{b.layer}"
        for b in layout.output_blocks
    }
    original: dict[str, torch.Tensor] = {}
    adapter: dict[str, torch.Tensor] = {}
    for key, value in source.state_dict().items():
        name, sub = key.split(".", 1)
        for animatediff_sub in _animatediff_subkey(sub):
            original[f"{where[name]}.{animatediff_sub}"] = value
        adapter[f"{where[name]}.{sub}"] = value  # diffusers MotionAdapter naming
    original["mid_block.motion_modules.0.temporal_transformer.proj_in.weight"] = torch.zeros(1)  # placement has no mid

    for state_dict, expected_unmatched in (
        (original, ["mid_block.motion_modules.0.temporal_transformer.proj_in.weight"]),
        (adapter, []),
    ):
        converted, unmatched = convert_animatediff_motion_state_dict(state_dict, unet, placement)
        assert unmatched == expected_unmatched
        target = _random_set(unet, placement, seed=2)
        target.load_state_dict(converted, strict=True)
        assert all(torch.equal(target.state_dict()[k], v) for k, v in source.state_dict().items())
