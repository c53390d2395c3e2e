"""genblocks.gan.ops: upfirdn2d, resampling and bias_act against explicit reference computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from genblocks.gan.ops import (
    bias_act,
    conv2d_resample,
    downsample2d,
    setup_filter,
    upfirdn2d,
    upsample2d,
)


def _naive_upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor,
    up: int,
    down: int,
    pads: tuple[int, int, int, int],
    flip_filter: bool = False,
    gain: float = 1.0,
) -> torch.Tensor:
    """Element-by-element reference: explicit zero insertion, padding/cropping and filter sums."""
    x0, x1, y0, y1 = pads
    n, c, h, w = x.shape
    z = torch.zeros(n, c, h * up, w * up, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            z[:, :, i * up, j * up] = x[:, :, i, j].double()
    ph, pw = h * up + y0 + y1, w * up + x0 + x1
    padded = torch.zeros(n, c, ph, pw, dtype=torch.float64)
    for a in range(ph):
        for b in range(pw):
            src_a, src_b = a - y0, b - x0
            if 0 <= src_a < h * up and 0 <= src_b < w * up:
                padded[:, :, a, b] = z[:, :, src_a, src_b]
    fh, fw = f.shape
    kernel = f.double() if flip_filter else f.double().flip([0, 1])
    out_h, out_w = (ph - fh) // down + 1, (pw - fw) // down + 1
    out = torch.zeros(n, c, out_h, out_w, dtype=torch.float64)
    for oy in range(out_h):
        for ox in range(out_w):
            window = padded[:, :, oy * down : oy * down + fh, ox * down : ox * down + fw]
            out[:, :, oy, ox] = (window * kernel).sum(dim=(2, 3)) * gain
    return out.float()


# (N, C, H, W, up, down, padding (x0, x1, y0, y1), filter taps, flip_filter, gain)
UPFIRDN_CASES = [
    ((1, 2, 5, 6), 1, 1, (1, 2, 0, 1), "asym", False, 1.0),
    ((2, 1, 4, 4), 2, 1, (2, 1, 2, 1), (1, 3, 3, 1), False, 4.0),
    ((1, 3, 8, 6), 1, 2, (1, 1, 1, 1), (1, 3, 3, 1), False, 1.0),
    ((1, 2, 5, 5), 3, 2, (-1, 2, 1, -2), "asym", True, 2.5),
    ((2, 2, 7, 6), 2, 3, (-2, 0, 0, -1), "asym", False, 1.0),
]


@pytest.mark.parametrize(("shape", "up", "down", "pads", "taps", "flip", "gain"), UPFIRDN_CASES)
def test_upfirdn2d_matches_naive_loop(shape, up, down, pads, taps, flip, gain) -> None:
    gen = torch.Generator().manual_seed(sum(shape) + up + down)
    x = torch.randn(*shape, generator=gen)
    f = torch.randn(3, 4, generator=gen) if taps == "asym" else setup_filter(taps)
    ours = upfirdn2d(x, f, up=up, down=down, padding=pads, flip_filter=flip, gain=gain)
    ref = _naive_upfirdn2d(x, f, up, down, pads, flip_filter=flip, gain=gain)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_setup_filter_is_normalised_outer_product() -> None:
    f = setup_filter()
    assert f.shape == (4, 4)
    torch.testing.assert_close(f, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)
    assert setup_filter((1, 2, 1), normalize=False).sum().item() == 16.0


def test_separable_taps_equal_2d_filter() -> None:
    x = torch.randn(2, 3, 6, 7, generator=torch.Generator().manual_seed(1))
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
    a = upfirdn2d(x, taps, up=2, padding=(2, 1, 2, 1), gain=4.0)
    b = upfirdn2d(x, torch.outer(taps, taps), up=2, padding=(2, 1, 2, 1), gain=4.0)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_upsample2d_equals_transposed_conv_with_explicit_filter() -> None:
    x = torch.randn(2, 3, 5, 6, generator=torch.Generator().manual_seed(2))
    f = setup_filter()
    kernel = (4 * f)[None, None].repeat(3, 1, 1, 1)  # depthwise (C, 1, 4, 4), gain up^2
    ref = F.conv_transpose2d(x, kernel, stride=2, groups=3)[:, :, 1:-1, 1:-1]
    out = upsample2d(x, f)
    assert out.shape == (2, 3, 10, 12)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)


def test_downsample2d_equals_strided_conv_with_explicit_filter() -> None:
    x = torch.randn(2, 3, 8, 10, generator=torch.Generator().manual_seed(3))
    f = setup_filter()
    kernel = f[None, None].repeat(3, 1, 1, 1)
    ref = F.conv2d(F.pad(x, [1, 1, 1, 1]), kernel, stride=2, groups=3)
    out = downsample2d(x, f)
    assert out.shape == (2, 3, 4, 5)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)


def test_constant_image_stays_constant() -> None:
    f = setup_filter()
    ones = torch.full((1, 2, 8, 8), 3.0)
    up = upsample2d(ones, f)
    down = downsample2d(ones, f)
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4)
    torch.testing.assert_close(up[:, :, 2:-2, 2:-2], torch.full_like(up[:, :, 2:-2, 2:-2], 3.0))
    torch.testing.assert_close(down[:, :, 1:-1, 1:-1], torch.full_like(down[:, :, 1:-1, 1:-1], 3.0))
    # Borders are darker: zero padding enters the filter there.
    assert up[0, 0, 0, 0] < 3.0 and down[0, 0, 0, 0] < 3.0


@pytest.mark.parametrize("act", ["linear", "lrelu", "relu", "sigmoid", "tanh", "softplus"])
def test_bias_act_matches_explicit_formula(act: str) -> None:
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 5, 3, 3, generator=gen) * 3
    b = torch.randn(5, generator=gen)
    y = x + b.view(1, 5, 1, 1)
    explicit = {
        "linear": y,
        "lrelu": torch.where(y >= 0, y, 0.2 * y) * math.sqrt(2),
        "relu": y.clamp_min(0) * math.sqrt(2),
        "sigmoid": 1 / (1 + torch.exp(-y)),
        "tanh": torch.tanh(y),
        "softplus": torch.log1p(torch.exp(y)),
    }[act]
    torch.testing.assert_close(bias_act(x, b, act=act), explicit, atol=1e-5, rtol=1e-5)
    clamped = bias_act(x, b, act=act, gain=2.0, clamp=0.5)
    default_gain = math.sqrt(2) if act in ("lrelu", "relu") else 1.0
    torch.testing.assert_close(clamped, (explicit / default_gain * 2.0).clamp(-0.5, 0.5), atol=1e-5, rtol=1e-5)


def test_bias_act_alpha_and_dim() -> None:
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(5))
    b = torch.linspace(-1, 1, 6)
    y = x + b
    torch.testing.assert_close(
        bias_act(x, b, dim=-1, act="lrelu", alpha=0.1, gain=1.0), torch.where(y >= 0, y, 0.1 * y)
    )
    with pytest.raises(ValueError, match="b must have shape"):
        bias_act(x, torch.zeros(5), dim=1)
    with pytest.raises(ValueError, match="act must be one of"):
        bias_act(x, act="gelu")  # type: ignore[arg-type]


@pytest.mark.parametrize("groups", [1, 2])
def test_conv2d_resample_up_equals_zero_stuffing_then_true_convolution(groups: int) -> None:
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(1, 4, 5, 5, generator=gen)
    w = torch.randn(6, 4 // groups, 3, 3, generator=gen)
    f = setup_filter()
    out = conv2d_resample(x, w, f, up=2, padding=1, groups=groups)
    # Generic route: upsample with FIR (padding 1 + spec padding (2, 1)), then a valid convolution with the flipped kernel.
    stuffed = upfirdn2d(x, f, up=2, padding=(3, 2, 3, 2), gain=4.0)
    ref = F.conv2d(stuffed, w.flip([2, 3]), groups=groups)
    assert out.shape == (1, 6, 10, 10)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_conv2d_resample_down_and_plain() -> None:
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 8, 8, generator=gen)
    w3 = torch.randn(5, 3, 3, 3, generator=gen)
    w1 = torch.randn(5, 3, 1, 1, generator=gen)
    f = setup_filter()
    blurred = upfirdn2d(x, f, padding=2)  # 3x3 kernel: (fw - down + 1) // 2 + 1 = 2 each side
    torch.testing.assert_close(conv2d_resample(x, w3, f, down=2, padding=1), F.conv2d(blurred, w3, stride=2))
    # 1x1 with down: filter-then-subsample equals downsample2d followed by the 1x1 convolution.
    torch.testing.assert_close(
        conv2d_resample(x, w1, f, down=2), F.conv2d(downsample2d(x, f), w1), atol=1e-6, rtol=1e-6
    )
    torch.testing.assert_close(conv2d_resample(x, w3, padding=1), F.conv2d(x, w3, padding=1))
    torch.testing.assert_close(
        conv2d_resample(x, w3, padding=(1, 0, 2, 0)), F.conv2d(F.pad(x, [1, 0, 2, 0]), w3), atol=1e-6, rtol=1e-6
    )


def test_invalid_arguments_raise() -> None:
    x = torch.randn(1, 1, 4, 4)
    f = setup_filter()
    with pytest.raises(ValueError, match="empty"):
        upfirdn2d(x, f, padding=-3)
    with pytest.raises(ValueError, match="padding"):
        upfirdn2d(x, f, padding=(1, 2, 3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        upfirdn2d(x[0], f)
    with pytest.raises(ValueError, match="filter f is required"):
        conv2d_resample(x, torch.randn(1, 1, 3, 3), up=2, padding=1)
