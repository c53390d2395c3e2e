"""The Stage II generator: shapes, expression control with ws fixed, the prior density shell, density modes."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from omniavatar.config import OmniAvatarConfig
from omniavatar.modeling_omniavatar import OmniAvatarGenerator, prior_density
from omniavatar.pipeline_omniavatar import OmniAvatarPipeline
from omniavatar.semantic_sdf import SemanticSDF


def _pipeline(config: OmniAvatarConfig, sdf: SemanticSDF | None = None, **generator: object) -> OmniAvatarPipeline:
    config = replace(config, generator=replace(config.generator, **generator))  # type: ignore[arg-type]
    pipeline = OmniAvatarPipeline.from_config(config, seed=0)
    if sdf is not None:
        assert pipeline.generator.semantic_sdf is not None
        pipeline.generator.semantic_sdf.load_state_dict(sdf.state_dict())
    return pipeline


def test_output_shapes_and_mask(tiny_config: OmniAvatarConfig) -> None:
    pipeline = _pipeline(tiny_config)
    out = pipeline([0, 1], yaw=torch.tensor([0.0, 0.2]))
    assert out.images.shape == (2, 3, 32, 32)
    assert out.images_raw.shape == out.images_raw.shape == (2, 3, 16, 16)
    assert out.depth.shape == out.mask.shape == (2, 1, 16, 16)
    assert torch.isfinite(out.images).all()
    assert out.mask.min() >= -0.001 and out.mask.max() <= 1.001


def test_expression_changes_the_image_with_ws_fixed(tiny_config: OmniAvatarConfig) -> None:
    pipeline = _pipeline(tiny_config)
    f = tiny_config.flame
    neutral = torch.zeros(1, f.feature_dim)
    ws = pipeline.map(pipeline.latents([3]), neutral)
    cameras = pipeline.cameras(0.0, 0.0)
    smile = pipeline.features(expression=torch.full((f.expression,), 1.5))
    a = pipeline.render(ws, pipeline.labels(cameras, neutral))
    b = pipeline.render(ws, pipeline.labels(cameras, smile))
    again = pipeline.render(ws, pipeline.labels(cameras, neutral))
    assert torch.equal(a.images, again.images)
    assert (a.images - b.images).abs().mean() > 1e-3


def test_mapping_sees_only_the_camera(tiny_config: OmniAvatarConfig) -> None:
    generator = _pipeline(tiny_config).generator
    c = torch.zeros(2, 25 + tiny_config.flame.feature_dim)
    c[:, :25] = torch.randn(25)
    d = c.clone()
    d[:, 25:] = torch.randn(tiny_config.flame.feature_dim)
    z = torch.randn(2, generator.z_dim)
    assert torch.equal(generator.mapping(z, c), generator.mapping(z, d))


def test_prior_density_is_a_shell_around_the_head(
    tiny_config: OmniAvatarConfig, fitted_sdf: tuple[SemanticSDF, list[dict[str, float]]]
) -> None:
    """σ_prior along rays from the centre outwards: about 1/β inside, falling at the head's surface, ≈0 outside."""
    pipeline = _pipeline(tiny_config, fitted_sdf[0])
    generator = pipeline.generator
    directions = torch.nn.functional.normalize(torch.randn(64, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    radii = torch.linspace(0.0, 0.3, 61)
    points = (directions[:, None, :] * radii[None, :, None]).reshape(1, -1, 3)
    with torch.no_grad():
        _, s = generator.prior(points, torch.zeros(1, tiny_config.flame.feature_dim))
        sigma = prior_density(s, generator.sigmoid_beta).reshape(64, 61)
    half = 0.5 / generator.sigmoid_beta
    inside = sigma[:, radii < 0.05] > half
    assert inside.float().mean() > 0.9
    # The first drop below half the peak density, going outwards: the surface of the 0.1 x 0.13 x 0.1 ellipsoid.
    drop = (sigma[:, 1:] <= half) & (sigma[:, :-1] > half)
    crossing = radii[1:][drop.float().argmax(dim=1)]
    assert ((crossing > 0.07) & (crossing < 0.17)).float().mean() > 0.9
    assert (sigma[:, radii > 0.2] < 1.0).float().mean() > 0.9


@pytest.mark.parametrize("mode", ["delta_geom", "decoder_only", "with_sdf"])
def test_density_modes(tiny_config: OmniAvatarConfig, mode: str) -> None:
    generator = _pipeline(tiny_config, density_mode=mode).generator
    n, m = 1, 50
    planes = generator.synthesize_planes(generator.mapping(torch.randn(n, 32), torch.zeros(n, 51)), "const")
    points = torch.randn(n, m, 3) * 0.1
    features = torch.zeros(n, tiny_config.flame.feature_dim)
    out = generator.density_and_features(planes, points, torch.zeros_like(points), features)
    _, s = generator.prior(points, features)
    prior = prior_density(s, generator.sigmoid_beta)
    torch.testing.assert_close(out["prior_sigma"], prior)
    if mode == "delta_geom":
        torch.testing.assert_close(out["sigma"] - out["geom_delta"], prior)
    elif mode == "decoder_only":
        torch.testing.assert_close(out["geom_delta"], out["sigma"] - prior)
    else:
        torch.testing.assert_close(out["sigma"], prior_density(out["sdf"], generator.sigmoid_beta))


def test_background_and_torgb(tiny_config: OmniAvatarConfig) -> None:
    pipeline = _pipeline(tiny_config, use_background=True, with_torgb=True)
    generator = pipeline.generator
    assert generator.bcg_synthesis is not None and generator.torgb is not None
    out = pipeline([0])
    assert out.images.shape == (1, 3, 32, 32) and torch.isfinite(out.images).all()


def test_gradients_reach_backbone_decoder_and_beta(tiny_config: OmniAvatarConfig) -> None:
    generator = _pipeline(tiny_config).generator.train()
    c = torch.cat(
        [
            OmniAvatarPipeline(generator, tiny_config).cameras(0.0, 0.0).expand(2, -1),
            torch.randn(2, tiny_config.flame.feature_dim) * 0.3,
        ],
        dim=1,
    )
    out = generator(torch.randn(2, 32), c)
    out["image"].square().mean().backward()
    assert generator.backbone.synthesis.b4.const.grad is not None
    assert generator.decoder.pose_net is not None and generator.decoder.pose_net[0].weight.grad is not None
    assert generator.sigmoid_beta.grad is not None
    assert generator.semantic_sdf is not None
    assert all(p.grad is None for p in generator.semantic_sdf.parameters())


def test_bad_label_width(tiny_config: OmniAvatarConfig) -> None:
    generator = _pipeline(tiny_config).generator
    ws = generator.mapping(torch.randn(1, 32), torch.zeros(1, 51))
    with pytest.raises(ValueError, match="25 camera values then shape 10"):
        generator.synthesis(ws, torch.zeros(1, 40))


def test_paper_sizes_on_meta_device() -> None:
    from importlib import resources

    from genblocks.config import load_config

    config = load_config(OmniAvatarConfig, str(resources.files("omniavatar") / "configs" / "paper.yaml"))
    with torch.device("meta"):
        generator = OmniAvatarGenerator(config.generator, config.flame, config.igr)
    assert generator.decoder.pose_net is not None
    assert generator.decoder.pose_net[0].weight.shape == (32, 3 * 106)
    assert generator.backbone.synthesis.b256.torgb.weight.shape[0] == 32 * 3 * config.generator.triplane_depth
    assert math.isclose(config.generator.focal, 1015 / 224)


def test_a_fourth_image_channel_is_refused(tiny_config: OmniAvatarConfig) -> None:
    from genblocks.errors import FieldError

    with pytest.raises(FieldError, match=r"img_channels.*expected 3 \(RGB; the mask is the rendered opacity"):
        replace(tiny_config.generator, img_channels=4)
