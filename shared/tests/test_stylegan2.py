"""genblocks.gan.stylegan2 on a tiny config (spec §9: 32 px, w 32, 2 mapping layers, channels <= 32)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from genblocks.gan.ops import setup_filter, upfirdn2d
from genblocks.gan.stylegan2 import (
    EqualConv2d,
    EqualLinear,
    MappingNetwork,
    MinibatchStdLayer,
    StyleGAN2Discriminator,
    StyleGAN2Generator,
    SynthesisBlock,
    SynthesisLayer,
    SynthesisNetwork,
    ToRGBLayer,
    channels_per_resolution,
    modulated_conv2d,
)

TINY_G = {"z_dim": 32, "c_dim": 0, "w_dim": 32, "img_resolution": 32, "mapping_layers": 2, "channel_base": 512}
TINY_G["channel_max"] = 32


def _generator(seed: int = 0, **overrides: object) -> StyleGAN2Generator:
    torch.manual_seed(seed)
    return StyleGAN2Generator(**{**TINY_G, **overrides})  # type: ignore[arg-type]


def _discriminator(seed: int = 0, **overrides: object) -> StyleGAN2Discriminator:
    torch.manual_seed(seed)
    settings = {"img_resolution": 32, "channel_base": 512, "channel_max": 32, **overrides}
    return StyleGAN2Discriminator(**settings)  # type: ignore[arg-type]


def _set_noise_strength(module: torch.nn.Module, value: float) -> None:
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, SynthesisLayer):
                layer.noise_strength.fill_(value)


def test_channel_rule() -> None:
    assert channels_per_resolution([4, 8, 16, 32], 512, 32) == {4: 32, 8: 32, 16: 32, 32: 16}
    config_f = channels_per_resolution([2**i for i in range(2, 11)], 32768, 512)
    assert list(config_f.values()) == [512, 512, 512, 512, 512, 256, 128, 64, 32]


def test_equal_linear_and_conv_match_explicit_scaling() -> None:
    torch.manual_seed(0)
    layer = EqualLinear(6, 4, bias_init=0.5, lr_multiplier=0.01, activation="lrelu")
    x = torch.randn(3, 6)
    # Stored raw weight ~ randn / lr_mul; runtime weight * lr_mul / sqrt(fan_in); bias * lr_mul.
    y = F.linear(x, layer.weight * 0.01 / math.sqrt(6), layer.bias * 0.01)
    torch.testing.assert_close(layer(x), F.leaky_relu(y, 0.2) * math.sqrt(2))
    assert 50 < layer.weight.std().item() < 200  # randn / 0.01
    conv = EqualConv2d(3, 5, 3, activation="lrelu")
    with torch.no_grad():
        conv.bias.normal_()
    img = torch.randn(2, 3, 6, 6)
    ref = F.leaky_relu(F.conv2d(img, conv.weight / math.sqrt(27), conv.bias, padding=1), 0.2) * math.sqrt(2)
    torch.testing.assert_close(conv(img), ref, atol=1e-5, rtol=1e-5)


def test_generator_shapes_at_every_stage() -> None:
    G = _generator()
    assert G.num_ws == 8 and G.synthesis.num_ws == 8
    assert G.synthesis.block_resolutions == [4, 8, 16, 32]
    z = torch.randn(2, 32)
    ws = G.mapping(z, None)
    assert ws.shape == (2, 8, 32)
    img, features = G(z, noise_mode="const", return_features=True)
    assert img.shape == (2, 3, 32, 32)
    expected = [(32, 4), (32, 8), (32, 8), (32, 16), (32, 16), (16, 32), (16, 32)]
    assert len(features) == G.synthesis.num_features == 7
    assert [tuple(f.shape) for f in features] == [(2, c, r, r) for c, r in expected]
    # Block by block: x and img grow together; every block reads num_conv + num_torgb ws.
    x = rgb = None
    w_idx = 0
    for res in G.synthesis.block_resolutions:
        block: SynthesisBlock = getattr(G.synthesis, f"b{res}")
        x, rgb = block(x, rgb, ws[:, w_idx : w_idx + block.num_conv + block.num_torgb], noise_mode="const")
        w_idx += block.num_conv
        assert x.shape == (2, G.synthesis.channels[res], res, res) and rgb.shape == (2, 3, res, res)
    torch.testing.assert_close(rgb, img)


@pytest.mark.parametrize("resolution", [8, 64])
def test_other_power_of_two_resolutions(resolution: int) -> None:
    G = _generator(img_resolution=resolution)
    assert G.num_ws == 2 * int(math.log2(resolution)) - 2
    assert G(torch.randn(1, 32)).shape == (1, 3, resolution, resolution)


@pytest.mark.parametrize("resolution", [24, 2, 0])
def test_non_power_of_two_resolution_raises(resolution: int) -> None:
    with pytest.raises(ValueError, match="img_resolution must be a power of two"):
        _generator(img_resolution=resolution)
    with pytest.raises(ValueError, match="img_resolution must be a power of two"):
        _discriminator(img_resolution=resolution)


def test_generator_gradients_reach_every_parameter() -> None:
    G = _generator()
    _set_noise_strength(G, 0.1)
    img, features = G(torch.randn(2, 32), noise_mode="random", return_features=True)
    (img.square().mean() + sum(f.mean() for f in features)).backward()
    missing = [n for n, p in G.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


def test_discriminator_shapes_and_gradients_reach_every_parameter() -> None:
    D = _discriminator(c_dim=25, in_channels=6)
    assert D.cmap_dim == 32 and D.block_resolutions == [32, 16, 8]
    img = torch.randn(2, 6, 32, 32)
    logits = D(img, torch.randn(2, 25))
    assert logits.shape == (2, 1)
    logits.sum().backward()
    missing = [n for n, p in D.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing
    with pytest.raises(ValueError, match=r"c must have shape \(2, 25\)"):
        D(img, torch.randn(2, 16))
    with pytest.raises(ValueError, match=r"img must have shape \(N, 6, 32, 32\)"):
        D(torch.randn(2, 3, 32, 32), torch.randn(2, 25))
    unconditional = _discriminator()
    assert unconditional(torch.randn(3, 3, 32, 32)).shape == (3, 1)
    assert not hasattr(unconditional, "mapping")


def test_discriminator_epilogue_projection_equals_explicit_dot_product() -> None:
    D = _discriminator(c_dim=4, cmap_dim=8)
    img, c = torch.randn(2, 3, 32, 32), torch.randn(2, 4)
    x = img
    for res in D.block_resolutions:
        x = getattr(D, f"b{res}")(x)
    head = D.b4
    out = head.out(head.fc(head.conv(head.mbstd(x)).flatten(1)))
    cmap = D.mapping(None, c)
    torch.testing.assert_close(D(img, c), (out * cmap).sum(1, keepdim=True) / math.sqrt(8), atol=1e-5, rtol=1e-5)


def test_minibatch_std_matches_explicit_groups() -> None:
    x = torch.randn(4, 6, 3, 3, generator=torch.Generator().manual_seed(0))
    out = MinibatchStdLayer(group_size=2, num_channels=2)(x)
    assert out.shape == (4, 8, 3, 3)
    for n in range(4):
        partner = (n + 2) % 4  # groups interleave: samples n and n + N/G
        pair = torch.stack([x[n], x[partner]])
        std = (pair.var(0, unbiased=False) + 1e-8).sqrt()
        expected = torch.stack([std[:3].mean(), std[3:].mean()])
        torch.testing.assert_close(out[n, 6:, 0, 0], expected)
        assert torch.equal(out[n, :6], x[n])
    with pytest.raises(ValueError, match="divisible"):
        MinibatchStdLayer(group_size=4)(torch.randn(6, 2, 2, 2))


@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_equals_per_sample_loop(demodulate: bool) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 6, 6, generator=gen)
    weight = torch.randn(5, 4, 3, 3, generator=gen)
    styles = torch.randn(3, 4, generator=gen)
    noise = torch.randn(3, 1, 6, 6, generator=gen)
    out = modulated_conv2d(x, weight, styles, demodulate=demodulate, padding=1, noise=noise)
    for n in range(3):
        w = weight * styles[n].view(1, 4, 1, 1)
        if demodulate:
            w = w / (w.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8).sqrt()
        ref = F.conv2d(x[n : n + 1], w, padding=1) + noise[n]
        torch.testing.assert_close(out[n : n + 1], ref, atol=1e-5, rtol=1e-5)


def test_modulated_up_conv_equals_per_sample_transposed_conv_and_blur() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 5, 5, generator=gen)
    weight = torch.randn(3, 4, 3, 3, generator=gen)
    styles = torch.randn(2, 4, generator=gen)
    f = setup_filter()
    out = modulated_conv2d(x, weight, styles, up=2, padding=1, resample_filter=f)
    assert out.shape == (2, 3, 10, 10)
    for n in range(2):
        w = weight * styles[n].view(1, 4, 1, 1)
        w = w / (w.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8).sqrt()
        # rosinality / NVIDIA-PyTorch up-conv: stride-2 transposed conv, then the FIR blur with padding (1, 1), gain 4.
        ref = upfirdn2d(F.conv_transpose2d(x[n : n + 1], w.transpose(0, 1), stride=2), f, padding=1, gain=4.0)
        torch.testing.assert_close(out[n : n + 1], ref, atol=1e-5, rtol=1e-5)


def test_demodulation_gives_unit_norm_weights_and_unit_output_scale() -> None:
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(8, 64, 3, 3, generator=gen)
    styles = torch.rand(2, 64, generator=gen) + 0.5
    x = torch.randn(2, 64, 40, 40, generator=gen)
    out = modulated_conv2d(x, weight, styles, padding=1)
    # Invariant to the scale of the style and of the weight: only the direction of w * s matters.
    torch.testing.assert_close(modulated_conv2d(x, 7.0 * weight, 0.3 * styles, padding=1), out, atol=1e-4, rtol=1e-4)
    # Each output channel's effective kernel has unit L2 norm, so i.i.d. unit-variance inputs give unit-variance outputs.
    interior = out[:, :, 1:-1, 1:-1]
    assert torch.allclose(interior.std(dim=(2, 3)), torch.ones(2, 8), atol=0.12)
    delta = torch.zeros(1, 64, 5, 5)
    delta[0, :, 2, 2] = 1.0
    responses = []
    for c in range(64):  # probe every input channel with a unit impulse: the responses span the effective kernel
        probe = torch.zeros_like(delta)
        probe[0, c, 2, 2] = 1.0
        responses.append(modulated_conv2d(probe, weight, styles[:1], padding=1)[0, :, 1:4, 1:4])
    kernel_norm = torch.stack(responses).square().sum(dim=(0, 2, 3))
    torch.testing.assert_close(kernel_norm, torch.ones(8), atol=1e-5, rtol=1e-5)


def test_truncation_and_w_avg_tracking() -> None:
    G = _generator()
    z = torch.randn(4, 32)
    ws = G.mapping(z, None)
    assert torch.equal(G.mapping.w_avg, torch.zeros(32))
    G.mapping(z, None, update_emas=True)
    torch.testing.assert_close(G.mapping.w_avg, (1 - 0.995) * ws[:, 0].mean(0))
    with torch.no_grad():
        G.mapping.w_avg.normal_()
    truncated = G.mapping(z, None, truncation_psi=0.0)
    torch.testing.assert_close(truncated, G.mapping.w_avg.expand(4, 8, 32))
    cut = G.mapping(z, None, truncation_psi=0.0, truncation_cutoff=3)
    torch.testing.assert_close(cut[:, :3], G.mapping.w_avg.expand(4, 3, 32))
    torch.testing.assert_close(cut[:, 3:], ws[:, 3:])
    half = G.mapping(z, None, truncation_psi=0.5)
    torch.testing.assert_close(half, G.mapping.w_avg + 0.5 * (ws - G.mapping.w_avg))


def test_mapping_with_label_and_input_checks() -> None:
    torch.manual_seed(0)
    mapping = MappingNetwork(z_dim=8, c_dim=25, w_dim=16, num_ws=3, num_layers=2)
    assert mapping.fc0.in_features == 24
    assert mapping(torch.randn(2, 8), torch.randn(2, 25)).shape == (2, 3, 16)
    with pytest.raises(ValueError, match=r"c must have shape \(2, 25\)"):
        mapping(torch.randn(2, 8), None)
    with pytest.raises(ValueError, match=r"z must have shape \(N, 8\)"):
        mapping(torch.randn(2, 9), torch.randn(2, 25))
    label_only = MappingNetwork(z_dim=0, c_dim=25, w_dim=16, num_ws=None, w_avg_beta=None)
    assert label_only(None, torch.randn(2, 25)).shape == (2, 16)


def test_noise_modes() -> None:
    G = _generator()
    _set_noise_strength(G, 0.5)
    z = torch.randn(2, 32)
    const_a, const_b = G(z, noise_mode="const"), G(z, noise_mode="const")
    assert torch.equal(const_a, const_b)
    assert not torch.allclose(G(z, noise_mode="random"), G(z, noise_mode="random"))
    none = G(z, noise_mode="none")
    assert not torch.allclose(none, const_a)
    _set_noise_strength(G, 0.0)
    torch.testing.assert_close(G(z, noise_mode="random"), none)
    with pytest.raises(ValueError, match="noise_mode"):
        G(z, noise_mode="fixed")  # type: ignore[arg-type]
    no_noise = _generator(use_noise=False)
    assert not any("noise" in name for name, _ in no_noise.named_parameters())


def test_w_plus_input_and_broadcast() -> None:
    G = _generator()
    z = torch.randn(2, 32)
    ws = G.mapping(z, None)
    torch.testing.assert_close(G.synthesize(ws[:, 0], noise_mode="const"), G(z, noise_mode="const"))
    mixed = ws.clone()
    mixed[:, 4:] = torch.randn(2, 4, 32)
    assert not torch.allclose(G.synthesize(mixed, noise_mode="const"), G.synthesize(ws, noise_mode="const"))
    with pytest.raises(ValueError, match=r"ws must have shape \(N, 8, 32\)"):
        G.synthesize(ws[:, :5])


def test_conditional_generator() -> None:
    G = _generator(c_dim=25)
    assert G(torch.randn(2, 32), torch.randn(2, 25)).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="c must have shape"):
        G(torch.randn(2, 32))


def test_layers_standalone_for_other_backbones() -> None:
    torch.manual_seed(0)
    synthesis = SynthesisNetwork(w_dim=16, img_resolution=16, img_channels=24, channel_base=256, channel_max=16)
    assert synthesis(torch.randn(1, synthesis.num_ws, 16)).shape == (1, 24, 16, 16)
    no_up = SynthesisBlock(8, 8, 16, resolution=16, img_channels=3, is_last=False, use_noise=False, up=1)
    x, img = no_up(torch.randn(1, 8, 16, 16), torch.randn(1, 3, 16, 16), torch.randn(1, 3, 16), noise_mode="none")
    assert x.shape == (1, 8, 16, 16) and img.shape == (1, 3, 16, 16)
    torgb = ToRGBLayer(8, 3, 16)
    assert torgb(torch.randn(2, 8, 5, 5), torch.randn(2, 16)).shape == (2, 3, 5, 5)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 8, 8, 8\)"):
        SynthesisLayer(8, 8, 16, resolution=16, up=2)(torch.randn(1, 8, 16, 16), torch.randn(1, 16))


def test_few_adam_steps_towards_a_fixed_target_reduce_the_loss() -> None:
    G = _generator()
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(5))
    target = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(6)) * 2 - 1
    optimizer = torch.optim.Adam(G.parameters(), lr=0.01, betas=(0.0, 0.99))
    losses = []
    for _ in range(8):
        loss = F.mse_loss(G(z, noise_mode="const"), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
