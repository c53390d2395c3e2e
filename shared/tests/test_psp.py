"""pSp GradualStyleEncoder on tiny seeded IR-SE configs: shapes, taps, pyramid, latent_avg, pSp checkpoint round trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from genblocks.gan.psp import (
    GradualStyleBlock,
    GradualStyleEncoder,
    load_psp_encoder,
    psp_encoder_from_checkpoint,
    psp_n_styles,
    read_psp_checkpoint,
)

TINY: dict[str, Any] = {
    "n_styles": 8,
    "units": (1, 1, 2, 1),
    "channels": (8, 16, 24, 32),
    "style_dim": 16,
    "input_size": 32,
    "se_reduction": 4,
}


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _encoder(seed: int = 0, **overrides: Any) -> GradualStyleEncoder:
    torch.manual_seed(seed)
    encoder = GradualStyleEncoder(**{**TINY, **overrides}).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics and latent_avg, so the round trip checks them too
        for name, buffer in encoder.named_buffers():
            if name.endswith("running_mean") or name == "latent_avg":
                buffer.normal_()
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
    return encoder


def _images(n: int = 2, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_n_styles_formula() -> None:
    assert psp_n_styles(1024) == 18
    assert psp_n_styles(512) == 16
    assert psp_n_styles(256) == 14
    assert psp_n_styles(32) == 8
    with pytest.raises(ValueError, match="resolution"):
        psp_n_styles(300)


def test_output_shape_and_taps() -> None:
    encoder = _encoder()
    x = _images()
    assert encoder.tap_indices == (1, 3, 4)  # ends of stages 2, 3, 4 for units (1, 1, 2, 1)
    c1, c2, c3 = encoder.backbone_features(x)
    assert c1.shape == (2, 16, 8, 8)
    assert c2.shape == (2, 24, 4, 4)
    assert c3.shape == (2, 32, 2, 2)
    with torch.no_grad():
        out = encoder(x)
    assert out.shape == (2, 8, 16)
    assert torch.isfinite(out).all()


def test_ir_se_50_depth_taps_with_small_widths() -> None:
    torch.manual_seed(0)
    encoder = GradualStyleEncoder(
        n_styles=18, channels=(4, 4, 8, 8), style_dim=8, input_size=256, se_reduction=2
    ).eval()
    assert len(encoder.body) == 24
    assert encoder.tap_indices == (6, 20, 23)  # pSp: c1 after unit 6, c2 after 20, c3 after 23
    # head depths: log2 of 16², 32², 64²
    assert [len(encoder.styles[i].convs) // 2 for i in (0, 2, 3, 6, 7, 17)] == [4, 4, 5, 5, 6, 6]
    with torch.no_grad():
        c1, c2, c3 = encoder.backbone_features(torch.randn(1, 3, 256, 256))
        out = encoder(torch.randn(1, 3, 256, 256))
    assert (c1.shape[-1], c2.shape[-1], c3.shape[-1]) == (64, 32, 16)
    assert out.shape == (1, 18, 8)


def _align_corners_matrix(out_size: int, in_size: int) -> torch.Tensor:
    """1-D linear interpolation with align_corners=True: output i samples input position i (in-1)/(out-1)."""
    matrix = torch.zeros(out_size, in_size)
    for i in range(out_size):
        pos = i * (in_size - 1) / (out_size - 1)
        lo = min(int(pos), in_size - 2)
        frac = pos - lo
        matrix[i, lo] += 1 - frac
        matrix[i, lo + 1] += frac
    return matrix


def _explicit_upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    rows = _align_corners_matrix(y.shape[-2], x.shape[-2])
    cols = _align_corners_matrix(y.shape[-1], x.shape[-1])
    return torch.einsum("Hh,nchw,Ww->ncHW", rows, x, cols) + y


def _explicit_conv1x1(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    return torch.einsum("oc,nchw->nohw", conv.weight[:, :, 0, 0], x) + conv.bias.view(1, -1, 1, 1)


def test_feature_pyramid_equals_explicit_recomputation() -> None:
    encoder = _encoder()
    with torch.no_grad():
        c1, c2, c3 = encoder.backbone_features(_images())
        p2, p1 = encoder.feature_pyramid(c1, c2, c3)
        ref_p2 = _explicit_upsample_add(c3, _explicit_conv1x1(c2, encoder.latlayer1))
        ref_p1 = _explicit_upsample_add(ref_p2, _explicit_conv1x1(c1, encoder.latlayer2))
    assert p2.shape == (2, 32, 4, 4) and p1.shape == (2, 32, 8, 8)
    torch.testing.assert_close(p2, ref_p2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(p1, ref_p1, atol=1e-5, rtol=1e-5)


def test_heads_read_c3_p2_p1_and_latent_avg_is_added() -> None:
    encoder = _encoder()
    x = _images()
    with torch.no_grad():
        out = encoder(x)
        c1, c2, c3 = encoder.backbone_features(x)
        p2, p1 = encoder.feature_pyramid(c1, c2, c3)
        sources = [c3] * 3 + [p2] * 4 + [p1]
        expected = torch.stack([head(src) for head, src in zip(encoder.styles, sources)], dim=1)
    assert encoder.latent_avg.abs().sum() > 0
    torch.testing.assert_close(out, expected + encoder.latent_avg, atol=1e-6, rtol=1e-6)
    encoder.start_from_latent_avg = False
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), expected, atol=1e-6, rtol=1e-6)


def test_gradual_style_block_depth_and_slope() -> None:
    block = GradualStyleBlock(4, 6, spatial=8)
    convs = [m for m in block.convs if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 3 and all(c.stride == (2, 2) and c.kernel_size == (3, 3) for c in convs)
    assert block.convs[1].negative_slope == 0.01
    assert block(torch.randn(2, 4, 8, 8)).shape == (2, 6)
    assert len(GradualStyleBlock(4, 6, spatial=1).convs) == 2  # pSp always builds one conv
    with pytest.raises(ValueError, match="spatial"):
        GradualStyleBlock(4, 6, spatial=6)


def test_wrong_input_raises() -> None:
    encoder = _encoder()
    with pytest.raises(ValueError, match="x"):
        encoder(_images(size=64))
    with pytest.raises(ValueError, match="x"):
        encoder(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="input_size"):
        GradualStyleEncoder(**{**TINY, "input_size": 48})
    with pytest.raises(ValueError, match="units"):
        GradualStyleEncoder(**{**TINY, "units": (1, 1, 1)})


def _psp_checkpoint(encoder: GradualStyleEncoder) -> dict[str, Any]:
    """A checkpoint in pSp's layout: {opts, state_dict (encoder.*, decoder.*), latent_avg}."""
    state = {f"encoder.{k}": v.clone() for k, v in encoder.state_dict().items() if k != "latent_avg"}
    state["decoder.style.1.weight"] = torch.randn(16, 16)
    state["decoder.input.input"] = torch.randn(1, 32, 4, 4)
    return {
        "opts": {
            "encoder_type": "GradualStyleEncoder",
            "input_nc": 3,
            "output_size": 32,
            "start_from_latent_avg": True,
        },
        "state_dict": state,
        "latent_avg": encoder.latent_avg.clone(),
    }


def test_psp_key_layout() -> None:
    keys = set(_encoder().state_dict())
    for key in (
        "input_layer.0.weight",
        "input_layer.1.running_var",
        "input_layer.2.weight",
        "body.1.shortcut_layer.0.weight",
        "body.1.shortcut_layer.1.weight",
        "body.0.res_layer.1.weight",
        "body.0.res_layer.5.fc1.weight",
        "body.0.res_layer.5.fc2.weight",
        "styles.0.convs.0.weight",
        "styles.0.convs.0.bias",
        "styles.7.convs.4.weight",
        "styles.0.linear.weight",
        "styles.0.linear.bias",
        "latlayer1.weight",
        "latlayer2.bias",
    ):
        assert key in keys, key
    assert "body.0.shortcut_layer.0.weight" not in keys  # 8 -> 8 stride-2 unit: max-pool shortcut, as in pSp


def test_psp_checkpoint_round_trip(tmp_path: Path) -> None:
    source = _encoder(seed=0)
    x = _images()
    with torch.no_grad():
        expected = source(x)
    path = tmp_path / "psp.pt"
    torch.save(_psp_checkpoint(source), path)

    parsed = read_psp_checkpoint(path)
    assert set(parsed.decoder_state_dict) == {"style.1.weight", "input.input"}
    assert parsed.opts["encoder_type"] == "GradualStyleEncoder"
    assert parsed.latent_avg is not None and parsed.latent_avg.shape == (8, 16)

    target = _encoder(seed=5)
    with torch.no_grad():
        assert not torch.allclose(target(x), expected)
    report = load_psp_encoder(target, path, strict=True)
    assert report.complete
    with torch.no_grad():
        assert torch.equal(target(x), expected)

    built, report = psp_encoder_from_checkpoint(path, input_size=32)
    assert report.complete
    assert (built.n_styles, built.style_dim, built.tap_indices) == (8, 16, (1, 3, 4))
    with torch.no_grad():
        assert torch.equal(built(x), expected)


def test_equal_width_stages_need_explicit_units() -> None:
    source = _encoder(seed=0, channels=(8, 16, 16, 32))
    x = _images()
    with pytest.raises(ValueError, match="units"):
        psp_encoder_from_checkpoint(_psp_checkpoint(source), input_size=32)
    built, report = psp_encoder_from_checkpoint(_psp_checkpoint(source), input_size=32, units=(1, 1, 2, 1))
    assert report.complete
    with torch.no_grad():
        assert torch.equal(built(x), source(x))


def test_loader_reports_unmatched_keys_and_broadcasts_latent_avg() -> None:
    source = _encoder(seed=0)
    checkpoint = _psp_checkpoint(source)
    del checkpoint["state_dict"]["encoder.latlayer1.bias"]
    checkpoint["state_dict"]["encoder.extra.weight"] = torch.zeros(1)
    checkpoint["state_dict"]["encoder.styles.0.linear.weight"] = torch.zeros(3, 3)
    checkpoint["latent_avg"] = torch.arange(16.0)  # pSp learn_in_w layout: one (w_dim,) vector
    target = _encoder(seed=5)
    report = load_psp_encoder(target, checkpoint)
    assert report.unexpected_keys == ["extra.weight"]
    assert report.mismatched_keys == ["styles.0.linear.weight"]
    assert report.missing_keys == ["latlayer1.bias", "styles.0.linear.weight"]
    assert torch.equal(target.latent_avg, torch.arange(16.0).expand(8, 16))
    with pytest.raises(ValueError, match="does not match"):
        load_psp_encoder(_encoder(seed=5), checkpoint, strict=True)
    checkpoint["latent_avg"] = torch.zeros(5, 16)
    with pytest.raises(ValueError, match="latent_avg"):
        load_psp_encoder(_encoder(seed=5), checkpoint)
    del checkpoint["latent_avg"]
    assert "latent_avg" in load_psp_encoder(_encoder(seed=5), checkpoint).missing_keys


def test_gradients_reach_every_parameter() -> None:
    encoder = _encoder().train()
    encoder(_images()).square().mean().backward()
    for name, param in encoder.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert "latent_avg" not in dict(encoder.named_parameters())
