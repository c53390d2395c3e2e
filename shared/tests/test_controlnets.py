"""ControlNetStack: summed, per-net scaled residuals, disabling, validation, save/load."""

from __future__ import annotations

import pytest
import torch
from diffusers import ControlNetModel

from genblocks.diffusion.controlnets import ControlNetResiduals, ControlNetStack
from genblocks.tiny import tiny_controlnet, tiny_unet


def _wake(net: ControlNetModel, seed: int) -> ControlNetModel:
    """Give the zero-initialised output convolutions random weights, so the residuals are not all zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]:
            module.weight.copy_(torch.randn(module.weight.shape, generator=g) * 0.1)
            module.bias.copy_(torch.randn(module.bias.shape, generator=g) * 0.1)
    return net.eval()


@pytest.fixture(scope="module")
def parts():
    unet = tiny_unet().eval()
    motion = _wake(tiny_controlnet(unet, conditioning_channels=3, seed=1), seed=11)
    blur = _wake(tiny_controlnet(unet, conditioning_channels=6, seed=2), seed=12)
    g = torch.Generator().manual_seed(0)
    inputs = {
        "sample": torch.randn(2, 4, 8, 8, generator=g),
        "timestep": torch.tensor([10, 500]),
        "encoder_hidden_states": torch.randn(2, 5, 32, generator=g),
    }
    hints = {"pose": torch.randn(2, 3, 64, 64, generator=g), "blur": torch.randn(2, 6, 64, 64, generator=g)}
    return unet, motion, blur, inputs, hints


def _single(net: ControlNetModel, inputs: dict, hint: torch.Tensor, scale: float = 1.0):
    return net(**inputs, controlnet_cond=hint, conditioning_scale=scale, return_dict=False)


@torch.no_grad()
def test_two_nets_sum_scaled_residuals(parts):
    _, motion, blur, inputs, hints = parts
    stack = ControlNetStack([motion, blur], names=["pose", "blur"], scales=[0.7, 1.3])
    down, mid = stack(**inputs, controlnet_cond=hints)
    down_1, mid_1 = _single(motion, inputs, hints["pose"])
    down_2, mid_2 = _single(blur, inputs, hints["blur"])
    assert len(down) == len(down_1) == 4  # conv_in + 2 (block 0: resnet, downsampler) + 1 (block 1)
    assert mid_1.abs().sum() > 0 and mid_2.abs().sum() > 0
    for d, d1, d2 in zip(down, down_1, down_2, strict=True):
        torch.testing.assert_close(d, 0.7 * d1 + 1.3 * d2, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(mid, 0.7 * mid_1 + 1.3 * mid_2, atol=1e-6, rtol=1e-5)
    # Per-call scales (by name) override the stored ones; conditions by position work too.
    _, mid_b = stack(
        **inputs, controlnet_cond=[hints["pose"], hints["blur"]], conditioning_scale={"pose": 2.0, "blur": -1.0}
    )
    torch.testing.assert_close(mid_b, 2.0 * mid_1 - mid_2, atol=1e-6, rtol=1e-5)


@torch.no_grad()
def test_scale_zero_and_disabled_equal_no_control(parts):
    unet, motion, blur, inputs, hints = parts
    stack = ControlNetStack([motion, blur], names=["pose", "blur"])
    bare = unet(**inputs).sample

    with stack.disabled():
        residuals = stack(**inputs, controlnet_cond=hints)
    assert residuals == ControlNetResiduals(None, None) and stack.enabled
    assert torch.equal(unet(**inputs, **residuals.unet_kwargs()).sample, bare)

    residuals = stack(**inputs, controlnet_cond=hints, conditioning_scale=[0.0, 0.0])
    assert residuals.down_block_res_samples is None
    assert torch.equal(unet(**inputs, **residuals.unet_kwargs()).sample, bare)

    # Scale 0 on one net leaves exactly the other net's control; the UNet output differs from the bare one.
    stack.scales["pose"] = 0.0
    residuals = stack(**inputs, controlnet_cond=hints)
    down_2, mid_2 = _single(blur, inputs, hints["blur"])
    assert torch.equal(residuals.mid_block_res_sample, mid_2)
    controlled = unet(**inputs, **residuals.unet_kwargs()).sample
    expected = unet(**inputs, down_block_additional_residuals=down_2, mid_block_additional_residual=mid_2).sample
    assert torch.equal(controlled, expected) and not torch.allclose(controlled, bare)


@torch.no_grad()
def test_from_unet_any_channel_count():
    unet = tiny_unet()
    stack = ControlNetStack.from_unet(
        unet,
        ["motion", "local", "pose_blur"],
        conditioning_channels=[3, 3, 6],
        conditioning_embedding_out_channels=(8, 16),
    )
    assert [n.config.conditioning_channels for n in stack.nets] == [3, 3, 6]
    assert stack["pose_blur"] is stack.nets[2]
    assert stack.hint_size_factor(0) == 2  # (8, 16): one stride-2 convolution
    # Encoder weights are copied from the UNet; outputs are zero-initialised, so a fresh stack adds nothing.
    torch.testing.assert_close(stack["motion"].conv_in.weight, unet.conv_in.weight)
    sample, ehs = torch.randn(1, 4, 8, 8), torch.randn(1, 3, 32)
    hints = {
        "motion": torch.randn(1, 3, 16, 16),
        "local": torch.randn(1, 3, 16, 16),
        "pose_blur": torch.randn(1, 6, 16, 16),
    }
    down, mid = stack(sample, 5, ehs, controlnet_cond=hints)
    assert all(d.abs().max() == 0 for d in down) and mid.abs().max() == 0


def test_validation_errors(parts):
    _, motion, blur, inputs, hints = parts
    stack = ControlNetStack([motion, blur], names=["pose", "blur"])
    with pytest.raises(ValueError, match="'blur' must be"):
        stack(**inputs, controlnet_cond={"pose": hints["pose"], "blur": hints["pose"]})  # 3 channels, net wants 6
    with pytest.raises(ValueError, match=r"\(2, 3, 64, 64\)"):
        stack(**inputs, controlnet_cond={"pose": hints["pose"][:, :, :32, :32], "blur": hints["blur"]})
    with pytest.raises(ValueError, match="one entry per net"):
        stack(**inputs, controlnet_cond=[hints["pose"]])
    with pytest.raises(ValueError, match="net name"):
        stack(**inputs, controlnet_cond={"pose": hints["pose"], "other": hints["blur"]})
    with pytest.raises(ValueError, match="unique"):
        ControlNetStack([motion, blur], names=["a", "a"])
    with pytest.raises(ValueError, match="ControlNetModel"):
        ControlNetStack([torch.nn.Linear(1, 1)])
    with pytest.raises(KeyError, match="names are"):
        stack["nope"]


@torch.no_grad()
def test_nets_from_different_unets_fail_clearly():
    small = tiny_controlnet(tiny_unet())
    other_unet_net = tiny_controlnet(tiny_unet(seed=3), seed=4)
    # Same architecture sums fine; a net with another down-block layout cannot be summed.
    wide = ControlNetModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
        conditioning_embedding_out_channels=(8, 8, 16, 16),
    )
    sample, ehs, hint = torch.randn(1, 4, 8, 8), torch.randn(1, 3, 32), torch.randn(1, 3, 64, 64)
    ControlNetStack([small, other_unet_net])(sample, 1, ehs, [hint, hint])
    with pytest.raises(ValueError, match="cannot be summed"):
        ControlNetStack([small, wide], names=["a", "b"])(sample, 1, ehs, [hint, hint])


def test_save_and_load_round_trip(parts, tmp_path):
    _, motion, blur, inputs, hints = parts
    stack = ControlNetStack([motion, blur], names=["pose", "blur"], scales=[0.5, 2.0])
    stack.save_pretrained(tmp_path / "controlnets")
    loaded = ControlNetStack.from_pretrained(tmp_path / "controlnets")
    assert loaded.names == ("pose", "blur") and loaded.scales == {"pose": 0.5, "blur": 2.0}
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(**inputs, controlnet_cond=hints).mid_block_res_sample,
            stack(**inputs, controlnet_cond=hints).mid_block_res_sample,
        )
    with pytest.raises(ValueError, match=r"controlnet_stack\.json"):
        ControlNetStack.from_pretrained(tmp_path)
