"""The method's pieces on tiny random networks: augmentation, trainable layers, the style prior, the losses, the
encoder's W+ size."""

from __future__ import annotations

import pytest
import torch

from agilegan3d.augment import ada_adjust, augment_pair, diff_augment, draw_augment_params
from agilegan3d.config import AgileGAN3DConfig
from agilegan3d.modeling_agilegan3d import (
    StylePrior,
    build_encoder,
    build_g3d,
    build_prior_encoder,
    build_prior_generator,
    encode,
    multiview_consistency_loss,
    paired_guidance_loss,
    prior_frozen_prefixes,
    set_trainable,
    toon_filter,
)
from agilegan3d.pairs import cameras_at
from genblocks.errors import InputError


def test_diff_augment_identity_at_p0_and_differentiable() -> None:
    x = torch.randn(3, 3, 16, 16, requires_grad=True)
    policy = ("color", "translation", "cutout")
    same = diff_augment(x, draw_augment_params(3, policy, 0.0, generator=torch.Generator().manual_seed(0)), policy)
    assert torch.equal(same, x)
    assert augment_pair({"image": x}, policy, 0.0)["image"] is x
    params = draw_augment_params(3, policy, 1.0, generator=torch.Generator().manual_seed(1))
    y = diff_augment(x, params, policy)
    assert not torch.allclose(y, x)
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_translation_shifts_whole_pixels_with_zero_fill() -> None:
    x = torch.arange(64.0).view(1, 1, 8, 8)
    params = {"apply_translation": torch.ones(1), "shift": torch.tensor([[0.25, -0.125]])}  # 2 rows down, 1 col left
    y = diff_augment(x, params, ("translation",))
    assert torch.equal(y[0, 0, 2:, :7], x[0, 0, :6, 1:])
    assert torch.equal(y[0, 0, :2], torch.zeros(2, 8)) and torch.equal(y[0, 0, :, 7], torch.zeros(8))


def test_same_augmentation_for_image_and_image_raw() -> None:
    torch.manual_seed(0)
    image = torch.ones(2, 3, 32, 32)
    out = augment_pair({"image": image, "image_raw": torch.ones(2, 3, 16, 16)}, ("cutout",), 1.0, cutout=0.5)
    holes = (out["image"][:, 0] == 0).float().mean(dim=(1, 2))
    holes_raw = (out["image_raw"][:, 0] == 0).float().mean(dim=(1, 2))
    assert torch.allclose(holes, holes_raw, atol=0.1) and bool((holes > 0).all())


def test_ada_moves_probability_towards_target() -> None:
    assert ada_adjust(0.5, torch.ones(1000, 1), target=0.6, adjust_kimg=1.0) == 1.0  # overfitting D: more augment
    assert ada_adjust(0.5, -torch.ones(100, 1), target=0.6, adjust_kimg=1.0) == pytest.approx(0.4)


def test_prior_freezes_mapping_and_low_resolutions(tiny: AgileGAN3DConfig) -> None:
    generator = build_prior_generator(tiny.prior)
    prefixes = prior_frozen_prefixes(tiny.prior)
    assert prefixes == ["mapping.", "synthesis.b4.", "synthesis.b8."]
    keep = [n for n, _ in generator.named_parameters() if not any(n.startswith(p) for p in prefixes)]
    trainable = set_trainable(generator, sorted({n.rsplit(".", 1)[0] + "." for n in keep}))
    frozen = {n for n, p in generator.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(tuple(prefixes)) for n in frozen)
    assert all(n.startswith(("synthesis.b16.", "synthesis.b32.")) for n in trainable)
    with pytest.raises(InputError, match="match no parameter"):
        set_trainable(generator, ["synthesis.b1024."])


def test_toon_filter_quantises_into_range() -> None:
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    y = toon_filter(x, levels=4, edges=0.0)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    levels = torch.unique(torch.round((y + 1) / 2 * 3 * 1000) / 1000)
    assert len(levels) <= 4


def test_stylegan2_prior_is_g2s_of_e2(tiny: AgileGAN3DConfig) -> None:
    g2 = build_prior_generator(tiny.prior)
    e2 = build_prior_encoder(tiny.prior, g2.num_ws)
    prior = StylePrior.from_config(tiny.prior, g2, e2)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    expected = g2.synthesize(encode(e2, x), noise_mode="const").clamp(-1, 1)
    assert torch.allclose(prior(x), expected)
    assert StylePrior("toon")(x).shape == x.shape


def test_paired_guidance_zero_at_target_positive_else() -> None:
    target = torch.rand(2, 3, 8, 8)
    zero, parts = paired_guidance_loss(target.clone(), target)
    assert float(zero) == 0 and set(parts) == {"l1"}
    rendered = (target + 0.1).requires_grad_(True)
    loss, parts = paired_guidance_loss(rendered, target, 1.0, 2.0, lambda a, b: (a - b).square().mean((1, 2, 3)))
    assert float(loss.detach()) == pytest.approx(0.1 + 2 * 0.01, rel=1e-4) and set(parts) == {"l1", "perceptual"}
    loss.backward()
    assert rendered.grad is not None and rendered.grad.abs().sum() > 0


def test_multiview_loss_zero_for_identical_latents_positive_and_differentiable(tiny: AgileGAN3DConfig) -> None:
    g3d = build_g3d(tiny.g3d)
    c = cameras_at(torch.tensor([0.3, -0.2]), torch.tensor([0.1, 0.0]))
    ws = g3d.mapping(torch.randn(2, g3d.z_dim), c).detach()
    assert float(multiview_consistency_loss(g3d, ws.clone(), ws, c).detach()) == 0.0
    ws_hat = (ws + 0.5 * torch.randn_like(ws)).requires_grad_(True)
    loss = multiview_consistency_loss(g3d, ws_hat, ws, c)
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    loss.backward()
    assert ws_hat.grad is not None and ws_hat.grad.abs().sum() > 0


def test_encoder_emits_the_generators_num_ws(tiny: AgileGAN3DConfig) -> None:
    g3d = build_g3d(tiny.g3d)
    encoder = build_encoder(tiny.encoder, g3d)
    ws = encode(encoder.eval(), torch.rand(2, 3, 64, 64) * 2 - 1)  # any input size: resized to the encoder's
    assert ws.shape == (2, g3d.num_ws, g3d.w_dim)
    assert torch.equal(encoder.latent_avg[0], g3d.backbone.mapping.w_avg)
    with pytest.raises(InputError, match="takes"):
        build_encoder(type(tiny.encoder)(n_styles=g3d.num_ws + 1), g3d)
