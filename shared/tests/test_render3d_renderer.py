"""Volume renderer on an analytic solid sphere, MipRayMarcher2 against its formulas, pdf / importance sampling."""

from __future__ import annotations

import math

import pytest
import torch

from genblocks.render3d.cameras import intrinsics_matrix, orbit_cam2world
from genblocks.render3d.rays import sample_rays
from genblocks.render3d.renderer import (
    ImportanceRenderer,
    MipRayMarcher2,
    sample_importance,
    sample_pdf,
    sample_stratified,
)

RADIUS = 0.3  # sphere centred at the origin
CAMERA_DISTANCE = 2.7  # frontal camera at (0, 0, 2.7) looking at the origin
COLOR = torch.tensor([0.25, 0.5, 0.75])
RESOLUTION = 15  # odd: the middle pixel's ray passes through the sphere centre


def sphere_field(points: torch.Tensor, directions: torch.Tensor, center: float = 0.0) -> dict[str, torch.Tensor]:
    """Solid sphere: raw sigma +1000 inside, -1000 outside (softplus(sigma - 1) ~ 0); constant colour inside."""
    distance = (points - points.new_tensor([0.0, 0.0, center])).norm(dim=-1, keepdim=True)
    inside = (distance < RADIUS).to(points.dtype)
    return {
        "sigma": 2000.0 * inside - 1000.0,
        "features": inside * COLOR.to(points),
        "sdf": distance - RADIUS,
    }


def frontal_rays(resolution: int = RESOLUTION) -> tuple[torch.Tensor, torch.Tensor]:
    cam2world = orbit_cam2world(torch.tensor([math.pi / 2]), torch.tensor([math.pi / 2]), CAMERA_DISTANCE, (0, 0, 0))
    return sample_rays(cam2world, intrinsics_matrix(2.0, batch_size=1), resolution)


def distance_to_centre(origins: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Perpendicular distance of each ray from the origin, |o x d| (unit d)."""
    return torch.linalg.cross(origins, directions, dim=-1).norm(dim=-1)


def test_sphere_depth_opacity_and_colour():
    origins, directions = frontal_rays()
    renderer = ImportanceRenderer(ray_start=2.0, ray_end=3.2, num_samples=48, num_importance=48).eval()
    out = renderer(sphere_field, origins, directions)
    m = RESOLUTION * RESOLUTION
    assert out.features.shape == (1, m, 3) and out.depth.shape == (1, m, 1) and out.opacity.shape == (1, m, 1)
    assert out.weights.shape == (1, m, 95, 1) and out.sample_depths.shape == (1, m, 96, 1)
    assert bool((out.sample_depths.diff(dim=2) >= 0).all())

    distance = distance_to_centre(origins, directions)[0]
    inside = distance < 0.95 * RADIUS  # chord of at least 0.19: many samples deep
    outside = distance > RADIUS
    assert int(inside.sum()) >= 20 and int(outside.sum()) >= 20
    # Full opacity inside the silhouette, none outside (tolerance 1e-4).
    assert float(out.opacity[0, inside, 0].min()) > 1 - 1e-4
    assert float(out.opacity[0, outside, 0].max()) < 1e-4
    # Inside, the composite is the sphere colour mapped by x2 - 1.
    torch.testing.assert_close(
        out.features[0, inside], (2 * COLOR - 1).expand(int(inside.sum()), 3), atol=1e-3, rtol=0
    )
    # Depth along the central ray: surface at 2.7 - 0.3 = 2.4; tolerance 0.005, a fifth of the coarse spacing
    # 1.2 / 47 = 0.0255 (the importance pass refines it; measured error 0.0035).
    centre = (RESOLUTION // 2) * RESOLUTION + RESOLUTION // 2
    assert abs(float(out.depth[0, centre, 0]) - (CAMERA_DISTANCE - RADIUS)) < 0.005
    # Every inside ray: depth to the analytic first hit t = d.o' - sqrt(r^2 - dist^2), same tolerance.
    hit = CAMERA_DISTANCE * (-directions[0, :, 2]) - torch.sqrt((RADIUS**2 - distance**2).clamp(min=0))
    assert float((out.depth[0, inside, 0] - hit[inside]).abs().max()) < 0.005
    # The same 96 samples without importance sampling miss that tolerance (measured error 0.017).
    stratified = ImportanceRenderer(ray_start=2.0, ray_end=3.2, num_samples=96, num_importance=0).eval()
    coarse_depth = stratified(sphere_field, origins, directions).depth
    assert float((coarse_depth[0, inside, 0] - hit[inside]).abs().max()) > 0.01
    # Rays that hit nothing have Sigma w ~ 0: their depth stays finite, inside the sampled range.
    assert bool(torch.isfinite(out.depth).all())
    assert float(out.depth.min()) >= 2.0 - 1e-5 and float(out.depth.max()) <= 3.2 + 1e-5


def test_importance_sampling_concentrates_samples_near_surface():
    origins, directions = frontal_rays()
    inside = distance_to_centre(origins, directions)[0] < 0.95 * RADIUS
    hit = CAMERA_DISTANCE * (-directions[0, :, 2]) - torch.sqrt(
        (RADIUS**2 - distance_to_centre(origins, directions)[0] ** 2).clamp(min=0)
    )
    band = 0.05

    def fraction_near_surface(renderer: ImportanceRenderer) -> float:
        depths = renderer.eval()(sphere_field, origins, directions).sample_depths[0, inside, :, 0]
        return float(((depths - hit[inside, None]).abs() < band).float().mean())

    stratified = fraction_near_surface(ImportanceRenderer(2.0, 3.2, num_samples=96, num_importance=0))
    importance = fraction_near_surface(ImportanceRenderer(2.0, 3.2, num_samples=48, num_importance=48))
    # Stratified: 2 * band / 1.2 of the range, about 8%; importance puts most of its 48 samples in the band.
    assert stratified < 0.1
    assert importance > 0.4
    assert importance > 4 * stratified


def test_point_warp_moves_the_surface_and_extra_outputs_follow_sorting():
    origins, directions = frontal_rays()
    renderer = ImportanceRenderer(2.0, 3.2, num_samples=32, num_importance=32).eval()
    centre = (RESOLUTION // 2) * RESOLUTION + RESOLUTION // 2

    def shift(points: torch.Tensor) -> torch.Tensor:  # canonical = observed + 0.1 z: the surface moves 0.1 away
        return points + points.new_tensor([0.0, 0.0, 0.1])

    out = renderer(sphere_field, origins, directions, point_warp=shift)
    assert abs(float(out.depth[0, centre, 0]) - (CAMERA_DISTANCE - RADIUS + 0.1)) < 0.01
    points = origins[:, :, None] + out.sample_depths * directions[:, :, None]
    expected_sdf = (points + torch.tensor([0.0, 0.0, 0.1])).norm(dim=-1, keepdim=True) - RADIUS
    torch.testing.assert_close(out.samples["sdf"], expected_sdf, atol=1e-5, rtol=0)


def test_train_mode_jitters_and_eval_mode_is_deterministic():
    origins, directions = frontal_rays(5)
    renderer = ImportanceRenderer(2.0, 3.2, num_samples=8, num_importance=8)
    generator = torch.Generator().manual_seed(0)
    train_a = renderer.train()(sphere_field, origins, directions, generator=generator)
    train_b = renderer.train()(sphere_field, origins, directions, generator=generator)
    assert not torch.equal(train_a.sample_depths, train_b.sample_depths)
    eval_a = renderer.eval()(sphere_field, origins, directions)
    eval_b = renderer.eval()(sphere_field, origins, directions)
    assert torch.equal(eval_a.sample_depths, eval_b.sample_depths) and torch.equal(eval_a.features, eval_b.features)
    coarse = sample_stratified(origins, 2.0, 3.2, 8, perturb=False)
    torch.testing.assert_close(coarse[0, 0, :, 0], torch.linspace(2.0, 3.2, 8))
    jittered = sample_stratified(origins, 2.0, 3.2, 8, perturb=True, generator=generator)
    delta = jittered - coarse
    assert bool((delta >= 0).all()) and bool((delta < 1.2 / 7).all())


def test_mip_ray_marcher_matches_explicit_loop():
    torch.manual_seed(0)
    n, m, s, c = 2, 3, 6, 4
    depths = torch.sort(torch.rand(n, m, s, 1) * 2 + 1, dim=2).values
    densities = torch.randn(n, m, s, 1) * 3
    features = torch.rand(n, m, s, c)
    composite, depth, weights = MipRayMarcher2()(features, densities, depths)
    for i in range(n):
        for j in range(m):
            transmittance, acc_f, acc_t, acc_w = 1.0, torch.zeros(c), 0.0, 0.0
            for k in range(s - 1):
                delta = depths[i, j, k + 1, 0] - depths[i, j, k, 0]
                sigma = torch.nn.functional.softplus(0.5 * (densities[i, j, k, 0] + densities[i, j, k + 1, 0]) - 1)
                alpha = 1 - torch.exp(-sigma * delta)
                weight = alpha * transmittance
                torch.testing.assert_close(weights[i, j, k, 0], weight, atol=1e-6, rtol=1e-5)
                acc_f = acc_f + weight * 0.5 * (features[i, j, k] + features[i, j, k + 1])
                acc_t = acc_t + weight * 0.5 * (depths[i, j, k, 0] + depths[i, j, k + 1, 0])
                acc_w = acc_w + weight
                transmittance = transmittance * (1 - alpha + 1e-10)
            torch.testing.assert_close(composite[i, j], acc_f * 2 - 1, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(depth[i, j, 0], acc_t / acc_w, atol=1e-5, rtol=1e-5)


def test_sample_pdf_quantiles_and_distribution():
    bins = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    uniform = sample_pdf(bins, torch.ones(1, 3), 7, deterministic=True)
    torch.testing.assert_close(uniform, torch.linspace(0, 3, 7)[None], atol=1e-4, rtol=0)
    spike = sample_pdf(bins, torch.tensor([[0.0, 1.0, 0.0]]), 1000, generator=torch.Generator().manual_seed(0))
    assert float(((spike > 1.0) & (spike < 2.0)).float().mean()) > 0.99
    skewed = sample_pdf(bins, torch.tensor([[1.0, 2.0, 1.0]]), 4000, generator=torch.Generator().manual_seed(1))
    fractions = torch.stack([((skewed >= k) & (skewed < k + 1)).float().mean() for k in range(3)])
    torch.testing.assert_close(fractions, torch.tensor([0.25, 0.5, 0.25]), atol=0.03, rtol=0)
    with pytest.raises(ValueError, match="bins must have shape"):
        sample_pdf(bins, torch.ones(1, 4), 3)


def test_sample_importance_targets_the_heavy_interval():
    depths = torch.linspace(0.0, 1.0, 11).view(1, 1, 11, 1)
    weights = torch.zeros(1, 1, 10, 1)
    weights[0, 0, 5] = 1.0  # interval [0.5, 0.6]
    fine = sample_importance(depths, weights, 64, generator=torch.Generator().manual_seed(0))
    assert fine.shape == (1, 1, 64, 1)
    # Smoothing spreads the spike over its neighbours; the smallest weight is 0.01, so most samples land near it.
    assert float(((fine > 0.35) & (fine < 0.7)).float().mean()) > 0.8
    with pytest.raises(ValueError, match="at least 4 coarse samples"):
        sample_importance(depths[:, :, :3], weights[:, :, :2], 4)


def test_renderer_rejects_bad_fields_and_options():
    origins, directions = frontal_rays(3)
    with pytest.raises(ValueError, match="must return 'sigma' and 'features'"):
        ImportanceRenderer(2.0, 3.2, 4, 4)(lambda p, d: {"sigma": p[..., :1]}, origins, directions)
    with pytest.raises(ValueError, match="ray_start must be smaller"):
        ImportanceRenderer(3.0, 2.0)
    with pytest.raises(ValueError, match="num_samples >= 4"):
        ImportanceRenderer(2.0, 3.0, num_samples=3, num_importance=2)
    with pytest.raises(ValueError, match="ray_directions must match"):
        ImportanceRenderer(2.0, 3.2, 4, 4)(sphere_field, origins, directions[:, :4])


def sdf_sphere_field(points: torch.Tensor, directions: torch.Tensor) -> dict[str, torch.Tensor]:
    """The sphere as a signed distance (negative inside) in ``sigma``, for the ``"sdf"`` density."""
    distance = points.norm(dim=-1, keepdim=True)
    return {"sigma": distance - RADIUS, "features": COLOR.to(points).expand(*points.shape[:-1], 3)}


def test_sdf_density_formula_surface_and_learnable_beta():
    marcher = MipRayMarcher2("sdf", sdf_beta=0.05)
    signed = torch.tensor([-0.2, -0.01, 0.0, 0.03, 0.5])
    expected = torch.sigmoid(-signed / 0.05) / 0.05
    torch.testing.assert_close(marcher.density(signed), expected)
    assert float(marcher.density(torch.tensor(0.0))) == pytest.approx(0.5 / 0.05)  # half the peak at the surface

    origins, directions = frontal_rays()
    renderer = ImportanceRenderer(
        ray_start=2.0, ray_end=3.2, num_samples=48, num_importance=48, density_activation="sdf", sdf_beta=0.005
    ).eval()
    out = renderer(sdf_sphere_field, origins, directions)
    distance = distance_to_centre(origins, directions)[0]
    inside, outside = distance < 0.9 * RADIUS, distance > 1.1 * RADIUS
    assert float(out.opacity[0, inside, 0].min()) > 0.99 and float(out.opacity[0, outside, 0].max()) < 0.01
    centre = (RESOLUTION // 2) * RESOLUTION + RESOLUTION // 2
    assert abs(float(out.depth[0, centre, 0]) - (CAMERA_DISTANCE - RADIUS)) < 0.02
    # beta is a parameter: a loss on the render reaches it
    beta = renderer.ray_marcher.sdf_beta
    out.opacity.sum().backward()
    assert beta.grad is not None and float(beta.grad.abs()) > 0
    with pytest.raises(ValueError, match="sdf_beta must be positive"):
        MipRayMarcher2("sdf", sdf_beta=0.0)
