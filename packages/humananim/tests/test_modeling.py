"""The humananim model: shapes on non-square frames, zero-initialised additions, widening, MotionAdapter layout."""

from __future__ import annotations

import pytest
import torch
from diffusers import MotionAdapter

from genblocks.errors import InputError
from genblocks.tiny import tiny_controlnet
from humananim.config import tiny_config
from humananim.modeling import (
    HumanAnimModel,
    HumanAnimMotionModules,
    build_random_components,
    widen_pose_controlnet,
)

CONFIG = tiny_config()
FRAMES = 3


@pytest.fixture(scope="module")
def components():
    return build_random_components(CONFIG.model, CONFIG.random, seed=0)


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Latents (F, 4, 8, 6) of 64 x 48 frames, reference latents, text, and hints (F, 6, 64, 48)."""
    g = torch.Generator().manual_seed(seed)
    h, w = CONFIG.model.height // 8, CONFIG.model.width // 8
    sample = torch.randn(FRAMES, 4, h, w, generator=g)
    reference = torch.randn(1, 4, h, w, generator=g)
    text = torch.randn(1, 16, 32, generator=g)
    hint = torch.rand(FRAMES, 6, CONFIG.model.height, CONFIG.model.width, generator=g)
    return sample, reference, text, hint


def _randomize(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_fresh_model_is_the_reference_unet_step(components) -> None:
    """Zero-initialised ControlNet outputs and motion modules: the hint and the other frames change nothing yet."""
    model = HumanAnimModel(
        components.unet, components.reference_unet, components.controlnet, components.motion_modules
    )
    sample, reference, text, hint = _inputs()
    with torch.no_grad():
        model.write_reference(reference, 10, text)
        eps = model(sample, 10, text.expand(FRAMES, -1, -1), num_frames=FRAMES, hint=hint)
        plain = model(sample, 10, text.expand(FRAMES, -1, -1), num_frames=FRAMES)
        no_bank = model(sample, 10, text.expand(FRAMES, -1, -1), num_frames=FRAMES, use_reference=False)
    assert eps.shape == (FRAMES, 4, 8, 6)
    torch.testing.assert_close(eps, plain, rtol=0, atol=1e-6)
    assert (eps - no_bank).abs().max() > 1e-4  # the bank is read


def test_trained_parts_condition_and_mix_frames(components) -> None:
    model = HumanAnimModel(
        components.unet, components.reference_unet, components.controlnet, components.motion_modules
    )
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        _randomize(components.controlnet.controlnet_down_blocks, 1)
        _randomize(components.controlnet.controlnet_cond_embedding, 3)
        _randomize(components.motion_modules, 2)
        sample, reference, text, hint = _inputs()
        moved = sample.clone()
        moved[2] += 1.0
        blurred = hint.clone()
        blurred[:, 3:] = 0.0
        with torch.no_grad():
            model.write_reference(reference, 10, text)
            context = text.expand(FRAMES, -1, -1)
            eps = model(sample, 10, context, num_frames=FRAMES, hint=hint)
            eps_moved = model(moved, 10, context, num_frames=FRAMES, hint=hint)
            eps_no_blur = model(sample, 10, context, num_frames=FRAMES, hint=blurred)
            eps_frames = model(sample, 10, context, num_frames=1, hint=hint)  # each frame on its own
        assert (eps - eps_no_blur).abs().max() > 1e-4  # the blur channels reach the output
        assert (eps_moved[0] - eps[0]).abs().max() > 1e-5  # frame 2's input reaches frame 0 through time
        assert (eps_frames[0] - eps[0]).abs().max() > 1e-5
    finally:
        model.load_state_dict(saved)


def test_bad_inputs_name_what_was_expected(components) -> None:
    model = HumanAnimModel(
        components.unet, components.reference_unet, components.controlnet, components.motion_modules
    )
    sample, _, text, hint = _inputs()
    model.clear_reference()
    with pytest.raises(InputError, match="bank is empty"):
        model(sample, 10, text.expand(FRAMES, -1, -1), num_frames=FRAMES)
    with pytest.raises(InputError, match="hint"):
        model(sample, 10, text.expand(FRAMES, -1, -1), num_frames=FRAMES, hint=hint[:, :3], use_reference=False)


def test_widened_controlnet_keeps_the_pretrained_residuals(components) -> None:
    """A 3-channel (DensePose) ControlNet widened with zero-initialised blur channels gives bit-identical residuals
    whatever the blur channels hold, and its config records 6 channels."""
    net = tiny_controlnet(components.unet, conditioning_channels=3, seed=3)
    _randomize(net.controlnet_down_blocks, 4)
    _randomize(net.controlnet_cond_embedding.conv_out, 8)
    sample, _, text, hint = _inputs()
    context = text.expand(FRAMES, -1, -1)
    with torch.no_grad():
        before = net(sample, 10, context, controlnet_cond=hint[:, :3], return_dict=False)
        widen_pose_controlnet(net, 3)
        after = net(sample, 10, context, controlnet_cond=hint, return_dict=False)
    assert net.config["conditioning_channels"] == 6
    for a, b in zip(before[0], after[0], strict=True):
        assert torch.equal(a, b)
    assert torch.equal(before[1], after[1])
    with pytest.raises(InputError, match="3-channel"):
        widen_pose_controlnet(net, 3)


def _tiny_adapter() -> MotionAdapter:
    """diffusers' MotionAdapter for the tiny UNet (widths 32, 64; one layer per block; a middle module)."""
    return MotionAdapter(
        block_out_channels=(32, 64),
        motion_layers_per_block=1,
        motion_num_attention_heads=2,
        motion_norm_num_groups=8,
        motion_max_seq_length=8,
        use_motion_mid_block=True,
    )


def test_motion_adapter_weights_load_and_export_bit_exactly(components) -> None:
    """diffusers' MotionAdapter on the tiny UNet's widths: its state dict loads with nothing missing or left over, and
    the export is bit-identical and loads back into a MotionAdapter with strict=True."""
    torch.manual_seed(5)
    adapter = _tiny_adapter()
    _randomize(adapter, 6)
    state = adapter.state_dict()
    modules = HumanAnimMotionModules.from_unet(
        components.unet, middle_block=True, num_attention_heads=2, max_len=8, norm_num_groups=8
    )
    missing, unmatched = modules.load_motion_adapter(state, components.unet)
    assert (missing, unmatched) == ([], [])
    exported = modules.motion_adapter_state_dict(components.unet)
    assert sorted(exported) == sorted(state)
    assert all(torch.equal(exported[k], state[k]) for k in state)
    fresh = _tiny_adapter()
    fresh.load_state_dict(exported, strict=True)
    # 2 down-block layers + 2 x 2 up-block layers + the middle module
    assert len(modules.module_set) == 7


def test_motion_modules_save_and_load(components, tmp_path) -> None:
    modules = components.motion_modules
    _randomize(modules, 7)
    modules.save_pretrained(tmp_path)
    loaded = HumanAnimMotionModules.from_pretrained(tmp_path)
    assert loaded.placement == modules.placement and loaded.placement.output_before_upsampler
    for (k, a), (_, b) in zip(modules.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
