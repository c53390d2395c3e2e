"""genblocks.gan.convert: rosinality-layout round trips and agreement with rosinality's forward semantics."""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from genblocks.gan.convert import (
    build_rosinality_discriminator,
    build_rosinality_generator,
    discriminator_to_rosinality,
    generator_to_rosinality,
    load_rosinality_checkpoint,
    load_rosinality_discriminator,
    load_rosinality_generator,
    read_rosinality_checkpoint,
    save_rosinality_checkpoint,
)
from genblocks.gan.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator, SynthesisLayer

TINY = {"z_dim": 32, "c_dim": 0, "w_dim": 32, "img_resolution": 32, "mapping_layers": 2}
TINY.update(channel_base=512, channel_max=32)


def _randomised_generator(seed: int) -> StyleGAN2Generator:
    torch.manual_seed(seed)
    G = StyleGAN2Generator(**TINY)  # type: ignore[arg-type]
    with torch.no_grad():  # non-zero biases, noise strengths and w_avg so that every tensor matters
        for name, p in G.named_parameters():
            if name.endswith("bias") or name.endswith("noise_strength"):
                p.normal_(0.0, 0.3)
        G.mapping.w_avg.normal_()
    return G


def _randomised_discriminator(seed: int) -> StyleGAN2Discriminator:
    torch.manual_seed(seed)
    D = StyleGAN2Discriminator(32, channel_base=512, channel_max=32)
    with torch.no_grad():
        for name, p in D.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.3)
    return D


# ---- rosinality semantics, written out from its model.py structure (our own independent re-statement) ----------------


def _eq_linear(x: torch.Tensor, sd: dict, prefix: str, lr_mul: float = 1.0, lrelu: bool = False) -> torch.Tensor:
    weight = sd[f"{prefix}.weight"]
    out = F.linear(x, weight * lr_mul / math.sqrt(weight.shape[1])) + sd[f"{prefix}.bias"] * lr_mul
    return F.leaky_relu(out, 0.2) * math.sqrt(2) if lrelu else out


def _blur(x: torch.Tensor, kernel: torch.Tensor, pad: tuple[int, int]) -> torch.Tensor:
    c = x.shape[1]
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    return F.conv2d(x, kernel.flip([0, 1])[None, None].repeat(c, 1, 1, 1), groups=c)


def _ros_modconv(x, sd, prefix, style, demodulate=True, upsample=False):
    weight = sd[f"{prefix}.conv.weight"][0]  # (out, in, k, k)
    in_ch, k = weight.shape[1], weight.shape[-1]
    s = _eq_linear(style, sd, f"{prefix}.conv.modulation")
    outs = []
    for n in range(x.shape[0]):
        w = weight / math.sqrt(in_ch * k * k) * s[n].view(1, in_ch, 1, 1)
        if demodulate:
            w = w * torch.rsqrt(w.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        if upsample:  # conv_transpose2d with stride 2, then Blur(pad=(1, 1)) with the x4 kernel
            y = F.conv_transpose2d(x[n : n + 1], w.transpose(0, 1), stride=2)
            y = _blur(y, sd[f"{prefix}.conv.blur.kernel"], (1, 1))
        else:
            y = F.conv2d(x[n : n + 1], w, padding=k // 2)
        outs.append(y)
    return torch.cat(outs)


def _ros_styled(x, sd, prefix, style, noise, upsample=False):
    out = _ros_modconv(x, sd, prefix, style, upsample=upsample)
    out = out + sd[f"{prefix}.noise.weight"] * noise
    return F.leaky_relu(out + sd[f"{prefix}.activate.bias"].view(1, -1, 1, 1), 0.2) * math.sqrt(2)


def _ros_to_rgb(x, sd, prefix, style, skip=None):
    out = _ros_modconv(x, sd, prefix, style, demodulate=False) + sd[f"{prefix}.bias"]
    if skip is not None:  # Upsample: zero insertion + pad (2, 1) + x4 kernel == transposed conv cropped by 1
        kernel = sd[f"{prefix}.upsample.kernel"]
        up = F.conv_transpose2d(skip, kernel[None, None].repeat(3, 1, 1, 1), stride=2, groups=3)
        out = out + up[:, :, 1:-1, 1:-1]
    return out


def _ros_generator(sd: dict, latent: torch.Tensor) -> torch.Tensor:
    """rosinality Generator.forward(input_is_latent=True, randomize_noise=False) on a W+ latent."""
    noises = [sd[f"noises.noise_{i}"] for i in range(len([k for k in sd if k.startswith("noises.")]))]
    out = sd["input.input"].repeat(latent.shape[0], 1, 1, 1)
    out = _ros_styled(out, sd, "conv1", latent[:, 0], noises[0])
    skip = _ros_to_rgb(out, sd, "to_rgb1", latent[:, 1])
    i = 1
    for k in range(len([key for key in sd if re.fullmatch(r"to_rgbs\.\d+\.bias", key)])):
        out = _ros_styled(out, sd, f"convs.{2 * k}", latent[:, i], noises[2 * k + 1], upsample=True)
        out = _ros_styled(out, sd, f"convs.{2 * k + 1}", latent[:, i + 1], noises[2 * k + 2])
        skip = _ros_to_rgb(out, sd, f"to_rgbs.{k}", latent[:, i + 2], skip)
        i += 2
    return skip


def _ros_mapping(sd: dict, z: torch.Tensor) -> torch.Tensor:
    x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)  # style.0 = PixelNorm
    for i in range(1, len([k for k in sd if re.fullmatch(r"style\.\d+\.weight", k)]) + 1):
        x = _eq_linear(x, sd, f"style.{i}", lr_mul=0.01, lrelu=True)
    return x


def _ros_conv_layer(x, sd, prefix, downsample=False, activate=True):
    """rosinality ConvLayer: [Blur] -> EqualConv2d -> [FusedLeakyReLU]; keys shift by one when Blur is present."""
    index = 1 if downsample else 0
    weight = sd[f"{prefix}.{index}.weight"]
    k = weight.shape[-1]
    scale = 1 / math.sqrt(weight.shape[1] * k * k)
    if downsample:
        x = _blur(x, sd[f"{prefix}.0.kernel"], ((4 - 2 + k - 1 + 1) // 2, (4 - 2 + k - 1) // 2))
        x = F.conv2d(x, weight * scale, stride=2)
    else:
        x = F.conv2d(x, weight * scale, padding=k // 2)
    if activate:
        x = F.leaky_relu(x + sd[f"{prefix}.{index + 1}.bias"].view(1, -1, 1, 1), 0.2) * math.sqrt(2)
    return x


def _ros_discriminator(sd: dict, img: torch.Tensor) -> torch.Tensor:
    out = _ros_conv_layer(img, sd, "convs.0")
    for k in range(1, len([key for key in sd if re.fullmatch(r"convs\.\d+\.conv1\.0\.weight", key)]) + 1):
        y = _ros_conv_layer(_ros_conv_layer(out, sd, f"convs.{k}.conv1"), sd, f"convs.{k}.conv2", downsample=True)
        skip = _ros_conv_layer(out, sd, f"convs.{k}.skip", downsample=True, activate=False)
        out = (y + skip) / math.sqrt(2)
    n, c, h, w = out.shape
    group = min(n, 4)
    std = out.view(group, -1, 1, c, h, w)
    std = torch.sqrt(std.var(0, unbiased=False) + 1e-8).mean([2, 3, 4], keepdim=True).squeeze(2)
    out = torch.cat([out, std.repeat(group, 1, h, w)], 1)
    out = _ros_conv_layer(out, sd, "final_conv").view(n, -1)
    return _eq_linear(_eq_linear(out, sd, "final_linear.0", lrelu=True), sd, "final_linear.1")


# ---- tests ---------------------------------------------------------------------------------------------------------


def test_generator_layout_has_rosinality_names_and_shapes() -> None:
    sd = generator_to_rosinality(_randomised_generator(0))
    assert sd["style.1.weight"].shape == (32, 32) and "style.3.weight" not in sd and "style.0.weight" not in sd
    assert sd["input.input"].shape == (1, 32, 4, 4)
    assert sd["conv1.conv.weight"].shape == (1, 32, 32, 3, 3)
    assert sd["conv1.conv.modulation.weight"].shape == (32, 32)
    assert sd["conv1.noise.weight"].shape == (1,)
    assert sd["conv1.activate.bias"].shape == (32,)
    assert sd["to_rgb1.bias"].shape == (1, 3, 1, 1) and sd["to_rgb1.conv.weight"].shape == (1, 3, 32, 1, 1)
    assert sd["convs.4.conv.weight"].shape == (1, 16, 32, 3, 3)  # 32 px: channel_base 512 // 32
    assert sd["to_rgbs.2.conv.weight"].shape == (1, 3, 16, 1, 1)
    assert [tuple(sd[f"noises.noise_{i}"].shape) for i in range(7)] == [
        (1, 1, r, r) for r in (4, 8, 8, 16, 16, 32, 32)
    ]
    torch.testing.assert_close(sd["convs.0.conv.blur.kernel"].sum(), torch.tensor(4.0))
    assert len([k for k in sd if k.startswith("convs.") and k.endswith(".conv.weight")]) == 6
    assert len([k for k in sd if re.fullmatch(r"to_rgbs\.\d+\.bias", k)]) == 3
    # Exactly rosinality Generator(32, 32, n_mlp=2).state_dict(): style 2x2, input 1, conv1 5, to_rgb1 4,
    # per resolution convs 6 (with blur kernel) + 5 and to_rgbs 5 (with upsample kernel), 7 noise buffers.
    assert len(sd) == 4 + 1 + 5 + 4 + 3 * 16 + 7


def test_generator_round_trip_through_a_rosinality_checkpoint(tmp_path: Path) -> None:
    G = _randomised_generator(0)
    D = _randomised_discriminator(1)
    path = tmp_path / "stylegan2-tiny.pt"
    save_rosinality_checkpoint(path, g_ema=G, generator=G, discriminator=D)
    checkpoint = torch.load(path, weights_only=True)
    assert set(checkpoint) == {"g", "d", "g_ema", "latent_avg"}

    fresh = _randomised_generator(7)
    fresh_d = _randomised_discriminator(8)
    reports = load_rosinality_checkpoint(path, generator=fresh, discriminator=fresh_d)
    assert reports["generator"].is_exact, reports["generator"]
    assert reports["discriminator"].is_exact, reports["discriminator"]
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(fresh(z, noise_mode="const"), G(z, noise_mode="const"), atol=0, rtol=0)
    torch.testing.assert_close(
        fresh(z, truncation_psi=0.5, noise_mode="const"), G(z, truncation_psi=0.5, noise_mode="const")
    )
    img = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(fresh_d(img), D(img), atol=0, rtol=0)
    for name, tensor in G.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name


def test_loaded_generator_reproduces_rosinality_semantics() -> None:
    G = _randomised_generator(0)
    sd = generator_to_rosinality(G)
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(4))
    ws = torch.randn(2, G.num_ws, 32, generator=torch.Generator().manual_seed(5))  # W+: a different w per layer
    torch.testing.assert_close(G.mapping(z, None)[:, 0], _ros_mapping(sd, z), atol=1e-5, rtol=1e-5)
    ours = G.synthesize(ws, noise_mode="const")
    torch.testing.assert_close(ours, _ros_generator(sd, ws), atol=1e-4, rtol=1e-4)


def test_loaded_discriminator_reproduces_rosinality_semantics() -> None:
    D = _randomised_discriminator(1)
    sd = discriminator_to_rosinality(D)
    assert sd["convs.0.0.weight"].shape == (16, 3, 1, 1) and "convs.0.0.bias" not in sd
    assert sd["convs.1.conv2.1.weight"].shape == (32, 16, 3, 3) and sd["convs.1.skip.1.weight"].shape == (32, 16, 1, 1)
    assert "convs.1.skip.1.bias" not in sd and sd["final_linear.0.weight"].shape == (32, 32 * 16)
    img = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(D(img), _ros_discriminator(sd, img), atol=1e-4, rtol=1e-4)


def test_build_from_state_dict_infers_the_config(tmp_path: Path) -> None:
    G = _randomised_generator(0)
    D = _randomised_discriminator(1)
    path = tmp_path / "train.pt"
    checkpoint = {
        "g": generator_to_rosinality(G),
        "d": discriminator_to_rosinality(D),
        "g_ema": generator_to_rosinality(G),
        "latent_avg": G.mapping.w_avg.clone(),
        "g_optim": {"state": {}, "param_groups": [{"lr": 0.002, "params": [0, 1]}]},
        "args": argparse.Namespace(size=32, latent=32, n_mlp=2, channel_multiplier=2),
    }
    torch.save(checkpoint, path)
    loaded = read_rosinality_checkpoint(path)
    assert loaded["args"].size == 32
    built, report = build_rosinality_generator(loaded["g_ema"], loaded["latent_avg"])
    assert report.is_exact, report
    assert (built.img_resolution, built.w_dim, built.mapping.num_layers) == (32, 32, 2)
    assert built.synthesis.channels == G.synthesis.channels
    z = torch.randn(2, 32)
    torch.testing.assert_close(built(z, noise_mode="const"), G(z, noise_mode="const"), atol=0, rtol=0)
    built_d, report_d = build_rosinality_discriminator(loaded["d"])
    assert report_d.is_exact and built_d.channels == D.channels
    img = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(built_d(img), D(img), atol=0, rtol=0)


def test_report_lists_missing_unexpected_and_mismatched_keys() -> None:
    sd = generator_to_rosinality(_randomised_generator(0))
    sd["style.3.weight"] = torch.zeros(32, 32)  # more mapping layers than our model
    del sd["noises.noise_6"]
    sd["to_rgb1.bias"] = torch.zeros(3)  # wrong shape: rosinality stores (1, 3, 1, 1)
    sd["convs.0.conv.blur.kernel"] = torch.ones(4, 4)
    target = _randomised_generator(9)
    before = target.synthesis.b4.torgb.bias.clone()
    report = load_rosinality_generator(target, sd)  # no latent_avg given
    assert not report.is_exact
    assert report.unexpected_keys == ["style.3.weight"]
    assert report.missing_keys == ["mapping.w_avg", "synthesis.b32.conv1.noise_const", "synthesis.b4.torgb.bias"]
    assert len(report.mismatched_keys) == 2
    assert any(m.startswith("to_rgb1.bias -> synthesis.b4.torgb.bias") for m in report.mismatched_keys)
    assert torch.equal(target.synthesis.b4.torgb.bias, before)
    torch.testing.assert_close(target.synthesis.b8.conv0.weight, _randomised_generator(0).synthesis.b8.conv0.weight)


def test_invalid_inputs_raise(tmp_path: Path) -> None:
    path = tmp_path / "not_rosinality.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="not a rosinality checkpoint"):
        read_rosinality_checkpoint(path)
    with pytest.raises(ValueError, match="unconditional RGB"):
        generator_to_rosinality(StyleGAN2Generator(8, 4, 8, 8, mapping_layers=1, channel_base=64, channel_max=8))
    with pytest.raises(ValueError, match="no 'd' entry"):
        load_rosinality_checkpoint({"g_ema": {}}, discriminator=_randomised_discriminator(0))
    with pytest.raises(ValueError, match="not a rosinality generator"):
        build_rosinality_generator({"foo": torch.zeros(1)})
    bad_channels = generator_to_rosinality(_randomised_generator(0))
    bad_channels["convs.0.conv.weight"] = torch.zeros(1, 7, 32, 3, 3)
    with pytest.raises(ValueError, match="do not follow"):
        build_rosinality_generator(bad_channels)


def test_noise_free_generator_ignores_noise_keys() -> None:
    torch.manual_seed(0)
    target = StyleGAN2Generator(**TINY, use_noise=False)  # type: ignore[arg-type]
    report = load_rosinality_generator(target, generator_to_rosinality(_randomised_generator(0)))
    assert not report.missing_keys[1:] and report.missing_keys == ["mapping.w_avg"]
    assert all(k.startswith("noises.") or k.endswith("noise.weight") for k in report.unexpected_keys)
    assert not any(isinstance(m, SynthesisLayer) and m.use_noise for m in target.modules())
    sd = load_rosinality_discriminator(
        _randomised_discriminator(3), discriminator_to_rosinality(_randomised_discriminator(4))
    )
    assert sd.is_exact


def test_loading_into_a_generator_on_the_meta_device() -> None:
    """Checking a checkpoint's layout on a meta-device model (no memory) works, and real weights are assigned."""
    torch.manual_seed(0)
    source = StyleGAN2Generator(**TINY)  # type: ignore[arg-type]
    state = generator_to_rosinality(source)
    with torch.device("meta"):
        layout_only = StyleGAN2Generator(**TINY)  # type: ignore[arg-type]
        target = StyleGAN2Generator(**TINY)  # type: ignore[arg-type]
    report = load_rosinality_generator(layout_only, {key: value.to("meta") for key, value in state.items()})
    assert not report.mismatched_keys and not report.unexpected_keys
    report = load_rosinality_generator(target, state)
    assert not report.mismatched_keys
    loaded = target.state_dict()
    for key in report_loaded_keys(source, report):
        assert torch.equal(loaded[key], source.state_dict()[key]), key


def report_loaded_keys(model: torch.nn.Module, report: object) -> list[str]:
    missing = set(getattr(report, "missing_keys", []))
    return [key for key in model.state_dict() if key not in missing and not key.endswith("resample_filter")]
