"""FG-Net model: the StyleGAN2 feature-tap mapping, the pyramid interpreter (paper config on the meta device, tiny
config on CPU), re-mapping, gradient flow and save/load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fg_net.config import FGNetConfig, paper_config, tiny_config
from fg_net.modeling_fg_net import (
    FGNet,
    PyramidInterpreter,
    read_pretrained_metadata,
    remap_latents,
    second_conv_feature_indices,
    second_conv_taps,
    stylegan2_feature_index,
)
from fg_net.testing import tiny_fg_net

PAPER_CHANNELS = (512, 512, 512, 512, 512, 256, 128, 64, 32)


def test_tap_mapping_to_genblocks_feature_list() -> None:
    assert second_conv_taps(1024) == (1, 3, 5, 7, 9, 11, 13, 15, 17)
    assert second_conv_feature_indices(1024) == (0, 2, 4, 6, 8, 10, 12, 14, 16)
    assert second_conv_taps(32) == (1, 3, 5, 7)
    assert second_conv_feature_indices(32) == (0, 2, 4, 6)
    assert [stylegan2_feature_index(t) for t in range(1, 18)] == list(range(17))
    with pytest.raises(ValueError, match="constant input"):
        stylegan2_feature_index(0)
    with pytest.raises(ValueError, match="power of two"):
        second_conv_taps(48)


def test_taps_are_the_second_conv_of_each_resolution() -> None:
    model = tiny_fg_net()
    synthesis = model.generator.synthesis
    captured: dict[int, torch.Tensor] = {}
    handles = [
        getattr(synthesis, f"b{res}").conv1.register_forward_hook(
            lambda module, args, output, res=res: captured.__setitem__(res, output)
        )
        for res in synthesis.block_resolutions
    ]
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ws = model.encode(images)
        _, features = synthesis(ws, noise_mode="const", return_features=True)
        taps = model.pyramid_features(images)
    for handle in handles:
        handle.remove()
    assert len(features) == synthesis.num_features == 2 * 5 - 3
    # upstream's 18-entry list at 1024 px is [constant input] + our list; its taps pick the same tensors
    upstream = [synthesis.b4.const.expand(2, -1, -1, -1), *features]
    for tap, index in zip(second_conv_taps(32), second_conv_feature_indices(32), strict=True):
        assert upstream[tap] is features[index]
    for res, tap in zip(synthesis.block_resolutions, taps, strict=True):
        torch.testing.assert_close(tap, captured[res], rtol=0, atol=0)
        assert tap.shape == (2, synthesis.channels[res], res, res)


def test_paper_config_on_meta_device() -> None:
    config = paper_config("BP4D")
    assert (config.resolution, config.n_styles, config.interpreter_out_channels, config.num_aus) == (1024, 18, 32, 12)
    with torch.device("meta"):
        model = FGNet(config)
        heatmaps = model(torch.randn(2, 3, 256, 256))
        used = model.au_heatmaps(torch.randn(2, 3, 256, 256))
    assert heatmaps.shape == (2, 32, 128, 128) and heatmaps.device.type == "meta"
    assert used.shape == (2, 12, 128, 128)
    interpreter = model.interpreter
    assert interpreter.feature_channels == PAPER_CHANNELS
    convs = [(name, m) for name, m in interpreter.named_modules() if isinstance(m, nn.Conv2d)]
    # the spec's key layout: layers 0-4 conv at 1 / BN at 4, layers 5-7 conv at 0 / BN at 3, layer 8 0, 3, 4
    assert [name for name, _ in convs] == [f"layer{i}.1" for i in range(5)] + [
        "layer5.0",
        "layer6.0",
        "layer7.0",
        "layer8.0",
        "layer8.4",
    ]
    shapes = [(m.in_channels, m.out_channels, m.kernel_size[0]) for _, m in convs]
    assert shapes == [
        (512, 512, 3),
        (512, 512, 5),
        (512, 512, 5),
        (512, 512, 5),
        (512, 256, 5),
        (256, 128, 5),
        (128, 64, 5),
        (64, 32, 5),
        (32, 32, 5),
        (32, 32, 5),
    ]
    norms = [name for name, m in interpreter.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms == [f"layer{i}.4" for i in range(5)] + [f"layer{i}.3" for i in range(5, 9)]
    assert [isinstance(getattr(interpreter, f"layer{i}")[0], nn.Upsample) for i in range(9)] == [True] * 5 + [
        False
    ] * 4
    assert len(model.encoder.styles) == 18 and model.generator.mapping.num_layers == 8


def test_paper_interpreter_initialisation() -> None:
    torch.manual_seed(0)
    interpreter = PyramidInterpreter(PAPER_CHANNELS)
    interpreter.requires_grad_(False)
    weights = torch.cat([m.weight.flatten() for m in interpreter.modules() if isinstance(m, nn.Conv2d)])
    biases = torch.cat([m.bias for m in interpreter.modules() if isinstance(m, nn.Conv2d)])
    bn_w = torch.cat([m.weight for m in interpreter.modules() if isinstance(m, nn.BatchNorm2d)])
    bn_b = torch.cat([m.bias for m in interpreter.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(float(weights.mean())) < 1e-4 and float(weights.std()) == pytest.approx(0.02, rel=0.01)
    assert float(bn_w.mean()) == pytest.approx(1.0, abs=0.005) and float(bn_w.std()) == pytest.approx(0.02, rel=0.1)
    assert not biases.any() and not bn_b.any()


def test_tiny_config_on_cpu() -> None:
    model = tiny_fg_net()
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        heatmaps = model(images)
        used = model.au_heatmaps(images)
    assert heatmaps.shape == (3, 8, 16, 16)
    assert used.shape == (3, 4, 16, 16) and used.abs().max() <= 1.0
    torch.testing.assert_close(used, heatmaps[:, :4].clamp(-1, 1))
    with torch.no_grad():  # constant noise + eval mode: deterministic
        torch.testing.assert_close(model(images), heatmaps, rtol=0, atol=0)


def test_interpreter_matches_documented_recurrence() -> None:
    torch.manual_seed(0)
    interpreter = PyramidInterpreter((16, 16, 8, 8, 4), out_channels=6, target_size=16, dropout=0.0).eval()
    generator = torch.Generator().manual_seed(2)
    features = [torch.randn(2, c, 4 * 2**i, 4 * 2**i, generator=generator) for i, c in enumerate((16, 16, 8, 8, 4))]
    originals = [f.clone() for f in features]
    with torch.no_grad():
        out = interpreter(features)
        hs = features[0]
        for i in range(1, 5):
            f = features[i]
            if f.shape[-1] > 16:
                f = F.interpolate(f, size=(16, 16), mode="bilinear", align_corners=True)
            hs = getattr(interpreter, f"layer{i - 1}")(hs) + f
        expected = interpreter.layer4(hs)
    assert out.shape == (2, 6, 16, 16)
    torch.testing.assert_close(out, expected)
    assert all(torch.equal(a, b) for a, b in zip(features, originals, strict=True))  # inputs untouched
    assert [isinstance(getattr(interpreter, f"layer{i}")[0], nn.Upsample) for i in range(4)] == [1, 1, 0, 0]
    with pytest.raises(ValueError, match=r"features\[2\]"):
        interpreter([*features[:2], features[3], *features[3:]])
    with pytest.raises(ValueError, match="target_size"):
        PyramidInterpreter((8, 8, 8), target_size=64)


def test_remap_latents_is_the_mapping_mlp_per_code() -> None:
    model = tiny_fg_net()
    mapping = model.generator.mapping
    codes = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(3))
    remapped = remap_latents(mapping, codes)
    reference = mapping(codes.reshape(16, 32))[:, 0].reshape(2, 8, 32)  # PixelNorm + fc layers, then broadcast
    torch.testing.assert_close(remapped, reference)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.encode(images), remap_latents(mapping, model.encoder(images)))
        model.config.remap_encoder_latents = False
        torch.testing.assert_close(model.encode(images), model.encoder(images))


@pytest.mark.parametrize("remap", [True, False])
def test_gradients_reach_encoder_generator_interpreter(remap: bool) -> None:
    torch.manual_seed(0)
    config = tiny_config()
    config.remap_encoder_latents = remap
    model = FGNet(config).train()
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    model.au_heatmaps(images).square().mean().backward()
    reached = {
        "encoder.input_layer.0.weight": model.encoder.input_layer[0].weight,
        "encoder.styles.0.linear.weight": model.encoder.styles[0].linear.weight,
        "generator.synthesis.b4.conv1.weight": model.generator.synthesis.b4.conv1.weight,
        "generator.synthesis.b32.conv1.weight": model.generator.synthesis.b32.conv1.weight,
        "interpreter.layer0.1.weight": model.interpreter.layer0[1].weight,
        "interpreter.layer3.4.weight": model.interpreter.layer3[4].weight,
    }
    for name, param in reached.items():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    mapping_grad = model.generator.mapping.fc0.weight.grad
    assert (mapping_grad is not None and mapping_grad.abs().sum() > 0) == remap


def test_save_and_load_pretrained(tmp_path: Path) -> None:
    model = tiny_fg_net(seed=5)
    folder = model.save_pretrained(tmp_path / "fg", fold=2, select_on_test=False, source="unit test")
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "encoder.safetensors",
        "generator.safetensors",
        "interpreter.safetensors",
    ]
    metadata = read_pretrained_metadata(folder)
    assert (metadata["fold"], metadata["select_on_test"], metadata["aus"]) == (2, False, [1, 2, 6, 12])
    loaded = FGNet.from_pretrained(folder)
    assert loaded.config == model.config
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=0)
    (folder / "config.json").write_text(json.dumps({"nope": 1}))
    with pytest.raises(ValueError, match="'model'"):
        FGNet.from_pretrained(folder)


def test_bad_inputs_and_configs() -> None:
    model = tiny_fg_net()
    with pytest.raises(ValueError, match=r"images.*\(B, 3, 32, 32\)"):
        model(torch.randn(2, 3, 64, 64))
    with pytest.raises(ValueError, match="interpreter_out_channels"):
        FGNetConfig(aus=(1, 2, 4, 6, 7, 10, 12, 14, 15), interpreter_out_channels=8)
    with pytest.raises(ValueError, match="heatmap_size"):
        FGNetConfig(resolution=64, heatmap_size=128)
    with pytest.raises(ValueError, match="noise_mode"):
        FGNetConfig(noise_mode="fresh")
    with pytest.raises(ValueError, match="dataset"):
        paper_config("GFT")
    wrong = tiny_config()
    wrong.resolution = 64
    with pytest.raises(ValueError, match="encoder emits"):
        FGNet(wrong, encoder=tiny_fg_net().encoder)
