"""Stage I: W and the template SDF fitted on the procedural head."""

from __future__ import annotations

import torch

from omniavatar.config import OmniAvatarConfig
from omniavatar.head_model import ProceduralHead, sample_surface
from omniavatar.semantic_sdf import IGRNetwork, SemanticSDF

SURFACE_BOUND = 0.05
"""Mean |s| (scene units; the head is 0.2 wide) on surface samples after 300 steps."""
NEUTRAL_BOUND = 0.02
"""Mean ‖x̄ − p‖ on the neutral head's surface after 300 steps (a tenth of the head's width)."""


def test_identity_warp_outside_the_box(tiny_config: OmniAvatarConfig) -> None:
    torch.manual_seed(0)
    network = SemanticSDF(tiny_config.flame.feature_dim, tiny_config.igr)
    points = torch.tensor([[[0.5, 0.0, 0.0], [0.0, -0.4, 0.1], [0.3, 0.3, 0.3]]])
    features = torch.randn(1, tiny_config.flame.feature_dim)
    canonical, s = network.warp(points, features)
    assert torch.equal(canonical, points)
    torch.testing.assert_close(s, points.norm(dim=-1, keepdim=True) - 0.045)


def test_authors_layout_rescales_the_warp() -> None:
    torch.manual_seed(0)
    bbox = ((-0.2, -0.3, -0.1), (0.2, 0.1, 0.3))
    network = IGRNetwork([16], [], bbox, feature_dim=0, output_dim=4, rescale_warp=True)
    points = torch.rand(1, 5, 3) * 0.1
    raw = network.fc1(
        network.activation(
            network.fc0(
                torch.cat(
                    [
                        q := (points - network.bbox_center) / network.bbox_half_edge,
                        torch.sin(torch.pi * q),
                        torch.cos(torch.pi * q),
                    ],
                    dim=-1,
                )
            )
        )
    )
    out = network(points)
    torch.testing.assert_close(out[..., 1:], raw[..., 1:] * network.bbox_half_edge + network.bbox_center)
    torch.testing.assert_close(out[..., :1], raw[..., :1])


def test_stage1_fits_the_procedural_head(
    fitted_sdf: tuple[SemanticSDF, list[dict[str, float]]], head: ProceduralHead, tiny_config: OmniAvatarConfig
) -> None:
    network, history = fitted_sdf
    assert history[0]["sdf"] > 10 * history[-1]["sdf"]
    generator = torch.Generator().manual_seed(5)
    params = torch.zeros(3, tiny_config.flame.feature_dim)
    params[1:] = torch.randn(2, tiny_config.flame.feature_dim, generator=generator) * 0.5
    params[1:, -6:] *= 0.1
    _, _, surface = sample_surface(head.vertices(params), head.faces, 400, generator)
    with torch.no_grad():
        _, s = network.warp(surface, params)
    assert s.abs().mean() < SURFACE_BOUND


def test_neutral_head_maps_to_itself(
    fitted_sdf: tuple[SemanticSDF, list[dict[str, float]]], head: ProceduralHead, tiny_config: OmniAvatarConfig
) -> None:
    network, _ = fitted_sdf
    generator = torch.Generator().manual_seed(6)
    _, _, surface = sample_surface(head.template[None], head.faces, 400, generator)
    with torch.no_grad():
        canonical, _ = network.warp(surface, torch.zeros(1, tiny_config.flame.feature_dim))
    assert (canonical - surface).norm(dim=-1).mean() < NEUTRAL_BOUND
