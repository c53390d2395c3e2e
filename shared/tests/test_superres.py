"""EG3D hybrid super-resolution modules (genblocks.gan.superres) at tiny sizes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genblocks.gan.superres import (
    SuperResolutionHybrid2X,
    SuperResolutionHybrid4X,
    SuperResolutionHybrid8XDC,
)

W_DIM = 16


def inputs(resolution: int, channels: int = 8, batch: int = 2, num_ws: int = 5):
    generator = torch.Generator().manual_seed(resolution)
    features = torch.randn(batch, channels, resolution, resolution, generator=generator)
    ws = torch.randn(batch, num_ws, W_DIM, generator=generator)
    return features[:, :3], features, ws


@pytest.mark.parametrize(
    ("module_class", "img_resolution", "input_resolution", "block0_up"),
    [
        (SuperResolutionHybrid2X, 32, 16, 1),
        (SuperResolutionHybrid4X, 32, 16, 1),
        (SuperResolutionHybrid8XDC, 32, 8, 2),
    ],
)
def test_shapes_layout_and_parameter_names(module_class, img_resolution, input_resolution, block0_up):
    torch.manual_seed(0)
    sr = module_class(channels=8, img_resolution=img_resolution, w_dim=W_DIM, block_channels=(12, 6))
    assert sr.input_resolution == input_resolution and sr.block0.up == block0_up and sr.block1.up == 2
    rgb, features, ws = inputs(input_resolution)
    out = sr(rgb, features, ws)
    assert out.shape == (2, 3, img_resolution, img_resolution)
    names = {name.rsplit(".", 1)[0] for name, _ in sr.named_parameters()}
    assert {"block0.conv0", "block0.conv1", "block0.torgb", "block1.conv0", "block1.conv1", "block1.torgb"} <= names
    assert not any("noise" in name for name in sr.state_dict())  # the SR never uses noise


def test_default_widths_follow_eg3d():
    assert SuperResolutionHybrid2X.default_block_channels == (128, 64)
    assert SuperResolutionHybrid4X.default_block_channels == (128, 64)
    assert SuperResolutionHybrid8XDC.default_block_channels == (256, 128)
    sr = SuperResolutionHybrid2X(channels=4, img_resolution=16, w_dim=W_DIM)
    assert sr.block0.conv1.out_channels == 128 and sr.block1.conv1.out_channels == 64


def test_only_the_last_w_is_used_and_output_is_deterministic():
    torch.manual_seed(0)
    sr = SuperResolutionHybrid2X(channels=8, img_resolution=32, w_dim=W_DIM, block_channels=(12, 6))
    rgb, features, ws = inputs(16)
    out = sr(rgb, features, ws)
    torch.testing.assert_close(sr(rgb, features, ws), out)
    other = ws.clone()
    other[:, :-1] = torch.randn_like(other[:, :-1])
    torch.testing.assert_close(sr(rgb, features, other), out)
    other[:, -1] += 1.0
    assert not torch.allclose(sr(rgb, features, other), out)


def test_input_is_resized_with_antialiasing():
    torch.manual_seed(0)
    sr = SuperResolutionHybrid2X(channels=8, img_resolution=32, w_dim=W_DIM, block_channels=(12, 6))
    rgb, features, ws = inputs(64)
    resized = [
        F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False, antialias=True) for x in (rgb, features)
    ]
    torch.testing.assert_close(sr(rgb, features, ws), sr(resized[0], resized[1], ws))
    plain = SuperResolutionHybrid2X(
        channels=8, img_resolution=32, w_dim=W_DIM, block_channels=(12, 6), antialias=False
    )
    plain.load_state_dict(sr.state_dict())
    assert not torch.allclose(plain(rgb, features, ws), sr(rgb, features, ws))


def test_bad_inputs_raise():
    sr = SuperResolutionHybrid2X(channels=8, img_resolution=32, w_dim=W_DIM, block_channels=(12, 6))
    rgb, features, ws = inputs(16)
    with pytest.raises(ValueError, match="features must have shape"):
        sr(rgb, features[:, :5], ws)
    with pytest.raises(ValueError, match="rgb must have shape"):
        sr(rgb[:, :2], features, ws)
    with pytest.raises(ValueError, match="img_resolution must be a power of two"):
        SuperResolutionHybrid2X(channels=8, img_resolution=48, w_dim=W_DIM)


@pytest.mark.parametrize("module_class", [SuperResolutionHybrid2X, SuperResolutionHybrid4X, SuperResolutionHybrid8XDC])
def test_conv_clamp_reaches_every_layer_and_bounds_large_activations(module_class):
    torch.manual_seed(0)
    free = module_class(channels=8, img_resolution=32, w_dim=W_DIM, block_channels=(12, 6))
    clamped = module_class(channels=8, img_resolution=32, w_dim=W_DIM, block_channels=(12, 6), conv_clamp=1.0)
    clamped.load_state_dict(free.state_dict())
    layers = [layer for layer in clamped.modules() if hasattr(layer, "conv_clamp")]
    assert len(layers) == 6 and all(layer.conv_clamp == 1.0 for layer in layers)  # conv0, conv1, torgb of each block
    rgb, features, ws = inputs(clamped.input_resolution)
    with torch.no_grad():
        clamped.block1.torgb.bias.fill_(50.0)
        free.block1.torgb.bias.fill_(50.0)
    img = clamped(rgb, features, ws)
    assert float(free(rgb, features, ws).amax()) > 40.0  # unclamped: the bias shows
    # the last ToRGB adds at most 1 to the upsampled image of block0 (itself a sum of clamped ToRGBs)
    assert float(img.amax()) < 5.0
    loose = module_class(channels=8, img_resolution=32, w_dim=W_DIM, block_channels=(12, 6), conv_clamp=1e6)
    loose.load_state_dict(free.state_dict())
    torch.testing.assert_close(loose(rgb, features, ws), free(rgb, features, ws))  # a clamp never reached is exact
