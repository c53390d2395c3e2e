"""Stage I: W and the template SDF fitted on the procedural head."""

from __future__ import annotations

import torch

from omniavatar.config import OmniAvatarConfig
from omniavatar.head_model import ProceduralHead, barycentric_points, sample_surface
from omniavatar.semantic_sdf import IGRNetwork, SemanticSDF

SURFACE_BOUND = 0.015
"""Mean |s| (scene units; the head is 0.2 wide) on surface samples after the fixture's 1200 steps (measured 0.0045)."""
NEUTRAL_BOUND = 0.012
"""Mean ‖x̄ − p‖ on the neutral head's surface after 1200 steps (measured 0.0062; the head is 0.2 wide)."""
JAW_LOCALITY_BOUND = 0.4
"""Upper / lower mean canonical-map change for a jaw-only change (measured 0.25; 0.97 after 300 steps)."""
JAW_MOTION_FRACTION = 0.75
"""Share of the jaw's true motion W undoes on jaw points (measured 0.83; 0.66 with correspondence weight 10)."""


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


def test_jaw_only_change_moves_only_lower_region_points(
    fitted_sdf: tuple[SemanticSDF, list[dict[str, float]]], head: ProceduralHead, tiny_config: OmniAvatarConfig
) -> None:
    """Opening the jaw (0.3 rad, nothing else) changes W's canonical map on the jaw, not on the rest of the head."""
    network, _ = fitted_sdf
    jaw = torch.zeros(1, tiny_config.flame.feature_dim)
    jaw[0, -3] = 0.3
    generator = torch.Generator().manual_seed(7)
    index, bary, surface = sample_surface(head.vertices(jaw), head.faces, 2000, generator)
    in_lower = head.lower_region[head.faces[index[0]]]
    upper, lower = ~in_lower.any(-1), in_lower.all(-1)
    assert upper.sum() > 200 and lower.sum() > 200
    with torch.no_grad():
        canonical_jaw, _ = network.warp(surface, jaw)
        canonical_neutral, _ = network.warp(surface, torch.zeros_like(jaw))
    change = (canonical_jaw - canonical_neutral).norm(dim=-1)[0]
    assert change[upper].mean() < JAW_LOCALITY_BOUND * change[lower].mean()
    # and on the jaw the map undoes most of the true motion (the template point with the same barycentric coordinates)
    true_motion = (barycentric_points(head.template[None], head.faces, index, bary) - surface).norm(dim=-1)[0]
    learned_motion = (canonical_jaw - surface).norm(dim=-1)[0]
    assert true_motion[upper].max() < 1e-6
    assert learned_motion[lower].mean() > JAW_MOTION_FRACTION * true_motion[lower].mean()
