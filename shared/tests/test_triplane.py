"""EG3D tri-plane generator: plane projection and lookup, OSG decoder, tiny end-to-end generator + dual discriminator
(spec genblocks §9: backbone 32², planes 8 channels, render 16², 8 + 8 samples, SR x2, discriminator 32², batch 2)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from genblocks.gan.dual_discriminator import DualDiscriminator
from genblocks.gan.eg3d import TINY_EG3D
from genblocks.gan.triplane import (
    OSGDecoder,
    TriPlaneGenerator,
    gpc_swap_probability,
    neural_rendering_resolution_at,
    project_onto_planes,
    sample_from_planes,
    sample_from_volumes,
    swap_conditioning,
)
from genblocks.render3d.cameras import LookAtCameraSampler

Z_DIM = W_DIM = 32


TINY_CONFIG = TINY_EG3D


def tiny_generator(**overrides) -> TriPlaneGenerator:
    torch.manual_seed(0)
    return TriPlaneGenerator(**{**TINY_CONFIG, **overrides})


def tiny_discriminator() -> DualDiscriminator:
    torch.manual_seed(1)
    return DualDiscriminator(32, c_dim=25, channel_base=256, channel_max=32, mapping_layers=2)


def cameras(batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return LookAtCameraSampler().sample_labels(batch, yaw_std=0.3, pitch_std=0.1, generator=generator)


def coordinate_planes(size: int = 8) -> torch.Tensor:
    """Planes whose 2 channels hold the grid coordinates (u, v) of each texel centre, `(1, 3, 2, size, size)`."""
    centres = (2 * torch.arange(size, dtype=torch.float32) + 1) / size - 1
    v, u = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([u, v]).expand(1, 3, 2, size, size).clone()


# --------------------------------------------------------------------------------------------------------------------
# Plane projection and lookup
# --------------------------------------------------------------------------------------------------------------------


def test_xy_yz_xz_planes_are_distinct_and_recover_the_point():
    points = torch.rand(1, 50, 3) * 0.8 - 0.4  # inside the box (box_warp 1 -> scaled by 2, |p| < 0.875 texel range)
    sampled = sample_from_planes(coordinate_planes(), points, box_warp=1.0, projection="xy_yz_xz", reduce="none")
    scaled = 2 * points[0]
    x, y, z = scaled.unbind(-1)
    torch.testing.assert_close(sampled[0, 0], torch.stack([x, y], -1), atol=1e-5, rtol=0)
    torch.testing.assert_close(sampled[0, 1], torch.stack([y, z], -1), atol=1e-5, rtol=0)
    torch.testing.assert_close(sampled[0, 2], torch.stack([x, z], -1), atol=1e-5, rtol=0)


def test_eg3d_legacy_reproduces_the_duplicate_plane():
    points = torch.rand(1, 50, 3) - 0.5
    projected = project_onto_planes(points, "eg3d_legacy")[0, :, :, :2]
    _, y, z = points[0].unbind(-1)
    # EG3D's generate_planes() matrices; projection = p @ inv(M)[:, :2]: (x, y), (x, z), (z, x) and never (y, z).
    eg3d_axes = torch.tensor(
        [[[1, 0, 0], [0, 1, 0], [0, 0, 1]], [[1, 0, 0], [0, 0, 1], [0, 1, 0]], [[0, 0, 1], [1, 0, 0], [0, 1, 0]]],
        dtype=torch.float32,
    )
    for k in range(3):
        torch.testing.assert_close(projected[k], (points[0] @ torch.linalg.inv(eg3d_axes[k]))[:, :2])
    torch.testing.assert_close(projected[2], projected[1].flip(-1))
    # A third plane that is the second one transposed reads exactly the same features: no new information.
    torch.manual_seed(0)
    planes = torch.randn(1, 3, 4, 6, 6)
    planes[:, 2] = planes[:, 1].transpose(-1, -2)
    sampled = sample_from_planes(planes, points, projection="eg3d_legacy", reduce="none")
    torch.testing.assert_close(sampled[:, 1], sampled[:, 2], atol=1e-6, rtol=0)
    assert not any(torch.allclose(projected[k], torch.stack([y, z], -1)) for k in range(3))  # yz is never read


def manual_bilinear(plane: torch.Tensor, u: float, v: float) -> torch.Tensor:
    """Bilinear lookup, zero padding, align_corners=False: grid (u, v) in [-1, 1] -> texel (u + 1) * W / 2 - 0.5."""
    _, h, w = plane.shape
    px, py = (u + 1) * w / 2 - 0.5, (v + 1) * h / 2 - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(plane.shape[0])
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - abs(px - xi)) * (1 - abs(py - yi))
            if 0 <= xi < w and 0 <= yi < h:
                out += weight * plane[:, yi, xi]
    return out


def test_sample_from_planes_equals_manual_bilinear_lookup():
    torch.manual_seed(0)
    planes = torch.randn(2, 3, 3, 5, 7)
    points = torch.rand(2, 12, 3) * 1.6 - 0.8  # box_warp 1.2: some points fall outside the planes (zeros)
    sampled = sample_from_planes(planes, points, box_warp=1.2, projection="xy_yz_xz")
    axes = ((0, 1), (1, 2), (0, 2))
    for n in range(2):
        for m in range(12):
            scaled = points[n, m] * 2 / 1.2
            manual = [
                manual_bilinear(planes[n, k], float(scaled[a]), float(scaled[b])) for k, (a, b) in enumerate(axes)
            ]
            torch.testing.assert_close(sampled[n, m], torch.stack(manual).mean(0), atol=1e-5, rtol=0)


def test_sample_from_volumes_depth_axis_and_plane_equivalence():
    torch.manual_seed(0)
    planes = torch.randn(1, 3, 4, 6, 6)
    depth = 4
    volumes = planes.unsqueeze(3).expand(1, 3, 4, depth, 6, 6).contiguous()
    points = torch.rand(1, 30, 3) * 0.7 - 0.35  # scaled |p| < 0.7 < 1 - 1/D: full interpolation weight along depth
    torch.testing.assert_close(
        sample_from_volumes(volumes, points), sample_from_planes(planes, points), atol=1e-5, rtol=0
    )
    # A ramp along depth reads back each volume's third coordinate: z, x, y for xy_yz_xz.
    centres = (2 * torch.arange(depth, dtype=torch.float32) + 1) / depth - 1
    ramp = centres.view(1, 1, 1, depth, 1, 1).expand(1, 3, 1, depth, 6, 6)
    read = sample_from_volumes(ramp, points, reduce="none")[0, :, :, 0]
    scaled = 2 * points[0]
    torch.testing.assert_close(read, scaled[:, [2, 0, 1]].T, atol=1e-5, rtol=0)
    # Per-axis box_warp scales each axis separately.
    torch.testing.assert_close(
        sample_from_volumes(ramp, points * torch.tensor([1.0, 2.0, 0.5]), box_warp=(1.0, 2.0, 0.5), reduce="none"),
        sample_from_volumes(ramp, points, reduce="none"),
        atol=1e-5,
        rtol=0,
    )


def test_osg_decoder_formula():
    torch.manual_seed(0)
    decoder = OSGDecoder(in_features=8, hidden_features=16, out_features=5)
    features = torch.randn(2, 7, 8)
    out = decoder(features, torch.zeros(2, 7, 3))
    raw = decoder.net(features)
    torch.testing.assert_close(out["sigma"], raw[..., :1])
    torch.testing.assert_close(out["features"], torch.sigmoid(raw[..., 1:]) * 1.002 - 0.001)
    assert [name for name, _ in decoder.named_parameters()] == [
        "net.0.weight",
        "net.0.bias",
        "net.2.weight",
        "net.2.bias",
    ]
    with pytest.raises(ValueError, match="features must have shape"):
        decoder(torch.randn(2, 7, 4))


# --------------------------------------------------------------------------------------------------------------------
# Tiny EG3D
# --------------------------------------------------------------------------------------------------------------------


def test_tiny_eg3d_shapes_at_every_stage():
    generator = tiny_generator()
    c = cameras()
    z = torch.randn(2, Z_DIM)
    ws = generator.mapping(z, c)
    assert ws.shape == (2, generator.num_ws, W_DIM) and generator.num_ws == 8
    planes = generator.synthesize_planes(ws)
    assert planes.shape == (2, 3, 8, 32, 32)
    out = generator.synthesis(ws, c, return_extras=True)
    assert out["image"].shape == (2, 3, 32, 32)
    assert out["image_raw"].shape == (2, 3, 16, 16)
    assert out["image_depth"].shape == (2, 1, 16, 16)
    assert out["image_features"].shape == (2, 8, 16, 16)
    assert out["image_weights"].shape == (2, 1, 16, 16)
    torch.testing.assert_close(out["image_raw"], out["image_features"][:, :3])
    depth = out["image_depth"].detach()
    assert float(depth.min()) >= 2.25 - 1e-5 and float(depth.max()) <= 3.3 + 1.05 / 7  # + the training jitter
    logits = tiny_discriminator()(out["image"], out["image_raw"], c)
    assert logits.shape == (2, 1)
    # A lower rendering resolution still gives the full-size image (the SR input is resized to 16).
    small = generator.synthesis(ws, c, neural_rendering_resolution=8)
    assert small["image_raw"].shape == (2, 3, 8, 8) and small["image"].shape == (2, 3, 32, 32)


def test_gradients_reach_every_parameter_of_g_and_d():
    generator, discriminator = tiny_generator(), tiny_discriminator()
    c = cameras()
    out = generator(torch.randn(2, Z_DIM), c, swap_probability=0.5)
    loss = F.softplus(-discriminator(out["image"], out["image_raw"], c)).mean()
    loss.backward()
    for module in (generator, discriminator):
        missing = [name for name, p in module.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
        assert not missing, f"no gradient for {missing}"


def test_few_steps_fit_a_fixed_target():
    generator = tiny_generator().eval()  # eval: deterministic ray samples
    c = cameras()
    z = torch.randn(2, Z_DIM, generator=torch.Generator().manual_seed(3))
    target = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4)) * 2 - 1
    optimizer = torch.optim.Adam(generator.parameters(), lr=0.01)
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        loss = F.mse_loss(generator(z, c, noise_mode="const")["image"], target)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses


def test_generator_pose_conditioning_swap():
    generator = tiny_generator()
    c = cameras(seed=5)
    z = torch.randn(2, Z_DIM)
    swapped = generator.mapping(z, c, swap_probability=1.0)
    torch.testing.assert_close(swapped, generator.mapping(z, c.flip(0)))  # batch 2: a roll by one swaps the rows
    torch.testing.assert_close(generator.mapping(z, c, swap_probability=0.0), generator.mapping(z, c))
    assert not torch.allclose(swapped, generator.mapping(z, c))
    # Rendering uses the true cameras whatever the mapping saw.
    ws = generator.mapping(z, c, swap_probability=1.0)
    generator.eval()
    out_swapped = generator(z, c, swap_probability=1.0, noise_mode="const")
    torch.testing.assert_close(out_swapped["image"], generator.synthesis(ws, c, noise_mode="const")["image"])
    # Without pose conditioning the mapping sees zeros, whatever c is.
    blind = tiny_generator(pose_conditioning=False)
    torch.testing.assert_close(blind.mapping(z, c), blind.mapping(z, c.flip(0)))
    rows = swap_conditioning(torch.arange(6.0).view(3, 2), 1.0)
    torch.testing.assert_close(rows, torch.tensor([[4.0, 5.0], [0.0, 1.0], [2.0, 3.0]]))
    assert gpc_swap_probability(0) == 1.0 and gpc_swap_probability(500) == 0.75
    assert gpc_swap_probability(1000) == 0.5 and gpc_swap_probability(5000) == 0.5
    assert neural_rendering_resolution_at(0) == 64 and neural_rendering_resolution_at(500) == 96
    assert neural_rendering_resolution_at(2000) == 128 and neural_rendering_resolution_at(10, final=None) == 64


def test_density_regularization_and_point_sampling():
    generator = tiny_generator()
    ws = generator.mapping(torch.randn(2, Z_DIM), cameras())
    loss = generator.density_regularization(ws, num_points=200, generator=torch.Generator().manual_seed(0))
    assert loss.dim() == 0 and float(loss.detach()) > 0
    loss.backward()
    assert generator.decoder.net[0].weight.grad is not None
    assert generator.backbone.synthesis.b32.torgb.weight.grad is not None
    zero = generator.density_regularization(ws.detach(), num_points=50, perturb_std=0.0, noise_mode="const")
    assert float(zero.detach()) == 0.0
    # Points outside the box read zero features everywhere: one constant density.
    far = generator.sample_points(ws.detach(), torch.full((2, 5, 3), 3.0), noise_mode="const")
    torch.testing.assert_close(far["sigma"], far["sigma"][:1, :1].expand(2, 5, 1))


def test_point_warp_hook_and_feature_volumes():
    generator = tiny_generator().eval()
    c = cameras()
    ws = generator.mapping(torch.randn(2, Z_DIM), c)
    plain = generator.synthesis(ws, c, noise_mode="const")
    identity = generator.synthesis(ws, c, noise_mode="const", point_warp=lambda p: p.clone())
    torch.testing.assert_close(identity["image"], plain["image"])
    away = generator.synthesis(ws, c, noise_mode="const", point_warp=lambda p: p + 10.0)  # outside the box
    raw = away["image_raw"]
    torch.testing.assert_close(raw, raw[:, :, :1, :1].expand_as(raw))  # constant: features of an empty lookup
    volumetric = tiny_generator(triplane_depth=2)
    ws = volumetric.mapping(torch.randn(2, Z_DIM), c)
    assert volumetric.synthesize_planes(ws).shape == (2, 3, 8, 2, 32, 32)
    assert volumetric.synthesis(ws, c)["image"].shape == (2, 3, 32, 32)


class ConditionedGenerator(TriPlaneGenerator):
    """An OmniAvatar-style subclass: the field reads a per-sample condition and returns an extra per-point output."""

    def density_and_features(self, planes, points, directions, condition=None):
        out = self.decoder(self.sample_plane_features(planes, points), directions)
        prior = condition[:, None, :1].expand(-1, points.shape[1], 1)  # stand-in for a 3DMM density prior
        return {"sigma": out["sigma"] + prior, "features": out["features"], "prior": prior}


@torch.no_grad()
def test_subclass_field_condition_and_per_sample_outputs():
    generator = tiny_generator().eval()
    c = cameras()
    ws = generator.mapping(torch.randn(2, Z_DIM), c)
    out = generator.synthesis(ws, c, noise_mode="const", return_extras=True)
    assert out["sample_depths"].shape == (2, 256, 16, 1) and out["sample_weights"].shape == (2, 256, 15, 1)
    assert out["sample_sigma"].shape == (2, 256, 16, 1) and out["sample_features"].shape == (2, 256, 16, 8)
    with pytest.raises(ValueError, match="takes no condition"):
        generator.synthesis(ws, c, field_condition=torch.zeros(2, 1))
    conditioned = ConditionedGenerator(**TINY_CONFIG)
    conditioned.load_state_dict(generator.state_dict())
    conditioned.eval()
    condition = torch.tensor([[0.0], [50.0]])
    extras = conditioned.synthesis(ws, c, noise_mode="const", field_condition=condition, return_extras=True)
    torch.testing.assert_close(extras["sample_prior"], condition[:, None, None].expand(2, 256, 16, 1))
    torch.testing.assert_close(extras["image"][:1], out["image"][:1])  # zero prior: same as the plain field
    assert float(extras["image_weights"][1].min()) > 0.99  # a dense prior makes sample 1 opaque everywhere
    sigma = conditioned.sample_points(ws, torch.zeros(2, 3, 3), noise_mode="const", field_condition=condition)["sigma"]
    plain = generator.sample_points(ws, torch.zeros(2, 3, 3), noise_mode="const")["sigma"]
    torch.testing.assert_close(sigma, plain + condition[:, None])


def test_bad_inputs_raise():
    generator = tiny_generator()
    ws = generator.mapping(torch.randn(2, Z_DIM), cameras())
    with pytest.raises(ValueError, match="camera label c must have shape"):
        generator.synthesis(ws, torch.zeros(2, 24))
    with pytest.raises(ValueError, match="c must have shape"):
        generator.mapping(torch.randn(2, Z_DIM), torch.zeros(2, 16))
    with pytest.raises(ValueError, match="ws must have shape"):
        generator.synthesis(ws[:, :3], cameras())
    with pytest.raises(ValueError, match="plane_projection"):
        tiny_generator(plane_projection="xz_only")
    with pytest.raises(ValueError, match="planes must have shape"):
        sample_from_planes(torch.zeros(1, 2, 3, 4, 4), torch.zeros(1, 5, 3))


def test_conv_clamps_reach_the_backbone_and_the_super_resolution():
    generator = tiny_generator(conv_clamp=256.0, sr_conv_clamp=128.0)
    backbone = [m.conv_clamp for m in generator.backbone.synthesis.modules() if hasattr(m, "conv_clamp")]
    sr = [m.conv_clamp for m in generator.superresolution.modules() if hasattr(m, "conv_clamp")]
    assert backbone and set(backbone) == {256.0} and set(sr) == {128.0}
    plain = tiny_generator()
    assert {m.conv_clamp for m in plain.modules() if hasattr(m, "conv_clamp")} == {None}
